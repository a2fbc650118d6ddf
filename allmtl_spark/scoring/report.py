"""The HTML page of one scoring run: counts, metrics, the comparison, sample slides, Grad-CAM.

Sample slides are re-run through the same pure pipeline on the driver (a handful of slides) so
the page can show each slide, its mask, the classifier's input and where the model looked.
"""

from __future__ import annotations

import os

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from allmtl_spark import tables  # noqa: E402
from allmtl_spark.evaluation.report import Section, render_html  # noqa: E402
from allmtl_spark.lakehouse import read_table  # noqa: E402

EXPLANATION = """<p>Counts are slides per predicted stage. Metrics use the slides whose true label is known, with
bootstrap confidence intervals. <em>Normal vs leukemia</em> uses P(leukemia) = 1 - P(normal) from the 4-class
output. The comparison pairs the slides that the previous model version scored too: McNemar's test on per-slide
correctness (exact below 25 discordant slides), and a paired bootstrap of the AUC difference. Grad-CAM heatmaps
show which parts of the classifier's input (the montage of the slide's largest white cells) raised the score of
the predicted class: red is strong.</p>"""


def write_run_report(spark, lake, cfg, plan, run_id: str, aggregates: pd.DataFrame | None = None) -> str:
    """Write ``<reports>/score/<run_id>/index.html`` and its figures; returns the HTML path.

    Args:
        aggregates: the run's ``score_aggregates`` rows; None reads them from the table.
    """
    folder = os.path.join(lake.reports, "score", run_id)
    os.makedirs(folder, exist_ok=True)
    if aggregates is None:
        aggregates = (
            read_table(spark, lake, tables.SCORE_AGGREGATES)
            .where((F.col("scoring_run_id") == run_id) & (F.col("model_version") == plan.classifier.model_id))
            .toPandas()
        )
    sections = [
        Section(
            "Slides per predicted stage",
            EXPLANATION,
            tables=_count_tables(aggregates),
            figures=[("Slides per predicted stage in this run", _count_figure(aggregates, folder))],
        )
    ]
    sections.append(_review_section(spark, lake, plan, run_id, aggregates))
    sections.append(Section("Metrics on labelled slides", tables=_metric_tables(aggregates)))
    comparison = aggregates[aggregates["scope"] == "comparison"]
    if not comparison.empty:
        sections.append(
            Section("Comparison with the previous model version", tables=[("Paired comparison", _tidy(comparison))])
        )
    sections.append(_slide_list(spark, lake, cfg, plan, run_id))
    samples = _sample_figures(spark, lake, cfg, plan, run_id, folder)
    sections.append(
        Section(
            "Sample slides",
            "<p>Slide with the white-cell mask outlined, the classifier input and the class probabilities.</p>",
            figures=samples[0],
        )
    )
    if samples[1]:
        sections.append(Section("Grad-CAM: where the model looked", figures=samples[1]))
    subtitle = (
        f"<p>model <code>{plan.classifier.model_id}</code>, segmenter <code>{plan.segmenter_version}</code>, "
        f"cell model <code>{plan.cell_model.model_id if plan.cell_model else 'none'}</code></p>"
    )
    path = os.path.join(folder, "index.html")
    partial = f"{path}.tmp-{os.getpid()}"  # a run finishing this report at the same time writes the same page
    with open(partial, "w") as handle:
        handle.write(render_html(f"Scoring run {run_id}", sections, subtitle))
    os.replace(partial, path)
    return path


REVIEW_EXPLANATION = """<p>A slide needs review when its statistics (stain colour, contrast, sharpness, how much of
the classifier's input is cells, white-cell count, pixel size) lie outside what the model was trained on
(<code>out_of_distribution:&lt;the statistic contributing most&gt;</code>, threshold set on validation slides) or when
the slide and cell classifiers disagree. These slides are left out of the counts above and counted here; their
calls should not be used without a look (<code>allmtl review</code>). Probabilities are calibrated (temperature
scaling fitted on validation slides) where the model has a temperature. The accuracy-vs-coverage table keeps the
most confident labelled slides first.</p>"""


