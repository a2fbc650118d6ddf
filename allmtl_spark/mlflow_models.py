"""Every model a training run registers, also as an MLflow pyfunc model and a registry version.

Three kinds, each logged in the MLflow run that trained the model (artifact path ``model``) with a
signature and an input example (a synthetic smear or cell drawn by ``allmtl_spark.synth``, never
a patient's image):

- ``slide_scorer`` (stage 3): image bytes (or a file path, e.g. ``/Volumes/...``) in; class
  probabilities, predicted class, P(leukemia), white-cell count, blast count and blast fraction
  out. It bundles the classifier, the stage-2 cell model and the U-Net the scoring job would use,
  and runs the scoring job's own code (``ScorePlan.score``), so ``mlflow.pyfunc.spark_udf`` over
  a DataFrame of slides gives the probabilities ``allmtl score`` stores (with ``score.runtime:
  keras``; the TFLite runtime differs by < 1e-5).
- ``cell_classifier`` (stage 2): an isolated cell crop in, class probabilities out.
- ``segmenter``: slide bytes in, white-cell count and the mask (PNG) out.

With ``registry.name`` set, each logged model becomes a version of ``<name>_<suffix>`` (Unity
Catalog on Databricks, the tracking store's registry elsewhere), tagged with its ``model_id``,
and ``registry.alias`` moves to it. The ``models`` Delta table stays the system of record (hashes,
data versions); its ``mlflow_model_uri`` and ``registered_model_uri`` columns link each row to
MLflow. Models run in the calling Python environment (``env_manager="local"``): the package must be
installed there, as it is on the job clusters.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import asdict, replace

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

ARTIFACT_PATH = "model"
SPEC_ARTIFACT = "spec"
KINDS = ("slide_scorer", "cell_classifier", "segmenter")
MODEL_ID_TAG = "allmtl.model_id"
MAX_INPUT_BYTES = 64 * 1024 * 1024  # a file larger than this is not read (ingest.max_file_bytes' default)
EXAMPLE_SEED = 20260101

try:  # the class MLflow pickles must derive from PythonModel; keep the module importable without MLflow
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover - mlflow-skinny is a base dependency
    PythonModel = object


# ----------------------------------------------------------------------------- the model


class AllmtlModel(PythonModel):
    """The pyfunc: ``load_context`` rebuilds the scoring plan from the bundled files, ``predict`` runs it."""

    def load_context(self, context) -> None:
        with open(context.artifacts[SPEC_ARTIFACT]) as handle:
            self.spec = json.load(handle)
        self.plan = plan_from_spec(self.spec, context.artifacts)
        self._models = None

    def _loaded(self):
        if self._models is None:
            if self.spec["kind"] == "segmenter":  # the U-Net only
                from allmtl_spark.segmentation.predict import make_predict_fn

                plan = self.plan
                unet = make_predict_fn(
                    plan.segmenter_file, plan.segmenter_sha256, plan.tf_threads, spec_sha256=plan.segmenter_spec_sha256
                )
                self._models = (unet, None, None)
            else:
                self._models = self.plan.models()
        return self._models

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        """One output row per input row; a row that cannot be scored gets ``error`` and null values."""
        from allmtl_spark.scoring.pipeline import NoWhiteCells

        kind = self.spec["kind"]
        rows = []
        for image, path in _inputs(model_input):
            try:
                rgb = _decode(image, path, self.plan.segment.max_decoded_pixels)
                rows.append(_PREDICT[kind](self, rgb))
            except (ValueError, OSError, NoWhiteCells) as err:
                rows.append({"error": f"{type(err).__name__}: {err}"})
        return pd.DataFrame(rows, columns=[c.name for c in output_schema(kind).inputs]).replace({np.nan: None})


def _inputs(frame: pd.DataFrame):
    """(bytes or None, path or None) per row: columns ``image`` / ``path``, or a single unnamed column."""
    if "image" not in frame.columns and "path" not in frame.columns:
        first = frame.iloc[:, 0]
        frame = pd.DataFrame({"path" if first.map(lambda v: isinstance(v, str)).all() else "image": first})
    images = frame["image"] if "image" in frame.columns else [None] * len(frame)
    paths = frame["path"] if "path" in frame.columns else [None] * len(frame)
    for image, path in zip(images, paths, strict=True):
        yield (
            (None if image is None or (isinstance(image, float) and np.isnan(image)) else bytes(image)),
            (path if isinstance(path, str) and path else None),
        )


def _decode(image: bytes | None, path: str | None, max_pixels: int) -> np.ndarray:
    from allmtl_spark.segmentation.pipeline import decode_rgb

    if image is None:
        if path is None:
            raise ValueError("the row has neither image bytes nor a path")
        if os.path.getsize(path) > MAX_INPUT_BYTES:
            raise ValueError(f"{path} is larger than {MAX_INPUT_BYTES} bytes; not read")
        with open(path, "rb") as handle:
            image = handle.read()
    rgb = decode_rgb(image)
    if rgb.shape[0] * rgb.shape[1] > max_pixels:
        raise ValueError(f"{rgb.shape[1]}x{rgb.shape[0]} exceeds segment.max_decoded_pixels={max_pixels}")
    return rgb


def _predict_slide(model: AllmtlModel, rgb: np.ndarray) -> dict:
    result = model.plan.score(rgb, model._loaded())
    return {
        "probabilities": [float(p) for p in result.probabilities],
        "predicted_class": result.predicted_class,
        "p_leukemia": result.p_leukemia,
        "white_cell_count": int(result.white_cell_count),
        "blast_cell_count": None if result.blast_cell_count is None else int(result.blast_cell_count),
        "blast_fraction": None if result.blast_cell_pct is None else result.blast_cell_pct / 100.0,
        "error": None,
    }


def _predict_cell(model: AllmtlModel, rgb: np.ndarray) -> dict:
    from allmtl_spark.training.examples import view_from_images

    _, classify, _ = model._loaded()
    probabilities = classify(view_from_images([rgb], model.plan.classifier.view, None, None)[None])[0]
    names = model.plan.classifier.class_names
    return {
        "probabilities": [float(p) for p in probabilities],
        "predicted_class": names[int(np.argmax(probabilities))],
        "error": None,
    }


def _predict_segmenter(model: AllmtlModel, rgb: np.ndarray) -> dict:
    import cv2

    from allmtl_spark.scoring.pipeline import segment_image

    unet = model._loaded()[0]
    plan = model.plan
    pixel = plan.pixel_policy.resolve(rgb, None)
    segmentation = segment_image(rgb, unet, plan.roi, plan.segment, pixel.pixel_size_um, plan.working_pixel_size_um)
    ok, png = cv2.imencode(".png", segmentation.mask)
    return {"white_cell_count": len(segmentation.cells), "mask_png": png.tobytes() if ok else None, "error": None}


_PREDICT = {"slide_scorer": _predict_slide, "cell_classifier": _predict_cell, "segmenter": _predict_segmenter}


# ----------------------------------------------------------------------------- plan <-> spec


def spec_of(plan, kind: str) -> tuple[dict, dict[str, str]]:
    """(JSON-able spec, artifact name -> file) of a ``ScorePlan`` for a pyfunc of ``kind``."""
    from allmtl_spark.config import to_dict

    artifacts = {}
    refs = {}
    for name, ref in (("classifier", plan.classifier), ("cell_model", plan.cell_model)):
        if ref is None or (kind == "segmenter") or (kind == "cell_classifier" and name == "cell_model"):
            continue
        artifacts[name] = ref.model_file
        refs[name] = {
            "model_id": ref.model_id,
            "sha256": ref.sha256,
            "class_names": list(ref.class_names),
            "view": asdict(ref.view),
        }
    if plan.segmenter_file and kind != "cell_classifier":
        artifacts["segmenter"] = plan.segmenter_file
    spec = {
        "kind": kind,
        "models": refs,
        "segmenter_version": plan.segmenter_version,
        "segmenter_sha256": plan.segmenter_sha256,
        "segmenter_spec_sha256": plan.segmenter_spec_sha256,
        "working_pixel_size_um": plan.working_pixel_size_um,
        "pixel_policy": asdict(plan.pixel_policy),
        "roi": to_dict(plan.roi),
        "segment": to_dict(plan.segment),
        "blast_threshold": plan.blast_threshold,
        "tf_threads": plan.tf_threads,
        "classifier_batch": plan.classifier_batch,
    }
    return spec, artifacts


def plan_from_spec(spec: dict, artifacts: dict[str, str]):
    """The ``ScorePlan`` a logged model runs, with its files where MLflow put them (hashes checked on load)."""
    from allmtl_spark.config.loader import build
    from allmtl_spark.config.schema import RoiConfig, SegmentConfig
    from allmtl_spark.scoring.job import ModelRef, ScorePlan
    from allmtl_spark.training.examples import ViewSpec
    from allmtl_spark.transforms.scale import PixelSizePolicy

    def model_file(name: str) -> str:
        """The model file of artifact ``name``: a folder holding it (and its model.json)."""
        return os.path.join(artifacts[name], spec["files"][name])

    def ref(name: str) -> ModelRef | None:
        if name not in spec["models"]:
            return None
        data = spec["models"][name]
        names = tuple(data["class_names"])
        return ModelRef(data["model_id"], model_file(name), data["sha256"], names, ViewSpec(**data["view"]))

    return ScorePlan(
        classifier=ref("classifier") or no_classifier(),  # the segmenter's pyfunc has none
        cell_model=ref("cell_model"),
        segmenter_version=spec["segmenter_version"],
        segmenter_file=model_file("segmenter") if "segmenter" in artifacts else None,
        segmenter_sha256=spec["segmenter_sha256"] if "segmenter" in artifacts else None,
        working_pixel_size_um=_working_pixel_size(spec),
        roi=build(RoiConfig, spec["roi"], "roi"),
        segment=build(SegmentConfig, spec["segment"], "segment"),
        blast_threshold=float(spec["blast_threshold"]),
        tf_threads=int(spec["tf_threads"]),
        classifier_batch=int(spec["classifier_batch"]),
        pixel_policy=PixelSizePolicy(**spec["pixel_policy"]) if "pixel_policy" in spec else PixelSizePolicy(),
        segmenter_spec_sha256=spec.get("segmenter_spec_sha256") if "segmenter" in artifacts else None,
    )


def _working_pixel_size(spec: dict) -> float:
    """The segmenter's working pixel size of a spec; specs of an earlier release hold ``scale`` (of ALL-IDB1's)."""
    from allmtl_spark import units

    if "working_pixel_size_um" in spec:
        return float(spec["working_pixel_size_um"])
    return units.ALLIDB1_PIXEL_SIZE_UM / float(spec["scale"])


# ----------------------------------------------------------------------------- signatures and examples


def input_schema():
    from mlflow.types.schema import ColSpec, Schema

    return Schema([ColSpec("binary", "image", required=False), ColSpec("string", "path", required=False)])


def output_schema(kind: str):
    from mlflow.types.schema import Array, ColSpec, Schema

    if kind == "segmenter":
        columns = [ColSpec("long", "white_cell_count", required=False), ColSpec("binary", "mask_png", required=False)]
    else:
        columns = [
            ColSpec(Array("double"), "probabilities", required=False),
            ColSpec("string", "predicted_class", required=False),
        ]
        if kind == "slide_scorer":
            columns += [
                ColSpec("double", "p_leukemia", required=False),
                ColSpec("long", "white_cell_count", required=False),
                ColSpec("long", "blast_cell_count", required=False),
                ColSpec("double", "blast_fraction", required=False),
            ]
    return Schema([*columns, ColSpec("string", "error", required=False)])


def example_image(kind: str) -> bytes:
    """PNG bytes of a small synthetic smear (or cell crop for the cell classifier): no patient data."""
    import cv2

    from allmtl_spark.synth.smear import SmearParams, render_cell_crop, render_slide

    rng = np.random.default_rng(EXAMPLE_SEED)
    drawn = render_cell_crop(rng, 128, "L1", SmearParams()) if kind == "cell_classifier" else None
    drawn = drawn or render_slide(rng, 320, 240, "L1", SmearParams(white_cells_per_slide=(3, 3)))
    ok, png = cv2.imencode(".png", cv2.cvtColor(drawn.image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("could not encode the example image")
    return png.tobytes()


# ----------------------------------------------------------------------------- logging and registering


def registered_name(base: str, kind: str, task: str | None, approach: str | None) -> str:
    """``<base>_<task>_<approach>`` (slide scorers), ``<base>_<task>`` (cell models), ``<base>_segmenter``."""
    if kind == "slide_scorer":
        return f"{base}_{task}_{approach}"
    if kind == "cell_classifier":
        return f"{base}_{task}"
    return f"{base}_segmenter"


def log_pyfunc(plan, kind: str, tags: dict[str, str], input_example: bool = True):
    """Log the pyfunc of ``plan`` into the active MLflow run; returns MLflow's ``ModelInfo``.

    ``input_example``: log a synthetic example with it, which MLflow checks by loading the logged model
    and scoring the example (``tracking.log_input_example``).
    """
    spec, artifacts = spec_of(plan, kind)
    with tempfile.TemporaryDirectory() as folder:
        spec_path = os.path.join(folder, "allmtl_model.json")
        with open(spec_path, "w") as handle:
            json.dump(spec, handle, indent=2, sort_keys=True)
        # Each model file in a folder of its own, with the model.json beside it (the U-Net loader reads
        # its builder keywords there): the artifacts are all named model.h5 and MLflow keeps names.
        staged = {}
        for name, path in artifacts.items():
            staged[name] = os.path.join(folder, name)
            os.makedirs(staged[name])
            for source in (path, os.path.join(os.path.dirname(path), "model.json")):
                if os.path.isfile(source):
                    _link_or_copy(source, os.path.join(staged[name], os.path.basename(source)))
            spec.setdefault("files", {})[name] = os.path.basename(path)
        with open(spec_path, "w") as handle:
            json.dump(spec, handle, indent=2, sort_keys=True)
        with warnings.catch_warnings():
            # without an example (tracking.log_input_example: false, chosen in the config) MLflow warns that one
            # was not provided, once per model: nothing left for the user to act on
            warnings.filterwarnings("ignore", message=".*input example was not provided", category=UserWarning)
            return _log_model(spec_path, staged, kind, tags, input_example)


def _log_model(spec_path: str, staged: dict, kind: str, tags: dict, input_example: bool):
    """``mlflow.pyfunc.log_model`` of the staged files, with or without a synthetic input example."""
    from importlib import metadata

    import mlflow
    from mlflow.models import ModelSignature

    return mlflow.pyfunc.log_model(
        ARTIFACT_PATH,
        python_model=AllmtlModel(),
        artifacts={SPEC_ARTIFACT: spec_path, **staged},
        signature=ModelSignature(inputs=input_schema(), outputs=output_schema(kind)),
        input_example=pd.DataFrame({"image": [example_image(kind)], "path": [None]}) if input_example else None,
        pip_requirements=_requirements(metadata.version("allmtl-spark")),
        metadata={"allmtl_kind": kind, **tags},
    )


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)  # same bytes, no copy
    except OSError:
        shutil.copyfile(source, target)


def _requirements(version: str) -> list[str]:
    """The model's environment: this package (its wheel on the job clusters) and the verified stack."""
    from importlib import metadata

    pins = [f"allmtl-spark=={version}"]
    for name in ("tensorflow-cpu", "numpy", "pandas", "opencv-python-headless", "mlflow-skinny"):
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return pins


