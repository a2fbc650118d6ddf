import pytest

from allmtl_spark.ingest.validate import ImageLimits, inspect_image, sha256_hex
from tests.ingest.malformed import good_jpeg, malformed_files, png_bomb

pytestmark = pytest.mark.unit


def test_good_jpeg_metadata_and_hash():
    data = good_jpeg(96, 64)
    check = inspect_image(data, ImageLimits())
    assert check.ok
    assert (check.format, check.width, check.height, check.channels, check.bit_depth) == ("JPEG", 96, 64, 3, 8)
    assert check.sha256 == sha256_hex(data)


@pytest.mark.parametrize("name", [n for n, (_, r) in malformed_files().items() if r not in ("bad_label", "bad_name")])
def test_each_malformed_file_gets_its_reason(name):
    data, reason = malformed_files()[name]
    check = inspect_image(data, ImageLimits())
    assert check.reason == reason, check.detail
    assert check.detail


def test_bomb_is_refused_from_the_header_with_the_limit_named():
    check = inspect_image(png_bomb(9000, 9000), ImageLimits(max_pixels=40_000_000))
    assert check.reason == "too_many_pixels"
    assert "81000000" in check.detail and "ingest.max_pixels" in check.detail


def test_file_size_limit_and_unreadable():
    assert inspect_image(good_jpeg(), ImageLimits(max_file_bytes=100)).reason == "too_large_file"
    assert inspect_image(None, ImageLimits()).reason == "unreadable"


@pytest.mark.parametrize("fmt", [".tif", ".png"])
def test_16_bit_rgb_is_refused_not_silently_narrowed(fmt):
    import cv2
    import numpy as np

    from tests.ingest.malformed import rgb16

    check = inspect_image(rgb16(fmt), ImageLimits())
    assert check.reason == "unsupported_bit_depth" and check.bit_depth == 16
    assert "16 bits per channel (48-bit colour)" in check.detail and "convert" in check.detail
    eight = cv2.imencode(fmt, np.zeros((64, 96, 3), np.uint8))[1].tobytes()
    assert inspect_image(eight, ImageLimits()).ok and inspect_image(eight, ImageLimits()).bit_depth == 8
