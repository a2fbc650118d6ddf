"""Thin pandas-UDF wrapper around the pure validation functions."""

from __future__ import annotations

import io

import pandas as pd
from PIL import Image
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import ArrayType, IntegerType, StringType, StructField, StructType

from allmtl_spark.ingest.labels import LabelError, check_points_inside, parse_xyc
from allmtl_spark.ingest.validate import ImageCheck, ImageLimits, inspect_image

VALIDATION = StructType(
    [
        StructField("sha256", StringType()),
        StructField("format", StringType()),
        StructField("width", IntegerType()),
        StructField("height", IntegerType()),
        StructField("channels", IntegerType()),
        StructField("bit_depth", IntegerType()),
        StructField("centroids_flat", ArrayType(IntegerType())),  # x0, y0, x1, y1, ...: Arrow-friendly
        StructField("reason", StringType()),
        StructField("detail", StringType()),
    ]
)


def validate_item(content: bytes | None, xyc: bytes | None, mask: bytes | None, limits: ImageLimits) -> dict:
    """Validate one image with its optional .xyc and mask companions; returns a VALIDATION row."""
    check = inspect_image(content, limits)
    row = {
        name: getattr(check, attr)
        for name, attr in (
            ("sha256", "sha256"),
            ("format", "format"),
            ("width", "width"),
            ("height", "height"),
            ("channels", "channels"),
            ("bit_depth", "bit_depth"),
            ("reason", "reason"),
            ("detail", "detail"),
        )
    }
    row["centroids_flat"] = None
    if not check.ok:
        return row
    try:
        if xyc is not None:
            points = parse_xyc(xyc.decode("utf-8", errors="strict"))
            check_points_inside(points, check.width, check.height)
            row["centroids_flat"] = [v for point in points for v in point]
        _check_mask(mask, check)
    except UnicodeDecodeError:
        row["reason"], row["detail"] = "bad_xyc", "the .xyc file is not UTF-8 text"
    except LabelError as err:
        row["reason"], row["detail"] = err.reason, err.detail
    return row


def _check_mask(mask: bytes | None, check: ImageCheck) -> None:
    if mask is None:
        return
    try:
        with Image.open(io.BytesIO(mask)) as image:
            size = image.size
    except Exception as err:  # any decoder failure means the mask is unusable
        raise LabelError("bad_mask", f"mask file is not a readable image: {err}") from None
    if size != (check.width, check.height):
        raise LabelError("bad_mask", f"mask is {size[0]}x{size[1]} but the image is {check.width}x{check.height}")


def make_validate_udf(limits: ImageLimits):
    """pandas UDF ``(content, xyc, mask) -> VALIDATION struct`` with the limits bound once."""

    @pandas_udf(VALIDATION)
    def validate_udf(content: pd.Series, xyc: pd.Series, mask: pd.Series) -> pd.DataFrame:
        rows = [
            validate_item(_bytes(c), _bytes(x), _bytes(m), limits) for c, x, m in zip(content, xyc, mask, strict=True)
        ]
        return pd.DataFrame(rows, columns=VALIDATION.fieldNames())

    return validate_udf


def _bytes(value) -> bytes | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    return bytes(value)
