"""The scoring report's list of every slide of a run: a sortable, paged HTML table and thumbnails of a sample.

The rows travel as JSON inside the page (one self-contained file, like the rest of the report) and a
few lines of JavaScript show one page of ``page_size`` rows at a time, sorted by any column (click
its header) and filtered by a text box: a run of 100 000 slides is about 10 MB of page, and the
browser lays out only the page shown. Without JavaScript the page says to use ``allmtl results``.

Slide names are the stored ``slide_id`` (pseudonyms with ``privacy.pseudonymise_names``); source
paths are never shown. Pure functions (pandas, OpenCV); the report collects the rows with Spark.
"""

from __future__ import annotations

import base64
import html
import json
import math

import cv2
import numpy as np
import pandas as pd

SHOWN_COLUMNS_DROPPED = ("model_version", "scoring_run_id", "scored_at")  # one per run: said above the table


def _cell(value):
    """A JSON value: floats rounded to 4 decimals, NaN and None as null, numpy scalars as Python ones."""
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 4)
    return value if isinstance(value, int | str | bool) else str(value)


def _script_json(payload) -> str:
    """JSON safe inside ``<script>``: no ``</script>`` or ``<!--`` can close or open anything."""
    return json.dumps(payload, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e")


def slide_list_html(frame: pd.DataFrame, page_size: int, thumbnails: dict[str, str] | None = None) -> str:
    """Every row of ``frame`` (one per slide) as a sortable, paged, filterable table.

    Args:
        frame: ``results.slide_frame`` columns (``slide_id`` first); ``SHOWN_COLUMNS_DROPPED`` are left out.
        page_size: rows per page.
        thumbnails: slide_id -> anchor of its thumbnail on the page (a column links to it).

    Returns:
        HTML (a table, its rows as JSON, the script that shows them).
    """
    shown = frame.drop(columns=[c for c in SHOWN_COLUMNS_DROPPED if c in frame])
    thumbnails = thumbnails or {}
    columns = [*shown.columns, "thumbnail"]
    at = list(shown.columns).index("slide_id")
    rows = [[*(_cell(v) for v in row), thumbnails.get(row[at])] for row in shown.itertuples(index=False, name=None)]
    payload = {"columns": columns, "rows": rows, "page_size": int(page_size)}
    head = "".join(f'<th data-col="{i}" title="sort">{html.escape(c)}</th>' for i, c in enumerate(columns))
    return f"""<div class="slide-list">
<p><input type="search" id="slides-filter" placeholder="filter (slide id, class, site, flag ...)" size="40">
<span id="slides-status">{len(rows)} slide(s)</span>
<button id="slides-prev">&larr; previous</button> <button id="slides-next">next &rarr;</button></p>
<table id="slides"><caption>Every slide of the run (click a column to sort)</caption>
<thead><tr>{head}</tr></thead><tbody></tbody></table>
<noscript><p>The list needs JavaScript: <code>allmtl results --run RUN_ID --format csv</code> lists every slide.</p>
</noscript>
<script type="application/json" id="slides-data">{_script_json(payload)}</script>
<script>{_SCRIPT}</script></div>"""


_SCRIPT = r"""
(function () {
  var data = JSON.parse(document.getElementById("slides-data").textContent);
  var all = data.rows, rows = all, page = 0, sortCol = -1, ascending = true;
  var body = document.querySelector("#slides tbody"), status = document.getElementById("slides-status");
  var thumb = data.columns.length - 1;
  function text(v) { return v === null ? "" : String(v); }
  function compare(a, b) {
    if (a === b) return 0;
    if (a === null) return 1;
    if (b === null) return -1;
    if (typeof a === "number" && typeof b === "number") return a - b;
    return String(a).localeCompare(String(b), undefined, {numeric: true});
  }
  function render() {
    var pages = Math.max(1, Math.ceil(rows.length / data.page_size));
    page = Math.min(Math.max(page, 0), pages - 1);
    var html = [];
    rows.slice(page * data.page_size, (page + 1) * data.page_size).forEach(function (row) {
      html.push("<tr>" + row.map(function (v, i) {
        if (i === thumb) return "<td>" + (v ? '<a href="#' + v + '">view</a>' : "") + "</td>";
        var cell = document.createElement("td");
        cell.textContent = typeof v === "number" && !Number.isInteger(v) ? v.toFixed(3) : text(v);
        return cell.outerHTML;
      }).join("") + "</tr>");
    });
    body.innerHTML = html.join("");
    status.textContent = rows.length + " of " + all.length + " slide(s), page " + (page + 1) + " of " + pages;
  }
  document.querySelectorAll("#slides th").forEach(function (th) {
    th.style.cursor = "pointer";
    th.addEventListener("click", function () {
      var col = +th.dataset.col;
      ascending = col === sortCol ? !ascending : true;
      sortCol = col;
      rows = rows.slice().sort(function (a, b) { return (ascending ? 1 : -1) * compare(a[col], b[col]); });
      page = 0; render();
    });
  });
  document.getElementById("slides-filter").addEventListener("input", function (e) {
    var q = e.target.value.toLowerCase();
    rows = all.filter(function (row) {
      return row.some(function (v) { return text(v).toLowerCase().indexOf(q) >= 0; });
    });
    if (sortCol >= 0) rows.sort(function (a, b) { return (ascending ? 1 : -1) * compare(a[sortCol], b[sortCol]); });
    page = 0; render();
  });
  document.getElementById("slides-prev").addEventListener("click", function () { page -= 1; render(); });
  document.getElementById("slides-next").addEventListener("click", function () { page += 1; render(); });
  render();
})();
"""


def thumbnail_uri(content: bytes, width: int) -> str | None:
    """A ``data:image/jpeg`` URI of the image ``content`` scaled to ``width`` pixels wide; None if undecodable."""
    image = cv2.imdecode(np.frombuffer(content, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return None
    height = max(1, round(image.shape[0] * width / image.shape[1]))
    small = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return "data:image/jpeg;base64," + base64.b64encode(encoded.tobytes()).decode("ascii") if ok else None


def thumbnails_html(thumbnails: list[tuple[str, str, str]]) -> str:
    """A grid of (anchor, caption, data URI) thumbnails."""
    return "".join(
        f'<figure id="{html.escape(anchor)}"><img src="{uri}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for anchor, caption, uri in thumbnails
    )
