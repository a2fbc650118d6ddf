"""Training figures as PNGs: loss and accuracy per epoch (one panel per stage), and the inputs each task's
classifier sees (validation originals, a strip per class)."""

from __future__ import annotations

import math

import matplotlib
import numpy as np

matplotlib.use("Agg")  # headless servers and Spark drivers have no display
import matplotlib.pyplot as plt  # noqa: E402


def plot_training_curves(histories: dict[str, dict[str, list[float]]], path: str, title: str = "") -> str:
    """Write one row of panels per stage (loss, accuracy) to ``path``; returns ``path``.

    Args:
        histories: stage key -> Keras history (``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``).
        path: PNG file to write.
        title: figure title.
    """
    stages = [k for k, h in histories.items() if h]
    rows = max(1, len(stages))
    fig, axes = plt.subplots(rows, 2, figsize=(10, 2.6 * rows), squeeze=False)
    for row, key in enumerate(stages):
        history = histories[key]
        for col, metric in enumerate(("loss", "accuracy")):
            ax = axes[row][col]
            for name, style in ((metric, "-"), (f"val_{metric}", "--")):
                values = history.get(name, [])
                if values:
                    ax.plot(range(1, len(values) + 1), values, style, marker="o", label=name)
            ax.set_title(f"{key}: {metric}", fontsize=9)
            ax.set_xlabel("epoch")
            if metric == "accuracy":
                ax.set_ylim(0, 1.02)
            elif any(not math.isnan(v) for v in history.get("loss", [])):
                ax.set_yscale("log")
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def example_rows(images: np.ndarray, labels: np.ndarray, n_classes: int, per_class: int) -> list[np.ndarray]:
    """One strip per class: its first ``per_class`` images side by side (black where a class has fewer).

    Args:
        images: (n, size, size, 3) uint8 RGB classifier inputs.
        labels: (n,) class index of each image.
        n_classes: strips to make (class 0 first).
        per_class: images per strip.

    Returns:
        ``n_classes`` arrays of shape (size, per_class * size, 3) uint8.
    """
    images, labels = np.asarray(images), np.asarray(labels)
    size = images.shape[1]
    rows = []
    for cls in range(n_classes):
        row = np.zeros((size, per_class * size, 3), np.uint8)
        for slot, image in enumerate(images[labels == cls][:per_class]):
            row[:, slot * size : (slot + 1) * size] = image
        rows.append(row)
    return rows


def plot_example_inputs(
    sets: dict[str, tuple[np.ndarray, np.ndarray, tuple[str, ...]]], path: str, per_class: int = 8
) -> str:
    """Write the classifier inputs of each task (one panel per task, one strip per class) to ``path``.

    Args:
        sets: task -> (images (n, size, size, 3) uint8, labels (n,), class names).
        path: PNG file to write.
        per_class: images shown per class.
    """
    panels = [(task, example_rows(x, y, len(names), per_class), names) for task, (x, y, names) in sets.items()]
    rows = sum(len(strips) for _, strips, _ in panels)
    fig, axes = plt.subplots(max(1, rows), 1, figsize=(per_class * 1.2, 1.35 * max(1, rows)), squeeze=False)
    row = 0
    for task, strips, names in panels:
        for name, strip in zip(names, strips, strict=True):
            ax = axes[row][0]
            ax.imshow(strip, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_ylabel(f"{task}\n{name}", fontsize=7, rotation=0, ha="right", va="center")
            row += 1
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # tight_layout leaves horizontal row labels cut at the left
    plt.close(fig)
    return path
