"""Keras callbacks that rank 0 adds: per-epoch checkpoint (with history) and one summary line."""

from __future__ import annotations

import json
import os
import time

import tensorflow as tf

from allmtl_spark.training.rank import load_history


class EpochCheckpoint(tf.keras.callbacks.Callback):
    """Save weights, optimizer state and the completed-epoch count after every epoch.

    The Keras history so far goes to ``history.json`` beside the checkpoints, so a resumed stage
    still reports (and plots) its whole curve.
    """

    def __init__(self, manager: tf.train.CheckpointManager, epoch_var: tf.Variable):
        super().__init__()
        self.manager = manager
        self.epoch_var = epoch_var

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_var.assign(epoch + 1)
        self.manager.save(checkpoint_number=epoch + 1)
        history = load_history(self.manager.directory)
        for key, value in (logs or {}).items():
            history.setdefault(key, [])[epoch:] = [float(value)]
        tmp = os.path.join(self.manager.directory, "history.json.tmp")
        with open(tmp, "w") as handle:
            json.dump(history, handle)
        os.replace(tmp, os.path.join(self.manager.directory, "history.json"))


class EpochLine(tf.keras.callbacks.Callback):
    """Print ``[stage] epoch i/n loss=... accuracy=... val_... (s, img/s)`` once per epoch."""

    def __init__(self, stage_key: str, epochs: int, n_train: int):
        super().__init__()
        self.stage_key, self.epochs, self.n_train = stage_key, epochs, n_train
        self.started = time.time()

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.time() - self.started
        fields = " ".join(f"{k}={v:.4f}" for k, v in sorted((logs or {}).items()) if k != "lr")
        print(
            f"[{self.stage_key}] epoch {epoch + 1}/{self.epochs} {fields} "
            f"({seconds:.0f}s, {self.n_train / max(seconds, 1e-6):.1f} img/s)",
            flush=True,
        )


class AverageBatchNormStatistics(tf.keras.callbacks.Callback):
    """Average the BatchNorm moving mean/variance over all ranks after every epoch.

    Horovod averages gradients, so trainable weights stay identical across ranks, but each rank
    updates its BatchNorm moving statistics from its own shard only. Averaging them makes the
    saved model's inference statistics cover all the data and leaves every rank with the same
    weights. Runs on every rank (it is a collective operation).
    """

    def __init__(self, hvd):
        super().__init__()
        self.hvd = hvd

    def on_epoch_end(self, epoch, logs=None):
        for layer in self.model.layers:
            if isinstance(layer, tf.keras.layers.BatchNormalization):
                for variable in (layer.moving_mean, layer.moving_variance):
                    variable.assign(self.hvd.allreduce(variable, average=True, name=variable.name))
