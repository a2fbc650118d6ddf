"""``allmtl results`` on real Spark + Delta: which rows, per-site aggregates, the three formats."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta

import pytest

from allmtl_spark import tables
from allmtl_spark.errors import LakehouseError
from allmtl_spark.lakehouse import merge_new_rows
from allmtl_spark.scoring.results import format_results, select_results

pytestmark = pytest.mark.spark

CLASSES = ["normal", "L1", "L2", "L3"]
T0 = datetime(2026, 3, 1, 2, 0)


def _slide(key: str, label_fab: str | None) -> dict:
    return {
        "slide_id": f"id-{key}",
        "content_sha256": key * 64,
        "source_path": f"/data/{key}.jpg",
        "duplicate_paths": [],
        "source_kind": "folder",
        "site": "s",
        "format": "JPEG",
        "width": 10,
        "height": 10,
        "channels": 3,
        "bit_depth": 8,
        "content": bytearray(b"x"),
        "label_binary": None if label_fab is None else int(label_fab != "normal"),
        "label_fab": label_fab,
        "ingest_run_id": "i",
        "ingested_at": T0,
        "has_xyc": False,
    }


def _score(key: str, run: str, model: str, site: str, probabilities, blasts, cells, flag=None, minutes=0) -> dict:
    return {
        "content_sha256": key * 64,
        "model_version": model,
        "slide_id": f"id-{key}",
        "site": site,
        "source_path": f"/data/{key}.jpg",
        "task": "fab4",
        "class_names": CLASSES,
        "probabilities": probabilities,
        "predicted_class": CLASSES[max(range(4), key=lambda i: probabilities[i])],
        "p_leukemia": 1 - probabilities[0],
        "predicted_leukemia": probabilities[0] < 0.5,
        "white_cell_count": cells,
        "blast_cell_count": blasts,
        "blast_cell_pct": 100.0 * blasts / cells,
        "segmenter_version": "roi-adaptive",
        "scoring_run_id": run,
        "scored_at": T0 + timedelta(minutes=minutes),
        "slide_cell_disagreement": flag,
    }


@pytest.fixture(scope="module")
def scored(spark, tmp_path_factory):
    from allmtl_spark.config.schema import LakehouseConfig
    from allmtl_spark.lakehouse import Lakehouse

    lake = Lakehouse.from_config(LakehouseConfig(path=str(tmp_path_factory.mktemp("results") / "lake")))
    slides = [_slide("a", "L3"), _slide("b", "normal"), _slide("c", None), _slide("d", None)]
    merge_new_rows(spark, lake, tables.SLIDES, spark.createDataFrame(slides, tables.SLIDES.schema))
    rows = [
        _score("a", "r1", "m1", "ward3", [0.04, 0.01, 0.0, 0.95], 0, 1, "leukemia_without_blasts"),
        _score("b", "r1", "m1", "ward3", [0.82, 0.08, 0.05, 0.05], 7, 12, "normal_with_most_cells_blasts"),
        _score("c", "r1", "m1", "ward5", [0.9, 0.05, 0.03, 0.02], 0, 4),
        _score("a", "r2", "m2", "ward3", [0.1, 0.7, 0.1, 0.1], 3, 4, minutes=60),
        _score("d", "r2", "m2", "ward5", [0.6, 0.2, 0.1, 0.1], 0, 3, minutes=60),
    ]
    merge_new_rows(spark, lake, tables.SLIDE_SCORES, spark.createDataFrame(rows, tables.SLIDE_SCORES.schema))
    return lake


def test_default_is_the_newest_run_and_sites_are_aggregated(spark, scored):
    result = select_results(spark, scored)
    assert result.description.startswith("scoring run r2") and result.total == 2
    slides = result.slides.toPandas()
    assert list(slides["slide_id"]) == ["id-a", "id-d"] and set(slides["model_version"]) == {"m2"}

    run1 = select_results(spark, scored, run_id="r1")
    sites = run1.sites.set_index("site")
    assert sites.loc["ward3", "slides"] == 2 and sites.loc["ward5", "slides"] == 1
    assert sites.loc["ward3", "L3"] == 1 and sites.loc["ward3", "normal"] == 1
    assert sites.loc["ward3", "flagged"] == 2 and sites.loc["ward5", "flagged"] == 0
    assert sites.loc["ward3", "leukemia_calls"] == 1 and sites.loc["ward3", "labelled"] == 2
    rows = {r["slide_id"]: r for r in run1.slides.collect()}
    assert rows["id-a"]["flags"] == "leukemia_without_blasts" and rows["id-c"]["flags"] == ""
    assert rows["id-a"]["p_L3"] == pytest.approx(0.95) and rows["id-a"]["label"] == "L3"
    assert rows["id-c"]["label"] is None and rows["id-b"]["blast_cell_count"] == 7


def test_model_and_site_filters(spark, scored):
    by_model = select_results(spark, scored, model_version="m1", site="ward5")
    assert [r["slide_id"] for r in by_model.slides.collect()] == ["id-c"]
    assert "model m1" in by_model.description and "ward5" in by_model.description
    with pytest.raises(LakehouseError, match=r"nothing matches scoring run nope.*r2 \(model m2, 2 slides\)"):
        select_results(spark, scored, run_id="nope")


def test_table_csv_and_json(spark, scored):
    result = select_results(spark, scored, run_id="r1")
    table = "\n".join(format_results(result, "table", limit=2))
    assert "scoring run r1: 3 slide(s)" in table and "per site:" in table
    assert "slides (2 of 3" in table and "normal_with_most_cells_blasts" in table and "/data/" not in table

    lines = list(format_results(result, "csv"))
    parsed = list(csv.DictReader(lines))
    assert (
        len(parsed) == 3 and parsed[0]["slide_id"] == "id-a" and float(parsed[0]["p_leukemia"]) == pytest.approx(0.96)
    )
    assert {"p_normal", "p_L1", "p_L2", "p_L3", "flags", "label"} <= set(parsed[0])
    sites = list(csv.DictReader(list(format_results(result, "csv", sites_only=True))[0].splitlines()))
    assert {s["site"] for s in sites} == {"ward3", "ward5"}

    payload = json.loads("".join(format_results(result, "json")))
    assert payload["class_names"] == CLASSES and payload["probabilities"] == "probabilities"
    assert len(payload["slides"]) == 3 and {s["site"] for s in payload["sites"]} == {"ward3", "ward5"}
    assert all("source_path" not in s for s in payload["slides"])
