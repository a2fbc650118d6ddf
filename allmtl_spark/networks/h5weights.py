"""Read and check Keras 2 HDF5 weight files (what ``model.save_weights("x.h5")`` and keras' ImageNet files are).

Keras loads such files by topology: the n-th layer that has weights in the file goes into the n-th
layer that has weights in the model. Its own errors name neither the file nor, for a layer-count
mismatch, any shapes, and a file from the wrong backbone is caught only at the first layer whose
shapes happen to differ. So we read the file's layout first (names and shapes only, no arrays) and
compare it with the model, to fail with the file name and the expected and found shapes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import tensorflow as tf

# keras 2.15 sends these suffixes to its new (Keras 3 style) format, which has another layout.
_NEW_FORMAT_SUFFIXES = (".weights.h5", ".keras")


@dataclass(frozen=True)
class WeightGroup:
    """One layer that holds weights: its name and the shapes of its weights, in storage order."""

    name: str
    shapes: tuple[tuple[int, ...], ...]


def _attr_names(group: h5py.Group, key: str) -> list[str]:
    # Keras splits long attribute lists into key0, key1, ... (HDF5 header size limit).
    if key in group.attrs:
        values = list(group.attrs[key])
    else:
        values, i = [], 0
        while f"{key}{i}" in group.attrs:
            values.extend(group.attrs[f"{key}{i}"])
            i += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _weights_root(handle: h5py.File, path: Path) -> h5py.Group:
    # A full-model file (model.save("x.h5")) keeps the weights under "model_weights".
    root = handle["model_weights"] if "layer_names" not in handle.attrs and "model_weights" in handle else handle
    if not _attr_names(root, "layer_names"):
        raise ValueError(f"{path} is not a Keras 2 HDF5 weights file (no 'layer_names'); write it with save_weights")
    return root


def check_weights_path(path: str | os.PathLike) -> Path:
    """Return ``path`` as a Path if it names an existing Keras 2 HDF5 file, else raise.

    Raises:
        FileNotFoundError: the file does not exist (the message names it).
        ValueError: the name ends in ``.weights.h5`` or ``.keras`` (keras 2.15 reads those in its
            other format) or in neither ``.h5`` nor ``.hdf5``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.name.endswith(_NEW_FORMAT_SUFFIXES) or path.suffix not in (".h5", ".hdf5"):
        raise ValueError(f"weights file {path} must be a Keras 2 HDF5 file named *.h5 (save_weights('name.h5'))")
    return path


def file_layout(path: str | os.PathLike) -> list[WeightGroup]:
    """The layers with weights stored in an HDF5 weights or model file, in file (topological) order."""
    path = Path(path)
    with h5py.File(path, "r") as handle:
        root = _weights_root(handle, path)
        groups = []
        for name in _attr_names(root, "layer_names"):
            weight_names = _attr_names(root[name], "weight_names")
            if weight_names:
                groups.append(WeightGroup(name, tuple(tuple(root[name][w].shape) for w in weight_names)))
    return groups


def layer_layout(layers: Sequence[tf.keras.layers.Layer]) -> list[WeightGroup]:
    """The same description for model layers (only those with weights), in the given order."""
    return [WeightGroup(la.name, tuple(tuple(w.shape) for w in la.weights)) for la in layers if la.weights]


def check_layout(expected: list[WeightGroup], found: list[WeightGroup], path: Path, target: str) -> None:
    """Raise ``ValueError`` naming the file and the first difference if ``found`` cannot load into ``expected``."""
    for i, (want, have) in enumerate(zip(expected, found, strict=False)):  # lengths are compared below
        if want.shapes != have.shapes:
            raise ValueError(
                f"weights file {path} does not fit {target}: weight layer #{i} expected shapes "
                f"{list(want.shapes)} (model layer {want.name!r}), found {list(have.shapes)} (file layer "
                f"{have.name!r}); the model has {len(expected)} layers with weights, the file {len(found)}"
            )
    if len(expected) != len(found):
        raise ValueError(
            f"weights file {path} does not fit {target}: expected {len(expected)} layers with weights "
            f"(last expected shapes {list(expected[-1].shapes) if expected else []}), found {len(found)} "
            f"(last found shapes {list(found[-1].shapes) if found else []})"
        )


def assign_from_file(layers: Sequence[tf.keras.layers.Layer], path: Path, groups: Sequence[WeightGroup]) -> None:
    """Copy the arrays of file ``groups`` into the layers with weights of ``layers``, pairwise in order.

    Used when only part of a file is wanted (the backbone of a classifier file): keras' own loader
    always takes a whole file. Call :func:`check_layout` first.
    """
    targets = [la for la in layers if la.weights]
    with h5py.File(path, "r") as handle:
        root = _weights_root(handle, path)
        for layer, group in zip(targets, groups, strict=True):
            names = _attr_names(root[group.name], "weight_names")
            layer.set_weights([np.asarray(root[group.name][w]) for w in names])
