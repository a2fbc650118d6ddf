"""The scoring report's pieces that need no model: metric tables (undefined values say why), the list of every
slide (sortable, paged, all rows on the page) and thumbnails."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess

import cv2
import numpy as np
import pandas as pd
import pytest

from allmtl_spark.config.schema import ScoreConfig
from allmtl_spark.evaluation.report import table_html
from allmtl_spark.scoring.aggregates import labelled_rows
from allmtl_spark.scoring.report import _metric_tables
from allmtl_spark.scoring.slide_list import slide_list_html, thumbnail_uri
from tests.scoring.test_aggregates import CLASSES, _frame

pytestmark = pytest.mark.unit


def _tables(predicted, truth) -> dict[str, pd.DataFrame]:
    rows = labelled_rows(_frame(predicted, truth), CLASSES, ScoreConfig(bootstrap_resamples=20))
    return dict(_metric_tables(pd.DataFrame(rows)))


def test_an_all_normal_archive_shows_normal_vs_leukemia_with_undefined_values_and_why():
    tables = _tables(["L1", "normal", "normal", "L3"], ["normal"] * 4)
    binary = next(t for caption, t in tables.items() if caption.startswith("Normal vs leukemia (P"))
    by_metric = binary.set_index("metric")
    assert by_metric.loc["specificity", "value"] == pytest.approx(0.5)  # 2 of 4 normals called normal
    for metric in ("sensitivity", "binary_auc"):  # undefined: shown so, with the reason; never 0 or blank
        assert by_metric.loc[metric, "value"] == "undefined"
        assert by_metric.loc[metric, "why undefined"].startswith("every labelled slide is normal (4)")
    page = table_html(binary, "binary")
    assert page.count(">undefined<") == 2 and "an AUC needs both classes" in page
    counts = next(t for caption, t in tables.items() if caption.startswith("Normal vs leukemia: slides"))
    assert counts.set_index("true").loc["normal", "leukemia"] == 2
    per_class = tables["Per class"].set_index("class_name")
    assert per_class.loc["L1", "recall"] == "undefined: no labelled slide of this class"
    assert per_class.loc["normal", "specificity"] == "undefined: every labelled slide is of this class"
    assert per_class.loc["normal", "recall"] == "0.500"


def test_both_classes_give_no_undefined_column():
    tables = _tables(["L1", "normal", "normal", "L3"], ["L1", "normal", "L2", "L3"])
    binary = next(t for caption, t in tables.items() if caption.startswith("Normal vs leukemia (P"))
    assert "why undefined" not in binary and set(binary["metric"]) == {
        "binary_accuracy",
        "binary_auc",
        "sensitivity",
        "specificity",
    }


def _slides(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "slide_id": [f"{i:016x}" for i in range(n)],
            "site": ["a"] * n,
            "predicted_class": ["L1", "normal"] * (n // 2),
            "p_leukemia": np.linspace(0, 1, n),
            "white_cell_count": list(range(n)),
            "label": [None] * n,
            "flags": [""] * n,
            "model_version": ["m1"] * n,
            "scoring_run_id": ["r1"] * n,
            "scored_at": [pd.Timestamp("2026-12-06")] * n,
        }
    )


def _payload(page: str) -> dict:
    found = re.search(r'<script type="application/json" id="slides-data">(.*?)</script>', page, re.S)
    return json.loads(found.group(1))


def test_the_slide_list_holds_every_slide_paged_and_sortable():
    frame = _slides(250)
    frame.loc[3, "slide_id"] = "</script><b>x"  # a name cannot end the script or inject markup
    page = slide_list_html(frame, page_size=100, thumbnails={"0000000000000007": "thumb-0"})
    data = _payload(page)
    assert data["page_size"] == 100 and len(data["rows"]) == 250
    assert data["columns"][:3] == ["slide_id", "site", "predicted_class"] and data["columns"][-1] == "thumbnail"
    assert "model_version" not in data["columns"] and "scored_at" not in data["columns"]
    ids = [row[0] for row in data["rows"]]
    assert sorted(ids) == sorted(frame["slide_id"])
    assert data["rows"][7][-1] == "thumb-0" and data["rows"][8][-1] is None
    assert data["rows"][3][0] == "</script><b>x" and "</script><b>x" not in page
    assert len(re.findall(r'<th data-col="\d+"', page)) == len(data["columns"])  # every header sorts
    assert "slides-next" in page and "allmtl results" in page


def test_a_thumbnail_is_a_small_jpeg_of_the_slide():
    image = np.zeros((300, 400, 3), np.uint8)
    image[:, 200:] = (0, 0, 255)
    ok, png = cv2.imencode(".png", image)
    uri = thumbnail_uri(png.tobytes(), 160)
    small = cv2.imdecode(np.frombuffer(base64.b64decode(uri.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
    assert uri.startswith("data:image/jpeg;base64,") and small.shape == (120, 160, 3)
    assert small[60, 150, 2] > 200 and small[60, 10, 2] < 40  # the red half is still on the right
    assert thumbnail_uri(b"not an image", 160) is None


# A minimal DOM for the page's script: the elements it looks up, clicks and typing, the rows it renders.
_DOM = r"""
const fs = require("fs");
const page = fs.readFileSync(0, "utf8");
const json = page.match(/id="slides-data">([\s\S]*?)<\/script>/)[1];
const script = page.match(/<script>([\s\S]*?)<\/script><\/div>/)[1];
const handlers = {};
function element(id) { return {id: id, textContent: "", innerHTML: "", style: {}, dataset: {},
  addEventListener: function (kind, f) { handlers[id] = f; }}; }
