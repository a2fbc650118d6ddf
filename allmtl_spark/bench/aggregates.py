"""``allmtl bench aggregates``: the driver's memory while computing a scoring run's aggregates.

Writes ``--rows`` synthetic ``slide_scores`` rows (two model versions scoring the same slides, half
of the slides labelled) into a temporary lakehouse, and a tenth of that into another, then in a
fresh driver process per measurement (Spark ``local[2]``, a fixed driver heap: ``--driver-memory``,
2g by default, the same for every measurement) computes:

(new) ``scoring.aggregates.compute_aggregates`` for the newer version: Spark aggregations, at most
      ``score.metrics_max_slides`` labelled slides collected;
(old) what ``write_aggregates`` did before it: the whole ``slide_scores`` table joined with the
      slides' labels collected to the driver as pandas (the baseline, measured in the same run;
      collection only: (new)'s time includes the metric math, bootstrap intervals included).

A sampler in this process reads the resident memory (RSS) of each driver's Python process and of
its JVM every 20 ms and prints their peaks, at both sizes, and the growth from the small to the
large table. A JVM's RSS grows with the heap it has touched, garbage included (it rarely returns
heap to the system), so the driver also reports its JVM heap in use after a full GC
(``System.gc()`` through py4j) before and after the computation: what the computation left alive.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

VERSIONS = ("bench-v1-stage3-fab4", "bench-v2-stage3-fab4")
CLASSES = ("normal", "L1", "L2", "L3")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=200_000, help="score rows of the large table (default 200000)")
    parser.add_argument("--workdir", help="folder for the temporary lakehouses (default: a temp dir)")
    parser.add_argument(
        "--driver-memory", default="2g", help="the measured drivers' JVM heap (-Xmx), the same for all (default 2g)"
    )


def write_synthetic_scores(spark, lake, slides: int, labelled_fraction: float = 0.5, seed: int = 0) -> int:
    """``slides`` slides, each scored by both ``VERSIONS``, into ``lake``; returns the score rows written.

    Probabilities are random (seeded); a ``labelled_fraction`` of the slides carry a FAB label. The
    slides' bytes are 4 placeholder bytes: only their labels are read by the aggregates.
    """
    from pyspark.sql import functions as F

    from allmtl_spark import tables
    from allmtl_spark.lakehouse import ensure_table

    for table in (tables.SLIDES, tables.SLIDE_SCORES):
        ensure_table(spark, lake, table)
    ids = spark.range(slides).withColumn(
        "sha", F.sha2(F.concat(F.lit(f"slide-{seed}-"), F.col("id").cast("string")), 256)
    )
    label = F.when(
        F.rand(seed) < labelled_fraction, F.element_at(F.array(*map(F.lit, CLASSES)), (F.col("id") % 4 + 1).cast("int"))
    )
    slide_rows = ids.select(
        F.concat(F.lit("S"), F.col("id").cast("string")).alias("slide_id"),
        F.col("sha").alias("content_sha256"),
        F.concat(F.lit("file:/bench/S"), F.col("id").cast("string"), F.lit(".jpg")).alias("source_path"),
        F.array().cast("array<string>").alias("duplicate_paths"),
        F.lit("bench").alias("source_kind"),
        F.concat(F.lit("site"), (F.col("id") % 3).cast("string")).alias("site"),
        F.lit("JPEG").alias("format"),
        F.lit(640).alias("width"),
        F.lit(480).alias("height"),
        F.lit(3).alias("channels"),
        F.lit(8).alias("bit_depth"),
        F.lit(bytearray(b"\xff\xd8\xff\xd9")).alias("content"),
        F.when(label.isNull(), None).otherwise((label != "normal").cast("int")).alias("label_binary"),
        label.alias("label_fab"),
        F.lit(None).cast("binary").alias("truth_mask"),
        F.lit(None).cast("string").alias("patient_hash"),
        F.lit("bench").alias("ingest_run_id"),
        F.current_timestamp().alias("ingested_at"),
        F.lit(None).cast(tables.SLIDES.schema["blast_centroids"].dataType).alias("blast_centroids"),
        F.lit(False).alias("has_xyc"),
    )
    _full(slide_rows, tables.SLIDES).write.format("delta").mode("append").save(lake.path(tables.SLIDES))
    written = 0
    for index, version in enumerate(VERSIONS):
        raw = [F.rand(seed * 10 + index * 4 + k) + F.lit(0.01) for k in range(4)]
        total = raw[0] + raw[1] + raw[2] + raw[3]
        probabilities = F.array(*[r / total for r in raw])
        scored = ids.select(
            F.col("sha").alias("content_sha256"),
            F.lit(version).alias("model_version"),
            F.concat(F.lit("S"), F.col("id").cast("string")).alias("slide_id"),
            F.concat(F.lit("site"), (F.col("id") % 3).cast("string")).alias("site"),
            F.lit(None).cast("string").alias("source_path"),
            F.lit("fab4").alias("task"),
            F.array(*map(F.lit, CLASSES)).alias("class_names"),
            probabilities.alias("probabilities"),
        )
        best = F.expr("array_position(probabilities, array_max(probabilities))").cast("int")  # a column, not a literal
        scored = (
            scored.select(
                "*",
                F.element_at("class_names", best).alias("predicted_class"),
                (1 - F.col("probabilities")[0]).alias("p_leukemia"),
            )
            .select(
                "*",
                (F.col("p_leukemia") >= 0.5).alias("predicted_leukemia"),
                F.lit(5).alias("white_cell_count"),
                F.lit(2).alias("blast_cell_count"),
                F.lit(40.0).alias("blast_cell_pct"),
                F.lit("roi-adaptive").alias("segmenter_version"),
                F.lit(None).cast("string").alias("cell_model_version"),
                F.lit(f"bench-run-{index}").alias("scoring_run_id"),
                (F.current_timestamp() + F.expr(f"INTERVAL {index} DAYS")).alias("scored_at"),
                F.lit("keras").alias("runtime"),
                F.lit(None).cast("string").alias("model_file_sha256"),
                F.lit(None).cast("string").alias("cell_model_file_sha256"),
                (F.rand(seed * 10 + index * 4 + 9) < 0.1).alias("needs_review"),  # a tenth flagged, one reason each
            )
            .withColumn(
                "review_reasons",
                F.when(F.col("needs_review"), F.array(F.lit("out_of_distribution"))).otherwise(
                    F.array().cast("array<string>")
                ),
            )
        )
        _full(scored, tables.SLIDE_SCORES).write.format("delta").mode("append").save(lake.path(tables.SLIDE_SCORES))
        written += slides
    return written


def _full(frame, table):
    """``frame`` with every column of ``table`` in its order and type; the ones it lacks are null."""
    from pyspark.sql import functions as F

    return frame.select(
        *[
            (F.col(f.name) if f.name in frame.columns else F.lit(None)).cast(f.dataType).alias(f.name)
            for f in table.schema.fields
        ]
    )


def _live_heap(spark) -> int:
    """Bytes of the driver JVM's heap in use after a full garbage collection (live objects)."""
    jvm = spark._jvm  # noqa: SLF001 - the driver's JVM is only reachable through py4j
    jvm.System.gc()
    runtime = jvm.java.lang.Runtime.getRuntime()
    return int(runtime.totalMemory() - runtime.freeMemory())


