"""What every Horovod rank runs for one stage: build, restore, fit on its Petastorm shard, save.

``horovod.spark.run(train_ranks, args=(jobs,), num_proc=N)`` starts N Spark tasks once per training
run; each trains the run's stages in order (:func:`train_rank` per stage), so TensorFlow, Horovod and
Gloo start once, not once per stage. Rank r reads shard r of the Petastorm dataset; gradients are
averaged by the ``DistributedOptimizer`` over Gloo (CPU) or NCCL (GPU); rank 0 alone writes
checkpoints, the final model and the epoch log lines.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RankJob:
    """Everything a rank needs for one stage (pickled to the Spark tasks)."""

    stage_key: str
    backbone: str
    input_size: int
    class_names: tuple[str, ...]
    head: str
    dense_units: tuple[int, ...]
    dropout: float
    init_weights: str | None  # None, "imagenet", or a .h5 file
    load_head: bool
    trainable: str
    warmup_epochs: int
    epochs: int
    keep_weights: str  # best (lowest validation loss) | last
    batch_size: int
    learning_rate: float
    decay_rate: float
    n_train: int
    n_val: int
    checkpoint_dir: str
    output_dir: str
    train_converter: Any
    val_images: Any  # (n, size, size, 3) uint8: the validation part's originals, sent with the job
    val_labels: Any  # (n,) class index
    threads: int = 1
    shuffle_buffer: int = 256
    seed: int = 0
    batchnorm_momentum: float | None = None
    imagenet_base_url: str | None = None
    weights_cache_dir: str | None = None
    freeze_batchnorm: bool = False  # BatchNorm layers keep their moving statistics and scale/offset
    scale_by_ranks: bool = True  # learning rate x ranks (see TrainConfig.scale_learning_rate_by_ranks)
    deterministic: bool = True  # TensorFlow op determinism: same seed, same weights (slower kernels on GPU)
    spec: dict = field(default_factory=dict)  # written into model.json
    test_images: Any = None  # the test part's originals (uint8), scored by rank 0; None: never read
    init_weights_sha256: str | None = None  # a registered model's weights (stage 2 for MTL): checked before use
    # the stage of the same launch whose saved model this stage starts from (multistage stage 3 after its
    # stage 2): its file and rank 0's hash of it replace init_weights / init_weights_sha256 in the rank
    init_from_stage: str | None = None


def steps(n: int, batch_size: int, ranks: int) -> int:
    """Steps per epoch so that all ranks together see every example about once."""
    return max(1, math.ceil(n / (batch_size * ranks)))


def reader_seed(seed: int) -> int:
    """The Petastorm reader's seed for a run's ``train.seed``: never 0.

    Petastorm treats seed 0 like no seed and orders the row groups with numpy's global generator
    (``ConcurrentVentilator._ventilate``), drawn from its ventilator thread at a moment that depends on
    thread timing; the demo's default is ``train.seed: 0``. ``train.seed`` is >= 0 (checked with the config).
    """
    return seed + 1


def seed_everything(seed: int, threads: int, deterministic: bool) -> None:
    """Seed Python, numpy and TensorFlow and (optionally) make TensorFlow's ops deterministic.

    Must run before the first TensorFlow op of the process. With ``deterministic`` the same seed gives
    the same weights and metrics to the last digit on one rank: op determinism picks deterministic
    kernels (and fails loudly on ops that have none), and the thread counts are fixed.
    """
    import tensorflow as tf

    # Thread counts can only be set before TensorFlow's runtime starts: a later stage of the same
    # launch finds them set already (and setting them again would raise).
    if tf.config.threading.get_intra_op_parallelism_threads() != threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, threads))
    tf.keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def train_ranks(jobs: list[RankJob]) -> list[dict]:
    """Train a run's stages in order in this one rank process; one :func:`train_rank` result per job.

    A stage with ``init_from_stage`` starts from the model an earlier job of the list saved: every rank
    waits for rank 0's hash of that file (a broadcast, so the file is written before anyone reads it)
    and loads it checked against that hash. Keras' session is cleared between stages, so each stage
    builds its model exactly as a fresh process would (same layer names, same seeded initial weights).
    """
    from dataclasses import replace

    import horovod.tensorflow as hvd_tf
    import tensorflow as tf

    from allmtl_spark.registry import MODEL_FILE

    hvd_tf.init()
    saved: dict[str, tuple[str, str]] = {}
    results = []
    for job in jobs:
        if job.init_from_stage:
            path, sha = saved[job.init_from_stage]
            job = replace(job, init_weights=path, init_weights_sha256=sha, load_head=False)
        tf.keras.backend.clear_session()
        result = train_rank(job)
        sha = hvd_tf.broadcast_object(result.get("sha256"), root_rank=0, name=f"saved.{job.stage_key}")
        saved[job.stage_key] = (os.path.join(job.output_dir, MODEL_FILE), sha)
        results.append(result)
    tf.keras.backend.clear_session()
    return results


def train_rank(job: RankJob) -> dict:
    """Train one stage on this rank; rank 0 returns the history, the saved artifact's hash and its timings."""
    from allmtl_spark.training.timing import PhaseTimer

    timer = PhaseTimer()
    import horovod.tensorflow.keras as hvd
    import tensorflow as tf

    from allmtl_spark import quiet
    from allmtl_spark.networks.freezing import set_trainable
    from allmtl_spark.training.callbacks import EpochLine

    quiet.install()  # a rank is a fresh process: petastorm's and Keras' notices would print again
    hvd.init()
    # One seed for every rank and stage: the backbone's initial weights are the same draw for the
    # stage-2 model and the classical stage-3 model (equal starting weights; rank 0's are broadcast).
    seed_everything(job.seed, job.threads, job.deterministic)
    timer.lap("rank imports")
    model = _build(job)
    init_digest = weights_digest(backbone_model(model))
    binary = len(job.class_names) == 2
    steps_per_epoch = steps(job.n_train, job.batch_size, hvd.size())
    loss = "binary_crossentropy" if binary else "sparse_categorical_crossentropy"
    manager, epoch_var = _checkpointing(job, model, hvd.rank() == 0)
    initial_epoch = int(epoch_var.numpy())
    best = _best_epoch(job, hvd.rank() == 0)
    timer.lap("build model")
    history: dict[str, list[float]] = {}
    # Training: an endless stream whose row-group order is seeded. Validation: the whole validation part
    # (its originals only: 75 px x 1,000 slides is 17 MB) comes with the job as arrays, the same ones
    # the driver scores the kept model on, and is scored in full after every epoch, so every item
    # counts exactly once per epoch on every rank and the kept epoch follows the model, not a shifting
    # window of repeats. (Re-reading a finite Petastorm stream each epoch stopped yielding after the
    # second pass; a Petastorm copy of the part only to read it back once cost a Spark write and a reader.)
    val_x, val_y = validation_arrays(job, binary)
    timer.lap("read validation")
    epoch_seconds: list[float] = []
    with job.train_converter.make_tf_dataset(
        batch_size=job.batch_size,
        cur_shard=hvd.rank(),
        shard_count=hvd.size(),
        num_epochs=None,
        workers_count=1,
        seed=reader_seed(job.seed),  # also the shard seed (petastorm deprecated shard_seed, which only repeated it)
    ) as train:
        train = _prepare(train, job, binary, shuffle=True)
        timer.lap("open training reader")
        for policy, start, end in _phases(job):
            if initial_epoch >= end:
                continue
            set_trainable(model, policy, train_batchnorm=not job.freeze_batchnorm)
            # A fresh optimizer per phase (trainable weights change); Horovod averages the gradients,
            # fp16 halves the bytes sent between ranks.
            optimizer = hvd.DistributedOptimizer(
                tf.keras.optimizers.legacy.Adam(job.learning_rate), compression=hvd.Compression.fp16
            )
            model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
            callbacks = _callbacks(job, hvd, manager, epoch_var) + ([best] if best else [])
            fitted = model.fit(
                train,
                steps_per_epoch=steps_per_epoch,
                validation_data=(val_x, val_y),
                validation_batch_size=job.batch_size,
                epochs=end,
                initial_epoch=max(start, initial_epoch),
                callbacks=callbacks,
                verbose=0,  # rank 0's EpochLine prints the one line per epoch
            )
            epoch_seconds += [s for c in callbacks if isinstance(c, EpochLine) for s in c.seconds]
            for key, values in fitted.history.items():
                history.setdefault(key, []).extend(float(v) for v in values)
        timer.lap("fit outside epochs (compile, callbacks)", parts=epoch_phases(epoch_seconds))
    timer.lap("close training reader")
    kept = _keep_weights(model, best)
    digest = weights_digest(model)
    if hvd.rank() != 0:
        return {"rank": hvd.rank(), "weights_digest": digest}
    from allmtl_spark.registry import save_artifact

    sha = save_artifact(model, job.output_dir, {**job.spec, "kept_epoch": kept, "init_digest": init_digest})
    timer.lap("keep best + save")
    # The kept weights, just saved, score the validation and test parts here: the model is built and
    # traced already (loading model.h5 again in the driver cost a TensorFlow start and a model build).
    scores = {"val": predict_scores(model, job.val_images)}
    if job.test_images is not None and len(job.test_images):
        scores["test"] = predict_scores(model, job.test_images)
    timer.lap("score val/test")
    # history.json (written every epoch) also holds the epochs of an interrupted earlier attempt.
    full_history = load_history(job.checkpoint_dir) or history
    return {
        "rank": 0,
        "weights_digest": digest,
        "sha256": sha,
        "history": full_history,
        "initial_epoch": initial_epoch,
        "ranks": hvd.size(),
        "kept_epoch": kept,
        "init_digest": init_digest,
        "scores": scores,
        "timings": timer.phases,
        "rank_started": timer.started,
        "rank_ended": time.time(),
        "process": os.getpid(),  # the rank's process: one per run's launch, shared by its stages
    }


