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
    from allmtl_spark.training.rank import weights_checkpoint

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
    weights_checkpoint(fresh, resumed_epoch).restore(manager.latest_checkpoint).expect_partial()
    assert int(resumed_epoch.numpy()) == 3
    for restored, expected in zip(fresh.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(restored, expected)
