"""``allmtl bench convert``: seconds to convert a classifier to TensorFlow Lite, against the way it used to be done.

Builds an untrained classifier (``--backbone``, ``--input-size``; the weights do not change the
graph), then converts it ``--repeats`` times each way and prints the median seconds and their ratio:

- baseline: ``TFLiteConverter.from_concrete_functions([f], model)``, the converter handed the Keras
  model, whose SavedModel export traces every layer's call functions;
- ``tflite.convert_function``: the same traced function, the converter handed a module holding only
  the model's variables (what scoring runs).

Both must give the same bytes; the command says whether they did.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backbone", default="InceptionV3", help="InceptionV3 | Xception | InceptionResNetV2")
    parser.add_argument("--input-size", type=int, default=75, help="input side in pixels (default 75, the demo's)")
    parser.add_argument("--repeats", type=int, default=1, help="conversions each way (default 1)")


def run_bench_convert(model, repeats: int) -> dict:
    """Median seconds of both conversions of ``model`` and whether their flatbuffers are identical."""
    import tensorflow as tf

    from allmtl_spark.scoring.predict import batch_function
    from allmtl_spark.scoring.tflite import convert_function

    # one traced function for both: each trace names its tensors anew (model_1/..., model_2/...)
    concrete = batch_function(model).get_concrete_function()

    def keras_handed() -> bytes:
        return tf.lite.TFLiteConverter.from_concrete_functions([concrete], model).convert()

    timings: dict[str, list[float]] = {"baseline": [], "variables": []}
    digests: set[str] = set()
    for _ in range(repeats):
        for name, convert in (("baseline", keras_handed), ("variables", lambda: convert_function(concrete, model))):
            started = time.perf_counter()
            blob = convert()
            timings[name].append(time.perf_counter() - started)
            digests.add(hashlib.sha256(blob).hexdigest())
    return {
        "baseline_s": statistics.median(timings["baseline"]),
        "variables_s": statistics.median(timings["variables"]),
        "identical": len(digests) == 1,
        "bytes": len(blob),
    }


def format_result(result: dict, what: str) -> str:
    ratio = result["baseline_s"] / max(result["variables_s"], 1e-9)
    same = "identical flatbuffers" if result["identical"] else "DIFFERENT flatbuffers"
    return (
        f"bench convert: {what}, {result['bytes'] / 1e6:.1f} MB flatbuffer ({same})\n"
        f"  converter handed the Keras model (baseline): {result['baseline_s']:.1f} s\n"
        f"  converter handed the variables (scoring):     {result['variables_s']:.1f} s  ({ratio:.1f}x faster)"
    )


def main(args: argparse.Namespace) -> int:
    from allmtl_spark.networks.classifier import build_classifier

    model = build_classifier(args.backbone, input_size=args.input_size, num_outputs=4, head="dense")
    result = run_bench_convert(model, args.repeats)
    print(format_result(result, f"untrained {args.backbone} at {args.input_size} px, 4 classes"))
    return 0 if result["identical"] else 1
