"""The typed application config: one frozen dataclass per section, validated on construction.

Every field has a default sized for the embedded demo (2 CPU cores); ``conf/demo.yaml`` states
the demo values explicitly and ``conf/paper.yaml`` holds the paper's full schedule. Library
functions receive their own section (``cfg.synth``, ``cfg.ingest`` ...), never the whole tree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from allmtl_spark import units
from allmtl_spark.config.loader import ConfigError

FAB_CLASSES = ("normal", "L1", "L2", "L3")
BACKBONES = ("InceptionV3", "Xception", "InceptionResNetV2")
TASKS = ("binary", "fab4")
APPROACHES = ("mtl", "classical")
REDACTED = "*** redacted ***"  # what `allmtl config` and reprs show instead of a secret


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key} {message}")


def _pixel_size(value: float | None, key: str) -> None:
    """A micrometres-per-pixel key: null or a value a microscope camera can have."""
    if value is not None:
        try:
            units.check_pixel_size(value, key)
        except ValueError as err:
            raise ConfigError(str(err)) from None


def _range(pair: tuple[float, float], key: str, low: float = 0.0, high: float | None = None) -> None:
    _require(pair[0] <= pair[1], key, f"must be [min, max] with min <= max, got {list(pair)}")
    _require(pair[0] >= low, key, f"must be >= {low}, got {list(pair)}")
    if high is not None:
        _require(pair[1] <= high, key, f"must be <= {high}, got {list(pair)}")


@dataclass(frozen=True)
class SparkConfig:
    """How the Spark session is made.

    ``master`` null means "leave it to spark-submit / the cluster" (Databricks, YARN, k8s).
    The Delta jars come from ``delta_jars_dir`` (filled by ``make setup``) or, where a cluster
    resolves them itself, from ``delta_packages`` Maven coordinates; on Databricks neither is
    needed.
    """

    master: str | None = "local[*]"
    app_name: str = "allmtl"
    delta_jars_dir: str | None = None  # null: $ALLMTL_JARS_DIR, else ./.cache/jars
    delta_packages: str | None = None  # e.g. "io.delta:delta-spark_2.12:3.3.2,io.delta:delta-storage:3.3.2"
    driver_memory: str = "4g"
    shuffle_partitions: int = 8
    # Arrow batches to pandas UDFs carry whole images: bound them so a 2592x1944 slide batch
    # stays small. Spark 3.5 only has a record limit; the byte budget derives it (see session.py).
    arrow_max_records_per_batch: int = 8
    arrow_max_bytes_per_batch: int = 128 * 1024 * 1024
    # Partitions of the Spark job that rebuilds a Delta table's state (file list) from its log.
    # Delta's default of 50 suits a cluster; on a 2-core machine 50 tiny tasks per table read cost
    # about a second each time a job opens a table (measured: listing pending slides 4.9 s -> 2.2 s).
    delta_snapshot_partitions: int | None = None  # null: Delta's default (50)
    extra_conf: dict[str, str] = field(default_factory=dict)
    # segment, score and ingest print a line (tasks done/total, rate, ETA) this often while stages run; 0: off.
    progress_interval_s: float = 10.0

    def __post_init__(self) -> None:
        _require(self.shuffle_partitions >= 1, "shuffle_partitions", "must be >= 1")
        _require(self.progress_interval_s >= 0, "progress_interval_s", "must be >= 0 seconds (0 turns progress off)")
        _require(self.arrow_max_records_per_batch >= 1, "arrow_max_records_per_batch", "must be >= 1")
        _require(self.arrow_max_bytes_per_batch >= 1 << 20, "arrow_max_bytes_per_batch", "must be >= 1 MiB")
        _require(
            self.delta_snapshot_partitions is None or self.delta_snapshot_partitions >= 1,
            "delta_snapshot_partitions",
            "must be >= 1 or null",
        )


@dataclass(frozen=True)
class LakehouseConfig:
    """Where the Delta tables live.

    Path-based tables under ``<path>/<table>`` by default. With ``catalog`` and ``schema`` set,
    every table is a managed table addressed by name (``<catalog>.<schema>.<table>``: Unity
    Catalog on Databricks, Spark's session catalog elsewhere); ``path`` then only holds files
    (models, reports, MLflow's local store, Petastorm's cache), e.g. a Unity Catalog volume.
    """

    path: str = "lakehouse"
    models_path: str | None = None  # model artifacts; null: <path>/_models
    reports_path: str | None = None  # HTML/PNG reports; null: <path>/_reports
    # Files derived from model artifacts (TensorFlow Lite conversions), keyed by the artifact's SHA-256;
    # null: <path>/_cache. Never beside a model, which may belong to another lakehouse.
    cache_path: str | None = None
    mlflow_tracking_uri: str | None = None  # null: file store <path>/_mlruns; "databricks" on Databricks
    catalog: str | None = None  # with schema: managed tables <catalog>.<schema>.<table>; null: path-based
    schema: str | None = None

    def __post_init__(self) -> None:
        _require(bool(self.path), "path", "must name a folder or URI for the Delta tables")
        _require(
            (self.catalog is None) == (self.schema is None),
            "catalog/schema",
            "must be set together (managed tables <catalog>.<schema>.<table>) or both null (path-based tables)",
        )
        for key, value in (("catalog", self.catalog), ("schema", self.schema)):
            _require(
                value is None or bool(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value)),
                key,
                f"must be a plain identifier (letters, digits, underscores), got {value!r}",
            )


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow tracking: the experiment every job's runs go to, and whether a job may run without it.

    The store is ``lakehouse.mlflow_tracking_uri`` (``databricks`` on Databricks; null: a local
    file store under the lakehouse). On Databricks an experiment is a workspace object: its name
    is an absolute workspace path (``/Shared/allmtl``, ``/Users/<you>/allmtl``), whose folder exists.
    """

    experiment: str = "allmtl"
    # true: a job stops, saying what to fix, when tracking cannot start or a log call fails;
    # false: it warns and goes on; null: true unless the store is a local file store (a laptop)
    required: bool | None = None
    log_models: bool = True  # log every model a training run registers as an MLflow pyfunc model
    # Log each pyfunc with an input example (a synthetic smear or cell). MLflow then loads the logged model
    # and scores the example before returning (its check that the model serves): a minute or more per
    # model on 2 CPU cores. false: signature only, no example, no check (conf/demo.yaml, for time).
    log_input_example: bool = True

    def __post_init__(self) -> None:
        _require(bool(self.experiment.strip()), "experiment", "must name an experiment")


@dataclass(frozen=True)
class RegistryConfig:
    """The MLflow model registry: Unity Catalog on Databricks, the tracking store's registry elsewhere.

    With ``name`` set, every model a training run registers is also a version of a registered
    MLflow model ``<name>_<suffix>``: ``<name>_<task>_<approach>`` for the slide scorers (stage 3),
    ``<name>_<task>`` for the cell models (stage 2, e.g. ``allmtl_cell_fab4``), ``<name>_segmenter``.
    On Databricks ``name`` is a three-level Unity Catalog name prefix, ``<catalog>.<schema>.<model>``.
    """

    name: str | None = None  # null: log models in their runs but register none
    alias: str | None = "champion"  # moved to each newly registered version; null: set no alias
    uri: str | None = None  # null: databricks-uc with a databricks tracking store, else the tracking store

    def __post_init__(self) -> None:
        _require(
            self.name is None or bool(re.fullmatch(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+){0,2}", self.name)),
            "name",
            f"must be a model name, or <catalog>.<schema>.<model> for Unity Catalog; got {self.name!r}",
        )
        _require(
            self.alias is None or bool(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", self.alias)),
            "alias",
            f"must be a plain alias name such as champion, got {self.alias!r}",
        )


@dataclass(frozen=True)
class RuntimeCheckConfig:
    """What a job does when it starts on a Python, Spark, TensorFlow or horovod it was not built for."""

    check: Literal["error", "warn", "off"] = "error"


@dataclass(frozen=True)
class PrivacyConfig:
    """Patient identifiers are stored only as a keyed hash (HMAC-SHA256); see ``docs/privacy.md``.

    The key comes from the environment variable ``patient_key_env``; ``patient_key`` (a key in the
    config) is for demos and tests; ``allmtl config`` and reprs show it redacted. Without either,
    ingest refuses to run unless ``allow_demo_key`` is true and every source was written by
    ``allmtl synth``: then a fixed public key is used and a warning says so. The lakehouse records
    the key's fingerprint and refuses another key. With ``pseudonymise_names`` the same key makes
    the pseudonyms of file names.
    """

    patient_key_env: str = "ALLMTL_PATIENT_KEY"
    patient_key: str | None = None
    allow_demo_key: bool = False
    # File and folder names can hold identifiers (ward3_patient1_smear1.jpg): with true, slide and cell ids
    # and the stored paths are keyed hashes of the names (docs/privacy.md). null: true for plain folders and
    # manifests (free-text names) except manifests hashed with the public demo key (synthetic data); ALL-IDB
    # layouts' names (ImNNN_L) hold no identifier.
    pseudonymise_names: bool | None = None
    pseudonym_prefix_chars: int = 0  # keep this many leading characters of a name readable before its hash
    pseudonym_keep_extension: bool = False  # stored paths end with the file's extension (.jpg)

    def __post_init__(self) -> None:
        _require(bool(self.patient_key_env.strip()), "patient_key_env", "must name an environment variable")
        _require(
            self.patient_key is None or bool(self.patient_key.strip()),
            "patient_key",
            "is empty: set a secret, or null and the key in the environment variable patient_key_env",
        )
        _require(0 <= self.pseudonym_prefix_chars <= 32, "pseudonym_prefix_chars", "must be in [0, 32]")

    def __repr__(self) -> str:  # never print the key (tracebacks, logs)
        key = None if self.patient_key is None else REDACTED
        return (
            f"PrivacyConfig(patient_key_env={self.patient_key_env!r}, patient_key={key!r}, "
            f"allow_demo_key={self.allow_demo_key}, pseudonymise_names={self.pseudonymise_names}, "
            f"pseudonym_prefix_chars={self.pseudonym_prefix_chars}, "
            f"pseudonym_keep_extension={self.pseudonym_keep_extension})"
        )


@dataclass(frozen=True)
class SynthStainConfig:
    """Stain of synthetic smears, drawn per patient (a patient's slides share one batch); each [min, max] uniform.

    Wide on purpose: labs differ in stain batch and protocol, and a generator that stands in for
    real data must not teach a model one lab's colours. The centre reproduces real smear colours
    (docs/synthetic-data.md).
    """

    od_jitter: float = 0.25  # each stain's optical density per colour channel scaled by exp(U(-j, j))
    haem_strength: tuple[float, float] = (0.7, 1.35)  # nuclear stain (purple-blue chromatin, platelets)
    eosin_strength: tuple[float, float] = (0.5, 1.6)  # red cells' pink; the top end gives ALL-IDB1's pinker cast
    baso_strength: tuple[float, float] = (0.7, 1.35)  # basophilic (blue) cytoplasm
    granule_strength: tuple[float, float] = (0.7, 1.3)  # eosinophil granules' orange-red
    slide_jitter: float = 0.06  # a slide's stain strengths around its patient's: exp(U(-j, j))

    def __post_init__(self) -> None:
        _require(0 <= self.od_jitter <= 1, "od_jitter", "must be in 0..1")
        _require(0 <= self.slide_jitter <= 1, "slide_jitter", "must be in 0..1")
        for name in ("haem_strength", "eosin_strength", "baso_strength", "granule_strength"):
            _range(getattr(self, name), name, high=5.0)


@dataclass(frozen=True)
class SynthOpticsConfig:
    """Camera, lamp, focus and compression of synthetic smears; each [min, max] uniform.

    A patient's slides are photographed in one session: brightness, white balance, saturation, hue
    and gamma are drawn per patient (a slide moves them by ``slide_jitter``); the lamp field,
    focus, noise and JPEG quality are drawn per slide.
    """

    background_level: tuple[float, float] = (0.6, 0.9)  # clear-glass brightness, fraction of 255
    white_balance: tuple[float, float] = (0.88, 1.12)  # red and blue gains relative to green
    saturation: tuple[float, float] = (1.0, 1.9)  # camera colour processing; 1 = none
    hue_shift_deg: tuple[float, float] = (-12.0, 12.0)  # camera hue rotation around the grey axis
    gamma: tuple[float, float] = (0.8, 1.25)
    vignetting: tuple[float, float] = (0.0, 0.35)  # relative light loss in the corners
    gradient: tuple[float, float] = (0.0, 0.2)  # relative light change across the frame
    unevenness: tuple[float, float] = (0.0, 0.06)  # low-frequency blotches in the illumination
    blur_sigma_um: tuple[float, float] = (0.0, 0.25)  # Gaussian defocus, micrometres in the specimen
    noise_sigma: tuple[float, float] = (1.0, 6.0)  # sensor noise, 8-bit levels per channel
    jpeg_quality: tuple[int, int] = (75, 95)  # per slide (ALL-IDB1 is JPEG); crops are cut from the decoded JPEG
    slide_jitter: float = 0.04  # a slide's brightness, white balance and saturation around its session's: exp(U(-j, j))

    def __post_init__(self) -> None:
        _require(0 <= self.slide_jitter <= 1, "slide_jitter", "must be in 0..1")
        _range(self.background_level, "background_level", low=0.05, high=1.0)
        _range(self.white_balance, "white_balance", low=0.2, high=5.0)
        _range(self.saturation, "saturation", high=5.0)
        _range(self.hue_shift_deg, "hue_shift_deg", low=-180.0, high=180.0)
        _range(self.gamma, "gamma", low=0.1, high=10.0)
        _range(self.vignetting, "vignetting", high=0.9)
        _range(self.gradient, "gradient", high=1.0)
        _range(self.unevenness, "unevenness", high=0.5)
        _range(self.blur_sigma_um, "blur_sigma_um", high=5.0)
        _range(self.noise_sigma, "noise_sigma", high=100.0)
        _range(self.jpeg_quality, "jpeg_quality", low=1, high=100)


OTHER_WHITE_KINDS = ("neutrophil", "eosinophil", "monocyte", "basophil", "smudge")


@dataclass(frozen=True)
class SmearParams:
    """What a synthetic smear holds and how it looks: the per-slide drawing ranges of ``synth``.

    Sizes are physical (micrometres); each slide is rendered at its own pixel size drawn from
    ``pixel_size_um``. ``SynthConfig`` adds the data set's size and layout to these.
    """

    kind: Literal["smear", "blank"] = "smear"  # blank: glass, lamp and dust only (no cells), for OOD checks
    pixel_size_um: tuple[float, float] = (0.0775, 0.31)  # per slide, um per pixel: 0.5x-2x ALL-IDB1's 0.155
    rbc_diameter_um: tuple[float, float] = (7.5, 8.0)  # a patient's mean red-cell diameter
    rbc_coverage: tuple[float, float] = (0.3, 1.0)  # red-cell area / glass area: 1 is a packed, overlapping monolayer
    white_cells_per_slide: tuple[int, int] = (3, 7)  # lymphoid cells (lymphocytes and blasts) that carry the class
    blast_fraction: tuple[float, float] = (0.6, 1.0)  # of the lymphoid cells on an ALL slide
    other_white_cells_per_slide: tuple[int, int] = (0, 2)  # neutrophils, eosinophils, monocytes, basophils, smudges
    other_white_cell_mix: dict[str, float] = field(
        default_factory=lambda: {
            "neutrophil": 0.5,
            "eosinophil": 0.12,
            "monocyte": 0.16,
            "basophil": 0.05,
            "smudge": 0.17,
        }
    )
    platelets_per_rbc: tuple[float, float] = (0.03, 0.1)
    platelet_clumped: tuple[float, float] = (0.0, 0.5)  # share of a slide's platelets lying in clumps
    patient_effects: float = 1.0  # scale of the per-patient random effects on stain and morphology (0: none)
    stain: SynthStainConfig = field(default_factory=SynthStainConfig)
    optics: SynthOpticsConfig = field(default_factory=SynthOpticsConfig)

    # Keys of earlier releases, and what replaced them (the loader names the new key).
    RENAMED_KEYS: ClassVar[dict[str, str]] = {
        "rbc_diameter_px": "pixel_size_um (micrometres per pixel, drawn per slide) and rbc_diameter_um",
        "cell_crop_size": "cell_crop_size_um (micrometres; ALL-IDB2's 257 px at ALL-IDB1's scale by default)",
        "jpeg_quality": "optics.jpeg_quality ([min, max], drawn per slide)",
    }

    def __post_init__(self) -> None:
        _range(self.pixel_size_um, "pixel_size_um", low=0.02, high=5.0)
        _range(self.rbc_diameter_um, "rbc_diameter_um", low=3.0, high=15.0)
        _range(self.rbc_coverage, "rbc_coverage", high=1.0)
        _range(self.white_cells_per_slide, "white_cells_per_slide", low=1)
        _range(self.blast_fraction, "blast_fraction", high=1.0)
        _range(self.other_white_cells_per_slide, "other_white_cells_per_slide")
        unknown = sorted(set(self.other_white_cell_mix) - set(OTHER_WHITE_KINDS))
        _require(
            not unknown, "other_white_cell_mix", f"has unknown kinds {unknown}; allowed: {', '.join(OTHER_WHITE_KINDS)}"
        )
        _require(
            all(v >= 0 for v in self.other_white_cell_mix.values()), "other_white_cell_mix", "weights must be >= 0"
        )
        _require(
            self.other_white_cells_per_slide[1] == 0 or sum(self.other_white_cell_mix.values()) > 0,
            "other_white_cell_mix",
            "must have a positive weight when other_white_cells_per_slide allows any",
        )
        _range(self.platelets_per_rbc, "platelets_per_rbc", high=2.0)
        _range(self.platelet_clumped, "platelet_clumped", high=1.0)
        _require(0 <= self.patient_effects <= 3, "patient_effects", "must be in 0..3")


@dataclass(frozen=True)
class SynthConfig(SmearParams):
    """Procedural blood smears in the ALL-IDB layouts (see ``allmtl_spark.synth``): what to draw
    (``SmearParams``) plus how many, how large and where."""

    output: str = "data/synthetic"
    seed: int = 7
    n_slides: int = 24
    n_cells: int = 64
    slide_width: int = 2592
    slide_height: int = 1944
    cell_crop_size_um: float = units.ALLIDB2_CROP_SIZE_UM  # ALL-IDB2's 257 px at ALL-IDB1's 0.155 um/px
    crops_from_slides: bool = True  # cut the crops out of the slides, like ALL-IDB2 (false: own patients)
    # Fraction of slides per class; normal slides carry label 0 in ALL-IDB names, the rest 1.
    class_mix: dict[str, float] = field(default_factory=lambda: {"normal": 0.5, "L1": 1 / 6, "L2": 1 / 6, "L3": 1 / 6})
    slides_per_patient: int = 2
    workers: int = 2
    # The manifest's site column: give each set its own when several go into one lakehouse (slide ids repeat).
    site: str = "synthetic"

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(bool(self.site.strip()), "site", "must not be empty")
        _require(self.n_slides >= 0 and self.n_cells >= 0, "n_slides/n_cells", "must be >= 0")
        _require(self.slide_width >= 128 and self.slide_height >= 128, "slide_width/slide_height", "must be >= 128")
        _require(
            25.0 <= self.cell_crop_size_um <= 500.0,
            "cell_crop_size_um",
            "must be in 25..500 micrometres (a crop holds one whole white cell, up to 25 um across)",
        )
        unknown = sorted(set(self.class_mix) - set(FAB_CLASSES))
        _require(not unknown, "class_mix", f"has unknown classes {unknown}; allowed: {', '.join(FAB_CLASSES)}")
        _require(sum(self.class_mix.values()) > 0, "class_mix", "must have a positive weight")
        _require(all(v >= 0 for v in self.class_mix.values()), "class_mix", "weights must be >= 0")
        _require(self.slides_per_patient >= 1, "slides_per_patient", "must be >= 1")
        _require(self.seed >= 0, "seed", "must be >= 0")
        _require(self.workers >= 1, "workers", "must be >= 1")
        _require(
            not (self.crops_from_slides and self.n_cells > 0 and self.n_slides == 0),
            "crops_from_slides",
            "needs slides to cut the crops from: set n_slides > 0, or crops_from_slides: false",
        )
        _require(
            not (self.kind == "blank" and self.n_cells > 0), "kind", "blank makes slides without cells: set n_cells: 0"
        )


@dataclass(frozen=True)
class SourceConfig:
    """One input of the ingest job: an ALL-IDB folder, a manifest CSV, or a plain folder of slide images.

    ``folder``: every .jpg/.jpeg/.png/.tif/.tiff under ``path`` (recursively) is a slide whose id is
    its path inside the folder without the extension (``allmtl_spark/ingest/folder.py``).
    """

    kind: Literal["allidb1", "allidb2", "manifest", "folder"]
    path: str
    site: str = "local"  # source / site name carried into the tables and the scoring aggregates
    # Micrometres per pixel of every image of this source (`given`); a manifest's pixel_size_um column
    # wins row by row. null: estimated from each image's red cells.
    pixel_size_um: float | None = None
    # Used when the pixel size is not given and the red-cell estimate is not confident; null:
    # ingest.default_pixel_size_um.
    default_pixel_size_um: float | None = None
    # folder: a regular expression with a named group `patient`, searched in each image's path inside
    # the folder, e.g. '(?P<patient>ward\d+_patient\d+)_smear'; null: the slides have no patient
    patient_pattern: str | None = None
    # folder: a CSV with columns path (inside the folder) and label (normal, L1, L2, L3, 0/healthy, 1/ALL),
    # optionally patient_id; null: the slides are unlabelled
    labels: str | None = None

    def __post_init__(self) -> None:
        _pixel_size(self.pixel_size_um, "pixel_size_um")
        _pixel_size(self.default_pixel_size_um, "default_pixel_size_um")
        for key in ("patient_pattern", "labels"):
            _require(
                getattr(self, key) is None or self.kind == "folder",
                key,
                f"applies to kind: folder only (a manifest has columns for it), not kind: {self.kind}",
            )
        if self.patient_pattern is not None:
            try:
                groups = re.compile(self.patient_pattern).groupindex
            except re.error as err:
                raise ConfigError(
                    f"patient_pattern {self.patient_pattern!r} is not a regular expression: {err}"
                ) from None
            _require(
                "patient" in groups,
                "patient_pattern",
                f"{self.patient_pattern!r} needs a named group (?P<patient>...) that captures the patient id",
            )


@dataclass(frozen=True)
class IngestConfig:
    """Validation limits and the sources to read."""

    sources: tuple[SourceConfig, ...] = ()
    max_file_bytes: int = 64 * 1024 * 1024
    max_pixels: int = 40_000_000  # checked from the header before decoding (decompression bombs)
    min_side_px: int = 32
    max_partitions: int = 8
    # Pixel size of an image whose source gives none and whose red-cell estimate is not confident
    # (a source's default_pixel_size_um overrides it): ALL-IDB1's nominal scale.
    default_pixel_size_um: float = units.ALLIDB1_PIXEL_SIZE_UM
    pixel_size_min_confidence: float = 0.5  # red-cell estimates below this confidence are not trusted
    # Cells' source slides (ingest/source_slides.py): manifest source_slide_id, else ALL-IDB2 crops are
    # searched in the ingested slides by template matching; a place scoring below min_score stays unlinked.
    link_cells: bool = True
    crop_match_min_score: float = 0.9  # synthetic red-cell fields give wrong places up to ~0.75
    crop_match_factor: int = 4  # the coarse search runs on images this many times smaller
    max_xyc_bytes: int = 1024 * 1024  # an .xyc holds a few lines of "x y"; larger ones are rejected unread

    def __post_init__(self) -> None:
        _pixel_size(self.default_pixel_size_um, "default_pixel_size_um")
        _require(0 <= self.pixel_size_min_confidence <= 1, "pixel_size_min_confidence", "must be in [0, 1]")
        _require(-1 <= self.crop_match_min_score <= 1, "crop_match_min_score", "must be in [-1, 1]")
        _require(self.crop_match_factor >= 1, "crop_match_factor", "must be >= 1")
        _require(self.max_file_bytes > 0, "max_file_bytes", "must be > 0")
        _require(self.max_xyc_bytes > 0, "max_xyc_bytes", "must be > 0")
        _require(self.max_pixels > 0, "max_pixels", "must be > 0")
        _require(self.min_side_px >= 1, "min_side_px", "must be >= 1")
        _require(self.max_partitions >= 1, "max_partitions", "must be >= 1")


@dataclass(frozen=True)
class RoiConfig:
    """The threshold region of interest. ``paper``: the paper's fixed RGB offsets and threshold;
    ``adaptive`` (default): Otsu on a stain channel after white balance, which works across labs."""

    method: Literal["adaptive", "paper"] = "adaptive"
    offsets: tuple[int, int, int] = (88, 41, 20)  # added to R, G, B (paper)
    threshold: int = 98  # monochrome threshold (paper)
    channel: Literal["blue_minus_red", "saturation"] = "blue_minus_red"
    # colour normalisation before the adaptive ROI and the isolation: white balance (grey_world, percentile)
    # or stain normalisation to a reference smear (reinhard, macenko); transforms/stain.py
    normalize: Literal["grey_world", "percentile", "reinhard", "macenko", "none"] = "grey_world"

    def __post_init__(self) -> None:
        _require(all(-255 <= o <= 255 for o in self.offsets), "offsets", "must each be in -255..255")
        _require(0 <= self.threshold <= 255, "threshold", "must be in 0..255")


@dataclass(frozen=True)
class SegmenterConfig:
    """Training of the Residual U-Net white-cell segmenter (``allmtl train-segmenter``)."""

    # The U-Net's working resolution, micrometres per pixel: every slide is resampled to it from its own
    # pixel size (slides.pixel_size_um) before training and before segmenting, so one model serves every
    # magnification. 0.31 is half ALL-IDB1's nominal resolution: a red cell is about 25 px across.
    pixel_size_um: float = 2 * units.ALLIDB1_PIXEL_SIZE_UM
    tile_size: int = 128  # training tile side, pixels at pixel_size_um
    tiles_per_slide: int = 8  # random training tiles per training slide and epoch
    foreground_tile_fraction: float = 0.8  # share of those tiles centred on a white-cell pixel
    augment: bool = True  # random flips, 90-degree rotations and channel gains of the training tiles
    # Each training tile cut at a magnification drawn log-uniformly from [low, high] (0.5-2: cells half to
    # twice their size at pixel_size_um), for slides whose pixel size is off; null: every tile at pixel_size_um.
    scale_augment: tuple[float, float] | None = None
    # colour normalisation of the U-Net's input, the same at training and at prediction (recorded in model.json)
    input_normalize: Literal["grey_world", "percentile", "reinhard", "macenko", "none"] = "grey_world"
    depth: int = 3
    base_filters: int = 8
    upsampling: Literal["transpose", "nearest", "bilinear"] = "transpose"
    batchnorm_momentum: float = 0.9  # keras' 0.99 needs far more steps than a short run has
    epochs: int = 12
    batch_size: int = 8
    learning_rate: float = 0.003
    holdout_fraction: float = 0.25
    max_slides: int = 400  # slides collected to the driver for training
    label_source: Literal["auto", "truth", "roi"] = "auto"  # auto: ground-truth masks if present, else ROI
    seed: int = 13

    RENAMED_KEYS: ClassVar[dict[str, str]] = {
        "working_scale": "pixel_size_um (micrometres per pixel the U-Net works at; each slide is resampled to it "
        "from its own pixel size)",
    }

    def __post_init__(self) -> None:
        _pixel_size(self.pixel_size_um, "pixel_size_um")
        _require(self.tile_size % (2**self.depth) == 0, "tile_size", f"must be divisible by 2**depth = {2**self.depth}")
        _require(1 <= self.depth <= 6, "depth", "must be in 1..6")
        _require(self.epochs >= 1 and self.batch_size >= 1, "epochs/batch_size", "must be >= 1")
        _require(self.tiles_per_slide >= 1 and self.base_filters >= 1, "tiles_per_slide/base_filters", "must be >= 1")
        _require(0 <= self.foreground_tile_fraction <= 1, "foreground_tile_fraction", "must be in [0, 1]")
        _require(0 <= self.batchnorm_momentum < 1, "batchnorm_momentum", "must be in [0, 1)")
        _require(self.learning_rate > 0, "learning_rate", "must be > 0")
        _require(0 < self.holdout_fraction < 1, "holdout_fraction", "must be in (0, 1)")
        _require(self.max_slides >= 2, "max_slides", "must be >= 2 (one to train, one to hold out)")
        _require(self.seed >= 0, "seed", "must be >= 0")
        if self.scale_augment is not None:
            _range(self.scale_augment, "scale_augment", low=0.1, high=10.0)


@dataclass(frozen=True)
class SegmentConfig:
    """The segmentation job (``allmtl segment``): masks, post-processing, crops, detection check.

    Every size is physical (micrometres), turned into pixels at the working pixel size.
    """

    segmenter: str = "latest"  # model_id / run id in `models`, or latest
    mask_source: Literal["unet", "roi"] = "unet"
    # Working resolution, um per pixel; null: the U-Net's (model.json), 0.31 with mask_source roi.
    pixel_size_um: float | None = None
    mask_threshold: float = 0.5
    min_cell_area_um2: float = 20.0  # smaller regions are specks or platelets (2-3 um); a small lymphocyte is ~40
    max_cell_area_um2: float | None = None  # larger regions (smudges, clumps) are dropped; null keeps all
    # A U-Net region is a cell only when at least this share of its pixels has a probability of
    # confident_probability or more (0: no check). 0.25 was chosen on validation slides, none of the test sets
    # (docs/segmentation.md): the largest of 0.15-0.3 that dropped no white cell with any of four U-Nets (the
    # weakest, neutrophils, had 0.29 or more); platelets on red cells, platelet clumps and the gaps of a packed
    # red-cell layer come out faint and patchy, white cells as confident discs.
    min_confident_fraction: float = 0.25
    confident_probability: float = 0.99  # the U-Net probability a pixel of min_confident_fraction needs
    split_touching: bool = True
    watershed_min_distance_um: float = 3.0  # centres closer than this are one cell (about half a small lymphocyte)
    watershed_seed_fraction: float = 0.7  # seed disc radius / the cell's inscribed radius
    blue_threshold: float = 8.0  # isolation keeps pixels with blue - red above this (after white balance)
    crop_size_um: float = units.ALLIDB2_CROP_SIZE_UM  # side of a cell crop: ALL-IDB2's 257 px at ALL-IDB1's scale
    match_radius_um: float = 6.0  # a found cell matches a .xyc centroid within this distance
    max_decoded_pixels: int = 12_000_000  # guard: larger slides (decoded or at the working size) are rejected
    slides_per_partition: int = 2
    tf_threads: int = 1  # TensorFlow intra-op threads per Python worker (Spark runs one worker per core)

    RENAMED_KEYS: ClassVar[dict[str, str]] = {
        "working_scale": "pixel_size_um (micrometres per pixel; null: the segmenter's)",
        "min_cell_area_px": "min_cell_area_um2 (square micrometres)",
        "max_cell_area_px": "max_cell_area_um2 (square micrometres)",
        "watershed_min_distance": "watershed_min_distance_um (micrometres)",
        "crop_size": "crop_size_um (micrometres; crops are cut at the working pixel size)",
        "match_radius_px": "match_radius_um (micrometres)",
    }

    def __post_init__(self) -> None:
        _pixel_size(self.pixel_size_um, "pixel_size_um")
        _require(0 < self.mask_threshold < 1, "mask_threshold", "must be in (0, 1)")
        _require(self.min_cell_area_um2 >= 0, "min_cell_area_um2", "must be >= 0")
        _require(
            self.max_cell_area_um2 is None or self.max_cell_area_um2 > self.min_cell_area_um2,
            "max_cell_area_um2",
            "must be null or above min_cell_area_um2",
        )
        _require(0 <= self.min_confident_fraction <= 1, "min_confident_fraction", "must be in [0, 1]")
        _require(0 < self.confident_probability < 1, "confident_probability", "must be in (0, 1)")
        _require(self.watershed_min_distance_um > 0, "watershed_min_distance_um", "must be > 0")
        _require(0 < self.watershed_seed_fraction <= 1, "watershed_seed_fraction", "must be in (0, 1]")
        _require(self.crop_size_um >= 5, "crop_size_um", "must be >= 5 (micrometres)")
        _require(self.match_radius_um > 0, "match_radius_um", "must be > 0")
        _require(self.max_decoded_pixels > 0, "max_decoded_pixels", "must be > 0")
        _require(self.slides_per_partition >= 1, "slides_per_partition", "must be >= 1")
        _require(self.tf_threads >= 0, "tf_threads", "must be >= 0 (0: TensorFlow's default)")


@dataclass(frozen=True)
class StageConfig:
    """One training stage's schedule: Adam with exponential learning-rate decay."""

    epochs: int = 3
    batch_size: int = 16  # per rank; the paper's 48 is in conf/paper.yaml
    learning_rate: float = 0.001  # scaled by the number of Horovod ranks
    # Rate when the stage starts from trained weights (stage 2's, or train.weights imagenet / a file).
    # Adam's first steps move every weight by about the learning rate whatever its gradient, which at
    # 0.001 erases pretrained features in a few dozen steps; null uses learning_rate.
    finetune_learning_rate: float | None = None
    decay_rate: float = 0.9  # multiplied into the learning rate once per epoch
    trainable: str = "all"  # all | head | top_fraction:<0..1>; see networks/freezing.py
    warmup_epochs: int = 0  # first epochs train the (new) head only, then `trainable` applies
    # The weights the stage ends with: best = the epoch with the lowest validation loss (averaged
    # over ranks), last = the final epoch's.
    keep_weights: Literal["best", "last"] = "best"
    # Keep every BatchNormalization layer frozen (inference-mode statistics, no scale/offset
    # updates) while fine-tuning: the usual choice for small batches from pretrained weights.
    freeze_batchnorm: bool = False

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, "epochs", "must be >= 1")
        _require(self.batch_size >= 1, "batch_size", "must be >= 1")
        _require(self.learning_rate > 0, "learning_rate", "must be > 0")
        _require(
            self.finetune_learning_rate is None or self.finetune_learning_rate > 0,
            "finetune_learning_rate",
            "must be null or > 0",
        )
        _require(0 < self.decay_rate <= 1, "decay_rate", "must be in (0, 1]")
        ok = self.trainable in ("all", "head") or self.trainable.startswith("top_fraction:")
        _require(ok, "trainable", f"is {self.trainable!r}; allowed values: all, head, top_fraction:<f>")
        _require(0 <= self.warmup_epochs < self.epochs, "warmup_epochs", "must be in 0..epochs-1")


@dataclass(frozen=True)
class SplitConfig:
    """Grouped, stratified split of slides (by patient where known) decided before augmentation."""

    test_fraction: float = 0.25
    val_fraction: float = 0.15
    seed: int = 2022

    def __post_init__(self) -> None:
        _require(0 < self.test_fraction < 0.5, "test_fraction", "must be in (0, 0.5)")
        _require(0 < self.val_fraction < 0.5, "val_fraction", "must be in (0, 0.5)")
        _require(self.seed >= 0, "seed", "must be >= 0")


@dataclass(frozen=True)
class AugmentConfig:
    """Training-side augmentation: flips, rotation 0..max, shift, scale; optional class balancing."""

    enabled: bool = True
    copies_per_image: int = 4  # augmented copies per training image (the original is kept too)
    balance_to: int | None = None  # total training images after balancing classes (paper: 1700)
    flip: bool = True
    rotate_max_deg: float = 180.0
    shift_fraction: float = 0.08
    scale_range: tuple[float, float] = (0.9, 1.1)
    seed: int = 11

    def __post_init__(self) -> None:
        _require(self.copies_per_image >= 0, "copies_per_image", "must be >= 0")
        _require(self.balance_to is None or self.balance_to >= 2, "balance_to", "must be null or >= 2")
        _require(0 <= self.rotate_max_deg <= 360, "rotate_max_deg", "must be in 0..360")
        _require(0 <= self.shift_fraction < 0.5, "shift_fraction", "must be in [0, 0.5)")
        _range(self.scale_range, "scale_range", low=0.1)
        _require(self.seed >= 0, "seed", "must be >= 0")


@dataclass(frozen=True)
class TrainConfig:
    """The multistage transfer-learning job (``spark-submit jobs/train_mtl.py``)."""

    backbones: tuple[str, ...] = ("InceptionV3",)
    tasks: tuple[str, ...] = TASKS
    approaches: tuple[str, ...] = APPROACHES
    input_size: int = 96
    weights: str = "none"  # stage 1 (W0 -> W1): imagenet | none | path to a .h5 weights file
    imagenet_base_url: str | None = None  # mirror of keras' weight storage; null: keras' Google URL
    weights_cache_dir: str | None = None  # where downloaded weights are cached; null: ~/.keras
    slide_view: Literal["montage", "isolated"] = "montage"
    montage_grid: int = 2  # montage: grid x grid of the slide's largest isolated white cells
    # Side of one cell's tile (a montage tile, a stage-2 cell) in micrometres: every cell is shown at one
    # physical scale, so its size (blasts are larger than lymphocytes) reaches the classifier.
    # null: each slide's largest cell is zoomed to fill its tile (sizes only relative within a slide).
    cell_tile_um: float | None = None
    segmenter: str = "latest"  # which segmentation (segmented_slides / slide_cells) to train on
    num_proc: int = 2  # Horovod ranks (Spark tasks); one per GPU in production
    threads_per_rank: int = 1  # TensorFlow intra-op threads per rank (CPU)
    # Effective batch = num_proc x stageN.batch_size (the batch is per rank). true: the rate is
    # multiplied by num_proc (Horovod's linear scaling for a larger effective batch); false: the
    # configured rate is the effective one (conf/paper.yaml: 4 x 12 = the paper's 48 at 0.001).
    scale_learning_rate_by_ranks: bool = True
    head_dense_units: tuple[int, ...] = (256, 128)
    head_dropout: float = 0.5
    # Keras' backbones use BatchNorm momentum 0.99: after the few hundred steps of a CPU run the
    # moving statistics still describe the initial weights and inference collapses. 0.9 adapts
    # them within tens of steps; null keeps keras' value (fine for long GPU schedules).
    batchnorm_momentum: float | None = 0.9
    # Stage 2's labels: cell_binary is the paper's (ALL-IDB2: blast vs normal); cell_fab4 uses the
    # cells' FAB class where a manifest gives one, so stage 2 already learns L1/L2/L3 morphology.
    stage2_task: Literal["cell_binary", "cell_fab4"] = "cell_binary"
    stage2: StageConfig = field(default_factory=StageConfig)
    stage3: StageConfig = field(default_factory=StageConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    petastorm_cache_dir: str | None = None  # file:// or dbfs:/ URL; null: <lakehouse>/_petastorm
    shuffle_buffer: int = 256
    # A stage's checkpoints (its weights, 90 MB for InceptionV3) only serve to resume it;
    # once its model is registered they are deleted unless this is true (the demo made 8 GB of them).
    keep_checkpoints: bool = False
    # Seed of the initial weights (the same draw for the stage-2 and the classical stage-3 backbone)
    # and of the data order; evaluation trial t uses seed + t.
    seed: int = 0
    # TensorFlow op determinism and seeded Petastorm readers: one config and seed, one result (on one rank).
    deterministic: bool = True
    # Stage-3 learning rates chosen by `allmtl tune` on validation data: "<approach>" or
    # "<task>/<approach>" -> rate (e.g. {fab4/mtl: 0.0003}). Missing entries use stage3's rates.
    stage3_learning_rates: dict[str, float] = field(default_factory=dict)
    # The tune.json these rates came from; the training job checks that they match its choices (or,
    # with stage3_learning_rates empty, takes them from it) and records the file in every model.json
    # (null: the rates are stated defaults, not tuned).
    tuning_record: str | None = None
    # Stage-2 cells with neither a patient nor a source slide cannot be checked against the stage-3
    # split: exclude (default) keeps them out of stage 2, include takes them (and says so in the check).
    stage2_unlinked_cells: Literal["exclude", "include"] = "exclude"
    # When not to trust a score (docs/scoring.md): at registration each classifier gets a temperature
    # fitted on its validation part, and each slide classifier an out-of-distribution check whose
    # threshold lets this share of the validation slides pass. ECE uses calibration_bins bins.
    ood_pass_fraction: float = 0.95
    calibration_bins: int = 15
    # The range check's smallest threshold: a statistic this many training standard deviations beyond
    # the training slides' range fails it. 0.5 of 0.5 / 1 / 2, chosen on development slides (other seeds
    # than the demo's archive and out-of-distribution batch): AUROC 0.901 / 0.877 / 0.813, in-distribution
    # flags 7 / 6 / 5 of 48 (docs/scoring.md, "What it measured").
    ood_range_margin: float = 0.5
    # Also check the classifier's pooled features (trust.FeatureOodModel). Off: on development slides
    # (other seeds than the demo's archive and out-of-distribution batch) the demo's small models'
    # features flagged 10 of 48 in-distribution slides against 6 without them, and separated less
    # (AUROC 0.839 vs 0.877; docs/scoring.md, "What it measured"). Worth trying with ImageNet weights.
    ood_feature_check: bool = False

    def __post_init__(self) -> None:
        _require(0 < self.ood_pass_fraction <= 1, "ood_pass_fraction", "must be in (0, 1], e.g. 0.95")
        _require(self.ood_range_margin >= 0, "ood_range_margin", "must be >= 0 (standard deviations), e.g. 0.5")
        _require(self.calibration_bins >= 1, "calibration_bins", "must be >= 1")
        for name, values, allowed in (
            ("backbones", self.backbones, BACKBONES),
            ("tasks", self.tasks, TASKS),
            ("approaches", self.approaches, APPROACHES),
        ):
            bad = [v for v in values if v not in allowed]
            _require(values and not bad, name, f"has {bad or 'nothing'}; allowed values: {', '.join(allowed)}")
        _require(self.input_size >= 75, "input_size", "must be >= 75 (the keras backbones need it)")
        _require(self.montage_grid >= 1, "montage_grid", "must be >= 1")
        _require(
            self.cell_tile_um is None or self.cell_tile_um > 0, "cell_tile_um", "must be null or > 0 (micrometres)"
        )
        _require(self.num_proc >= 1 and self.threads_per_rank >= 1, "num_proc/threads_per_rank", "must be >= 1")
        _require(0 <= self.head_dropout < 1, "head_dropout", "must be in [0, 1)")
        _require(all(u >= 1 for u in self.head_dense_units), "head_dense_units", "must each be >= 1")
        _require(
            self.batchnorm_momentum is None or 0 <= self.batchnorm_momentum < 1,
            "batchnorm_momentum",
            "must be null or in [0, 1)",
        )
        _require(self.shuffle_buffer >= 1, "shuffle_buffer", "must be >= 1")
        _require(self.seed >= 0, "seed", "must be >= 0")
        for key, rate in self.stage3_learning_rates.items():
            approach = key.split("/")[-1]
            task_ok = "/" not in key or key.split("/")[0] in TASKS
            _require(
                approach in APPROACHES and task_ok and key.count("/") <= 1,
                "stage3_learning_rates",
                f"has key {key!r}; keys are <approach> or <task>/<approach> with tasks {', '.join(TASKS)} "
                f"and approaches {', '.join(APPROACHES)}",
            )
            _require(float(rate) > 0, "stage3_learning_rates", f"{key} must be > 0, got {rate}")


@dataclass(frozen=True)
class TuneConfig:
    """Equal, validation-only hyper-parameter search (``allmtl tune``).

    Every stage-3 model (each task and approach) is trained once per grid value on the training part
    and judged on the validation part of the ``train`` section's split (or of a cross-validation
    fold's training side); the test part is never scored. Both approaches get the same grid, so the
    same budget; the multistage models share one stage 2 (trained once, from the same starting weights).
    """

    learning_rates: tuple[float, ...] = (0.0003, 0.001, 0.003)  # stage-3 base rates (before rank scaling)
    metric: Literal["val_loss", "val_accuracy"] = "val_loss"  # what the choice minimises / maximises
    output: str | None = None  # folder for tune.json / tune.csv; null: <lakehouse reports>/tune/<tune_id>

    def __post_init__(self) -> None:
        _require(len(self.learning_rates) >= 1, "learning_rates", "must list at least one rate")
        _require(all(float(r) > 0 for r in self.learning_rates), "learning_rates", "must all be > 0")
        _require(len(set(self.learning_rates)) == len(self.learning_rates), "learning_rates", "has repeats")


COMPARE_METRICS = (
    "accuracy",
    "macro_f1",
    "micro_f1",
    "weighted_f1",
    "macro_precision",
    "macro_recall",
    "macro_specificity",
    "macro_auc",
    "micro_auc",
)


@dataclass(frozen=True)
class EvaluateConfig:
    """Repeated k-fold cross-validation of the ``train`` section's models (``allmtl evaluate``).

    Trial ``t`` (0..trials-1) splits the slides into ``folds`` grouped stratified folds with split
    seed ``seed + t`` and augments with seed ``seed + t``; every fold trains through the same code
    path as ``allmtl train`` (backbones, tasks, approaches and schedules come from ``train``).
    """

    folds: int = 5  # k; the paper used 10
    trials: int = 1  # R repeats of the k folds; the paper compared approaches over 10 trials
    seed: int = 2022  # base seed: trial t uses split seed and augment seed seed + t
    bootstrap_resamples: int = 1000  # percentile CIs and the AUC-difference test
    confidence: float = 0.95  # level of every interval and test
    compare_metrics: tuple[str, ...] = ("accuracy", "macro_f1", "macro_auc")  # classical vs multistage t-tests
    # Nadeau-Bengio n_test / n_train; null: the mean over the evaluated folds of their recorded
    # test / training slide counts (about 1 / (k - 1), less the validation slice).
    test_train_ratio: float | None = None
    curve_trials: int = 1  # training-curve figures for the first N trials (one figure per trial)
    report_dir: str | None = None  # null: <lakehouse reports>/evaluation/<eval_id>
    # Run `allmtl tune` inside every fold's training side (its own validation slice) before the fold
    # trains, and use its choices there: the test fold never influences a choice. Costs
    # len(tune.learning_rates) stage-3 trainings per model and fold. false: every fold uses the
    # train section's rates (stated in the report with where they came from).
    nested_tuning: bool = False
    # Colour-only baseline in the report: per-channel histograms of the cells' inner pixels in the
    # classifier's input + logistic regression, same folds (beside the size-only one); bins per channel.
    colour_bins: int = 16

    def __post_init__(self) -> None:
        _require(self.folds >= 2, "folds", "must be >= 2")
        _require(self.trials >= 1, "trials", "must be >= 1")
        _require(self.bootstrap_resamples >= 1, "bootstrap_resamples", "must be >= 1")
        _require(0 < self.confidence < 1, "confidence", "must be in (0, 1)")
        bad = [m for m in self.compare_metrics if m not in COMPARE_METRICS]
        _require(
            self.compare_metrics and not bad,
            "compare_metrics",
            f"has {bad or 'nothing'}; allowed values: {', '.join(COMPARE_METRICS)}",
        )
        _require(
            self.test_train_ratio is None or self.test_train_ratio > 0,
            "test_train_ratio",
            "must be null (computed from the folds) or > 0",
        )
        _require(self.curve_trials >= 0, "curve_trials", "must be >= 0")
        _require(self.seed >= 0, "seed", "must be >= 0")
        _require(2 <= self.colour_bins <= 256, "colour_bins", "must be in 2..256")
        _require(self.report_dir is None or bool(self.report_dir), "report_dir", "must be null or a folder")


@dataclass(frozen=True)
class ScoreConfig:
    """The nightly archive scoring job (``spark-submit jobs/score_archive.py``).

    The segmenter comes from the ``segment`` section, the ROI from ``roi``; the classifier's input
    view (montage grid, size) from the model's own ``model.json``, so scoring sees slides exactly
    as training did.
    """

    model: str = "latest"  # stage-3 model: model_id, training run id, or latest
    task: Literal["fab4", "binary"] = "fab4"
    approach: Literal["mtl", "classical"] = "mtl"  # with latest / a run id
    cell_model: str | None = "latest"  # stage-2 single-cell model for the blast count; null skips it
    source: SourceConfig | None = None  # new images to ingest first; null: score the `slides` table
    blast_threshold: float = 0.5  # a cell counts as a blast when P(blast) >= this
    # The slide and cell classifiers disagree (slide_scores.slide_cell_disagreement) when a slide called
    # leukemia has fewer blast cells than this, or one called normal has more than this % of blast cells.
    disagreement_min_blasts: int = 1
    disagreement_max_blast_pct: float = 50.0
    # The run summary calls out a site when more than this share of its slides this run need review.
    review_site_fraction: float = 0.5
    slides_per_partition: int = 2
    tf_threads: int = 1
    # classifiers in the workers: their TensorFlow Lite conversion (cached beside the artifact,
    # checked against Keras; loads in ms instead of seconds) or the Keras artifact itself
    runtime: Literal["tflite", "keras"] = "tflite"
    classifier_batch: int = 8  # cell crops per classifier call (TFLite pads the last batch to it)
    bootstrap_resamples: int = 500
    confidence: float = 0.95
    # labelled slides (and slides both model versions scored) whose scores the metrics collect to the
    # driver; above it a seeded sample of this many, so the driver's memory stays flat as slide_scores grows
    metrics_max_slides: int = 20_000
    report_sample: int = 6  # slides shown with masks and probabilities in the HTML report
    gradcam_slides: int = 3
    report_page_size: int = 100  # rows per page of the report's list of every slide
    report_thumbnails: int = 24  # slides of the run shown as thumbnails (a fixed sample)
    report_thumbnail_px: int = 160  # thumbnail width
    seed: int = 5

    def __post_init__(self) -> None:
        _require(0 < self.blast_threshold < 1, "blast_threshold", "must be in (0, 1)")
        _require(self.disagreement_min_blasts >= 0, "disagreement_min_blasts", "must be >= 0 (0: never)")
        _require(0 <= self.disagreement_max_blast_pct <= 100, "disagreement_max_blast_pct", "must be in 0..100")
        _require(0 <= self.review_site_fraction <= 1, "review_site_fraction", "must be in [0, 1]")
        _require(self.slides_per_partition >= 1, "slides_per_partition", "must be >= 1")
        _require(self.classifier_batch >= 1, "classifier_batch", "must be >= 1")
        _require(self.tf_threads >= 0, "tf_threads", "must be >= 0 (0: every core this process may use)")
        _require(0.5 < self.confidence < 1, "confidence", "must be in (0.5, 1)")
        _require(self.bootstrap_resamples >= 0, "bootstrap_resamples", "must be >= 0")
        _require(self.report_sample >= 0 and self.gradcam_slides >= 0, "report_sample/gradcam_slides", "must be >= 0")
        _require(self.report_page_size >= 1, "report_page_size", "must be >= 1")
        _require(self.report_thumbnails >= 0, "report_thumbnails", "must be >= 0")
        _require(16 <= self.report_thumbnail_px <= 1024, "report_thumbnail_px", "must be in [16, 1024]")
        _require(self.seed >= 0, "seed", "must be >= 0")
        _require(self.metrics_max_slides >= 2, "metrics_max_slides", "must be >= 2")


@dataclass(frozen=True)
class AppConfig:
    """The whole application config, as loaded from ``conf/*.yaml``."""

    spark: SparkConfig = field(default_factory=SparkConfig)
    lakehouse: LakehouseConfig = field(default_factory=LakehouseConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    runtime: RuntimeCheckConfig = field(default_factory=RuntimeCheckConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    roi: RoiConfig = field(default_factory=RoiConfig)
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)

    def __post_init__(self) -> None:
        on_databricks = (self.lakehouse.mlflow_tracking_uri or "").startswith("databricks")
        _require(
            not on_databricks or self.tracking.experiment.startswith("/"),
            "tracking.experiment",
            f"is {self.tracking.experiment!r}, but on Databricks (lakehouse.mlflow_tracking_uri: databricks) an "
            "experiment is named by an absolute workspace path, e.g. /Shared/allmtl or /Users/<you>/allmtl",
        )
        unity_catalog = (self.registry.uri or ("databricks-uc" if on_databricks else "")).startswith("databricks-uc")
        _require(
            not unity_catalog or self.registry.name is None or self.registry.name.count(".") == 2,
            "registry.name",
            f"is {self.registry.name!r}, but Unity Catalog models have three-level names <catalog>.<schema>.<model>",
        )
