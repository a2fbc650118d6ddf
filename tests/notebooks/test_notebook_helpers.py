"""``allmtl_spark.notebook``: widgets, config, display fallbacks (local and a fake Databricks), table views."""

from __future__ import annotations

import base64
import hashlib
import os
from datetime import datetime
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from allmtl_spark import notebook, tables
from allmtl_spark.config import ConfigError, load_config
from allmtl_spark.segmentation.pipeline import encode_png

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class FakeDatabricks(dict):
    """The globals a Databricks notebook has, recording what was displayed."""

    def __init__(self):
        self.shown: list[tuple[str, object]] = []
        super().__init__(
            dbutils=SimpleNamespace(widgets="dbutils.widgets"),
            spark=None,
            display=lambda obj: self.shown.append(("display", obj)),
            displayHTML=lambda text: self.shown.append(("displayHTML", text)),
        )


@pytest.fixture
def databricks(monkeypatch):
    fake = FakeDatabricks()
    monkeypatch.setattr(notebook, "databricks_namespace", lambda: fake)
    return fake


def _png(path, height=6, width=10) -> str:
    path.write_bytes(encode_png(np.full((height, width, 3), 200, np.uint8)))
    return str(path)


# --------------------------------------------------------------------------- widgets, config


@pytest.mark.unit
def test_local_widgets_use_defaults_unless_the_environment_sets_them():
    w = notebook.LocalWidgets({"ALLMTL_WIDGET_RUN_ID": "r1", "ALLMTL_WIDGET_KIND": "score"})
    w.text("run_id", "", "Run id")
    w.text("config", "conf/demo.yaml")
    w.dropdown("kind", "all", ["all", "score"], "Kind")
    assert (w.get("run_id"), w.get("config"), w.get("kind")) == ("r1", "conf/demo.yaml", "score")
    with pytest.raises(ValueError, match="choices: all, evaluation"):
        notebook.LocalWidgets({"ALLMTL_WIDGET_KIND": "nope"}).dropdown("kind", "all", ["all", "evaluation"])
    w.remove("kind")
    with pytest.raises(ValueError, match="no widget named 'kind'; defined: config, run_id"):
        w.get("kind")
    w.removeAll()
    with pytest.raises(ValueError, match="defined: none"):
        w.get("config")


@pytest.mark.unit
def test_widgets_are_dbutils_widgets_on_databricks_and_local_elsewhere(monkeypatch):
    assert isinstance(notebook.widgets(), notebook.LocalWidgets)  # no IPython shell here
    fake = FakeDatabricks()
    monkeypatch.setattr(notebook, "databricks_namespace", lambda: fake)
    assert notebook.widgets() == "dbutils.widgets"


@pytest.mark.unit
def test_parse_overrides_takes_lines_or_semicolons_and_skips_blanks_and_comments():
    text = "train.tasks=[binary]\n\n  # a comment\ntrain.num_proc=1; train.input_size=75 \n"
    assert notebook.parse_overrides(text) == ["train.tasks=[binary]", "train.num_proc=1", "train.input_size=75"]
    assert notebook.parse_overrides("") == []


@pytest.mark.unit
def test_config_from_widgets_applies_the_overrides_and_mapped_widgets(monkeypatch):
    monkeypatch.chdir(REPO)
    w = notebook.LocalWidgets(
        {"ALLMTL_WIDGET_OVERRIDES": "train.stage2.epochs=1\nscore.task=binary", "ALLMTL_WIDGET_MODEL": "run-7"}
    )
    for name, default in (("config", "conf/demo.yaml"), ("overrides", ""), ("model", "latest"), ("empty", " ")):
        w.text(name, default)
    cfg = notebook.config_from_widgets(w, {"score.model": "model", "score.approach": "empty"})
    assert (cfg.train.stage2.epochs, cfg.score.task, cfg.score.model) == (1, "binary", "run-7")
    assert cfg.score.approach == load_config("conf/demo.yaml").score.approach  # an empty widget sets nothing
    assert cfg.synth == load_config("conf/demo.yaml").synth  # the rest from the file
    bad = notebook.LocalWidgets({"ALLMTL_WIDGET_OVERRIDES": "train.nope=1"})
    bad.text("config", "conf/demo.yaml")
    bad.text("overrides", "")
    with pytest.raises(ConfigError, match="train.nope"):
        notebook.config_from_widgets(bad)


