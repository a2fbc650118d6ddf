"""``allmtl bench score``: the same slides scored by one plain process and by the Spark job.

Generates ``--slides`` synthetic slides (``--width`` x ``--height``, default full ALL-IDB1 size)
into a temporary folder and ingests them into a temporary lakehouse, then scores them with the
models of the configured lakehouse (``score.model`` / ``score.cell_model`` / ``segment.segmenter``,
run ``make demo`` first):

(a) one plain Python process: the pure pipeline per slide, then ``model.predict`` in batches for
    all slides' classifier inputs and all their cells (the models loaded once);
(b) ``run_score`` on the session's master (``local[2]`` in the demo config);
(c) as many plain processes as Spark runs tasks at once, side by side, each with its share of the
    slides and the Spark workers' threads (``score.tf_threads``, one OpenCV thread): the Spark job's
    split without Spark. What (c) gains over (a) is what splitting the work over these cores gains on
    this machine (the processes compete for memory and caches); (b) against (c) is what Spark costs.

(a) and (c) are timed from spawning their processes; (b) from the start of its scoring pass, whose
Python workers Spark may reuse from the bench's ingest, so (b) can skip an interpreter start and
the imports of numpy, pandas, pyarrow and OpenCV (0.5 s in a plain process here). Every side imports TensorFlow and
loads the models inside its timed part, and all run the classifiers in the same runtime
(``score.runtime``; a TFLite conversion is made before any is timed). It prints slides/s each way, the
ratio (b)/(a) (target: Spark >= 1.5x on 2 cores), (c)/(a), (b)/(c), how many times each worker
loaded the models, and the peak RSS of a Python worker. Last, what the pooled-feature
out-of-distribution check adds per slide against the same classifier without it
(``feature_check_cost``, both measured in the run).
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import queue as _queue
import shutil
import tempfile
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--slides", type=int, default=12, help="number of slides (default 12)")
    parser.add_argument("--width", type=int, default=2592, help="slide width (default ALL-IDB1's 2592)")
    parser.add_argument("--height", type=int, default=1944, help="slide height (default 1944)")
    parser.add_argument("--workdir", help="folder for the slides and the temporary lakehouse (default: temp dir)")


def _plain(index: int, files: list[str], plan, threads: int, queue) -> None:
    """Child process: score ``files`` with the pure functions; put ``(index, _Result)`` on ``queue``.

    ``threads``: 0 for a lone process (TensorFlow, TFLite and OpenCV on every core); otherwise
    TensorFlow / TFLite threads per process and one OpenCV thread, as in a Spark worker.
    """
    import resource

    import cv2
    import numpy as np

    from allmtl_spark.scoring.pipeline import NoWhiteCells, model_inputs
    from allmtl_spark.segmentation import predict as shared
    from allmtl_spark.segmentation.pipeline import decode_rgb

    if threads:
        cv2.setNumThreads(1)
    unet = (
        shared.make_predict_fn(
            plan.segmenter_file, plan.segmenter_sha256, threads, spec_sha256=plan.segmenter_spec_sha256
        )
        if plan.segmenter_file
        else None
    )
    classify, classify_cells = dataclasses.replace(plan, tf_threads=threads).classifier_fns()
    cell_view = plan.cell_model.view if plan.cell_model else None
    inputs, cells = [], []
    for path in files:
        try:
            image = decode_rgb(Path(path).read_bytes())
            # the red-cell estimate, as ingest made it for the Spark side (a few tens of ms)
            pixel = plan.pixel_policy.resolve(image, None)
            _, _, slide_input, cell_inputs = model_inputs(
                image,
                unet,
                plan.classifier.view,
                cell_view,
                plan.roi,
                plan.segment,
                pixel.pixel_size_um,
                plan.working_pixel_size_um,
            )
        except NoWhiteCells:  # the Spark job rejects it too
            continue
        inputs.append(slide_input)
        if cell_inputs is not None:
            cells.append(cell_inputs)
    # the models see every slide's inputs in one batched predict (the plain baseline's advantage)
    if inputs:
        classify(np.stack(inputs))
    if classify_cells is not None and cells:
        classify_cells(np.concatenate(cells))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result = _Result(usage.ru_maxrss * 1024, shared.model_loads(), usage.ru_utime + usage.ru_stime, len(inputs))
    queue.put((index, result))


@dataclasses.dataclass(frozen=True)
class _Result:
    peak_rss_bytes: int
    loads: int
    cpu_seconds: float
    slides: int  # scored (slides without a white cell are left out, as the Spark job rejects them)


@dataclasses.dataclass(frozen=True)
class PlainRun:
    seconds: float  # wall, from the first process's start to the last one's end
    peak_rss_bytes: int  # of the largest process
    loads: list[int]  # models loaded, per process
    slides: list[int]  # slides scored, per process
    cpu_seconds: float  # all processes together
    threads: int  # TensorFlow threads per process (0: every core)


def run_plain(files: list[str], plan, processes: int = 1) -> PlainRun:
    """Score ``files`` in ``processes`` fresh ``spawn`` processes at once (cold, like Spark workers).

    One process uses every core. With more, each gets every ``processes``-th slide, one OpenCV
    thread and ``plan.tf_threads`` TensorFlow threads (at least 1), as the Spark job's workers.

    Raises:
        RuntimeError: a process died before reporting (the others are stopped).
    """
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    threads = 0 if processes == 1 else (plan.tf_threads or 1)
    started = time.perf_counter()
    children = [
        context.Process(target=_plain, args=(i, files[i::processes], plan, threads, queue)) for i in range(processes)
    ]
    for child in children:
        child.start()
    try:
        results = _collect(queue, children)
    finally:
        for child in children:
            if child.is_alive():
                child.terminate()
            child.join()
    return PlainRun(
        seconds=time.perf_counter() - started,
        peak_rss_bytes=max(r.peak_rss_bytes for r in results),
        loads=[r.loads for r in results],
        slides=[r.slides for r in results],
        cpu_seconds=sum(r.cpu_seconds for r in results),
        threads=threads,
    )


def _collect(queue, children) -> list[_Result]:
    """Every child's result, in child order; raises as soon as a child has exited without one."""
    results: dict[int, _Result] = {}
    while len(results) < len(children):
        try:
            index, result = queue.get(timeout=1)
            results[index] = result
        except _queue.Empty:
            lost = [(i, c.exitcode) for i, c in enumerate(children) if i not in results and c.exitcode is not None]
            if lost:
                raise RuntimeError(
                    f"plain scoring process {lost[0][0]} failed (exit code {lost[0][1]}); its traceback is above"
                ) from None
    return [results[i] for i in range(len(children))]