def _review_section(spark, lake, plan, run_id: str, aggregates: pd.DataFrame, examples: int = 12) -> Section:
    """Slides that need review: counts per scope and reason, examples of this run, accuracy vs coverage."""
    from allmtl_spark.scoring.review import review_queue

    out = []
    review = aggregates[aggregates["metric"].isin(["needs_review", "review_reason"])]
    if not review.empty:
        out.append(("Slides needing review (n = slides scored)", _tidy(review)))
    queue = review_queue(spark, lake, run_id=run_id, model_version=plan.classifier.model_id).limit(examples)
    rows = [
        {
            "slide": r["slide_id"],
            "site": r["site"],
            "reasons": "; ".join(r["review_reasons"] or []),
            "ood_score": None if r["ood_score"] is None else round(r["ood_score"], 2),
            "probabilities": ", ".join(
                f"{c} {p:.2f}" for c, p in zip(r["class_names"], r["probabilities_shown"], strict=True)
            )
            + ("" if r["calibrated"] else " (raw)"),
        }
        for r in queue.collect()
    ]
    if rows:
        out.append((f"Examples from this run (at most {examples})", pd.DataFrame(rows)))
    coverage = aggregates[
        aggregates["metric"].str.endswith("_at_coverage") | aggregates["metric"].str.endswith("_not_flagged")
    ]
    if not coverage.empty:
        out.append(("Accuracy on the slides not flagged, and accuracy vs coverage", _tidy(coverage)))
    return Section("Slides that need review", REVIEW_EXPLANATION, tables=out)


