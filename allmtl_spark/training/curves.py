"""Training curves as a PNG: loss and accuracy per epoch, train and validation, one panel per stage."""

from __future__ import annotations

import math

import matplotlib

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