def predict_scores(model, images, batch_size: int = 32):
    """Class probabilities (n, k) from a sigmoid (n, 1) or softmax (n, k) classifier."""
    import numpy as np

    out = model.predict(np.asarray(images, dtype=np.float32), batch_size=batch_size, verbose=0)
    return np.concatenate([1.0 - out, out], axis=1) if out.shape[1] == 1 else out


def epoch_phases(epoch_seconds: list[float]) -> dict[str, float]:
    """The first epoch (graph tracing and reader warm-up included) apart from the others."""
    if not epoch_seconds:
        return {}
    return {"first epoch": epoch_seconds[0], f"epochs 2-{len(epoch_seconds)}": sum(epoch_seconds[1:])}


def weights_digest(model) -> str:
    """SHA-256 over all weights: equal on every rank when Horovod kept the replicas in sync."""
    import hashlib

    digest = hashlib.sha256()
    for array in model.get_weights():
        digest.update(array.tobytes())
    return digest.hexdigest()


def backbone_model(model):
    """The backbone part of a classifier (shares its weights): what equal starting weights compare."""
    from allmtl_spark.networks.classifier import backbone_of

    return backbone_of(model)


def _phases(job: RankJob) -> list[tuple[str, int, int]]:
    """(trainable policy, first epoch, end epoch) per phase: an optional head-only warm-up, then the rest."""
    if job.warmup_epochs:
        return [("head", 0, job.warmup_epochs), (job.trainable, job.warmup_epochs, job.epochs)]
    return [(job.trainable, 0, job.epochs)]


