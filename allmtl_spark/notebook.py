"""Small helpers for ``notebooks/*.py``: the same notebook runs on Databricks and as a local script.

On Databricks the notebook's namespace holds ``dbutils``, ``display`` and ``displayHTML``; the helpers find them
in the IPython user namespace and use them. Anywhere else they fall back to stand-ins: widgets backed by a dict
with defaults, each overridable from ``ALLMTL_WIDGET_<NAME>``; tables printed; figures saved as PNG files under
``$ALLMTL_NOTEBOOK_FIGURES`` (default: a temp folder) with the path printed; HTML reports named by their path.

The notebooks only call library functions and these helpers: no logic lives in a notebook.
"""

from __future__ import annotations

import base64
import glob
import html
import os
import re
import tempfile
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from allmtl_spark import tables
from allmtl_spark.config import AppConfig, ConfigError, load_config

WIDGET_ENV_PREFIX = "ALLMTL_WIDGET_"
FIGURES_ENV = "ALLMTL_NOTEBOOK_FIGURES"
DEFAULT_CONFIG = "conf/demo.yaml"
REPORT_KINDS = ("evaluation", "score")  # folders under <lakehouse reports>/ holding <id>/index.html
# The column holding the run id, per table the notebooks show "rows of one run" of.
RUN_COLUMNS = {
    tables.MODELS.name: "run_id",
    tables.SLIDE_SCORES.name: "scoring_run_id",
    tables.SCORE_AGGREGATES.name: "scoring_run_id",
}


# ------------------------------------------------------------------------ Databricks or local


def databricks_namespace() -> Mapping[str, Any]:
    """The Databricks notebook's globals (``dbutils``, ``display``, ``displayHTML``), or {} anywhere else."""
    try:
        from IPython import get_ipython
    except ImportError:
        return {}
    namespace = getattr(get_ipython(), "user_ns", None) or {}
    return namespace if "dbutils" in namespace and "displayHTML" in namespace else {}


class LocalWidgets:
    """A ``dbutils.widgets`` stand-in: values are the defaults unless ``ALLMTL_WIDGET_<NAME>`` is set.

    Args:
        environ: where the overrides are looked up (default ``os.environ``).
    """

    def __init__(self, environ: Mapping[str, str] | None = None):
        self._environ = os.environ if environ is None else environ
        self._values: MutableMapping[str, str] = {}

    def _value(self, name: str, default: str) -> str:
        return self._environ.get(f"{WIDGET_ENV_PREFIX}{name.upper()}", default)

    # camelCase as in dbutils, so keyword calls written for Databricks work here too.
    def text(self, name: str, defaultValue: str, label: str | None = None) -> None:
        self._values[name] = self._value(name, defaultValue)

    def dropdown(self, name: str, defaultValue: str, choices: list[str], label: str | None = None) -> None:
        value = self._value(name, defaultValue)
        if value not in choices:
            raise ValueError(f"widget {name!r} is {value!r}; choices: {', '.join(choices)}")
        self._values[name] = value

    def get(self, name: str) -> str:
        if name not in self._values:
            raise ValueError(f"no widget named {name!r}; defined: {', '.join(sorted(self._values)) or 'none'}")
        return self._values[name]

    def remove(self, name: str) -> None:
        self._values.pop(name, None)

    def removeAll(self) -> None:
        self._values.clear()


def widgets():
    """``dbutils.widgets`` on Databricks, else a ``LocalWidgets`` driven by ``ALLMTL_WIDGET_*`` variables."""
    namespace = databricks_namespace()
    return namespace["dbutils"].widgets if namespace else LocalWidgets()


# ------------------------------------------------------------------------------------ config


def parse_overrides(text: str) -> list[str]:
    """``key=value`` overrides, one per line (or separated by ``;``); blank lines and ``#`` comments skipped."""
    parts = (part.strip() for line in (text or "").splitlines() for part in line.split(";"))
    return [part for part in parts if part and not part.startswith("#")]


