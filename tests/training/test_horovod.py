"""Real Horovod ranks launched from local Spark, fed by Petastorm."""

from __future__ import annotations

import io
import os

import pytest

from allmtl_spark import tables
from allmtl_spark.lakehouse import read_table
from allmtl_spark.registry import file_sha256
from allmtl_spark.training import job as training
from allmtl_spark.training.rank import train_rank, train_ranks
from allmtl_spark.training.stages import plan_stages

pytestmark = pytest.mark.spark


def test_two_ranks_train_on_their_shards_and_end_with_identical_weights(spark, train_lake, caplog):
    from horovod.spark import run as horovod_run

    cfg, lake, _ = train_lake
    training._configure_petastorm(spark, cfg.train, lake)
    data = training._DataCache(spark, lake, cfg.train, "roi-adaptive")
    try:
        data.prepare(plan_stages(cfg.train))
        plan = plan_stages(cfg.train)[0]
        examples = data.example_set(plan.task)
        n_train, n_val = data.part(plan.task, "train").count(), data.part(plan.task, "val").count()
        job = training._rank_job(
            cfg.train, plan, "hvdtest", lake, data, {}, n_train, n_val, os.path.join(lake.models, "hvdtest"), examples
        )
        out, err = io.StringIO(), io.StringIO()  # the ranks' output, forwarded by horovod
        per_rank = horovod_run(train_ranks, args=([job],), num_proc=2, use_gloo=True, verbose=0, stdout=out, stderr=err)
    finally:
        data.close()
    assert [len(r) for r in per_rank] == [1, 1]  # one result per stage on each rank
    results = [r[0] for r in per_rank]
    assert sorted(r["rank"] for r in results) == [0, 1]
    assert results[0]["weights_digest"] == results[1]["weights_digest"]  # gradients and BN statistics averaged
    root = next(r for r in results if r["rank"] == 0)
    # the best epoch's weights were loaded on rank 0 and broadcast before the digests above were taken
    assert root["kept_epoch"]["monitor"] == "val_loss" and 1 <= root["kept_epoch"]["epoch"] <= job.epochs
    assert root["ranks"] == 2 and root["history"]["loss"]
    assert root["sha256"] == file_sha256(os.path.join(lake.models, "hvdtest", "model.h5"))
    # One line per epoch (EpochLine's, not Keras' as well); no library notice a user cannot act on.
    output = out.getvalue() + err.getvalue()
    for epoch in range(1, job.epochs + 1):
        assert output.count(f"[{job.stage_key}] epoch {epoch}/{job.epochs} ") == 1, output[-3000:]
    for noise in ("Epoch 1/", " - loss: ", "median size", "Converting floating-point", "Logging error", "HDF5 file"):
        assert noise not in output, (noise, output[-3000:])
    assert "FutureWarning: pyarrow" not in output, output[-3000:]
    assert not [r.getMessage() for r in caplog.records if r.name.startswith("petastorm")]  # the driver's converter


def test_split_keeps_groups_on_one_side_and_is_recorded(spark, train_lake):
    cfg, lake, _ = train_lake
    data = training._DataCache(spark, lake, cfg.train, "roi-adaptive")
    data.prepare(plan_stages(cfg.train))
    examples = data.example_set("binary")
    splits = read_table(spark, lake, tables.SPLITS).where(f"split_id = '{examples.split_id}'").toPandas()
    assert set(splits["part"]) == {"train", "val", "test"}
    assert (splits.groupby("group_key")["part"].nunique() == 1).all()
    assert len(splits) == sum(sum(c.values()) for c in examples.counts.values())


@pytest.mark.slow
def test_a_rank_learns_an_easy_task_well_above_chance(spark, train_lake, tmp_path):
    """The rank trainer (Petastorm -> Horovod -> Keras) on a task any working pipeline learns: is the
    square somewhere on a dark 75 px image red or blue? Held-out accuracy far above chance (0.5) fails
    if labels, decoding, shuffling, validation or the weights kept go wrong. (It caught a validation
    stream that stopped yielding after two epochs: the kept epoch was then the first.)"""
    import numpy as np
    import tensorflow as tf
    from horovod.spark import run as horovod_run
    from petastorm.spark import make_spark_converter

    from allmtl_spark.training.rank import RankJob

    _, lake, _ = train_lake
    training._configure_petastorm(spark, load_config_train(), lake)
    rng = np.random.default_rng(0)

    def images(n):
        labels = rng.integers(0, 2, n)
        out = rng.integers(0, 60, (n, 75, 75, 3), dtype=np.uint8)
        for image, label in zip(out, labels, strict=True):
            y, x = rng.integers(0, 55, 2)
            image[y : y + 20, x : x + 20] = (230, 40, 40) if label else (40, 40, 230)
        return out, labels

    x, y = images(192)
    rows = [(bytes(i.tobytes()), int(label)) for i, label in zip(x, y, strict=True)]
    train = make_spark_converter(spark.createDataFrame(rows, "image binary, label int").repartition(2))
    val_x, val_y = images(32)
    job = RankJob(
        stage_key="easy",
        backbone="InceptionV3",
        input_size=75,
        class_names=("blue", "red"),
        head="simple",
        dense_units=(),
        dropout=0.0,
        init_weights=None,
        load_head=False,
        trainable="all",
        warmup_epochs=0,
        epochs=5,
        keep_weights="best",
        batch_size=16,
        learning_rate=0.001,
        decay_rate=0.9,
        n_train=192,
        n_val=32,
        checkpoint_dir=str(tmp_path / "ckpt"),
        output_dir=str(tmp_path / "model"),
        train_converter=train,
        val_images=val_x,
        val_labels=val_y,
        threads=2,
        batchnorm_momentum=0.9,
    )
    try:
        results = horovod_run(train_rank, args=(job,), num_proc=1, use_gloo=True, verbose=0)
    finally:
        train.delete()
    model = tf.keras.models.load_model(str(tmp_path / "model" / "model.h5"), compile=False)
    test_x, test_y = images(64)
    predicted = (model.predict(test_x.astype(np.float32), verbose=0)[:, 0] > 0.5).astype(int)
    accuracy = float(np.mean(predicted == test_y))
    assert results[0]["kept_epoch"] is not None
    assert accuracy >= 0.85, accuracy  # chance is 0.5


def load_config_train():
    from allmtl_spark.config import load_config

    return load_config("conf/demo.yaml").train
