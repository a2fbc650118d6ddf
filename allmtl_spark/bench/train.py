"""``allmtl bench train``: can the input side keep the model busy?

Measures, in one run and on the same images: (a) the images/s the Petastorm -> tf.data input
pipeline of the training job delivers alone (decode, shuffle, batch; no model), and (b) the
images/s one training step consumes (the configured backbone, batches already in memory).
The ratio a / b must stay well above 1 (target 3x): then the model never waits for data.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=int, default=512, help="images in the benchmark dataset")
    parser.add_argument("--steps", type=int, default=12, help="timed training steps")


def main(args: argparse.Namespace) -> int:
    from allmtl_spark.cli import lakehouse_from, load_from_args, spark_from_args

    cfg = load_from_args(args)
    spark = spark_from_args(args, cfg)
    lake = lakehouse_from(cfg)
    size, batch = cfg.train.input_size, cfg.train.stage3.batch_size
    converter = _converter(spark, lake, cfg.train, args.images, size)
    try:
        input_rate = _input_rate(converter, size, batch, args.images)
    finally:
        converter.delete()
    train_rate = _train_rate(cfg.train, size, batch, args.steps)
    print(f"input side (Petastorm -> tf.data, 1 reader): {input_rate:8.1f} images/s")
    print(f"training step ({cfg.train.backbones[0]}, {size}px, batch {batch}): {train_rate:8.1f} images/s")
    print(f"ratio input / training: {input_rate / train_rate:.1f}x (target >= 3x)")
    return 0


def _converter(spark, lake, train_cfg, n: int, size: int):
    from petastorm.spark import SparkDatasetConverter, make_spark_converter

    spark.conf.set(
        SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF,
        train_cfg.petastorm_cache_dir or f"file://{lake.root}/_petastorm",
    )
    rng = np.random.default_rng(0)
    rows = [(bytearray(rng.integers(0, 255, size * size * 3, dtype=np.uint8).tobytes()), int(i % 4)) for i in range(n)]
    frame = spark.createDataFrame(rows, "image binary, label int").repartition(4)
    return make_spark_converter(frame)


def _input_rate(converter, size: int, batch: int, n: int) -> float:
    """Images/s through the same decode/shuffle/batch pipeline the ranks use (``training.rank._prepare``)."""
    from allmtl_spark.training.rank import RankJob, _prepare

    job = RankJob(
        stage_key="bench",
        backbone="",
        input_size=size,
        class_names=("a", "b", "c", "d"),
        head="",
        dense_units=(),
        dropout=0.0,
        init_weights=None,
        load_head=False,
        trainable="all",
        warmup_epochs=0,
        epochs=1,
        keep_weights="last",
        batch_size=batch,
        learning_rate=0.0,
        decay_rate=1.0,
        n_train=n,
        n_val=0,
        checkpoint_dir="",
        output_dir="",
        train_converter=None,
        val_images=None,
        val_labels=None,
    )
    with converter.make_tf_dataset(batch_size=batch, num_epochs=None, workers_count=1) as dataset:
        batches = iter(_prepare(dataset, job, binary=False, shuffle=True))
        next(batches)  # reader start-up is not throughput
        started, seen = time.time(), 0
        while seen < 2 * n:
            images, _ = next(batches)
            seen += int(images.shape[0])
        return seen / (time.time() - started)


def _train_rate(train_cfg, size: int, batch: int, steps: int) -> float:
    import tensorflow as tf

    from allmtl_spark.networks.classifier import build_classifier

    model = build_classifier(
        train_cfg.backbones[0],
        input_size=size,
        num_outputs=4,
        head="dense",
        dense_units=train_cfg.head_dense_units,
        dropout=train_cfg.head_dropout,
    )
    model.compile(optimizer=tf.keras.optimizers.legacy.Adam(1e-3), loss="sparse_categorical_crossentropy")
    images = tf.random.uniform((batch, size, size, 3), 0, 255)
    labels = tf.random.uniform((batch,), 0, 4, dtype=tf.int32)
    model.train_on_batch(images, labels)  # graph build is not throughput
    started = time.time()
    for _ in range(steps):
        model.train_on_batch(images, labels)
    return steps * batch / (time.time() - started)