def _tidy(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows to read: an undefined value shows ``undefined`` and why (never 0 or a blank)."""
    out = frame[["scope_value", "metric", "class_name", "value", "ci_low", "ci_high", "n"]].reset_index(drop=True)
    reasons = _reasons(frame).reset_index(drop=True)
    if reasons.any():
        out = out.astype(object)
        out.loc[reasons != "", "value"] = "undefined"
        out["why undefined"] = reasons
    return out


def _reasons(frame: pd.DataFrame) -> pd.Series:
    """``undefined_reason`` as text, '' where the value exists (or the table predates the column)."""
    if "undefined_reason" not in frame:
        return pd.Series("", index=frame.index)
    return frame["undefined_reason"].map(lambda r: r if isinstance(r, str) else "")


def _shown_value(frame: pd.DataFrame) -> pd.Series:
    """A value for a pivoted table: 3 decimals, or ``undefined: <reason>``."""
    reasons = _reasons(frame)
    values = frame["value"].map(lambda v: "" if v is None or pd.isna(v) else f"{v:.3f}")
    return values.where(reasons == "", "undefined: " + reasons)


def _count_tables(aggregates: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    out = []
    for scope, caption in (
        ("run", "This run"),
        ("day", "Per scoring day (all runs of this model)"),
        ("site", "Per site (all runs of this model)"),
    ):
        counts = aggregates[(aggregates["scope"] == scope) & (aggregates["metric"] == "count")]
        if not counts.empty:
            out.append(
                (
                    caption,
                    counts.pivot_table(
                        index="scope_value", columns="class_name", values="value", aggfunc="sum"
                    ).reset_index(),
                )
            )
    return out


BINARY_METRICS = ("binary_accuracy", "binary_auc")
PER_CLASS_METRICS = ("precision", "recall", "specificity", "f1", "auc")


def _metric_tables(aggregates: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Overall, normal vs leukemia, per class, confusion matrices; undefined values say why."""
    labelled = aggregates[aggregates["scope"] == "labelled"]
    if labelled.empty:
        return [("No labelled slides among the scored ones", pd.DataFrame())]
    metric, class_name = labelled["metric"], labelled["class_name"]
    binary = metric.isin(BINARY_METRICS) | (metric.isin(["sensitivity", "specificity"]) & (class_name == "leukemia"))
    overall = labelled[(class_name == "") & ~binary & (metric != "binary_confusion")]
    per_class = labelled[(class_name != "") & metric.isin(PER_CLASS_METRICS) & ~binary]
    out = []
    if not overall.empty:
        out.append(("Overall (with bootstrap CIs)", _tidy(overall)))
    if binary.any():
        out.append(
            (
                "Normal vs leukemia (P(leukemia) >= 0.5 called leukemia; exact binomial CIs when one class only)",
                _tidy(labelled[binary]),
            )
        )
    out += _confusion(
        labelled[metric == "binary_confusion"], "Normal vs leukemia: slides (rows: true, columns: called)"
    )
    if not per_class.empty:
        shown = per_class.assign(shown=_shown_value(per_class))
        out.append(
            (
                "Per class",
                shown.pivot_table(index="class_name", columns="metric", values="shown", aggfunc="first").reset_index(),
            )
        )
    out += _confusion(labelled[metric == "confusion"], "Confusion matrix (rows: true, columns: predicted)")
    return out


def _confusion(cells: pd.DataFrame, caption: str) -> list[tuple[str, pd.DataFrame]]:
    if cells.empty:
        return []
    cells = cells.copy()
    cells[["true", "predicted"]] = cells["class_name"].str.split("/", expand=True)
    return [(caption, cells.pivot_table(index="true", columns="predicted", values="value").reset_index())]


def _count_figure(aggregates: pd.DataFrame, folder: str) -> str:
    counts = aggregates[(aggregates["scope"] == "run") & (aggregates["metric"] == "count")]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(counts["class_name"], counts["value"], color="#6a5acd")
    ax.set_ylabel("slides")
    ax.set_title("predicted stage")
    fig.tight_layout()
    path = os.path.join(folder, "counts.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _run_scores(spark, lake, plan, run_id: str):
    return read_table(spark, lake, tables.SLIDE_SCORES).where(
        (F.col("scoring_run_id") == run_id) & (F.col("model_version") == plan.classifier.model_id)
    )


def _sample_keys(scores, seed: int, n: int) -> list[str]:
    """``n`` slides of the run (content hashes), the same ones for the same seed."""
    order = F.sha2(F.concat_ws("|", "content_sha256", F.lit(seed)), 256)
    return [r[0] for r in scores.orderBy(order).limit(n).select("content_sha256").collect()] if n else []


def _slide_list(spark, lake, cfg, plan, run_id: str) -> Section:
    """Every slide of the run (sortable, paged) and thumbnails of ``score.report_thumbnails`` of them."""
    from allmtl_spark.scoring.results import slide_frame
    from allmtl_spark.scoring.slide_list import slide_list_html, thumbnail_uri, thumbnails_html

    scores = _run_scores(spark, lake, plan, run_id)
    frame = slide_frame(spark, lake, scores, list(plan.classifier.class_names)).toPandas()
    keys = _sample_keys(scores, cfg.score.seed, cfg.score.report_thumbnails)
    thumbs = []
    sample = read_table(spark, lake, tables.SLIDES).where(F.col("content_sha256").isin(keys))
    for row in sample.select("slide_id", "content").orderBy("slide_id").toLocalIterator():  # one image at a time
        uri = thumbnail_uri(row["content"], cfg.score.report_thumbnail_px)
        if uri:
            thumbs.append((f"thumb-{len(thumbs)}", row["slide_id"], uri))
    called = dict(zip(frame["slide_id"], frame["predicted_class"], strict=False))
    figures = [(anchor, f"{slide_id} -> {called.get(slide_id, '?')}", uri) for anchor, slide_id, uri in thumbs]
    text = (
        f"<p>{len(frame)} slide(s) scored by model <code>{plan.classifier.model_id}</code> in this run. Names are "
        "the stored slide ids (pseudonyms of the file names with privacy.pseudonymise_names); flags are the "
        "reasons to look at a slide. Thumbnails: a fixed sample of "
        f"{len(figures)} slide(s) (score.report_thumbnails).</p>"
        + slide_list_html(frame, cfg.score.report_page_size, {slide_id: anchor for anchor, slide_id, _ in thumbs})
        + thumbnails_html(figures)
    )
    return Section("Every slide of this run", text)


def _sample_figures(spark, lake, cfg, plan, run_id: str, folder: str):
    """(sample figures, Grad-CAM figures) for a few slides of this run."""
    keys = _sample_keys(_run_scores(spark, lake, plan, run_id), cfg.score.seed, cfg.score.report_sample)
    if not keys:
        return [], []
    slides = (
        read_table(spark, lake, tables.SLIDES)
        .where(F.col("content_sha256").isin(keys))
        .select(
            "content_sha256", "slide_id", "content", "label_fab", "label_binary", "pixel_size_um", "pixel_size_source"
        )
        .collect()
    )
    return _render_samples(slides, cfg, plan, folder)


def _render_samples(slides, cfg, plan, folder: str):
    from allmtl_spark.checksums import load_keras, read_verified
    from allmtl_spark.scoring.gradcam import feature_layer, grad_cam, heat_on_cells, readable_panel
    from allmtl_spark.scoring.pipeline import NoWhiteCells, score_slide
    from allmtl_spark.scoring.predict import make_classifier_fn
    from allmtl_spark.segmentation.pipeline import decode_rgb
    from allmtl_spark.segmentation.predict import make_predict_fn

    unet = (
        make_predict_fn(plan.segmenter_file, plan.segmenter_sha256, spec_sha256=plan.segmenter_spec_sha256)
        if plan.segmenter_file
        else None
    )
    # the runtime the job scored with, so the report shows the job's numbers
    classify = make_classifier_fn(*plan.classifier.serving(), plan.tf_threads, plan.classifier_batch)
    # Grad-CAM needs the Keras model's gradients
    keras_model = load_keras(read_verified(plan.classifier.model_file, plan.classifier.sha256, "classifier"))
    samples, cams = [], []
    for index, slide in enumerate(sorted(slides, key=lambda s: s["slide_id"])):
        image = decode_rgb(slide["content"])
        try:
            pixel = plan.pixel_policy.resolve(image, slide["pixel_size_um"], slide["pixel_size_source"])
            result = score_slide(
                image,
                unet,
                classify,
                None,
                plan.classifier.class_names,
                plan.classifier.view,
                None,
                plan.roi,
                plan.segment,
                pixel.pixel_size_um,
                plan.working_pixel_size_um,
                plan.blast_threshold,
            )
        except NoWhiteCells:
            continue
        truth = slide["label_fab"] or {0: "normal", 1: "ALL"}.get(slide["label_binary"], "unknown")
        title = f"{slide['slide_id']} (true: {truth}) -> {result.predicted_class}"
        samples.append((title, _sample_png(image, result, title, os.path.join(folder, f"sample_{index}.png"))))
        if len(cams) < cfg.score.gradcam_slides:
            target = int(np.argmax(result.probabilities))
            layer = feature_layer(keras_model)
            heat = grad_cam(keras_model, result.view, target, layer)
            path = os.path.join(folder, f"gradcam_{index}.png")
            cv2.imwrite(path, cv2.cvtColor(readable_panel(result.view, heat), cv2.COLOR_RGB2BGR))
            size = keras_model.get_layer(layer).output_shape[1:3]
            cams.append(
                (
                    f"{title}: classifier input and Grad-CAM of the '{result.predicted_class}' logit "
                    f"(layer {layer}, {size[0]}x{size[1]} map; mean heat on the cells / off them "
                    f"{heat_on_cells(result.view, heat):.2f}, above 1 when the map singles the cells out)",
                    path,
                )
            )
    return samples, cams


def _sample_png(image: np.ndarray, result, title: str, path: str) -> str:
    mask = cv2.resize(result.segmentation.mask, image.shape[1::-1], interpolation=cv2.INTER_NEAREST)
    outlined = image.copy()
    contours, _ = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(outlined, contours, -1, (0, 255, 0), max(2, image.shape[1] // 300))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), gridspec_kw={"width_ratios": [1.6, 1, 1]})
    axes[0].imshow(outlined)
    axes[0].set_title(f"slide, {result.white_cell_count} white cells", fontsize=9)
    axes[1].imshow(result.view)
    axes[1].set_title("classifier input", fontsize=9)
    axes[2].barh(list(result.class_names), result.probabilities, color="#6a5acd")
    axes[2].set_xlim(0, 1)
    axes[2].set_title("probabilities", fontsize=9)
    for ax in axes[:2]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