@pytest.mark.unit
def test_a_relative_config_path_is_found_from_the_notebooks_folder(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "x.yaml").write_text("synth: {n_slides: 5}\n")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    assert notebook.resolve_config_path("conf/x.yaml") == str(tmp_path / "conf" / "x.yaml")
    with pytest.raises(ConfigError, match="conf/missing.yaml not found"):
        notebook.resolve_config_path("conf/missing.yaml")


@pytest.mark.unit
def test_local_path_reads_file_and_dbfs_uris_through_the_local_filesystem():
    assert notebook.local_path("file:///tmp/a") == "/tmp/a"
    assert notebook.local_path("file:/tmp/a") == "/tmp/a"
    assert notebook.local_path("dbfs:/lake/_reports") == "/dbfs/lake/_reports"
    assert notebook.local_path("/Volumes/main/s/v") == "/Volumes/main/s/v"


# --------------------------------------------------------------------------------- display


@pytest.mark.unit
def test_display_prints_locally_and_calls_databricks_display_there(capsys, monkeypatch):
    frame = pd.DataFrame({"table": ["slides"], "rows": [16]})
    notebook.display(frame, "counts")
    out = capsys.readouterr().out
    assert "== counts" in out and "slides" in out and "16" in out
    notebook.display(frame.iloc[:0])
    assert "(no rows)" in capsys.readouterr().out
    fake = FakeDatabricks()
    monkeypatch.setattr(notebook, "databricks_namespace", lambda: fake)
    notebook.display(frame)
    assert fake.shown == [("display", frame)]


@pytest.mark.unit
def test_display_html_prints_the_title_locally_and_renders_it_on_databricks(tmp_path, capsys, monkeypatch):
    page = tmp_path / "index.html"
    page.write_text("<html><head><title>Scoring run r&amp;1</title></head><body>x</body></html>")
    notebook.display_html(str(page))
    assert f"HTML report 'Scoring run r&1': {page}" in capsys.readouterr().out
    fake = FakeDatabricks()
    monkeypatch.setattr(notebook, "databricks_namespace", lambda: fake)
    notebook.display_html(f"file:{page}")
    assert fake.shown == [("displayHTML", page.read_text())]


@pytest.mark.unit
def test_show_image_prints_the_size_locally_and_inlines_the_png_on_databricks(tmp_path, capsys, monkeypatch):
    path = _png(tmp_path / "curves.png", height=6, width=10)
    notebook.show_image(path)
    assert f"image: {path} (10x6)" in capsys.readouterr().out
    notebook.show_image(None)
    assert "no image" in capsys.readouterr().out
    fake = FakeDatabricks()
    monkeypatch.setattr(notebook, "databricks_namespace", lambda: fake)
    notebook.show_image(path)
    kind, html = fake.shown[0]
    with open(path, "rb") as handle:
        assert kind == "displayHTML" and base64.b64encode(handle.read()).decode() in html