def resolve_config_path(path: str) -> str:
    """A config path as given, or found in the working folder's parents (notebooks run in ``notebooks/``).

    Raises:
        ConfigError: no such file here or in any parent folder.
    """
    if os.path.isabs(path) or os.path.isfile(path):
        return path
    for folder in Path.cwd().parents:
        if (folder / path).is_file():
            return str(folder / path)
    raise ConfigError(f"config file {path} not found in {os.getcwd()} or its parent folders")


def config_from_widgets(w, widget_keys: Mapping[str, str] | None = None) -> AppConfig:
    """The app config from the ``config`` and ``overrides`` widgets, plus dotted keys set from other widgets.

    Args:
        w: the widgets (``dbutils.widgets`` or ``LocalWidgets``) with ``config`` and ``overrides`` defined.
        widget_keys: dotted config key -> widget name, e.g. ``{"score.model": "model"}``; empty widgets are skipped.

    Returns:
        The validated config, as ``allmtl <command> --config <config> --set ...`` would load it.
    """
    overrides = parse_overrides(w.get("overrides"))
    overrides += [f"{key}={w.get(name).strip()}" for key, name in (widget_keys or {}).items() if w.get(name).strip()]
    path = w.get("config").strip() or os.environ.get("ALLMTL_CONFIG") or DEFAULT_CONFIG
    return load_config(resolve_config_path(path), overrides)


def session(cfg: AppConfig):
    """The Spark session: Databricks' own (the active one), or a local one built from ``cfg.spark``."""
    from allmtl_spark.session import get_spark

    return get_spark(cfg.spark, warehouse_dir=lakehouse(cfg).warehouse)


def lakehouse(cfg: AppConfig):
    """The lakehouse, after connecting to MLflow as the jobs do (``tracking.experiment``; a required store stops)."""
    from allmtl_spark import tracked

    return tracked.lakehouse(cfg)


# ----------------------------------------------------------------------------------- display


def display(obj, caption: str = "", limit: int = 50) -> None:
    """Databricks' ``display``; locally print a Spark or pandas frame (first ``limit`` rows) or the object."""
    namespace = databricks_namespace()
    if caption:
        print(f"== {caption}")
    if namespace:
        namespace["display"](obj)
        return
    if hasattr(obj, "toPandas"):
        obj = obj.limit(limit).toPandas()
    if isinstance(obj, pd.DataFrame):
        with pd.option_context("display.width", 200, "display.max_columns", None, "display.max_colwidth", 80):
            print(obj.to_string(index=False, max_rows=limit) if not obj.empty else "(no rows)")
    else:
        print(obj)


def display_html(path: str) -> None:
    """Show an HTML file: ``displayHTML`` of its content on Databricks; locally print its title and path."""
    namespace = databricks_namespace()
    text = Path(local_path(path)).read_text(encoding="utf-8")
    if namespace:
        namespace["displayHTML"](text)
        return
    title = re.search(r"<title>(.*?)</title>", text, re.S)
    print(f"HTML report {html.unescape(title.group(1)) if title else ''!r}: {path} ({len(text) / 1024:.0f} KiB)")


def show_image(path: str | None) -> None:
    """Show a PNG/JPEG file: inline on Databricks; locally print its path and pixel size. None: say so."""
    import matplotlib.image

    if path is None:
        print("no image (nothing was drawn)")
        return
    data = Path(local_path(path)).read_bytes()
    namespace = databricks_namespace()
    if namespace:
        mime = "image/png" if path.lower().endswith(".png") else "image/jpeg"
        uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
        namespace["displayHTML"](f'<img src="{uri}" style="max-width:100%" alt="{html.escape(path)}">')
        return
    height, width = matplotlib.image.imread(local_path(path)).shape[:2]
    print(f"image: {path} ({width}x{height})")