def register(model_uri: str, name: str, alias: str | None, tags: dict[str, str]) -> str:
    """Register ``model_uri`` as a new version of ``name``, tag it, move ``alias`` to it; returns ``models:/name/v``."""
    import mlflow

    version = mlflow.register_model(model_uri, name, tags=tags)
    if alias:
        mlflow.MlflowClient().set_registered_model_alias(name, alias, version.version)
    return f"models:/{name}/{version.version}"


def version_tags(uri: str) -> dict[str, str]:
    """The tags of the registry version ``models:/<name>@<alias>`` or ``models:/<name>/<version>`` (and ``version``).

    Raises:
        ArtifactError: no such version or alias (the message names the registry).
    """
    import mlflow

    from allmtl_spark.errors import ArtifactError

    rest = uri.removeprefix("models:/")
    client = mlflow.MlflowClient()
    try:
        if "@" in rest:
            name, alias = rest.rsplit("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        else:
            name, number = rest.rsplit("/", 1)
            version = client.get_model_version(name, number)
    except Exception as err:
        raise ArtifactError(
            f"score.model={uri}: {str(err).strip().splitlines()[0]} (registry {mlflow.get_registry_uri()}); "
            "check the name and alias, e.g. in the Models page of the MLflow UI or Catalog Explorer"
        ) from None
    return {**(version.tags or {}), "version": str(version.version)}


def model_id_of(uri: str) -> str:
    """The ``model_id`` of a registry version given as ``models:/<name>@<alias>`` or ``models:/<name>/<version>``.

    Raises:
        ArtifactError: no such version or alias, or the version was not registered by this package.
    """
    from allmtl_spark.errors import ArtifactError

    tags = version_tags(uri)
    if not tags.get(MODEL_ID_TAG):
        raise ArtifactError(f"{uri} (version {tags['version']}) has no {MODEL_ID_TAG} tag: not registered by allmtl")
    return tags[MODEL_ID_TAG]


def publish_models(spark, cfg, lake, records) -> list:
    """Log each record's pyfunc in its MLflow run, register it (``registry.name``), link the ``models`` row.

    Args:
        spark: the session (driver).
        cfg: the app config: ``tracking``, ``registry``, and the ``score``/``segment``/``roi`` sections a
            slide scorer bundles (as ``allmtl score`` would resolve them, with ``score.runtime: keras``).
        lake: the lakehouse.
        records: ``ModelRecord``s of a training run (evaluation fold models are not published).

    Returns:
        The records as now stored (with ``mlflow_model_uri`` / ``registered_model_uri``).
    """
    from allmtl_spark import tables, tracking
    from allmtl_spark.lakehouse import merge_new_rows
    from allmtl_spark.scoring.job import ScorePlan, model_ref
    from allmtl_spark.segmentation.job import Segmenter, resolve_segmenter

    if not cfg.tracking.log_models:
        return list(records)
    keras_cfg = replace(cfg, score=replace(cfg.score, runtime="keras"))
    published = []
    for record in records:
        if record.mlflow_run_id is None or record.mlflow_model_uri:
            published.append(record)  # not tracked, or already published (a resumed run)
            continue
        kind = {"stage3": "slide_scorer", "stage2": "cell_classifier", "segmenter": "segmenter"}[record.stage]
        if kind == "segmenter":  # its own U-Net, whatever segment.mask_source the config has
            unet_cfg = replace(keras_cfg, segment=replace(cfg.segment, mask_source="unet"))
            seg = resolve_segmenter(spark, lake, unet_cfg.segment, cfg.roi, record)
            plan = ScorePlan.build(no_classifier(), None, seg, unet_cfg, lake.cache)
        elif kind == "cell_classifier":
            plan = ScorePlan.build(model_ref(record), None, Segmenter("none", "roi", 1.0), keras_cfg, lake.cache)
        else:
            plan = _slide_plan(spark, lake, keras_cfg, record)
        started = time.perf_counter()
        tags = {MODEL_ID_TAG: record.model_id, "allmtl.run_id": record.run_id, "allmtl.kind": kind}
        if plan.cell_model is not None:
            tags["allmtl.cell_model_id"] = plan.cell_model.model_id
        tags["allmtl.segmenter_version"] = plan.segmenter_version
        with tracking.mlflow_run(lake.mlflow_uri, record.model_id, run_id=record.mlflow_run_id) as run:
            if run is None:
                published.append(record)
                continue
            info = log_pyfunc(plan, kind, tags, input_example=cfg.tracking.log_input_example)
            registered = None
            if cfg.registry.name:
                name = registered_name(cfg.registry.name, kind, record.task, record.approach)
                registered = register(info.model_uri, name, cfg.registry.alias, tags)
        updated = replace(record, mlflow_model_uri=info.model_uri, registered_model_uri=registered)
        row = spark.createDataFrame([asdict(updated)], tables.MODELS.schema)
        merge_new_rows(
            spark,
            lake,
            tables.MODELS,
            row,
            update_condition="t.mlflow_model_uri IS NULL",
            update_set={
                "mlflow_model_uri": "s.mlflow_model_uri",
                "registered_model_uri": "s.registered_model_uri",
                "mlflow_run_id": "coalesce(t.mlflow_run_id, s.mlflow_run_id)",
            },
        )
        seconds = time.perf_counter() - started
        print(f"MLflow model of {record.model_id}: {registered or info.model_uri} ({seconds:.0f}s)", flush=True)
        published.append(updated)
    return published


def no_classifier():
    """The ``ModelRef`` of a plan without a classifier (the segmenter's): never loaded."""
    from allmtl_spark.scoring.job import ModelRef
    from allmtl_spark.training.examples import ViewSpec

    return ModelRef("none", "", "", ("normal",), ViewSpec("cell", 75))


def _slide_plan(spark, lake, cfg, record):
    """The plan ``allmtl score`` would run with ``score.model`` = this record (same cell model and segmenter)."""
    from allmtl_spark.scoring.job import ScorePlan, resolve_classifiers
    from allmtl_spark.segmentation.job import resolve_segmenter

    pinned = replace(cfg, score=replace(cfg.score, model=record.model_id, task=record.task))
    classifier, cell = resolve_classifiers(spark, lake, pinned)
    seg = resolve_segmenter(spark, lake, cfg.segment, cfg.roi)
    return ScorePlan.build(classifier, cell, seg, cfg, lake.cache)
