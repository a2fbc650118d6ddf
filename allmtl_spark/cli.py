"""The ``allmtl`` console script. Each subcommand is also ``spark-submit jobs/<name>.py``.

Every command takes ``--config conf/<name>.yaml`` and any number of ``--set section.key=value``
overrides; Spark commands also take ``--master``. Exit codes: 0 done, 2 bad config or input
(the message says what to fix), 3 a source or the lakehouse cannot be used.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

from allmtl_spark.config import AppConfig, ConfigError, load_config, to_dict
from allmtl_spark.progress import spark_progress

DEFAULT_CONFIG = "conf/demo.yaml"
EXIT_BAD_CONFIG = 2
EXIT_UNUSABLE = 3


def _config_path(arg: str | None) -> str | None:
    if arg:
        return arg
    env = os.environ.get("ALLMTL_CONFIG")
    if env:
        return env
    return DEFAULT_CONFIG if Path(DEFAULT_CONFIG).is_file() else None


def load_from_args(args: argparse.Namespace) -> AppConfig:
    return load_config(_config_path(args.config), args.overrides)


def spark_from_args(args: argparse.Namespace, cfg: AppConfig):
    """The Spark session of a job, after checking that the job's runtime fits (``runtime.check``)."""
    from allmtl_spark.runtime import check_runtime
    from allmtl_spark.session import get_spark

    spark = get_spark(cfg.spark, master=getattr(args, "master", None), warehouse_dir=lakehouse_from(cfg).warehouse)
    check_runtime(getattr(args, "command", ""), cfg.runtime.check, spark.version)
    return spark


def lakehouse_from(cfg: AppConfig):
    from allmtl_spark.lakehouse import Lakehouse

    return Lakehouse.from_config(cfg.lakehouse)


def tracked_lakehouse(cfg: AppConfig):
    """The lakehouse of a job that tracks to MLflow, after connecting to the store (fails fast when required)."""
    from allmtl_spark import tracked

    return tracked.lakehouse(cfg)


# ---------------------------------------------------------------- commands


def cmd_config(args: argparse.Namespace) -> int:
    import yaml

    from allmtl_spark.config.schema import REDACTED

    data = to_dict(load_from_args(args))
    if data["privacy"]["patient_key"] is not None:  # a secret: say that one is set, never what it is
        data["privacy"]["patient_key"] = REDACTED
    print(yaml.safe_dump(data, sort_keys=False))
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from allmtl_spark.synth.dataset import write_dataset

    cfg = load_from_args(args)
    if getattr(args, "check", False):
        from allmtl_spark.synth.check import ClassifierView, run_check

        view = None
        if cfg.train.slide_view == "montage" and cfg.train.cell_tile_um:
            working = cfg.segment.pixel_size_um or cfg.segmenter.pixel_size_um  # where the crops are cut
            view = ClassifierView(working, cfg.train.cell_tile_um, cfg.train.montage_grid, cfg.train.input_size)
        print(run_check(cfg.synth, folds=args.folds, repeats=args.repeats, progress=print, view=view).format())
        return 0
    summary = write_dataset(cfg.synth, progress=print)
    print(summary.format() if hasattr(summary, "format") else summary)
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from allmtl_spark.ingest.job import run_ingest

    cfg = load_from_args(args)
    spark = spark_from_args(args, cfg)
    with spark_progress(spark, "ingest", cfg.spark.progress_interval_s):
        summary = run_ingest(spark, cfg.ingest, cfg.privacy, lakehouse_from(cfg), run_id=args.run_id)
    print(summary.format())
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from allmtl_spark import tracked

    cfg = load_from_args(args)
    spark = spark_from_args(args, cfg)
    tracked.train(spark, cfg, tracked_lakehouse(cfg), run_id=args.run_id)  # prints its summary, then publishes
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from allmtl_spark import tracked

    cfg = load_from_args(args)
    spark = spark_from_args(args, cfg)
    summary = tracked.tune(spark, cfg, tracked_lakehouse(cfg), tune_id=args.run_id)
    print(summary.format())
    return 0