def run_bench_score(spark, cfg, slides: int, width: int, height: int, workdir: str, progress=print) -> str:
    from allmtl_spark.config.schema import LakehouseConfig, SourceConfig
    from allmtl_spark.lakehouse import Lakehouse
    from allmtl_spark.registry import register_model
    from allmtl_spark.scoring.job import ScorePlan, resolve_classifiers, run_score
    from allmtl_spark.segmentation.job import resolve_segmenter
    from allmtl_spark.synth.dataset import write_dataset

    main_lake = Lakehouse.from_config(cfg.lakehouse)
    classifier, cell_model = resolve_classifiers(spark, main_lake, cfg)
    seg = resolve_segmenter(spark, main_lake, cfg.segment, cfg.roi)
    progress(
        f"models from {main_lake.root}: {classifier.model_id}, cells {cell_model.model_id if cell_model else '-'}"
        f", segmenter {seg.version}"
    )
    data = Path(workdir) / "data"
    write_dataset(
        dataclasses.replace(
            cfg.synth,
            output=str(data),
            n_slides=slides,
            n_cells=0,
            slide_width=width,
            slide_height=height,
            seed=cfg.synth.seed + 1000,
        ),
        progress=None,
    )
    files = sorted(str(p) for p in (data / "ALL_IDB1" / "im").glob("*.jpg"))
    plan = ScorePlan.build(classifier, cell_model, seg, cfg, main_lake.cache)
    progress(f"(a) one plain process, {len(files)} slides of {width}x{height} ...")
    plain = run_plain(files, plan)
    # as many as Spark runs tasks at once, but never more processes than this machine's cores
    workers = min(spark.sparkContext.defaultParallelism, len(os.sched_getaffinity(0)))
    progress(f"(c) {workers} plain processes side by side ...")
    split = run_plain(files, plan, processes=workers)

    # the configured lakehouse's cache: the conversions made for (a) serve (b) as well
    bench_lake = Lakehouse.from_config(
        LakehouseConfig(path=str(Path(workdir) / "lakehouse"), cache_path=main_lake.cache)
    )
    for ref in filter(None, [seg.record, *(_record(spark, main_lake, m) for m in (classifier, cell_model) if m)]):
        register_model(spark, bench_lake, ref)
    source = SourceConfig(kind="allidb1", path=str(data / "ALL_IDB1"), site="bench")
    bench_cfg = dataclasses.replace(
        cfg,
        score=dataclasses.replace(
            cfg.score, model=classifier.model_id, cell_model=cell_model.model_id if cell_model else None, source=source
        ),
        privacy=dataclasses.replace(cfg.privacy, allow_demo_key=True),
    )
    progress(f"(b) Spark job on {spark.sparkContext.master} ...")
    summary = run_score(spark, bench_cfg, bench_lake, report=False)
    spark_seconds = summary.scoring_seconds
    gib = 2**30
    n = len(files)
    plain_rate, spark_rate, split_rate = n / plain.seconds, n / spark_seconds, n / split.seconds
    return "\n".join(
        [
            f"bench score: {n} slides of {width}x{height} (classifiers: {cfg.score.runtime}, every side)",
            f"  (a) one plain process:  {plain.seconds:6.1f} s  {plain_rate:5.3f} slides/s  "
            f"(models loaded {plain.loads[0]} times; {plain.slides[0]} slides scored; peak RSS "
            f"{plain.peak_rss_bytes / gib:.2f} GiB)",
            f"  (b) Spark job on {spark.sparkContext.master}: {spark_seconds:6.1f} s  {spark_rate:5.3f} slides/s  "
            f"(model loads per worker {dict(sorted(summary.loads_per_worker.items()))}; peak worker RSS "
            f"{summary.peak_rss_bytes / gib:.2f} GiB); with ingest, Delta writes and aggregates "
            f"{summary.seconds:.1f} s",
            f"  (c) {workers} plain processes, {_threads(split.threads)} each: "
            f"{split.seconds:6.1f} s  {split_rate:5.3f} slides/s  "
            f"(models loaded {split.loads} times; slides scored {split.slides})",
            f"  Spark / plain: {spark_rate / plain_rate:.2f}x (target >= 1.5x)",
            f"  {workers} processes / plain: {split_rate / plain_rate:.2f}x (what splitting the slides over "
            f"{workers} workers gains here, without Spark); Spark / {workers} processes: "
            f"{spark_rate / split_rate:.2f}x (what Spark itself costs or saves)",
            _ceiling_line(plain.cpu_seconds, plain.seconds),
            *feature_check_cost(plan, plain.seconds / max(plain.slides[0], 1)),
        ]
    )


