"""The best-epoch keeper on a real (tiny) Keras model; the 2-rank broadcast is covered by test_horovod."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.unit


def _tiny_model():
    import tensorflow as tf

    inputs = tf.keras.Input((3,))
    return tf.keras.Model(inputs, tf.keras.layers.Dense(2)(tf.keras.layers.BatchNormalization()(inputs)))


def _epoch(model, keeper, epoch: int, val_loss: float) -> list[np.ndarray]:
    """Move the weights as an epoch of training would, then report the epoch's validation loss."""
    model.set_weights([w + epoch + 1 for w in model.get_weights()])
    keeper.on_epoch_end(epoch, {"loss": 1.0, "val_loss": val_loss})
    return [w.copy() for w in model.get_weights()]


def test_keeps_the_lowest_validation_loss_epoch_and_restores_it(tmp_path):
    from allmtl_spark.training.callbacks import BestEpoch

    model = _tiny_model()
    keeper = BestEpoch(str(tmp_path), is_root=True)
    keeper.set_model(model)
    after = [_epoch(model, keeper, e, loss) for e, loss in enumerate([0.9, 0.4, float("nan"), 0.7])]
    broadcasts = []
    record = keeper.restore(model, broadcasts.append)
    assert record == {"epoch": 2, "monitor": "val_loss", "value": 0.4}
    for restored, expected in zip(model.get_weights(), after[1], strict=True):  # BatchNorm moving statistics included
        np.testing.assert_array_equal(restored, expected)
    assert len(broadcasts) == 1 and len(broadcasts[0]) == len(model.variables)


def test_a_resumed_stage_remembers_the_best_epoch_of_the_interrupted_attempt(tmp_path):
    from allmtl_spark.training.callbacks import BestEpoch

    model = _tiny_model()
    first = BestEpoch(str(tmp_path), is_root=True)
    first.set_model(model)
    best_weights = _epoch(model, first, 0, 0.3)
    resumed = BestEpoch(str(tmp_path), is_root=True)  # a new process after the kill
    resumed.set_model(model)
    _epoch(model, resumed, 1, 0.5)  # worse: not kept
    assert resumed.restore(model, lambda variables: None)["epoch"] == 1
    for restored, expected in zip(model.get_weights(), best_weights, strict=True):
        np.testing.assert_array_equal(restored, expected)


def test_non_root_ranks_write_nothing_and_no_value_keeps_the_last_weights(tmp_path):
    from allmtl_spark.training.callbacks import BestEpoch

    model = _tiny_model()
    keeper = BestEpoch(str(tmp_path), is_root=False)
    keeper.set_model(model)
    _epoch(model, keeper, 0, 0.2)
    assert not list(tmp_path.iterdir())
    silent = BestEpoch(str(tmp_path / "other"), is_root=True)
    silent.set_model(model)
    silent.on_epoch_end(0, {"loss": 1.0})  # no validation this epoch
    assert silent.restore(model, lambda variables: None) is None


def test_epoch_checkpoint_holds_the_weights_not_the_optimizer_and_restores_them(tmp_path):
    import tensorflow as tf

    from allmtl_spark.training.callbacks import EpochCheckpoint
    from allmtl_spark.training.rank import restore_weights_checkpoint, weights_checkpoint

    model = _tiny_model()
    model.compile(tf.keras.optimizers.legacy.Adam(0.01), "mse")
    model.fit(np.ones((8, 3)), np.zeros((8, 2)), epochs=1, verbose=0)  # Adam now has its slots
    epoch = tf.Variable(0, dtype=tf.int64)
    manager = tf.train.CheckpointManager(weights_checkpoint(model, epoch), str(tmp_path), max_to_keep=2)
    EpochCheckpoint(manager, epoch).on_epoch_end(2, {"loss": 0.5})
    saved = [name for name, _ in tf.train.list_variables(manager.latest_checkpoint)]
    assert not [name for name in saved if "optimizer" in name.lower()]
    assert len([name for name in saved if name.startswith("weights/")]) == len(model.weights)

    fresh, resumed_epoch = _tiny_model(), tf.Variable(0, dtype=tf.int64)
    restore_weights_checkpoint(fresh, resumed_epoch, manager.latest_checkpoint)
    assert int(resumed_epoch.numpy()) == 3
    for restored, expected in zip(fresh.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(restored, expected)


def test_a_checkpoint_of_the_older_whole_model_layout_still_restores_every_weight(tmp_path):
    import tensorflow as tf

    from allmtl_spark.training.rank import restore_weights_checkpoint

    model = _tiny_model()
    model.compile(tf.keras.optimizers.legacy.Adam(0.01), "mse")
    model.fit(np.ones((8, 3)), np.zeros((8, 2)), epochs=1, verbose=0)
    path = tf.train.Checkpoint(model=model, epoch=tf.Variable(4, dtype=tf.int64)).save(str(tmp_path / "ckpt"))

    fresh, resumed_epoch = _tiny_model(), tf.Variable(0, dtype=tf.int64)
    restore_weights_checkpoint(fresh, resumed_epoch, path)
    assert int(resumed_epoch.numpy()) == 4
    for restored, expected in zip(fresh.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(restored, expected)


def test_deleting_a_registered_stage_s_checkpoints_keeps_its_history_for_the_reports(tmp_path):
    from allmtl_spark.training.job import delete_checkpoints

    for name in ("ckpt-1.index", "ckpt-1.data-00000-of-00001", "checkpoint", "best.weights.h5"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "history.json").write_text('{"loss": [1.0]}')
    (tmp_path / "best.json").write_text('{"epoch": 1}')
    delete_checkpoints(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.json", "history.json"]
    delete_checkpoints(str(tmp_path / "missing"))  # a stage without checkpoints: nothing to do
