"""Real Horovod ranks launched from local Spark, fed by Petastorm."""

from __future__ import annotations

import os

import pytest

from allmtl_spark import tables
from allmtl_spark.lakehouse import read_table
from allmtl_spark.registry import file_sha256
from allmtl_spark.training import job as training
from allmtl_spark.training.stages import plan_stages

pytestmark = pytest.mark.spark


def test_two_ranks_train_on_their_shards_and_end_with_identical_weights(spark, train_lake):
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
        results = horovod_run(training.train_rank, args=(job,), num_proc=2, use_gloo=True, verbose=0)
    finally:
        data.close()
    assert sorted(r["rank"] for r in results) == [0, 1]
    assert results[0]["weights_digest"] == results[1]["weights_digest"]  # gradients and BN statistics averaged
    root = next(r for r in results if r["rank"] == 0)
    # the best epoch's weights were loaded on rank 0 and broadcast before the digests above were taken
    assert root["kept_epoch"]["monitor"] == "val_loss" and 1 <= root["kept_epoch"]["epoch"] <= job.epochs
    assert root["ranks"] == 2 and root["history"]["loss"]
    assert root["sha256"] == file_sha256(os.path.join(lake.models, "hvdtest", "model.h5"))


def test_split_keeps_groups_on_one_side_and_is_recorded(spark, train_lake):
    cfg, lake, _ = train_lake
    data = training._DataCache(spark, lake, cfg.train, "roi-adaptive")
    data.prepare(plan_stages(cfg.train))
    examples = data.example_set("binary")
    splits = read_table(spark, lake, tables.SPLITS).where(f"split_id = '{examples.split_id}'").toPandas()
    assert set(splits["part"]) == {"train", "val", "test"}
    assert (splits.groupby("group_key")["part"].nunique() == 1).all()
    assert len(splits) == sum(sum(c.values()) for c in examples.counts.values())