def feature_check_cost(plan, seconds_per_slide: float, calls: int = 100, seed: int = 0) -> list[str]:
    """What the pooled-feature check adds per slide, against the same classifier without it, in this run.

    Times ``calls`` one-image calls (a slide's call) of the slide classifier's TFLite conversion with
    the pooled-feature output (what scoring runs) and of a conversion without it (what scoring ran
    before), one thread each as in a Spark worker, alternating in rounds so that load on the machine
    hits both alike; then ``ScorePlan.trust`` with and without the model's feature check. The added
    time is set against ``seconds_per_slide`` (the plain process's wall time per slide).
    """
    import numpy as np
    import tensorflow as tf

    from allmtl_spark.checksums import load_keras, read_verified
    from allmtl_spark.scoring.pipeline import SlideScore
    from allmtl_spark.scoring.predict import tflite_predict

    ref = plan.classifier
    if ref.feature_ood is None or ref.runtime != "tflite":
        return ["  pooled-feature check: not measured (the model has none, or scoring does not run TFLite)"]
    model = load_keras(read_verified(ref.model_file, ref.sha256, "classifier"))
    signature = [tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)]
    single = tf.function(lambda x: model(x, training=False), input_signature=signature).get_concrete_function()
    without = tflite_predict(
        tf.lite.Interpreter(
            model_content=tf.lite.TFLiteConverter.from_concrete_functions([single], model).convert(), num_threads=1
        ),
        1,
    )
    served = read_verified(*ref.serving(), "classifier (TensorFlow Lite)")
    with_features = tflite_predict(tf.lite.Interpreter(model_content=served, num_threads=1), 1)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (calls, *model.input_shape[1:])).astype(np.float32)
    timed = {"with": 0.0, "without": 0.0}
    outputs = {}
    for run in (with_features.with_features, without.with_features):
        run(images[:1])  # allocate
    for start in range(0, calls, 10):  # alternate in rounds of 10 calls
        for name, run in (("with", with_features.with_features), ("without", without.with_features)):
            began = time.perf_counter()
            for i in range(start, min(start + 10, calls)):
                outputs[name, i] = run(images[i : i + 1])
            timed[name] += time.perf_counter() - began
    probabilities, features = outputs["with", 0]
    view = images[0].astype(np.uint8)
    result = SlideScore(ref.class_names, probabilities[0], 12, 3, None, view, features[0])
    old = dataclasses.replace(plan, classifier=dataclasses.replace(ref, feature_ood=None, ood_fused=None))
    trust = {}
    for name, p in (("with", plan), ("without", old)):
        p.trust(result, 0.155, None)  # parse once, as a worker does
        began = time.perf_counter()
        for _ in range(calls):
            p.trust(result, 0.155, None)
        trust[name] = (time.perf_counter() - began) / calls
    call_with, call_without = timed["with"] / calls, timed["without"] / calls
    added = (call_with - call_without) + (trust["with"] - trust["without"])
    return [
        f"  pooled-feature check, {calls} slide calls each, one thread: classifier {call_with * 1e3:.2f} ms with the "
        f"feature output vs {call_without * 1e3:.2f} ms without ({call_with / call_without:.2f}x); trust step "
        f"{trust['with'] * 1e3:.2f} ms with the feature check vs {trust['without'] * 1e3:.2f} ms without",
        f"  added per slide {added * 1e3:.2f} ms = {100 * added / seconds_per_slide:.2f} % of (a)'s "
        f"{seconds_per_slide:.2f} s a slide: throughput with / without the check "
        f"{seconds_per_slide / (seconds_per_slide + added):.3f}x",
    ]