def cmd_train_segmenter(args: argparse.Namespace) -> int:
    from allmtl_spark.registry import resolve_model
    from allmtl_spark.segmentation.train import run_train_segmenter

    cfg = load_from_args(args)
    spark = spark_from_args(args, cfg)
    lake = tracked_lakehouse(cfg)
    from allmtl_spark.transforms.scale import PixelSizePolicy

    summary = run_train_segmenter(
        spark, cfg.segmenter, cfg.roi, lake, run_id=args.run_id, policy=PixelSizePolicy.from_ingest(cfg.ingest)
    )
    print(summary.format())
    publish_models(spark, cfg, lake, [resolve_model(spark, lake, summary.model_id)])
    return 0


def publish_models(spark, cfg: AppConfig, lake, records) -> None:
    """Log a training run's models as MLflow pyfunc models (and registry versions); print where they are."""
    from allmtl_spark import tracked

    tracked.publish(spark, cfg, lake, records)


def cmd_segment(args: argparse.Namespace) -> int:
    from allmtl_spark.segmentation.job import run_segment, write_example_figure, write_stain_figure

    cfg = load_from_args(args)
    spark = spark_from_args(args, cfg)
    lake = lakehouse_from(cfg)
    from allmtl_spark.transforms.scale import PixelSizePolicy

    policy = PixelSizePolicy.from_ingest(cfg.ingest)
    with spark_progress(spark, "segment", cfg.spark.progress_interval_s):
        summary = run_segment(spark, cfg.segment, cfg.roi, lake, run_id=args.run_id, policy=policy)
    print(summary.format())
    if summary.segmented:
        path = f"{lake.reports}/segmentation_example.png"
        print(f"example figure: {write_example_figure(spark, lake, summary.segmenter_version, path)}")
        methods = ("grey_world", "reinhard", "macenko")
        path = write_stain_figure(
            spark, lake, summary.segmenter_version, f"{lake.reports}/stain_normalisation_example.png", methods
        )
        print(f"colour normalisation before/after: {path}")
    return 0


def cmd_eval_detection(args: argparse.Namespace) -> int:
    from allmtl_spark.segmentation.detection_job import run_eval_detection

    cfg = load_from_args(args)
    spark = spark_from_args(args, cfg)
    lake = lakehouse_from(cfg)
    figure = None if args.no_figure else (args.figure or f"{lake.reports}/detection/eval_detection.png")
    report = run_eval_detection(
        spark,
        lake,
        args.boxes,
        args.segmenter,
        args.segment_run,
        figure_path=figure,
        figure_slides=args.figure_slides,
        site=args.site,
    )
    print(report.format())
    return 0


def _eval_detection_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--boxes",
        required=True,
        help="ground-truth boxes: a CSV slide_id,xmin,ymin,xmax,ymax,label (0-based pixels, max inclusive; "
        "allmtl synth writes <output>/boxes.csv) or a folder of Pascal VOC .xml files",
    )
    cmd.add_argument("--segmenter", default="latest", help="segmenter version in segmented_slides (default: latest)")
    cmd.add_argument("--segment-run", help="only this segment run's rows (default: every run of that segmenter)")
    cmd.add_argument("--site", help="only slides of this ingest source's site (when slide ids repeat across sources)")
    cmd.add_argument("--figure", help="figure path (default: <lakehouse>/_reports/detection/eval_detection.png)")
    cmd.add_argument("--figure-slides", type=int, default=4, help="slides in the figure, most errors first (4)")
    cmd.add_argument("--no-figure", action="store_true", help="print the figures only")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from allmtl_spark import tracking
    from allmtl_spark.evaluation.job import run_evaluate

    cfg = load_from_args(args)
    spark = spark_from_args(args, cfg)
    lake = tracked_lakehouse(cfg)
    eval_id = args.eval_id or args.run_id or f"eval-{uuid.uuid4().hex[:8]}"
    params = {**{f"evaluate.{k}": v for k, v in to_dict(cfg.evaluate).items()}, **to_dict(cfg.train)}
    with tracking.mlflow_run(lake.mlflow_uri, f"evaluate {eval_id}", params, {"eval_id": eval_id}) as run:
        summary = run_evaluate(spark, cfg.evaluate, cfg.train, lake, eval_id=eval_id, tune=cfg.tune)  # folds nest
        if run is not None:
            tracking.log_artifact(os.path.dirname(summary.report_path), "report")  # index.html and its figures
    print(summary.format())
    return 0