@pytest.mark.unit
def test_plot_slides_draws_a_row_per_sample_and_show_figure_saves_it_locally(tmp_path, capsys, monkeypatch):
    image = np.zeros((12, 16, 3), np.uint8)
    mask = np.zeros((12, 16), np.uint8)
    mask[2:6, 3:9] = 255
    samples = [notebook.SlideSample(f"Im00{i}_1", "L1", 1, image, mask, image) for i in range(2)]
    fig = notebook.plot_slides(samples)
    assert len(fig.axes) == 6 and fig.axes[0].get_title() == "Im000_1 (L1)"
    assert fig.axes[1].get_title() == "mask: 1 white cells"
    assert not notebook.plot_slides([]).axes
    monkeypatch.setenv(notebook.FIGURES_ENV, str(tmp_path / "figs"))
    path = notebook.show_figure(fig, "samples")
    assert path == str(tmp_path / "figs" / "samples.png") and os.path.getsize(path) > 1000
    assert f"figure samples: {path}" in capsys.readouterr().out
    fake = FakeDatabricks()
    monkeypatch.setattr(notebook, "databricks_namespace", lambda: fake)
    assert notebook.show_figure(fig, "samples") is None and fake.shown == [("display", fig)]


@pytest.mark.unit
def test_list_reports_finds_evaluation_and_scoring_pages_newest_first(tmp_path):
    lake = SimpleNamespace(reports=str(tmp_path / "_reports"))
    for i, (kind, run) in enumerate((("score", "s1"), ("evaluation", "e1"), ("score", "s2"), ("train", "t1"))):
        folder = tmp_path / "_reports" / kind / run
        folder.mkdir(parents=True)
        (folder / "index.html").write_text("<title>x</title>")
        os.utime(folder / "index.html", (1_700_000_000 + i, 1_700_000_000 + i))
    reports = notebook.list_reports(lake)
    assert list(reports[["kind", "report_id"]].itertuples(index=False, name=None)) == [
        ("score", "s2"),
        ("evaluation", "e1"),
        ("score", "s1"),
    ]
    assert reports["path"].iloc[0] == str(tmp_path / "_reports" / "score" / "s2" / "index.html")
    assert notebook.list_reports(SimpleNamespace(reports=str(tmp_path / "none"))).empty


# ---------------------------------------------------------------------------- Spark views


def _image_row(key: str, content: bytes, label_binary, label_fab) -> dict:
    return {
        "content_sha256": hashlib.sha256(content).hexdigest(),
        "source_path": key,
        "duplicate_paths": [],
        "source_kind": "manifest",
        "site": "t",
        "format": "PNG",
        "width": 16,
        "height": 12,
        "channels": 3,
        "bit_depth": 8,
        "content": bytearray(content),
        "label_binary": label_binary,
        "label_fab": label_fab,
        "ingest_run_id": "t",
        "ingested_at": datetime(2026, 1, 1),
    }


def _frame(spark, table, rows):
    """A DataFrame of hand-written rows: missing columns None, every column nullable (the MERGE casts)."""
    from pyspark.sql.types import StructField, StructType

    names = table.schema.fieldNames()
    schema = StructType([StructField(f.name, f.dataType, True) for f in table.schema.fields])
    return spark.createDataFrame([tuple(row.get(n) for n in names) for row in rows], schema)


@pytest.fixture
def small_lake(spark, lake):
    """Three slides (labels L1, normal, unlabelled FAB), one cell, two segmenter versions, three rejects."""
    from allmtl_spark.lakehouse import merge_new_rows

    rng = np.random.default_rng(0)
    slides = [
        {
            **_image_row(slide_id, encode_png(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)), binary, fab),
            "slide_id": slide_id,
            "has_xyc": False,
        }
        for slide_id, binary, fab in (("Im001_1", 1, "L1"), ("Im002_0", 0, "normal"), ("Im003_1", 1, None))
    ]
    cells = [{**_image_row("c1", encode_png(np.zeros((4, 4, 3), np.uint8)), 1, None), "cell_id": "c1"}]
    segmented = [
        {
            "content_sha256": s["content_sha256"],
            "segmenter_version": version,
            "slide_id": s["slide_id"],
            "mask_source": "roi",
            "roi_method": "adaptive",
            "scale": 0.5,
            "width": 8,
            "height": 6,
            "isolated": bytearray(encode_png(np.zeros((6, 8, 3), np.uint8))),
            "mask": bytearray(encode_png(np.full((6, 8), 255, np.uint8))),
            "cell_count": cells_found,
            "run_id": "seg",
            "segmented_at": datetime(2026, 1, day),
        }
        for s in slides
        for version, day, cells_found in (("roi-adaptive", 2, 2), ("old", 1, 5))
    ]
    rejects = [
        {
            "reject_key": f"k{i}",
            "stage": stage,
            "source_path": f"p{i}",
            "reason": reason,
            "run_id": "r",
            "rejected_at": datetime(2026, 1, 1),
        }
        for i, (stage, reason) in enumerate(
            (("ingest", "unreadable"), ("ingest", "unreadable"), ("segment", "no_cells"))
        )
    ]
    for table, rows in (
        (tables.SLIDES, slides),
        (tables.CELLS, cells),
        (tables.SEGMENTED_SLIDES, segmented),
        (tables.REJECTS, rejects),
    ):
        merge_new_rows(spark, lake, table, _frame(spark, table, rows))
    return lake, sorted(slides, key=lambda s: s["content_sha256"])


