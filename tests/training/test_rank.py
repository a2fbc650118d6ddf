"""The rank's training stream: a run's seed gives one order of row groups, whatever else uses numpy; untuned tf.data."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from petastorm import make_batch_reader

from allmtl_spark.training.rank import reader_seed


def _row_group_order(url: str, seed: int, global_numpy_seed: int) -> list[int]:
    # the rank's reader settings (training/rank.py): endless, one worker; two passes over the six
    # row groups, with numpy's global generator in another state each time
    np.random.seed(global_numpy_seed)
    with make_batch_reader(url, seed=seed, workers_count=1, num_epochs=None, shuffle_row_groups=True) as reader:
        return [int(batch.file_index[0]) for batch in itertools.islice(reader, 12)]


def test_seed_zero_still_orders_row_groups_reproducibly(tmp_path):
    # Petastorm takes seed 0 as "no seed" and shuffles with numpy's global generator, whose state
    # depends on what else ran; the demo's train.seed is 0 (see reader_seed).
    for index in range(6):  # one row group per file, like the converter's files
        pq.write_table(pa.table({"file_index": [index] * 4}), tmp_path / f"part-{index:05d}.parquet")
    url = f"file://{tmp_path}"
    orders = [_row_group_order(url, reader_seed(0), global_numpy_seed) for global_numpy_seed in (1, 2, 3)]
    assert orders[0] == orders[1] == orders[2]
    assert sorted(orders[0][:6]) == list(range(6)) and orders[0][:6] != list(range(6))  # shuffled, each group once
    assert reader_seed(0) != 0 and reader_seed(1) != reader_seed(0)


def test_training_stream_is_untuned_and_decodes_every_image_once():
    # Autotuning off (rank.stream_options: deleting an autotuned iterator when fit returns could wait for a
    # tf.data thread); one pass of the stream still yields every image once, decoded, with its label.
    import collections

    import tensorflow as tf

    from allmtl_spark.training.rank import RankJob, _prepare

    Batch = collections.namedtuple("Batch", ["image", "label"])  # Petastorm's batches are namedtuples
    size, n = 4, 6
    images = (np.arange(n * size * size * 3) % 251).astype(np.uint8).reshape(n, size, size, 3)
    raw = tf.data.Dataset.from_tensor_slices(Batch(tf.constant([i.tobytes() for i in images]), tf.range(n))).batch(3)
    fields = dict(backbone="", class_names=("a", "b"), head="", dense_units=(), dropout=0.0, init_weights=None)
    fields |= dict(load_head=False, trainable="all", warmup_epochs=0, epochs=1, keep_weights="last")
    fields |= dict(learning_rate=0.0, decay_rate=1.0, n_train=n, n_val=0, checkpoint_dir="", output_dir="")
    job = RankJob(
        "s", input_size=size, batch_size=4, train_converter=None, val_images=None, val_labels=None, threads=2, **fields
    )
    stream = _prepare(raw, job, binary=False, shuffle=True)
    assert stream.options().autotune.enabled is False
    seen = list(stream.unbatch().as_numpy_iterator())
    assert sorted(int(label) for _, label in seen) == list(range(n))
    for image, label in seen:
        assert image.dtype == np.float32 and np.array_equal(image, images[label].astype(np.float32))