def _evaluate_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--eval-id",
        type=_run_id("--eval-id"),
        help="resume this evaluation: finished folds are not retrained (default: a new id; --run-id is the same)",
    )


def cmd_score(args: argparse.Namespace) -> int:
    from allmtl_spark import tracking
    from allmtl_spark.scoring.job import run_score

    cfg = load_from_args(args)
    if args.source:
        from dataclasses import replace

        from allmtl_spark.scoring.job import source_for_path

        cfg = replace(cfg, score=replace(cfg.score, source=source_for_path(args.source, cfg.score.source)))
    spark = spark_from_args(args, cfg)
    lake = tracked_lakehouse(cfg)
    run_id = args.run_id or f"score-{uuid.uuid4().hex[:10]}"
    params = {f"score.{k}": v for k, v in to_dict(cfg.score).items()}
    with tracking.mlflow_run(lake.mlflow_uri, f"score {run_id}", params, {"scoring_run_id": run_id}) as run:
        with spark_progress(spark, "score", cfg.spark.progress_interval_s):
            summary = run_score(spark, cfg, lake, run_id=run_id, report=not args.no_report)
        if run is not None:
            from allmtl_spark import tables
            from allmtl_spark.lakehouse import table_version

            tracking.log_score_run(lake, summary, table_version(spark, lake, tables.SLIDES))
    print(summary.format())
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    from allmtl_spark.scoring.results import format_results, select_results

    cfg = load_from_args(args)
    spark = spark_from_args(args, cfg)
    result = select_results(spark, lakehouse_from(cfg), run_id=args.run, model_version=args.model, site=args.site)
    for text in format_results(result, args.format, limit=args.limit, sites_only=args.sites):
        print(text, flush=True)
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from allmtl_spark.summary import collect_summary, format_summary

    cfg = load_from_args(args)
    spark = spark_from_args(args, cfg)
    print(format_summary(collect_summary(spark, lakehouse_from(cfg))), flush=True)
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    from allmtl_spark.scoring.review import format_queue, review_queue

    cfg = load_from_args(args)
    spark = spark_from_args(args, cfg)
    lake = lakehouse_from(cfg)
    if args.ood_site:
        from allmtl_spark.scoring.job import resolve_classifiers
        from allmtl_spark.scoring.review import trust_check

        version = args.model or resolve_classifiers(spark, lake, cfg)[0].model_id
        print("\n".join(trust_check(spark, lake, version, args.ood_site)))
        return 0
    print(format_queue(review_queue(spark, lake, run_id=args.run, model_version=args.model), args.limit))
    return 0


def cmd_import_models(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from allmtl_spark.lakehouse import Lakehouse
    from allmtl_spark.model_import import import_models

    cfg = load_from_args(args)
    spark = spark_from_args(args, cfg)
    source = Lakehouse.from_config(
        replace(
            cfg.lakehouse, path=args.source_lakehouse, models_path=None, reports_path=None, catalog=None, schema=None
        )
    )
    target = lakehouse_from(cfg)
    imported = import_models(spark, cfg, source, target)
    print(f"models for allmtl score from {source.root} into {target.root}:")
    print("\n".join(model.format() for model in imported))
    return 0


def _import_models_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--from",
        dest="source_lakehouse",
        required=True,
        metavar="LAKEHOUSE",
        help="the lakehouse folder holding the models (path-based; e.g. the demo's ./lakehouse)",
    )


def cmd_mlflow(args: argparse.Namespace) -> int:
    from allmtl_spark import tracking

    cfg = load_from_args(args)
    lake = lakehouse_from(cfg)
    print(tracking.describe_store(tracking.settings(lake.mlflow_uri, cfg.tracking, cfg.registry)))
    return 0


def cmd_tables(args: argparse.Namespace) -> int:
    from allmtl_spark.docs import tables_markdown

    print(tables_markdown())
    return 0


