"""Artifacts load from the bytes their hash was checked on: a file swapped after the check is never loaded.

Each test serves the artifact through a named pipe (FIFO) that hands out the genuine bytes on the first
open and another model's on any later one: hashing a path and then opening it again to load it would
load the other model (or fail); reading once, hashing, and loading those bytes loads the genuine one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from allmtl_spark.checksums import read_verified, verified_copy
from allmtl_spark.errors import ArtifactError

pytestmark = pytest.mark.unit


def _model_bytes(tmp_path, seed: int, fully_convolutional: bool = False) -> bytes:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    shape = (None, None, 3) if fully_convolutional else (16, 16, 3)
    layers = [tf.keras.Input(shape), tf.keras.layers.Conv2D(4, 3, padding="same", activation="relu")]
    if fully_convolutional:
        layers += [tf.keras.layers.Conv2D(1, 1, activation="sigmoid")]
    else:
        layers += [tf.keras.layers.GlobalAveragePooling2D(), tf.keras.layers.Dense(3, activation="softmax")]
    path = tmp_path / f"m{seed}-{fully_convolutional}.h5"
    tf.keras.Sequential(layers).save(path, save_format="h5")
    return path.read_bytes()


class SwappingPipe:
    """A FIFO at ``path`` that serves ``genuine`` to the first reader and ``other`` to every later one."""

    def __init__(self, path, genuine: bytes, other: bytes):
        self.path, self.opens = str(path), 0
        os.mkfifo(self.path)
        self._payloads = [genuine, other, other]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        for data in self._payloads:
            try:
                with open(self.path, "wb") as handle:  # blocks until a reader opens the pipe
                    self.opens += 1
                    handle.write(data)
            except OSError:  # the reader went away (a broken pipe) or the test is over
                pass
            # the reader sees the end of the file only while no writer has the pipe open: let it
            time.sleep(1.0)

    def close(self) -> None:
        for _ in range(len(self._payloads)):  # unblock the server
            with contextlib.suppress(OSError):
                os.close(os.open(self.path, os.O_RDONLY | os.O_NONBLOCK))


@pytest.fixture
def pipe(tmp_path):
    made = []

    def make(name, genuine, other):
        made.append(SwappingPipe(tmp_path / name, genuine, other))
        return made[-1]

    yield make
    for p in made:
        p.close()


def test_a_classifier_loads_the_bytes_that_were_checked(tmp_path, pipe):
    from allmtl_spark.checksums import load_keras
    from allmtl_spark.scoring.predict import make_classifier_fn
    from allmtl_spark.segmentation.predict import clear_cache

    genuine, other = _model_bytes(tmp_path, 1), _model_bytes(tmp_path, 2)
    served = pipe("model.h5", genuine, other)
    clear_cache()
    classify = make_classifier_fn(served.path, hashlib.sha256(genuine).hexdigest())
    images = np.random.default_rng(0).integers(0, 255, (2, 16, 16, 3)).astype(np.uint8)
    expected = load_keras(genuine).predict(images.astype(np.float32), verbose=0)
    assert np.allclose(classify(images), expected, atol=1e-6)
    assert served.opens == 1


def test_a_segmenter_loads_the_bytes_that_were_checked(tmp_path, pipe):
    from allmtl_spark.segmentation.predict import clear_cache, make_predict_fn

    genuine, other = _model_bytes(tmp_path, 3, True), _model_bytes(tmp_path, 4, True)
    served = pipe("unet.h5", genuine, other)
    clear_cache()
    predict = make_predict_fn(served.path, hashlib.sha256(genuine).hexdigest(), spec_sha256=None)
    assert predict(np.zeros((8, 8, 3), np.uint8)).shape == (8, 8)
    assert served.opens == 1


def test_the_registry_loads_the_bytes_that_were_checked(tmp_path, pipe):
    from allmtl_spark.registry import ModelRecord, load_verified_model

    folder = tmp_path / "v1"
    folder.mkdir()
    genuine, other = _model_bytes(tmp_path, 5), _model_bytes(tmp_path, 6)
    served = pipe("v1/model.h5", genuine, other)
    record = ModelRecord("v1", "r", "classifier", "stage3", "fab4", ["a", "b", "c"], str(folder),
                         hashlib.sha256(genuine).hexdigest(), "{}")  # fmt: skip
    weights = load_verified_model(record).get_weights()
    from allmtl_spark.checksums import load_keras

    assert all(np.array_equal(a, b) for a, b in zip(weights, load_keras(genuine).get_weights(), strict=True))
    assert served.opens == 1


def test_verified_copy_is_private_and_gone_afterwards(tmp_path):
    source = tmp_path / "w.h5"
    source.write_bytes(b"weights")
    with verified_copy(str(source), hashlib.sha256(b"weights").hexdigest(), "w") as copy:
        assert Path(copy).read_bytes() == b"weights" and copy != str(source)
        assert (os.stat(os.path.dirname(copy)).st_mode & 0o077) == 0
    assert not os.path.exists(copy)
    with pytest.raises(ArtifactError, match="corrupted or was replaced"):
        read_verified(str(source), "0" * 64, "w")


def test_stage3_refuses_stage2_weights_that_are_not_the_registered_ones(tmp_path):
    import tensorflow as tf

    from allmtl_spark.networks.classifier import build_classifier
    from allmtl_spark.training.rank import RankJob, _build

    stage2 = tmp_path / "model.h5"
    build_classifier("InceptionV3", input_size=75, num_outputs=1, head="simple").save(stage2, save_format="h5")
    registered = hashlib.sha256(stage2.read_bytes()).hexdigest()
    job = RankJob(
        "stage3-binary-mtl", "InceptionV3", 75, ("normal", "ALL"), "dense", (8,), 0.1, str(stage2), False, "all",
        0, 1, "last", 2, 0.001, 0.9, 2, 2, str(tmp_path / "ckpt"), str(tmp_path / "out"), None, None, None,
        init_weights_sha256=registered,
    )  # fmt: skip
    assert isinstance(_build(job), tf.keras.Model)
    with open(stage2, "r+b") as handle:  # replaced after registration
        handle.seek(-64, os.SEEK_END)
        handle.write(b"\0" * 64)
    with pytest.raises(ArtifactError, match="initial weights artifact .* corrupted or was replaced"):
        _build(job)