def learning_rate_at(epoch: int, base: float, ranks: int, decay_rate: float, scale_by_ranks: bool = True) -> float:
    """Exponential decay per epoch of the base rate, times the number of ranks when ``scale_by_ranks``
    (a function of the epoch alone, so a resumed run continues the schedule where it stopped)."""
    return base * (ranks if scale_by_ranks else 1) * decay_rate**epoch


def _callbacks(job: RankJob, hvd, manager, epoch_var) -> list:
    import tensorflow as tf

    schedule = tf.keras.callbacks.LearningRateScheduler(
        lambda epoch, _lr: learning_rate_at(epoch, job.learning_rate, hvd.size(), job.decay_rate, job.scale_by_ranks)
    )
    from allmtl_spark.training.callbacks import AverageBatchNormStatistics, EpochCheckpoint, EpochLine

    # Order matters: statistics are averaged before rank 0 checkpoints the epoch.
    callbacks = [
        hvd.callbacks.BroadcastGlobalVariablesCallback(0),
        hvd.callbacks.MetricAverageCallback(),
        schedule,
        AverageBatchNormStatistics(hvd),
    ]
    if hvd.rank() == 0:
        callbacks += [EpochCheckpoint(manager, epoch_var), EpochLine(job.stage_key, job.epochs, job.n_train)]
    return callbacks