def cmd_docs(args: argparse.Namespace) -> int:
    from allmtl_spark.docs import REFERENCE_PATH, reference_markdown

    with open(REFERENCE_PATH, "w") as handle:
        handle.write(reference_markdown())
    print(f"wrote {REFERENCE_PATH}")
    return 0


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str, bool]] = {
    # name: (function, help, needs Spark -> gets --master; --run-id only where RECORDS_RUN_ID)
    "config": (cmd_config, "print the resolved config as YAML", False),
    "synth": (cmd_synth, "write a synthetic data set in the ALL-IDB layouts", False),
    "ingest": (cmd_ingest, "ingest ALL-IDB folders or manifests into the Delta tables", True),
    "train": (cmd_train, "train the multistage (and classical) transfer-learning models with Horovod", True),
    "tune": (
        cmd_tune,
        "choose stage-3 learning rates on validation data, the same grid for both approaches (never the test part)",
        True,
    ),
    "train-segmenter": (cmd_train_segmenter, "train the Residual U-Net white-cell segmenter on the slides", True),
    "segment": (cmd_segment, "segment the slides' white cells into segmented_slides and slide_cells", True),
    "eval-detection": (
        cmd_eval_detection,
        "score a segmenter's white cells against ground-truth boxes: recall, precision, one-per-cell precision",
        True,
    ),
    "evaluate": (
        cmd_evaluate,
        "repeated k-fold cross-validation of the trained approaches, tests and the HTML report",
        True,
    ),
    "score": (cmd_score, "score every slide the model version has not scored yet; aggregates and report", True),
    "results": (
        cmd_results,
        "list the per-slide scores of a scoring run (default: the newest) or model version, and per-site aggregates",
        False,
    ),
    "summary": (
        cmd_summary,
        "what the jobs made: rows per table, newest models and figures, where the reports, models and runs are",
        False,
    ),
    "review": (
        cmd_review,
        "list the slides that need review (the review_queue view): reasons, calibrated probabilities, report",
        False,
    ),
    "import-models": (
        cmd_import_models,
        "copy the models allmtl score would use (classifier, cell model, segmenter) from another lakehouse",
        True,
    ),
    "mlflow": (cmd_mlflow, "list the MLflow runs (and their reports) and the registered models", False),
    "docs": (cmd_docs, "regenerate docs/reference.md (tables and config keys) from the code", False),
    "tables": (cmd_tables, "print the table reference as Markdown", False),
}


# Command-specific options beyond the common ones.
def _score_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--no-report", action="store_true", help="skip the HTML report (faster)")
    cmd.add_argument(
        "--source",
        metavar="PATH",
        help="ingest and score this folder of slide images (jpg, png, tif; recursive) or manifest CSV first; "
        "the other keys of a configured score.source (patient_pattern, labels, site) are kept",
    )


def _results_arguments(cmd: argparse.ArgumentParser) -> None:
    from allmtl_spark.scoring.results import FORMATS

    which = cmd.add_mutually_exclusive_group()
    which.add_argument("--run", metavar="ID", help="this scoring run (default: the newest)")
    which.add_argument("--model", metavar="VERSION", help="every slide this model version scored")
    cmd.add_argument("--site", metavar="S", help="only slides of this site")
    cmd.add_argument("--format", choices=FORMATS, default="table", help="table (default), csv or json")
    cmd.add_argument("--limit", type=int, default=50, help="table: slides shown (default 50)")
    cmd.add_argument("--sites", action="store_true", help="only the per-site aggregates")
    cmd.add_argument("--master", help="Spark master; overrides spark.master")


def _review_arguments(cmd: argparse.ArgumentParser) -> None:
    which = cmd.add_mutually_exclusive_group()
    which.add_argument("--run", metavar="ID", help="only this scoring run's slides")
    which.add_argument("--model", metavar="VERSION", help="only this model version's slides")
    cmd.add_argument("--limit", type=int, default=50, help="slides shown (default 50)")
    cmd.add_argument(
        "--ood-site",
        action="append",
        metavar="SITE",
        help="print the trust check instead: AUROC of ood_score for this site's slides (repeatable) against the "
        "model's other scored slides, flag rates, reasons, ECE before/after calibration (default model: score.model)",
    )
    cmd.add_argument("--master", help="Spark master; overrides spark.master")