const els = {"slides-data": Object.assign(element("slides-data"), {textContent: json}),
  "slides-status": element("slides-status"), "slides-filter": element("slides-filter"),
  "slides-prev": element("slides-prev"), "slides-next": element("slides-next")};
const body = element("tbody");
const ths = [...page.matchAll(/<th data-col="(\d+)"/g)]
  .map(m => Object.assign(element("th" + m[1]), {dataset: {col: m[1]}}));
const escape = s => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
global.document = {getElementById: id => els[id], querySelector: () => body, querySelectorAll: () => ths,
  createElement: () => ({textContent: "", get outerHTML() { return "<td>" + escape(this.textContent) + "</td>"; }})};
eval(script);
const firstCells = () => [...body.innerHTML.matchAll(/<tr><td>(.*?)<\/td>/g)].map(m => m[1]);
const out = {first: firstCells(), status: els["slides-status"].textContent};
handlers["slides-next"](); out.next = firstCells(); out.nextStatus = els["slides-status"].textContent;
handlers["th3"](); out.sorted = firstCells();        // p_leukemia ascending
handlers["th3"](); out.reversed = firstCells();      // then descending
handlers["slides-filter"]({target: {value: "00000000000000f"}}); out.filtered = firstCells();
out.filteredStatus = els["slides-status"].textContent;
console.log(JSON.stringify(out));
"""


def test_the_page_script_pages_sorts_and_filters():
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is needed to run the report's script (apt-get install nodejs)")
    frame = _slides(250)
    frame["p_leukemia"] = [(i * 37 % 250) / 250 for i in range(250)]  # a shuffled order
    page = slide_list_html(frame, page_size=100)
    done = subprocess.run([node, "-e", _DOM], input=page, capture_output=True, text=True, check=True)
    out = json.loads(done.stdout)
    ids = list(frame["slide_id"])
    assert out["first"] == ids[:100] and out["status"] == "250 of 250 slide(s), page 1 of 3"
    assert out["next"] == ids[100:200] and out["nextStatus"].endswith("page 2 of 3")
    by_p = frame.sort_values("p_leukemia")["slide_id"].tolist()
    assert out["sorted"] == by_p[:100] and out["reversed"] == by_p[::-1][:100]
    assert sorted(out["filtered"]) == [f"{i:016x}" for i in (15, *range(240, 250))]  # 000...0f and 000...f0-f9
    assert out["filteredStatus"] == "11 of 250 slide(s), page 1 of 1"