def _child(lakehouse: str, approach: str, driver_memory: str) -> None:
    """One measurement in a fresh driver: print a JSON line with the seconds and what was computed."""
    from allmtl_spark import tables
    from allmtl_spark.config import load_config
    from allmtl_spark.lakehouse import Lakehouse, read_table
    from allmtl_spark.scoring.aggregates import compute_aggregates
    from allmtl_spark.session import get_spark

    cfg = load_config(
        "conf/demo.yaml",
        [f"lakehouse.path={lakehouse}", "spark.master=local[2]", f"spark.driver_memory={driver_memory}"],
    )
    spark = get_spark(cfg.spark)
    lake = Lakehouse.from_config(cfg.lakehouse)
    read_table(spark, lake, tables.SLIDE_SCORES).limit(1).collect()  # session and Delta warmed before timing
    heap_before = _live_heap(spark)
    print("READY", flush=True)
    time.sleep(0.5)  # the sampler takes the baseline now
    started = time.perf_counter()
    if approach == "new":
        table = compute_aggregates(spark, lake, cfg.score, VERSIONS[1], list(CLASSES), "bench-run-1")
        result = {"aggregate_rows": len(table)}
    else:
        scores = read_table(spark, lake, tables.SLIDE_SCORES)
        labels = read_table(spark, lake, tables.SLIDES).select("content_sha256", "label_binary", "label_fab")
        frame = scores.drop("source_path").join(labels, "content_sha256", "left").toPandas()
        result = {"collected_rows": len(frame)}
    result["seconds"] = time.perf_counter() - started
    result["heap_retained"] = _live_heap(spark) - heap_before
    result["heap_max"] = int(spark._jvm.java.lang.Runtime.getRuntime().maxMemory())  # noqa: SLF001 - the -Xmx in effect
    print("RESULT " + json.dumps(result), flush=True)
    spark.stop()