def show_figure(fig, name: str) -> str | None:
    """Show a matplotlib figure: ``display(fig)`` on Databricks; locally save ``<figures dir>/<name>.png``.

    Returns:
        The PNG path locally, None on Databricks.
    """
    namespace = databricks_namespace()
    if namespace:
        namespace["display"](fig)
        return None
    folder = os.environ.get(FIGURES_ENV) or os.path.join(tempfile.gettempdir(), "allmtl_notebook_figures")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{name}.png")
    fig.savefig(path, dpi=90)
    print(f"figure {name}: {path}")
    return path


def local_path(path: str) -> str:
    """A path Python's ``open`` reads: ``file:`` stripped, ``dbfs:/x`` as the ``/dbfs/x`` mount."""
    if path.startswith("dbfs:"):
        return "/dbfs/" + path.removeprefix("dbfs:").lstrip("/")
    return path.removeprefix("file://").removeprefix("file:")


# ------------------------------------------------------------------------------ table views


def table_counts(spark, lake) -> pd.DataFrame:
    """Rows and Delta version of every table in ``tables.ALL_TABLES`` that exists, in that order."""
    from allmtl_spark.lakehouse import read_table, table_exists, table_version

    rows = [
        {"table": t.name, "rows": read_table(spark, lake, t).count(), "version": table_version(spark, lake, t)}
        for t in tables.ALL_TABLES
        if table_exists(spark, lake, t)
    ]
    return pd.DataFrame(rows, columns=["table", "rows", "version"])


def class_balance(spark, lake) -> pd.DataFrame:
    """Slides and cells per (label_binary, label_fab); null labels are counted as their own group."""
    from pyspark.sql import functions as F

    from allmtl_spark.lakehouse import read_table

    parts = [
        read_table(spark, lake, t).groupBy("label_binary", "label_fab").count().withColumn("table", F.lit(t.name))
        for t in (tables.SLIDES, tables.CELLS)
    ]
    counts = parts[0].unionByName(parts[1]).select("table", "label_binary", "label_fab", F.col("count").alias("n"))
    return counts.orderBy(F.col("table").desc(), "label_binary", "label_fab").toPandas()


def rejects_by_reason(spark, lake) -> pd.DataFrame:
    """Rejected inputs per stage and reason."""
    from pyspark.sql import functions as F

    from allmtl_spark.lakehouse import read_table

    counts = read_table(spark, lake, tables.REJECTS).groupBy("stage", "reason").count()
    return counts.select("stage", "reason", F.col("count").alias("n")).orderBy("stage", "reason").toPandas()


def run_rows(spark, lake, table: tables.Table, run_id: str):
    """The rows one run wrote to ``models``, ``slide_scores`` or ``score_aggregates`` (a Spark DataFrame)."""
    from pyspark.sql import functions as F

    from allmtl_spark.lakehouse import read_table

    return read_table(spark, lake, table).where(F.col(RUN_COLUMNS[table.name]) == run_id).orderBy(*table.merge_keys)


# ---------------------------------------------------------------------------- sample slides


@dataclass(frozen=True)
class SlideSample:
    """One segmented slide for display: all images at the stored (working) size."""

    slide_id: str
    label: str
    cell_count: int
    image: np.ndarray  # HxWx3 uint8 RGB, the slide resized to the mask
    mask: np.ndarray  # HxW uint8 0/255 white-cell mask
    isolated: np.ndarray  # HxWx3 uint8 RGB, white cells on black


