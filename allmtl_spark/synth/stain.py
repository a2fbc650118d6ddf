"""Stain and optics of a synthetic smear: a Beer-Lambert transmission model with per-patient stain and per-slide optics.

A scene is drawn as float32 stain-concentration planes, 4xHxW: ``HAEM`` (nuclei, platelets),
``EOSIN`` (haemoglobin in red cells), ``BASO`` (basophilic cytoplasm), ``GRANULE`` (eosinophil
granules). ``compose_rgb`` turns them into an 8-bit RGB photo: optical density = conc @ OD
vectors, transmission = lamp field * exp(-OD) (so overlapping cells darken the way real ones do),
defocus blur, camera saturation, hue and white balance, sensor noise, tone curve.

The stain (optical densities and strengths) is drawn per patient and shared by the patient's
slides with a small per-slide jitter; the lamp, camera and focus are drawn per slide. Both come
from ranges that know nothing about the slide's class: the class must be read from cell
morphology, never from colour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from allmtl_spark.config.schema import SynthOpticsConfig, SynthStainConfig

HAEM, EOSIN, BASO, GRANULE = 0, 1, 2, 3
N_STAINS = 4

# Optical density per unit concentration, columns (R, G, B). Tuned so that the middle of the
# ranges reproduces the real smear colours in docs/synthetic-data.md (background ~(193,194,189),
# red cells ~(186,169,175), nuclei ~(133,96,213)) after the camera saturation step.
BASE_OD = np.array(
    [
        [0.46, 0.70, 0.07],  # haematoxylin-like: chromatin, platelet granules -> purple-blue
        [0.055, 0.125, 0.085],  # eosin-like: haemoglobin -> pale pink
        [0.36, 0.25, 0.02],  # basophilic cytoplasm (RNA) -> blue
        [0.05, 0.40, 0.55],  # eosinophil granules -> orange-red
    ],
    dtype=np.float32,
)
# ITU-R BT.601 luma weights: the saturation step keeps luminance and scales chroma around it.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
# The real background is a slightly green-grey, not neutral (193,194,189).
_GLASS_TINT = np.array([1.0, 1.005, 0.98], dtype=np.float32)


@dataclass(frozen=True, eq=False)
class Session:
    """What a patient's slides share: one stain batch and one camera session.

    Attributes:
        od: float32 4x3, row per stain (HAEM, EOSIN, BASO, GRANULE), optical density per unit
            concentration in (R, G, B), strengths folded in.
        background_level: clear-glass brightness, fraction of 255.
        gains: float32 (3,) white-balance gains (green is 1).
        saturation, hue_shift_deg, gamma: camera colour processing.
    """

    od: np.ndarray
    background_level: float
    gains: np.ndarray
    saturation: float
    hue_shift_deg: float
    gamma: float


def sample_session(rng: np.random.Generator, stain: SynthStainConfig, optics: SynthOpticsConfig) -> Session:
    """Draw one patient's stain batch and camera settings.

    Args:
        rng: the patient's generator.
        stain: the stain ranges.
        optics: the optics ranges (white balance, saturation, hue, gamma and brightness are per session).

    Returns:
        The patient's ``Session``.
    """
    jitter = np.exp(rng.uniform(-stain.od_jitter, stain.od_jitter, size=BASE_OD.shape)).astype(np.float32)
    strength = np.array(
        [
            rng.uniform(*stain.haem_strength),
            rng.uniform(*stain.eosin_strength),
            rng.uniform(*stain.baso_strength),
            rng.uniform(*stain.granule_strength),
        ],
        dtype=np.float32,
    )
    return Session(
        od=(BASE_OD * jitter * strength[:, None]).astype(np.float32),
        background_level=float(rng.uniform(*optics.background_level)),
        gains=np.array([rng.uniform(*optics.white_balance), 1.0, rng.uniform(*optics.white_balance)], np.float32),
        saturation=float(rng.uniform(*optics.saturation)),
        hue_shift_deg=float(rng.uniform(*optics.hue_shift_deg)),
        gamma=float(rng.uniform(*optics.gamma)),
    )


@dataclass(frozen=True, eq=False)
class Optics:
    """The drawn stain and optics of one slide.

    Attributes:
        od: float32 4x3, row per stain (HAEM, EOSIN, BASO, GRANULE), optical density per unit
            concentration in (R, G, B): the patient's stain with the slide's jitter.
        background_rgb: float32 (3,), brightness of clear glass in 8-bit RGB before saturation.
        saturation, hue_shift_deg, gamma: camera colour processing.
        vignetting, gradient, gradient_angle, unevenness: illumination field parameters.
        blur_sigma_px: Gaussian defocus in pixels (from micrometres at the slide's pixel size).
        noise_sigma: Gaussian sensor noise in 8-bit units.
        jpeg_quality: JPEG quality the slide is saved with.
    """

    od: np.ndarray
    background_rgb: np.ndarray
    saturation: float
    hue_shift_deg: float
    gamma: float
    vignetting: float
    gradient: float
    gradient_angle: float
    unevenness: float
    blur_sigma_px: float
    noise_sigma: float
    jpeg_quality: int


def sample_optics(
    rng: np.random.Generator,
    session: Session,
    stain: SynthStainConfig,
    ranges: SynthOpticsConfig,
    pixel_size_um: float,
) -> Optics:
    """Draw one slide's optics around its patient's session, independently of anything about its content.

    The stain strengths, brightness, white balance and saturation move a little around the
    session's (``stain.slide_jitter``, ``optics.slide_jitter``); the lamp field, focus, noise and
    JPEG quality are the slide's own.

    Args:
        rng: the slide's generator; call this before any class-dependent draw.
        session: the patient's stain batch and camera session (``sample_session``).
        stain: the stain ranges (for the per-slide jitter).
        ranges: the optics ranges.
        pixel_size_um: the slide's micrometres per pixel (the defocus is physical).

    Returns:
        The slide's ``Optics``.
    """

    def jitter(amount: float, size=None):
        return np.exp(rng.uniform(-amount, amount, size=size))

    od = session.od * jitter(stain.slide_jitter, (N_STAINS, 1)).astype(np.float32)
    gains = session.gains * jitter(ranges.slide_jitter / 2.0, 3).astype(np.float32)
    background = 255.0 * session.background_level * float(jitter(ranges.slide_jitter)) * gains * _GLASS_TINT
    return Optics(
        od=od.astype(np.float32),
        background_rgb=background.astype(np.float32),
        saturation=session.saturation * float(jitter(ranges.slide_jitter)),
        hue_shift_deg=session.hue_shift_deg,
        gamma=session.gamma,
        vignetting=float(rng.uniform(*ranges.vignetting)),
        gradient=float(rng.uniform(*ranges.gradient)),
        gradient_angle=float(rng.uniform(0.0, 2.0 * np.pi)),
        unevenness=float(rng.uniform(*ranges.unevenness)),
        blur_sigma_px=float(rng.uniform(*ranges.blur_sigma_um)) / pixel_size_um,
        noise_sigma=float(rng.uniform(*ranges.noise_sigma)),
        jpeg_quality=int(rng.integers(ranges.jpeg_quality[0], ranges.jpeg_quality[1] + 1)),
    )


def illumination_field(rng: np.random.Generator, height: int, width: int, optics: Optics) -> np.ndarray:
    """The lamp's relative brightness over the frame: vignetting, a linear gradient and soft blotches.

    Computed on a coarse grid and resized: the field is smooth, so evaluating it per pixel would
    only cost time.

    Args:
        rng: the slide's generator (draws the blotches).
        height, width: image size in pixels.
        optics: the slide's optics.

    Returns:
        float32 HxW, about 1 in the middle of the frame, lower where the light is dimmer.
    """
    gh, gw = max(2, height // 16), max(2, width // 16)
    y, x = np.mgrid[0:gh, 0:gw].astype(np.float32)
    u, v = x / (gw - 1) * 2.0 - 1.0, y / (gh - 1) * 2.0 - 1.0  # -1..1 across the frame
    field = 1.0 - optics.vignetting * (u * u + v * v) / 2.0
    field *= 1.0 + optics.gradient * 0.5 * (u * np.cos(optics.gradient_angle) + v * np.sin(optics.gradient_angle))
    blotches = rng.standard_normal((4, 5)).astype(np.float32)
    field *= 1.0 + optics.unevenness * cv2.resize(blotches, (gw, gh), interpolation=cv2.INTER_CUBIC)
    field = np.clip(field, 0.05, None).astype(np.float32)
    return cv2.resize(field, (width, height), interpolation=cv2.INTER_LINEAR)


def _hue_rotation(degrees: float) -> np.ndarray:
    """3x3 rotation of RGB around the grey axis (Rodrigues), float32: a camera's hue error."""
    t = math.radians(degrees)
    k = np.ones(3, np.float32) / math.sqrt(3.0)
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]], np.float32)
    return (math.cos(t) * np.eye(3) + math.sin(t) * cross + (1 - math.cos(t)) * np.outer(k, k)).astype(np.float32)


