"""Single-cell crops at the crops' pixel size: the stage-2 cells (ALL-IDB2-like) are brought to the pixel size
of the slide crops the segmenter cut (its working pixel size), so both training stages see cells at one scale.

``resample_crop`` is the per-image step (decode, ``transforms.resample.resample_image``, encode);
``resampled_crops`` the thin pandas-UDF column over ``cells.content`` and ``cells.pixel_size_um``;
``crop_pixel_size`` reads a segmenter's crop pixel size from ``segmented_slides``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf

from allmtl_spark import tables
from allmtl_spark.lakehouse import Lakehouse, read_table
from allmtl_spark.transforms.resample import resample_image


def resample_crop(content: bytes, pixel_size_um: float | None, target_pixel_size_um: float) -> bytes:
    """PNG bytes of an image file's pixels at ``target_pixel_size_um`` (unchanged when its pixel size is unknown)."""
    if pixel_size_um is None or (isinstance(pixel_size_um, float) and np.isnan(pixel_size_um)):
        return content
    from allmtl_spark.segmentation.pipeline import decode_rgb, encode_png

    return encode_png(resample_image(decode_rgb(content), float(pixel_size_um), target_pixel_size_um))


def resampled_crops(content: str | Column, pixel_size_um: str | Column, target_pixel_size_um: float) -> Column:
    """Column of PNG bytes: each row's image resampled from its pixel size to ``target_pixel_size_um``."""

    @pandas_udf("binary")
    def resample(data: pd.Series, sizes: pd.Series) -> pd.Series:
        return pd.Series(
            [
                resample_crop(bytes(d), None if pd.isna(p) else float(p), target_pixel_size_um)
                for d, p in zip(data, sizes, strict=True)
            ]
        )

    return resample(content, pixel_size_um)


def crop_pixel_size(spark: SparkSession, lake: Lakehouse, segmenter_version: str) -> float | None:
    """Micrometres per pixel of the crops ``segmenter_version`` cut (None for segmentations of an earlier release)."""
    row = (
        read_table(spark, lake, tables.SEGMENTED_SLIDES)
        .where((F.col("segmenter_version") == segmenter_version) & F.col("working_pixel_size_um").isNotNull())
        .select("working_pixel_size_um")
        .first()
    )
    return float(row[0]) if row else None