def _best_epoch(job: RankJob, is_root: bool):
    """The :class:`BestEpoch` tracker of this stage, or None with ``keep_weights: last``."""
    if job.keep_weights != "best":
        return None
    from allmtl_spark.training.callbacks import BestEpoch

    return BestEpoch(job.checkpoint_dir, is_root)


def _keep_weights(model, best) -> dict | None:
    """Put the kept epoch's weights into ``model`` on every rank; returns its record, None for the last epoch."""
    if best is None:
        return None
    import horovod.tensorflow as hvd_tf

    return best.restore(model, lambda variables: hvd_tf.broadcast_variables(variables, root_rank=0))


def _build(job: RankJob):
    import contextlib

    from allmtl_spark.checksums import verified_copy
    from allmtl_spark.networks.classifier import build_classifier

    outputs = 1 if len(job.class_names) == 2 else len(job.class_names)
    with contextlib.ExitStack() as stack:
        weights = job.init_weights
        if job.init_weights_sha256:  # what loads is what the models table recorded, never a swapped file
            weights = stack.enter_context(verified_copy(weights, job.init_weights_sha256, "initial weights"))
        model = build_classifier(
            backbone=job.backbone,
            input_size=job.input_size,
            num_outputs=outputs,
            head=job.head,
            dense_units=job.dense_units,
            dropout=job.dropout,
            weights=weights,
            load_head=job.load_head,
            imagenet_base_url=job.imagenet_base_url,
            cache_dir=job.weights_cache_dir,
        )
    if job.batchnorm_momentum is not None:
        set_batchnorm_momentum(model, job.batchnorm_momentum)
    return model


def set_batchnorm_momentum(model, momentum: float) -> int:
    """Set the moving-average momentum of every BatchNormalization layer; returns how many."""
    import tensorflow as tf

    layers = [layer for layer in model.layers if isinstance(layer, tf.keras.layers.BatchNormalization)]
    for layer in layers:
        layer.momentum = momentum
    return len(layers)


def _prepare(dataset, job: RankJob, binary: bool, shuffle: bool):
    """Petastorm batches of raw bytes -> shuffled (image float32 0..255, label) batches (see ``stream_options``)."""
    import tensorflow as tf

    size = job.input_size

    def decode(batch):
        images = tf.io.decode_raw(batch.image, tf.uint8)
        images = tf.cast(tf.reshape(images, (-1, size, size, 3)), tf.float32)
        labels = tf.cast(batch.label, tf.float32 if binary else tf.int32)
        return images, labels

    dataset = dataset.map(decode, num_parallel_calls=max(1, job.threads)).unbatch()
    if shuffle:  # reshuffled continuously: every epoch sees a new order
        dataset = dataset.shuffle(job.shuffle_buffer, seed=job.seed)
    return dataset.batch(job.batch_size).prefetch(2).with_options(stream_options())


