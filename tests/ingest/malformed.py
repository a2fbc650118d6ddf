"""Malformed image files for the ingest tests, each paired with the reject reason it must get."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def _encode(array: np.ndarray, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def good_jpeg(width: int = 96, height: int = 64, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return _encode(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), "JPEG", quality=90)


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""
    data = _encode(np.zeros((1, 1, 3), np.uint8), "PNG")
    ihdr = struct.pack(">II", width, height) + data[24:29]
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return data[:16] + ihdr + crc + data[33:]


def rgb16(fmt: str, width: int = 96, height: int = 64, seed: int = 0) -> bytes:
    """A 16-bit-per-channel RGB ``.png`` or ``.tif`` (48-bit colour), which Pillow opens as 8-bit RGB."""
    import cv2

    pixels = np.random.default_rng(seed).integers(0, 65535, (height, width, 3)).astype(np.uint16)
    return cv2.imencode(fmt, pixels)[1].tobytes()


def malformed_files() -> dict[str, tuple[bytes, str]]:
    """{ALL-IDB file name: (bytes, expected reject reason)}."""
    jpeg = good_jpeg()
    return {
        "Im101_1.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        "Im102_1.jpg": (b"this is not an image at all", "not_an_image"),
        "Im103_0.jpg": (b"", "not_an_image"),
        "Im104_1.png": (png_bomb(), "too_many_pixels"),
        "Im105_0.png": (_encode(np.zeros((64, 64), np.uint8), "PNG"), "unsupported_channels"),
        "Im106_1.tif": (_encode(np.zeros((64, 64), np.uint16), "TIFF"), "unsupported_bit_depth"),
        "Im107_0.jpg": (good_jpeg(20, 20), "too_small"),
        "Im108_5.jpg": (good_jpeg(seed=8), "bad_label"),
        "scan_0001.jpg": (good_jpeg(seed=9), "bad_name"),
        "Im110_1.gif": (_encode(np.zeros((64, 64, 3), np.uint8), "GIF"), "unsupported_format"),
        "Im111_1.tif": (rgb16(".tif"), "unsupported_bit_depth"),
        "Im112_0.png": (rgb16(".png"), "unsupported_bit_depth"),
    }
