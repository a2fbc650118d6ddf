"""``allmtl bench segment``: the same full-size slides through a plain process pool and through the Spark job.

Generates ``--slides`` synthetic 2592x1944 slides into a temporary folder, ingests them into a
temporary lakehouse, then segments them twice with the configured segmenter (``segment.segmenter`` in
the configured lakehouse's ``models``):

(a) a ``multiprocessing`` pool of ``--workers`` processes, each loading the model once
    (``make_predict_fn``) and running the same pure pipeline, PNG encoding included;
(b) ``run_segment`` on the session's master (``local[2]`` in the demo config).

Both timings start cold (process start, TensorFlow import, model load). It prints images/s both ways,
their ratio, and the peak RSS of a Python worker (``getrusage(RUSAGE_SELF).ru_maxrss``, reported back
from each worker; the Spark workers send it in their ``stats`` rows).
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

FULL_WIDTH, FULL_HEIGHT = 2592, 1944


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--slides", type=int, default=8, help="number of full-size slides (default 8)")
    parser.add_argument("--workers", type=int, default=2, help="processes of the plain pool (default 2)")
    parser.add_argument(
        "--workdir", help="folder for the slides and the temporary lakehouse (default: a temp dir, removed afterwards)"
    )


@dataclass(frozen=True)
class BenchResult:
    """Figures of one ``bench segment`` run."""

    slides: int
    workers: int
    master: str
    pool_seconds: float
    pool_cells: int
    pool_peak_rss: int
    spark_segment_seconds: float
    spark_total_seconds: float
    spark_cells: int
    spark_peak_rss: int
    spark_loads: dict[int, int]
    pool_cpu_seconds: float = 0.0
    spark_cpu_seconds: float = 0.0
    spark_planning_seconds: float = 0.0
    spark_task_seconds: tuple[float, ...] = ()

    @property
    def pool_rate(self) -> float:
        return self.slides / self.pool_seconds

    @property
    def spark_rate(self) -> float:
        return self.slides / self.spark_segment_seconds

    def format(self) -> str:
        gib = 2**30
        return "\n".join(
            [
                f"bench segment: {self.slides} slides of {FULL_WIDTH}x{FULL_HEIGHT}",
                f"  (a) process pool, {self.workers} processes: {self.pool_seconds:6.1f} s  "
                f"{self.pool_rate:5.2f} images/s"
                f"  ({self.pool_cells} cells; peak worker RSS {self.pool_peak_rss / gib:.2f} GiB)",
                f"  (b) Spark job on {self.master}: {self.spark_segment_seconds:6.1f} s  "
                f"{self.spark_rate:5.2f} images/s"
                f"  ({self.spark_cells} cells; peak worker RSS {self.spark_peak_rss / gib:.2f} GiB; "
                f"model loads per worker {dict(sorted(self.spark_loads.items()))})",
                f"      of which listing pending slides {self.spark_planning_seconds:.1f} s; Python time per task "
                f"{', '.join(f'{s:.1f}' for s in self.spark_task_seconds)} s",
                f"      with the Delta writes: {self.spark_total_seconds:6.1f} s  "
                f"{self.slides / self.spark_total_seconds:5.2f} images/s",
                f"  Spark / pool: {self.spark_rate / self.pool_rate:.2f}x (target >= 0.8x); end to end "
                f"{self.slides / self.spark_total_seconds / self.pool_rate:.2f}x",
                f"  CPU seconds per image in the Python workers (load-independent; includes TensorFlow import and "
                f"model load): pool {self.pool_cpu_seconds / self.slides:.1f}, "
                f"Spark {self.spark_cpu_seconds / self.slides:.1f}",
                f"  peak Python worker RSS: {max(self.pool_peak_rss, self.spark_peak_rss) / gib:.2f} GiB "
                "(target < 2.5 GiB)",
            ]
        )


# ----------------------------------------------------------------------------- the plain pool

_POOL_STATE: dict = {}


def _pool_init(
    model_file: str, sha256: str, spec_sha256: str | None, tf_threads: int, roi_cfg, cfg, working_pixel_size_um: float
) -> None:
    import cv2

    from allmtl_spark.segmentation.predict import make_predict_fn

    cv2.setNumThreads(1)
    _POOL_STATE.update(
        predict=make_predict_fn(model_file, sha256, tf_threads, spec_sha256=spec_sha256),
        roi=roi_cfg,
        cfg=cfg,
        working=working_pixel_size_um,
    )


def _pool_segment(paths: tuple[str, str | None, str | None, float]) -> tuple[int, int, int, float]:
    """Segment one slide file exactly as a Spark worker does.

    Returns:
        (cells, pid, this process's peak RSS bytes, its CPU seconds so far).
    """
    import resource

    import numpy as np

    from allmtl_spark.segmentation.pipeline import decode_mask, decode_rgb, encode_png, segment_slide, to_working

    image_path, xyc_path, mask_path, pixel_size_um = paths
    image = decode_rgb(Path(image_path).read_bytes())
    truth = decode_mask(Path(mask_path).read_bytes()) if mask_path else None
    blast_xy = None
    if xyc_path:
        text = Path(xyc_path).read_text().split()
        blast_xy = np.asarray([float(v) for v in text]).reshape(-1, 2)
    state = _POOL_STATE
    small = to_working(image, pixel_size_um, state["working"])
    result = segment_slide(
        image,
        state["predict"](small),
        state["roi"],
        state["cfg"],
        pixel_size_um,
        state["working"],
        truth_mask=truth,
        blast_xy=blast_xy,
        working_image=small,
    )
    encoded = [encode_png(result.isolated), encode_png(result.mask), *(encode_png(c.crop) for c in result.cells)]
    del encoded  # encoded as the Spark job does, then dropped: the pool writes no table
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return len(result.cells), os.getpid(), usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime


def run_pool(
    files: list[tuple[str, str | None, str | None, float]],
    workers: int,
    model_file: str,
    sha256: str,
    roi_cfg,
    cfg,
    working_pixel_size_um: float,
    spec_sha256: str | None = None,
) -> tuple[float, int, int, float]:
    """Segment ``files`` in a fresh ``spawn`` pool; returns (seconds, cells, peak worker RSS bytes, worker CPU s)."""
    start = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with context.Pool(
        workers,
        initializer=_pool_init,
        initargs=(model_file, sha256, spec_sha256, cfg.tf_threads, roi_cfg, cfg, working_pixel_size_um),
    ) as pool:
        results = pool.map(_pool_segment, files, chunksize=1)
    seconds = time.perf_counter() - start
    cpu: dict[int, float] = {}
    for _, pid, _, used in results:
        cpu[pid] = max(cpu.get(pid, 0.0), used)
    return seconds, sum(r[0] for r in results), max(r[2] for r in results), sum(cpu.values())


# ----------------------------------------------------------------------------- the command


def run_bench_segment(spark, app_cfg, slides: int, workers: int, workdir: str, progress=print) -> BenchResult:
    """Generate, ingest and segment ``slides`` full-size slides both ways (see the module docstring)."""
    from allmtl_spark import tables
    from allmtl_spark.config.schema import IngestConfig, LakehouseConfig, PrivacyConfig, SourceConfig
    from allmtl_spark.ingest.job import run_ingest
    from allmtl_spark.lakehouse import Lakehouse, read_table
    from allmtl_spark.registry import resolve_model, verify_artifact
    from allmtl_spark.segmentation.job import resolve_segmenter, run_segment
    from allmtl_spark.synth.dataset import SLIDE_DIRS, write_dataset

    cfg = dataclasses.replace(app_cfg.segment, mask_source="unet")
    main_lake = Lakehouse.from_config(app_cfg.lakehouse)
    record = resolve_model(spark, main_lake, cfg.segmenter, task="segmentation", stage="segmenter")
    verify_artifact(record)
    progress(f"segmenter {record.model_id} from {main_lake.root}")

    data = Path(workdir) / "data"
    synth = dataclasses.replace(
        app_cfg.synth,
        output=str(data),
        n_slides=slides,
        n_cells=0,
        slide_width=FULL_WIDTH,
        slide_height=FULL_HEIGHT,
        workers=min(2, app_cfg.synth.workers),
    )
    progress(f"writing {slides} synthetic {FULL_WIDTH}x{FULL_HEIGHT} slides to {data}")
    write_dataset(synth, progress=None)
    bench_lake = Lakehouse.from_config(LakehouseConfig(path=str(Path(workdir) / "lakehouse")))
    ingest = IngestConfig(sources=(SourceConfig(kind="allidb1", path=str(data / "ALL_IDB1"), site="bench"),))
    run_ingest(spark, ingest, PrivacyConfig(allow_demo_key=True), bench_lake)

    seg = resolve_segmenter(spark, main_lake, cfg, app_cfg.roi, record)
    # The pool gets each slide's pixel size as ingest stored it, as the Spark job does.
    pixel = {
        r["slide_id"]: r["pixel_size_um"]
        for r in read_table(spark, bench_lake, tables.SLIDES).select("slide_id", "pixel_size_um").collect()
    }
    files = []
    for image in sorted((data / SLIDE_DIRS["image"]).glob("*.jpg")):
        xyc, mask = data / SLIDE_DIRS["xyc"] / f"{image.stem}.xyc", data / SLIDE_DIRS["mask"] / f"{image.stem}.png"
        files.append(
            (str(image), str(xyc) if xyc.is_file() else None, str(mask) if mask.is_file() else None, pixel[image.stem])
        )

    progress(f"(a) pool of {workers} processes ...")
    pool_seconds, pool_cells, pool_rss, pool_cpu = run_pool(
        files,
        workers,
        record.model_file,
        record.artifact_sha256,
        app_cfg.roi,
        cfg,
        seg.pixel_size_um,
        record.spec_sha256,
    )
    progress(f"(b) Spark job on {spark.sparkContext.master} ...")
    summary = run_segment(spark, cfg, app_cfg.roi, bench_lake, record=record)
    if summary.segmented + sum(summary.rejects.values()) != len(files):
        raise RuntimeError(f"the Spark job handled {summary.segmented} of {len(files)} slides: {summary.format()}")
    return BenchResult(
        slides=len(files),
        workers=workers,
        master=spark.sparkContext.master,
        pool_seconds=pool_seconds,
        pool_cells=pool_cells,
        pool_peak_rss=pool_rss,
        spark_segment_seconds=summary.segment_seconds,
        spark_total_seconds=summary.seconds,
        spark_cells=summary.cells,
        spark_peak_rss=summary.peak_rss_bytes,
        spark_loads=summary.loads_per_worker,
        spark_planning_seconds=summary.planning_seconds,
        spark_task_seconds=tuple(summary.task_seconds),
        pool_cpu_seconds=pool_cpu,
        spark_cpu_seconds=summary.worker_cpu_seconds,
    )


def main(args: argparse.Namespace) -> int:
    from allmtl_spark.cli import load_from_args, spark_from_args

    if args.slides < 1 or args.workers < 1:
        raise SystemExit("bench segment: --slides and --workers must be >= 1")
    cfg = load_from_args(args)
    spark = spark_from_args(args, cfg)
    workdir = args.workdir or tempfile.mkdtemp(prefix="allmtl-bench-segment-")
    os.makedirs(workdir, exist_ok=True)
    try:
        result = run_bench_segment(spark, cfg, args.slides, args.workers, workdir)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print(result.format())
    return 0