def colour_matrix(optics: Optics) -> np.ndarray:
    """3x3 float32 matrix from transmission (R, G, B in 0..1) to 8-bit RGB: hue, saturation, then white balance.

    White balance comes last so that a tinted lamp or a wrong white point shifts the whole
    image rather than being amplified by the saturation.
    """
    s = optics.saturation
    saturate = s * np.eye(3, dtype=np.float32) + (1.0 - s) * np.outer(np.ones(3, np.float32), _LUMA)
    return (np.diag(optics.background_rgb) @ saturate @ _hue_rotation(optics.hue_shift_deg)).astype(np.float32)


def _sensor_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Zero-mean, unit-variance noise, float32; a triangular (difference of two uniforms) stand-in for Gaussian.

    Two uint8 draws cost a third of float32 ``standard_normal`` on a full slide, and after JPEG
    the noise shape is indistinguishable.
    """
    a = rng.integers(0, 256, size=shape, dtype=np.uint8)
    b = rng.integers(0, 256, size=shape, dtype=np.uint8)
    noise = cv2.subtract(a, b, dtype=cv2.CV_16S).astype(np.float32)
    noise *= np.float32(1.0 / np.sqrt((256.0**2 - 1.0) / 6.0))
    return noise


def compose_rgb(stains: np.ndarray, illumination: np.ndarray, optics: Optics, rng: np.random.Generator) -> np.ndarray:
    """Render stain concentrations to an 8-bit photo.

    Args:
        stains: float32 4xHxW concentration planes (HAEM, EOSIN, BASO, GRANULE).
        illumination: float32 HxW relative lamp brightness (``illumination_field``).
        optics: the slide's optics.
        rng: the slide's generator (draws the sensor noise).

    Returns:
        uint8 HxWx3 RGB.
    """
    _, h, w = stains.shape
    # Beer-Lambert: transmission = exp(-sum_k conc_k * OD_k) per colour channel, times the lamp field.
    # cv2.transform takes at most 4 channels, which is exactly our number of stains.
    trans = cv2.transform(cv2.merge(list(stains)), -optics.od.T)
    cv2.exp(trans, trans)
    trans *= illumination[..., None]
    if optics.blur_sigma_px > 0.25:
        cv2.GaussianBlur(trans, (0, 0), optics.blur_sigma_px, dst=trans)
    rgb = cv2.transform(trans, colour_matrix(optics))
    cv2.scaleAdd(_sensor_noise(rng, (h, w, 3)), optics.noise_sigma, rgb, dst=rgb)
    cv2.max(rgb, 0.0, dst=rgb)  # convertScaleAbs takes |x|: no negatives may reach it
    image = cv2.convertScaleAbs(rgb)  # rounds and saturates to 0..255
    levels = np.arange(256, dtype=np.float32) / 255.0
    lut = np.clip(255.0 * levels ** (1.0 / optics.gamma) + 0.5, 0, 255).astype(np.uint8)
    return cv2.LUT(image, lut)


def jpeg_roundtrip(rgb: np.ndarray, quality: int) -> tuple[bytes, np.ndarray]:
    """Encode an RGB image as JPEG and decode it again.

    Args:
        rgb: uint8 HxWx3 RGB.
        quality: JPEG quality 1..100.

    Returns:
        The JPEG bytes and the decoded uint8 HxWx3 RGB image (what any reader of the file sees).
    """
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    decoded = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return data.tobytes(), decoded