def _threads(count: int) -> str:
    return "one thread" if count == 1 else f"{count} threads"


def _ceiling_line(cpu_seconds: float, wall_seconds: float) -> str:
    """How busy the plain process kept the machine, and the speed-up that leaves for any scheme on the same cores.

    The plain process already runs TensorFlow (and OpenCV) on every core; only the time it spends
    single-threaded is left to gain. With the same CPU work per slide, no scheme on these cores can
    beat it by more than cores / busy cores (an optimistic bound: spinning thread pools count as busy).
    """
    cores = os.cpu_count() or 1
    busy = cpu_seconds / wall_seconds
    return (
        f"  plain process kept {busy:.2f} of {cores} cores busy ({cpu_seconds:.1f} CPU s in {wall_seconds:.1f} s): "
        f"the same CPU work spread over {cores} cores can be at most {cores / busy:.2f}x faster"
    )


def _record(spark, lake, ref):
    from allmtl_spark.registry import resolve_model

    return resolve_model(spark, lake, ref.model_id)


def main(args: argparse.Namespace) -> int:
    from allmtl_spark.cli import load_from_args, spark_from_args

    cfg = load_from_args(args)
    spark = spark_from_args(args, cfg)
    workdir = args.workdir or tempfile.mkdtemp(prefix="allmtl-bench-score-")
    try:
        print(run_bench_score(spark, cfg, args.slides, args.width, args.height, workdir))
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0
