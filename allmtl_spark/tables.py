"""Every Delta table of the lakehouse, declared once: name, schema, merge keys, partitioning.

Code refers to ``tables.SLIDES``, never to a string. The README's table reference is generated
from these declarations (``allmtl tables --markdown``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    BooleanType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)


@dataclass(frozen=True)
class Table:
    """One Delta table: where it lives relative to the lakehouse root and what it holds."""

    name: str
    schema: StructType
    merge_keys: tuple[str, ...]
    description: str
    partition_by: tuple[str, ...] = ()
    column_docs: dict[str, str] = field(default_factory=dict)

    def path(self, root: str) -> str:
        """Path-based location of this table under the lakehouse root."""
        return f"{root.rstrip('/')}/{self.name}"


def _f(name: str, dtype, nullable: bool = True) -> StructField:
    return StructField(name, dtype, nullable)


POINT = StructType([_f("x", IntegerType()), _f("y", IntegerType())])  # Delta allows no NOT NULL inside arrays

_IMAGE_COLUMNS = [
    _f("content_sha256", StringType(), False),
    _f("source_path", StringType(), False),
    _f("duplicate_paths", ArrayType(StringType()), False),
    _f("source_kind", StringType(), False),
    _f("site", StringType(), False),
    _f("format", StringType(), False),
    _f("width", IntegerType(), False),
    _f("height", IntegerType(), False),
    _f("channels", IntegerType(), False),
    _f("bit_depth", IntegerType(), False),
    _f("content", BinaryType(), False),
    _f("label_binary", IntegerType()),
    _f("label_fab", StringType()),
    _f("truth_mask", BinaryType()),
    _f("patient_hash", StringType()),
    _f("ingest_run_id", StringType(), False),
    _f("ingested_at", TimestampType(), False),
]

_IMAGE_DOCS = {
    "content_sha256": "SHA-256 of the file bytes; the merge key (same bytes = same row)",
    "source_path": "first path (sorted) the bytes were read from",
    "duplicate_paths": "other paths with the same bytes and the same labels",
    "source_kind": "allidb1 | allidb2 | manifest",
    "site": "source/site name from the ingest config or manifest",
    "format": "JPEG | TIFF | PNG | BMP",
    "content": "the original file bytes (decode with OpenCV/Pillow)",
    "label_binary": "1 ALL, 0 healthy; null when unknown",
    "label_fab": "normal | L1 | L2 | L3 (manifest only); null when unknown",
    "truth_mask": "ground-truth white-cell mask as PNG bytes (0/255) when the source has one",
    "patient_hash": "HMAC-SHA256 of the patient id with the site's secret key; never the raw id",
}

SLIDES = Table(
    name="slides",
    schema=StructType(
        [_f("slide_id", StringType(), False)]
        + _IMAGE_COLUMNS
        + [_f("blast_centroids", ArrayType(POINT)), _f("has_xyc", BooleanType(), False)]
    ),
    merge_keys=("content_sha256",),
    description="Whole blood-smear images (ALL-IDB1 layout or manifest rows of kind slide).",
    column_docs={
        "slide_id": "file stem (ImNNN_L) or the manifest's slide_id",
        **_IMAGE_DOCS,
        "blast_centroids": "x, y pixel centroids of the blasts from the .xyc file",
        "has_xyc": "whether a .xyc file came with the image",
    },
)

CELLS = Table(
    name="cells",
    schema=StructType([_f("cell_id", StringType(), False)] + _IMAGE_COLUMNS),
    merge_keys=("content_sha256",),
    description="Single-cell crops (ALL-IDB2 layout or manifest rows of kind cell).",
    column_docs={"cell_id": "file stem (ImNNN_L) or the manifest's slide_id", **_IMAGE_DOCS},
)

REJECTS = Table(
    name="rejects",
    schema=StructType(
        [
            _f("reject_key", StringType(), False),
            _f("stage", StringType(), False),
            _f("source_path", StringType(), False),
            _f("content_sha256", StringType()),
            _f("reason", StringType(), False),
            _f("detail", StringType()),
            _f("version", StringType()),
            _f("run_id", StringType(), False),
            _f("rejected_at", TimestampType(), False),
        ]
    ),
    merge_keys=("reject_key",),
    description="Inputs a job could not use, one row per input and stage, with the reason. Nothing is dropped.",
    column_docs={
        "reject_key": "SHA-256 of stage, source path, content hash and version: a rerun adds no second row",
        "stage": "ingest | segment | score",
        "reason": "machine-readable reason code (see README, 'Reject reasons')",
        "detail": "human-readable explanation: what is wrong and where",
        "version": "segmenter or model version for the segment / score stages",
    },
)

ALL_TABLES: tuple[Table, ...] = (SLIDES, CELLS, REJECTS)