@pytest.mark.spark
def test_table_counts_class_balance_and_rejects(spark, small_lake):
    lake, _ = small_lake
    counts = notebook.table_counts(spark, lake)
    assert list(counts[["table", "rows"]].itertuples(index=False, name=None)) == [
        ("slides", 3),
        ("cells", 1),
        ("rejects", 3),
        ("segmented_slides", 6),
    ]
    assert (counts["version"] >= 1).all()
    balance = notebook.class_balance(spark, lake)
    assert [tuple(None if pd.isna(v) else v for v in row) for row in balance.itertuples(index=False, name=None)] == [
        ("slides", 0, "normal", 1),
        ("slides", 1, None, 1),
        ("slides", 1, "L1", 1),
        ("cells", 1, None, 1),
    ]
    rejects = notebook.rejects_by_reason(spark, lake)
    assert list(rejects.itertuples(index=False, name=None)) == [("ingest", "unreadable", 2), ("segment", "no_cells", 1)]


@pytest.mark.spark
def test_sample_slides_takes_the_latest_segmenter_and_decodes_at_the_mask_size(spark, small_lake):
    lake, by_hash = small_lake
    samples = notebook.sample_slides(spark, lake, n=2)
    assert [s.slide_id for s in samples] == [s["slide_id"] for s in by_hash[:2]]
    assert all(s.cell_count == 2 for s in samples)  # roi-adaptive, segmented last
    assert all(s.image.shape == (6, 8, 3) and s.mask.shape == (6, 8) and s.isolated.shape == (6, 8, 3) for s in samples)
    labels = {"Im001_1": "L1", "Im002_0": "normal", "Im003_1": "ALL"}
    assert all(s.label == labels[s.slide_id] for s in samples)
    assert [s.cell_count for s in notebook.sample_slides(spark, lake, n=5, segmenter_version="old")] == [5, 5, 5]
    assert notebook.sample_slides(spark, lake, segmenter_version="missing") == []


@pytest.mark.spark
def test_run_rows_filters_by_the_tables_run_column(spark, lake):
    from allmtl_spark.lakehouse import merge_new_rows

    rows = [
        {
            "scoring_run_id": run,
            "model_version": "m",
            "scope": "run",
            "scope_value": run,
            "metric": "count",
            "class_name": c,
            "value": 1.0,
            "computed_at": datetime(2026, 1, 1),
        }
        for run in ("a", "b")
        for c in "yx"
    ]
    merge_new_rows(spark, lake, tables.SCORE_AGGREGATES, _frame(spark, tables.SCORE_AGGREGATES, rows))
    shown = notebook.run_rows(spark, lake, tables.SCORE_AGGREGATES, "b").toPandas()
    assert list(shown["class_name"]) == ["x", "y"] and set(shown["scoring_run_id"]) == {"b"}
    assert notebook.run_rows(spark, lake, tables.MODELS, "b").count() == 0  # no table yet: empty, not an error
