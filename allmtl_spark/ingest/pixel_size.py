"""Every ingested image's pixel size: given, estimated from its red cells, or the source default.

``pixel_size_row`` is the pure per-image step; ``make_pixel_size_udf`` its thin pandas-UDF wrapper
(the image is decoded only when its pixel size is not given).
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import DoubleType, StringType, StructField, StructType

from allmtl_spark.transforms.scale import resolve_pixel_size

PIXEL_SIZE = StructType(
    [
        StructField("pixel_size_um", DoubleType()),
        StructField("pixel_size_source", StringType()),
        StructField("pixel_size_confidence", DoubleType()),
        StructField("pixel_size_estimate_um", DoubleType()),
    ]
)
_EMPTY = dict.fromkeys(PIXEL_SIZE.fieldNames())


def pixel_size_row(content: bytes | None, given_um: float | None, default_um: float, min_confidence: float) -> dict:
    """One ``PIXEL_SIZE`` row for an image's bytes (all null when the bytes do not decode: ingest rejects those)."""
    image = None
    if given_um is None:
        decoded = cv2.imdecode(np.frombuffer(content, np.uint8), cv2.IMREAD_COLOR) if content else None
        if decoded is None:
            return dict(_EMPTY)
        image = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    size = resolve_pixel_size(image, given_um, default_um, min_confidence)
    return {
        "pixel_size_um": size.pixel_size_um,
        "pixel_size_source": size.source,
        "pixel_size_confidence": size.confidence,
        "pixel_size_estimate_um": size.estimate_um,
    }


def make_pixel_size_udf(min_confidence: float):
    """pandas UDF ``(content, given_um, default_um) -> PIXEL_SIZE struct``; null content gives nulls."""

    @pandas_udf(PIXEL_SIZE)
    def pixel_size_udf(content: pd.Series, given: pd.Series, default: pd.Series) -> pd.DataFrame:
        cv2.setNumThreads(1)
        rows = []
        for data, given_um, default_um in zip(content, given, default, strict=True):
            if data is None or (isinstance(data, float) and pd.isna(data)):
                rows.append(dict(_EMPTY))
                continue
            given_um = None if given_um is None or pd.isna(given_um) else float(given_um)
            rows.append(pixel_size_row(bytes(data), given_um, float(default_um), min_confidence))
        return pd.DataFrame(rows, columns=PIXEL_SIZE.fieldNames())

    return pixel_size_udf