def stream_options():
    """``tf.data.Options`` of the training stream: autotuning off.

    Keras deletes the stream's iterator when ``fit`` returns, and an autotuned iterator's destructor
    could then wait many seconds for a tf.data thread (the runs behind this: docs/evaluation.md, "Why 20
    minutes"). The stream is a decode, a shuffle and a batch, far faster than a training step
    (``allmtl bench train``): a fixed parallelism (one map call per TensorFlow thread) and two
    prefetched batches serve it as well as tuning would.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def validation_arrays(job: RankJob, binary: bool):
    """The whole validation part as (images float32 0..255, labels) arrays, in the job's order."""
    import numpy as np

    if job.val_images is None or len(job.val_labels) == 0:
        raise ValueError(f"[{job.stage_key}] the validation part is empty; lower train.split.val_fraction's folds")
    labels = np.asarray(job.val_labels).astype(np.float32 if binary else np.int32)
    return np.asarray(job.val_images, dtype=np.float32), labels


def _checkpointing(job: RankJob, model, is_root: bool):
    """Restore the newest checkpoint of this stage if there is one (an interrupted run resumes).

    The checkpoint holds the weights and the completed-epoch count. Adam's moment estimates are
    not kept (each phase starts a fresh optimizer); the learning-rate schedule depends only on
    the epoch, so it continues where it stopped. The weights go in as a list, not as the model:
    a compiled model's checkpoint also carries the optimizer's two slots per weight, three times
    the bytes (270 MB a save for InceptionV3), written after every epoch and never read.
    """
    import tensorflow as tf

    epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="completed_epochs")
    checkpoint = weights_checkpoint(model, epoch_var)
    manager = tf.train.CheckpointManager(checkpoint, job.checkpoint_dir, max_to_keep=2)
    if manager.latest_checkpoint:
        restore_weights_checkpoint(model, epoch_var, manager.latest_checkpoint)
        if is_root:
            print(
                f"[{job.stage_key}] resuming from {manager.latest_checkpoint}: "
                f"{int(epoch_var.numpy())} epoch(s) already done",
                flush=True,
            )
    return manager, epoch_var


def weights_checkpoint(model, epoch_var):
    """A ``tf.train.Checkpoint`` of the model's weights (BatchNorm statistics included) and ``epoch_var``."""
    import tensorflow as tf

    return tf.train.Checkpoint(weights=list(model.weights), epoch=epoch_var)


def restore_weights_checkpoint(model, epoch_var, path: str) -> None:
    """Restore ``path`` into ``model`` and ``epoch_var``, also from the older whole-model layout.

    Checkpoints written before the weights-only layout hold ``model`` (with its optimizer); read
    into the new layout they would restore the epoch count but none of the weights, and the
    stage would go on from untrained weights. Every weight must match one way or the other.
    """
    import tensorflow as tf

    status = weights_checkpoint(model, epoch_var).restore(path).expect_partial()
    try:
        status.assert_existing_objects_matched()
    except AssertionError:
        legacy = tf.train.Checkpoint(model=model, epoch=epoch_var).restore(path).expect_partial()
        legacy.assert_existing_objects_matched()


HISTORY_FILE, BEST_RECORD_FILE = "history.json", "best.json"


def checkpoint_dir(models_root: str, run_id: str, stage_key: str) -> str:
    """Where a stage's checkpoints, ``history.json`` and best-epoch record live."""
    return os.path.join(models_root, "_checkpoints", run_id, stage_key)


def load_history(folder: str) -> dict:
    """The Keras history saved in a stage's checkpoint folder ({} when there is none)."""
    path = os.path.join(folder, HISTORY_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path) as handle:
        return json.load(handle)