def _measure(lakehouse: str, approach: str, driver_memory: str) -> dict:
    """Run ``_child`` in a new process; its peak Python and JVM RSS above their level once warmed."""
    import psutil

    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    child = subprocess.Popen(
        [sys.executable, "-m", "allmtl_spark.bench.aggregates", lakehouse, approach, driver_memory],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    proc = psutil.Process(child.pid)
    peaks = {"python": 0, "jvm": 0}
    base = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                jvm = sum(p.memory_info().rss for p in proc.children(recursive=True) if "java" in p.name())
                python = proc.memory_info().rss
            except psutil.Error:
                break
            peaks["python"], peaks["jvm"] = max(peaks["python"], python), max(peaks["jvm"], jvm)
            if "ready" in base and "python" not in base:
                base.update(python=python, jvm=jvm)
                peaks.update(python=python, jvm=jvm)
            time.sleep(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    result = {}
    for line in child.stdout:
        if line.startswith("READY"):
            base["ready"] = True
        elif line.startswith("RESULT "):
            result = json.loads(line[7:])
    child.wait()
    stop.set()
    thread.join()
    if child.returncode != 0 or not result:
        raise RuntimeError(f"the {approach} measurement on {lakehouse} failed (exit {child.returncode})")
    return {
        **result,
        "python_peak": peaks["python"],
        "jvm_peak": peaks["jvm"],
        "python_growth": peaks["python"] - base.get("python", peaks["python"]),
        "jvm_growth": peaks["jvm"] - base.get("jvm", peaks["jvm"]),
    }


def run_bench_aggregates(spark, rows: int, workdir: str, driver_memory: str = "2g", progress=print) -> str:
    """Write both tables, measure (new) and (old) on each; return the printed figures."""
    from allmtl_spark.config.schema import LakehouseConfig
    from allmtl_spark.lakehouse import Lakehouse

    sizes = (max(2, rows // 10 // len(VERSIONS)), max(2, rows // len(VERSIONS)))  # slides per table
    lakes = {}
    for slides in sizes:
        lake = Lakehouse.from_config(LakehouseConfig(path=os.path.join(workdir, f"lake-{slides}")))
        started = time.perf_counter()
        n = write_synthetic_scores(spark, lake, slides)
        seconds = time.perf_counter() - started
        progress(f"wrote {n} score rows ({slides} slides x {len(VERSIONS)} versions) in {seconds:.0f} s")
        lakes[n] = lake.root
    results = {
        (n, approach): _measure(root, approach, driver_memory)
        for n, root in lakes.items()
        for approach in ("new", "old")
    }
    mib = 2**20
    small, large = sorted(lakes)
    lines = [
        f"driver memory computing one run's aggregates (JVM heap -Xmx {driver_memory}; peak RSS; growth = above the "
        "warmed-up driver; live heap = JVM heap in use after a full GC, after minus before):"
    ]
    for approach, name in (
        ("new", "(new) Spark aggregations + bounded sample"),
        ("old", "(old) whole table to pandas"),
    ):
        lines.append(f"  {name}:")
        for n in (small, large):
            r = results[(n, approach)]
            lines.append(
                f"    {n:>8} rows: python {r['python_peak'] / mib:7.0f} MiB (+{r['python_growth'] / mib:.0f}), "
                f"JVM {r['jvm_peak'] / mib:7.0f} MiB (+{r['jvm_growth'] / mib:.0f}), "
                f"live heap {r['heap_retained'] / mib:+.0f} MiB of max {r['heap_max'] / mib:.0f}, {r['seconds']:.1f} s"
            )
        growth = [
            (results[(n, approach)]["python_growth"] + results[(n, approach)]["jvm_growth"]) / mib
            for n in (small, large)
        ]
        lines.append(f"    growth {small} -> {large} rows: {growth[0]:.0f} -> {growth[1]:.0f} MiB")
    new_large = results[(large, "new")]
    old_large = results[(large, "old")]
    ratio = (old_large["python_growth"] + old_large["jvm_growth"]) / max(
        1, new_large["python_growth"] + new_large["jvm_growth"]
    )
    lines.append(f"  at {large} rows the old way grew the driver {ratio:.1f}x as much as the new one")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    from allmtl_spark.cli import load_from_args, spark_from_args

    cfg = load_from_args(args)
    spark = spark_from_args(args, cfg)
    workdir = args.workdir or tempfile.mkdtemp(prefix="allmtl-bench-aggregates-")
    try:
        print(run_bench_aggregates(spark, args.rows, workdir, args.driver_memory))
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":  # a measurement child: python -m allmtl_spark.bench.aggregates LAKEHOUSE new|old MEMORY
    _child(sys.argv[1], sys.argv[2], sys.argv[3])
