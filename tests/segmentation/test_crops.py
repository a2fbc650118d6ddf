"""Stage-2 cells resampled to the slide crops' pixel size."""

from __future__ import annotations

import numpy as np
import pytest

from allmtl_spark.segmentation.crops import resample_crop, resampled_crops
from allmtl_spark.segmentation.pipeline import decode_rgb, encode_png


def _crop(side: int) -> bytes:
    image = np.zeros((side, side, 3), np.uint8)
    image[side // 4 : 3 * side // 4, side // 4 : 3 * side // 4] = (133, 96, 213)
    return encode_png(image)


@pytest.mark.unit
def test_an_allidb2_crop_comes_to_the_working_pixel_size():
    out = decode_rgb(resample_crop(_crop(257), 0.155, 0.31))
    assert out.shape == (128, 128, 3) or out.shape == (129, 129, 3)
    assert tuple(out[64, 64]) == (133, 96, 213)  # the cell still in the middle, same colour
    assert resample_crop(_crop(64), None, 0.31) == _crop(64)  # unknown pixel size: left as it is


@pytest.mark.spark
def test_resampled_crops_column(spark):
    frame = spark.createDataFrame(
        [(bytearray(_crop(100)), 0.0775), (bytearray(_crop(100)), None)], "content binary, pixel_size_um double"
    )
    rows = frame.select(resampled_crops("content", "pixel_size_um", 0.31).alias("png")).collect()
    assert [decode_rgb(bytes(r["png"])).shape[:2] for r in rows] == [(25, 25), (100, 100)]