def sample_slides(spark, lake, n: int = 3, segmenter_version: str | None = None) -> list[SlideSample]:
    """``n`` segmented slides (ordered by content hash: a fixed, label-blind pick) of one segmenter version.

    Args:
        segmenter_version: default the version that segmented most recently.
    """
    import cv2
    from pyspark.sql import functions as F

    from allmtl_spark.lakehouse import read_table
    from allmtl_spark.segmentation.pipeline import decode_mask, decode_rgb

    segmented = read_table(spark, lake, tables.SEGMENTED_SLIDES)
    if segmenter_version is None:
        latest = segmented.orderBy(F.col("segmented_at").desc()).select("segmenter_version").first()
        if latest is None:
            return []
        segmenter_version = latest[0]
    picked = segmented.where(F.col("segmenter_version") == segmenter_version).orderBy("content_sha256").limit(n)
    slides = read_table(spark, lake, tables.SLIDES).select("content_sha256", "content", "label_binary", "label_fab")
    samples = []
    for row in picked.join(slides, "content_sha256").orderBy("content_sha256").collect():
        mask = decode_mask(bytes(row["mask"]))
        image = cv2.resize(decode_rgb(bytes(row["content"])), mask.shape[::-1], interpolation=cv2.INTER_AREA)
        label = row["label_fab"] or {0: "normal", 1: "ALL"}.get(row["label_binary"], "unlabelled")
        samples.append(
            SlideSample(row["slide_id"], label, row["cell_count"], image, mask, decode_rgb(bytes(row["isolated"])))
        )
    return samples


def plot_slides(samples: list[SlideSample]):
    """A matplotlib figure, one row per sample: slide | white-cell mask | isolated cells."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.2 * max(1, len(samples))))
    if not samples:
        fig.text(0.5, 0.5, "no segmented slides yet (run allmtl segment)", ha="center")
        return fig
    axes = fig.subplots(len(samples), 3, squeeze=False)
    for row, sample in zip(axes, samples, strict=True):
        panels = (
            (sample.image, f"{sample.slide_id} ({sample.label})", None),
            (sample.mask, f"mask: {sample.cell_count} white cells", "gray"),
            (sample.isolated, "isolated", None),
        )
        for axis, (picture, title, cmap) in zip(row, panels, strict=True):
            axis.imshow(picture, cmap=cmap, vmin=0, vmax=255)
            axis.set_title(title, fontsize=9)
            axis.axis("off")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------- reports


def list_reports(lake) -> pd.DataFrame:
    """The evaluation and scoring reports under the lakehouse reports folder, newest first.

    Returns:
        Columns kind (evaluation | score), report_id (eval id or scoring run id), path (``index.html``), modified.
    """
    rows = []
    for kind in REPORT_KINDS:
        for path in glob.glob(os.path.join(local_path(lake.reports), kind, "*", "index.html")):
            rows.append(
                {
                    "kind": kind,
                    "report_id": Path(path).parent.name,
                    "path": path,
                    "modified": datetime.fromtimestamp(os.path.getmtime(path)),
                }
            )
    frame = pd.DataFrame(rows, columns=["kind", "report_id", "path", "modified"])
    return frame.sort_values(["modified", "path"], ascending=[False, True]).reset_index(drop=True)


def show_reports(spark, lake, reports: pd.DataFrame, kind: str = "all", limit: int | str = 3) -> None:
    """Show the first ``limit`` reports (of ``kind``): the page on Databricks; locally its path and key tables.

    Key tables: an evaluation's ``tables/summary.csv``; a scoring run's counts and overall metrics from
    ``score_aggregates``.
    """
    chosen = reports if kind == "all" else reports[reports["kind"] == kind]
    for report in chosen.head(int(limit)).itertuples(index=False):
        display_html(report.path)
        if databricks_namespace():
            continue
        if report.kind == "evaluation":
            display(pd.read_csv(Path(report.path).parent / "tables" / "summary.csv"), f"{report.report_id}: summary")
        else:
            key_rows = "scope = 'run' OR (scope = 'labelled' AND class_name = '')"  # counts, overall metrics
            display(
                run_rows(spark, lake, tables.SCORE_AGGREGATES, report.report_id).where(key_rows).drop("computed_at"),
                f"{report.report_id}: score_aggregates",
            )
