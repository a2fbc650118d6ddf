"""Validate image bytes before they enter the lakehouse: pure Pillow/hashlib code, no Spark.

The header is read first, so the pixel-count guard against decompression bombs runs before any
pixel is decoded; then the whole image is decoded once to catch truncated files.

Colour images with more than 8 bits per channel (48-bit RGB TIFFs and PNGs from scientific
cameras) are rejected (``unsupported_bit_depth``), not converted: Pillow opens them as 8-bit RGB,
silently dropping the low byte, and the lakehouse keeps the original bytes, which would then be
recorded as an 8-bit image they are not. The reject says how to convert them first.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

ACCEPTED_FORMATS = ("JPEG", "TIFF", "PNG", "BMP")
# Pillow mode -> (channels, bits per channel). Everything else is refused with the mode named.
_ACCEPTED_MODES = {"RGB": (3, 8), "RGBA": (4, 8)}
_MODE_SHAPES = {
    "1": (1, 1),
    "L": (1, 8),
    "P": (1, 8),
    "LA": (2, 8),
    "CMYK": (4, 8),
    "YCbCr": (3, 8),
    "I;16": (1, 16),
    "I;16B": (1, 16),
    "I": (1, 32),
    "F": (1, 32),
    "RGB;16": (3, 16),
}


@dataclass(frozen=True)
class ImageLimits:
    """Limits from the ingest config: bytes on disk, pixels before decoding, smallest side."""

    max_file_bytes: int = 64 * 1024 * 1024
    max_pixels: int = 40_000_000
    min_side_px: int = 32


@dataclass(frozen=True)
class ImageCheck:
    """Result of ``inspect_image``: either metadata (``reason`` None) or a reject reason and detail."""

    sha256: str | None
    format: str | None = None
    width: int | None = None
    height: int | None = None
    channels: int | None = None
    bit_depth: int | None = None
    reason: str | None = None
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def inspect_image(data: bytes | None, limits: ImageLimits) -> ImageCheck:
    """Check that ``data`` is a decodable 8-bit RGB image within the limits.

    Args:
        data: the file's bytes (None when the file could not be read).
        limits: size limits.

    Returns:
        An ``ImageCheck``; on failure ``reason`` is one of: unreadable, too_large_file,
        not_an_image, unsupported_format, too_many_pixels, too_small, unsupported_channels,
        unsupported_bit_depth, truncated.
    """
    if data is None:
        return ImageCheck(None, reason="unreadable", detail="the file could not be read")
    digest = sha256_hex(data)
    if len(data) > limits.max_file_bytes:
        return ImageCheck(
            digest,
            reason="too_large_file",
            detail=f"{len(data)} bytes exceeds ingest.max_file_bytes={limits.max_file_bytes}",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        return ImageCheck(digest, reason="too_many_pixels", detail=str(err))
    except UnidentifiedImageError:
        kind = "an empty file" if not data else "not a recognised image format"
        return ImageCheck(digest, reason="not_an_image", detail=f"{kind} ({len(data)} bytes)")
    except Exception as err:  # a recognised format whose header is damaged: decoders raise many types
        reason = "truncated" if "runcat" in str(err) else "not_an_image"
        return ImageCheck(digest, reason=reason, detail=f"the header cannot be read: {err}")
    with image:
        return _check_opened(image, digest, limits, data)


def _stored_bits(image: Image.Image, data: bytes) -> int | None:
    """Bits per channel as the file stores them (PNG IHDR, TIFF BitsPerSample); None when not stated."""
    if image.format == "PNG" and len(data) > 24:
        return int(data[24])  # IHDR: 8-byte signature, length, type, width, height, then bit depth
    if image.format == "TIFF":
        bits = getattr(image, "tag_v2", {}).get(258)  # BitsPerSample, one value per channel
        if bits:
            return max(int(b) for b in (bits if isinstance(bits, tuple) else (bits,)))
    return None


def _check_opened(image: Image.Image, digest: str, limits: ImageLimits, data: bytes) -> ImageCheck:
    fmt, (width, height), mode = image.format, image.size, image.mode
    channels, bits = _ACCEPTED_MODES.get(mode) or _MODE_SHAPES.get(mode, (len(image.getbands()), 0))
    stored = _stored_bits(image, data)
    if mode in _ACCEPTED_MODES and stored and stored > 8:  # opened as 8-bit, stored wider
        bits = stored
        return ImageCheck(
            digest,
            format=fmt,
            width=width,
            height=height,
            channels=channels,
            bit_depth=bits,
            reason="unsupported_bit_depth",
            detail=(
                f"{bits} bits per channel ({bits * channels}-bit colour), which would be read as 8-bit; "
                "convert it to 8-bit RGB first (e.g. scale by 255/65535 with OpenCV or tifffile) and ingest that"
            ),
        )
    meta = dict(format=fmt, width=width, height=height, channels=channels, bit_depth=bits)
    reason, detail = _header_problem(fmt, width, height, mode, channels, bits, limits)
    if reason is None:
        reason, detail = _decode_problem(image)
    return ImageCheck(digest, **meta, reason=reason, detail=detail)


def _header_problem(fmt, width, height, mode, channels, bits, limits) -> tuple[str | None, str | None]:
    if fmt not in ACCEPTED_FORMATS:
        return "unsupported_format", f"format {fmt} is not one of {', '.join(ACCEPTED_FORMATS)}"
    if width * height > limits.max_pixels:
        return "too_many_pixels", (
            f"{width}x{height} = {width * height} pixels exceeds "
            f"ingest.max_pixels={limits.max_pixels} (checked before decoding)"
        )
    if min(width, height) < limits.min_side_px:
        return "too_small", f"{width}x{height} has a side below ingest.min_side_px={limits.min_side_px}"
    if mode not in _ACCEPTED_MODES and bits not in (0, 8):
        return "unsupported_bit_depth", f"mode {mode}: {bits}-bit samples; expected 8-bit RGB"
    if mode not in _ACCEPTED_MODES:
        return "unsupported_channels", f"mode {mode}: {channels} channel(s); expected 3 (RGB) or 4 (RGBA)"
    return None, None


def _decode_problem(image: Image.Image) -> tuple[str | None, str | None]:
    try:
        image.load()
    except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError... for damaged data
        return "truncated", f"decoding failed: {err}"
    return None, None
