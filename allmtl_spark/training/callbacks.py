"""Keras callbacks of a training rank: per-epoch checkpoint (with history), one summary line, BatchNorm
statistics averaged over ranks, and the best epoch's weights kept."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable

import tensorflow as tf

from allmtl_spark.training.rank import BEST_RECORD_FILE, HISTORY_FILE, load_history


def write_json(path: str, data) -> None:
    """Write ``data`` as JSON through a temporary file, so a killed rank never leaves half a file."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as handle:
        json.dump(data, handle)
    os.replace(tmp, path)


class EpochCheckpoint(tf.keras.callbacks.Callback):
    """Save the weights and the completed-epoch count after every epoch.

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
        write_json(os.path.join(self.manager.directory, HISTORY_FILE), history)


class EpochLine(tf.keras.callbacks.Callback):
    """Print ``[stage] epoch i/n loss=... accuracy=... val_... (s, img/s)`` once per epoch."""

    def __init__(self, stage_key: str, epochs: int, n_train: int):
        super().__init__()
        self.stage_key, self.epochs, self.n_train = stage_key, epochs, n_train
        self.started = time.time()
        self.seconds: list[float] = []  # wall time of every epoch this process ran (validation included)

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.time() - self.started
        self.seconds.append(seconds)
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


class BestEpoch(tf.keras.callbacks.Callback):
    """Remember the epoch with the lowest ``monitor`` (validation loss) and give its weights back at the end.

    With a few dozen validation images the last epoch is often not the best one: the validation
    loss of the demo's stages moves by 2-3x between neighbouring epochs. Runs on every rank after
    ``MetricAverageCallback``, so all ranks see the same averaged value and agree on the epoch;
    rank 0 writes that epoch's weights to ``best.weights.h5`` with ``best.json`` beside the
    checkpoints, so a resumed stage still knows its best epoch.
    """

    WEIGHTS, RECORD = "best.weights.h5", BEST_RECORD_FILE

    def __init__(self, folder: str, is_root: bool, monitor: str = "val_loss"):
        super().__init__()
        self.folder, self.is_root, self.monitor = folder, is_root, monitor
        self.best = self.load_record(folder)

    @classmethod
    def load_record(cls, folder: str) -> dict | None:
        path = os.path.join(folder, cls.RECORD)
        if not os.path.isfile(path):
            return None
        with open(path) as handle:
            return json.load(handle)

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(value):
            return
        if self.best is not None and value >= self.best["value"]:
            return
        self.best = {"epoch": epoch + 1, "monitor": self.monitor, "value": float(value)}
        if self.is_root:
            os.makedirs(self.folder, exist_ok=True)
            tmp = os.path.join(self.folder, "best.tmp.weights.h5")
            self.model.save_weights(tmp)
            os.replace(tmp, os.path.join(self.folder, self.WEIGHTS))
            write_json(os.path.join(self.folder, self.RECORD), self.best)

    def restore(self, model, broadcast: Callable[[list], None]) -> dict | None:
        """Load the best epoch's weights into ``model`` on rank 0 and ``broadcast`` them to every rank.

        ``broadcast(variables)`` is Horovod's ``broadcast_variables(variables, root_rank=0)`` (a
        collective: every rank calls it). Returns the best record, or None when no epoch reported
        the monitored value (the model keeps its last weights).
        """
        if self.best is None:
            return None
        if self.is_root:
            model.load_weights(os.path.join(self.folder, self.WEIGHTS))
        broadcast(model.variables)
        return self.best