def _synth_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--check",
        action="store_true",
        help="write nothing; print colour-only vs morphology-only accuracy on the configured slides and crops, and "
        "colour vs cell size on the classifier's montages",
    )
    cmd.add_argument("--folds", type=int, default=5, help="--check: cross-validation folds (default 5)")
    cmd.add_argument("--repeats", type=int, default=2, help="--check: repeats of the k-fold (default 2)")


def _master_argument(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--master", help="Spark master; overrides spark.master")


EXTRA_ARGUMENTS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "summary": _master_argument,
    "synth": _synth_arguments,
    "evaluate": _evaluate_arguments,
    "score": _score_arguments,
    "results": _results_arguments,
    "eval-detection": _eval_detection_arguments,
    "review": _review_arguments,
    "import-models": _import_models_arguments,
}


# Commands that record a run id on the rows they write; the others (eval-detection, import-models) write no
# run's rows, so a --run-id there would be silently ignored.
RECORDS_RUN_ID = frozenset({"ingest", "train", "tune", "train-segmenter", "segment", "evaluate", "score"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="allmtl", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--version", action=_VersionAction, help="print the package version and the pinned stack as installed"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (func, help_text, needs_spark) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        add_common_arguments(cmd, needs_spark, run_id=name in RECORDS_RUN_ID)
        EXTRA_ARGUMENTS.get(name, lambda _: None)(cmd)
        cmd.set_defaults(func=func)
    _add_optional_commands(sub)
    return parser


class _VersionAction(argparse.Action):
    """``allmtl --version``: computed when asked (it reads package metadata), then exit 0."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from allmtl_spark.runtime import version_text

        print(version_text())
        parser.exit()


def add_common_arguments(cmd: argparse.ArgumentParser, needs_spark: bool, run_id: bool = True) -> None:
    cmd.add_argument("--config", "-c", help=f"YAML config (default: $ALLMTL_CONFIG or {DEFAULT_CONFIG})")
    cmd.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set synth.n_slides=40 (repeatable)",
    )
    if needs_spark:
        cmd.add_argument("--master", help="Spark master; overrides spark-submit's and spark.master")
    if needs_spark and run_id:
        cmd.add_argument(
            "--run-id",
            type=_run_id("--run-id"),
            help="run id recorded on every row, [A-Za-z0-9._-]{1,64} (default: a new one)",
        )


def _run_id(option: str) -> Callable[[str], str]:
    """argparse type: a run id of the allowed characters (it names folders), else exit 2 with the rule."""

    def parse(value: str) -> str:
        from allmtl_spark.ids import check_run_id

        try:
            return check_run_id(value, option)
        except ConfigError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return parse


def _add_optional_commands(sub) -> None:
    """Commands whose modules register themselves (kept separate so `allmtl --help` stays fast)."""
    from allmtl_spark.bench.cli import add_bench_parser
    from allmtl_spark.metrics.cli import add_stats_parser

    add_stats_parser(sub)
    add_bench_parser(sub)


def main(argv: list[str] | None = None) -> int:
    from allmtl_spark.metrics.cli import unrecognized_hint

    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args, extras = parser.parse_known_args(argv)
    if extras:  # say to use commas when a list option's values were space separated
        parser.error(unrecognized_hint(argv, extras))
    configure_logging(args.verbose)
    return run_guarded(args.func, args)


def configure_logging(verbose: bool) -> None:
    """Our INFO lines only: petastorm and TensorFlow are chatty, and py4j logs every closed connection
    at INFO (with a ``ConnectionResetError`` traceback when Horovod's tasks end). ``--verbose`` opens
    everything but py4j's DEBUG lines, which echo every call into the JVM, Spark property values
    (secrets too) included."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("allmtl_spark").setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("py4j").setLevel(logging.INFO if verbose else logging.WARNING)


def run_guarded(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command; turn the errors users can fix into a one-line message and an exit code."""
    from allmtl_spark.errors import UNUSABLE_ERRORS

    try:
        return int(func(args) or 0)
    except ConfigError as err:
        print(f"allmtl: configuration error: {err}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    except UNUSABLE_ERRORS as err:
        print(f"allmtl: {err}", file=sys.stderr)
        return EXIT_UNUSABLE


if __name__ == "__main__":
    sys.exit(main())
