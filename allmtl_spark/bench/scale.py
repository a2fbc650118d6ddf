"""``allmtl bench scale``: what the red-cell pixel-size estimate costs on a full-size slide, and how close it is.

Renders ``--slides`` synthetic 2592x1944 smears (the generator's pixel size, stain, lamp and density
ranges; the true pixel size known), then times ``transforms.scale.estimate_pixel_size`` on each
(``--repeats`` times, one OpenCV thread, after one warm-up call) and prints the wall and CPU milliseconds
per slide (median and worst), the relative error of the confident estimates and how many were confident.
The budget is 50 ms per 2592x1944 slide.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--slides", type=int, default=8, help="full-size synthetic slides (default 8)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per slide (default 5)")
    parser.add_argument("--width", type=int, default=2592, help="slide width (default ALL-IDB1's 2592)")
    parser.add_argument("--height", type=int, default=1944, help="slide height (default 1944)")
    parser.add_argument("--seed", type=int, default=5000, help="first slide's seed (default 5000)")


def run_bench_scale(synth_params, slides: int, repeats: int, width: int, height: int, seed: int, min_confidence: float):
    """Returns a list of (true um/px, estimate or None, confidence, median wall ms, median CPU ms) per slide."""
    import cv2

    from allmtl_spark.synth.smear import render_slide
    from allmtl_spark.transforms.scale import estimate_pixel_size

    cv2.setNumThreads(1)
    rows = []
    for i in range(slides):
        slide = render_slide(
            np.random.default_rng(seed + i), width, height, ("normal", "L1", "L2", "L3")[i % 4], synth_params
        )
        estimate = estimate_pixel_size(slide.image)  # warm-up (first-call costs are not the estimate's)
        walls, cpus = [], []
        for _ in range(repeats):
            wall, cpu = time.perf_counter(), time.process_time()
            estimate = estimate_pixel_size(slide.image)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        rows.append(
            (
                slide.pixel_size_um,
                estimate.pixel_size_um if estimate.confidence >= min_confidence else None,
                estimate.confidence,
                1000 * float(np.median(walls)),
                1000 * float(np.median(cpus)),
            )
        )
    return rows


def format_rows(rows, width: int, height: int, min_confidence: float) -> str:
    walls, cpus = np.array([r[3] for r in rows]), np.array([r[4] for r in rows])
    errors = np.array([r[1] / r[0] - 1 for r in rows if r[1] is not None])
    lines = [f"bench scale: {len(rows)} synthetic {width}x{height} slides, true pixel size known"]
    for true, estimate, confidence, wall, cpu in rows:
        found = f"{estimate:.4f} ({estimate / true - 1:+.1%})" if estimate is not None else "not confident"
        lines.append(
            f"  {true:.4f} um/px -> {found}, confidence {confidence:.2f}; {wall:.1f} ms wall, {cpu:.1f} ms CPU"
        )
    lines.append(
        f"  time per slide: wall median {np.median(walls):.1f} ms, worst {walls.max():.1f} ms; CPU median "
        f"{np.median(cpus):.1f} ms, worst {cpus.max():.1f} ms (budget 50 ms)"
    )
    if errors.size:
        lines.append(
            f"  confident (>= {min_confidence}): {errors.size}/{len(rows)}; "
            f"|error| median {np.median(np.abs(errors)):.1%}, worst {np.abs(errors).max():.1%}"
        )
    else:
        lines.append(f"  confident (>= {min_confidence}): 0/{len(rows)}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    import dataclasses

    from allmtl_spark.cli import load_from_args
    from allmtl_spark.config.schema import SmearParams

    if args.slides < 1 or args.repeats < 1:
        raise SystemExit("bench scale: --slides and --repeats must be >= 1")
    cfg = load_from_args(args)
    params = SmearParams(**{f.name: getattr(cfg.synth, f.name) for f in dataclasses.fields(SmearParams)})
    rows = run_bench_scale(
        params, args.slides, args.repeats, args.width, args.height, args.seed, cfg.ingest.pixel_size_min_confidence
    )
    print(format_rows(rows, args.width, args.height, cfg.ingest.pixel_size_min_confidence))
    return 0
