"""Pseudonymised patient identifiers: a keyed hash, never the raw id (see ``docs/privacy.md``).

HMAC-SHA256 with a secret key per deployment: the same patient maps to the same hash within a
lakehouse (so splits can keep a patient on one side), but the hash cannot be reversed or
recomputed without the key, unlike a plain hash of a short id.

Which key: ``$<privacy.patient_key_env>``, else ``privacy.patient_key``; without either, the public
demo key, only when ``privacy.allow_demo_key`` is true *and* every source was written by ``allmtl
synth`` (it leaves ``SYNTHETIC_MARKER`` listing the SHA-256 of every file it wrote). The lakehouse
records the key's fingerprint (``tables.PRIVACY_KEYS``) and refuses any other key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from allmtl_spark.config.loader import ConfigError
from allmtl_spark.config.schema import PrivacyConfig

log = logging.getLogger(__name__)

# Public on purpose: only for synthetic demo data (privacy.allow_demo_key: true, sources from allmtl synth).
DEMO_KEY = "allmtl-demo-key-not-secret"
# Written by `allmtl synth` into its output folder: {"written_by": ..., "files": {relative path: sha256}}.
# The leading underscore makes ingest (and Spark) skip it as a data file.
SYNTHETIC_MARKER = "_allmtl_synthetic.json"
PURPOSE = "patient_id"  # what the key hashes (tables.PRIVACY_KEYS.purpose)
_FINGERPRINT_MESSAGE = b"allmtl patient key fingerprint v1"


@dataclass(frozen=True)
class PatientKey:
    """The HMAC key of this run and whether it is the public demo key (its repr never shows the key)."""

    key: bytes = field(repr=False)
    demo: bool

    @property
    def fingerprint(self) -> str:
        return key_fingerprint(self.key)


def key_fingerprint(key: bytes) -> str:
    """HMAC-SHA256 of a fixed message under ``key`` (hex): identifies a key, and the key cannot be recovered from it."""
    return hmac.new(key, _FINGERPRINT_MESSAGE, hashlib.sha256).hexdigest()


def how_to_set(cfg: PrivacyConfig) -> str:
    return (
        f"Set a secret key: export {cfg.patient_key_env}=$(openssl rand -hex 32), keep it for the lifetime "
        "of the lakehouse, and in deployments pass it from a secret store (docs/privacy.md)"
    )


def patient_key(cfg: PrivacyConfig, synthetic: bool, sources: str = "the sources") -> PatientKey:
    """The HMAC key for this run.

    Args:
        cfg: the ``privacy`` section.
        synthetic: every source was written by ``allmtl synth`` (``synthetic_sources``).
        sources: what is ingested (or why it is not synthetic), for the error messages.

    Raises:
        ConfigError: the environment variable is set but empty; no key and the demo key is not
            allowed, or the sources are not synthetic; the demo key's text given for real data.
    """
    env = os.environ.get(cfg.patient_key_env)
    if env is not None and not env.strip():
        raise ConfigError(
            f"privacy: ${cfg.patient_key_env} is set but empty; it does not fall back to the demo key. "
            + how_to_set(cfg)
        )
    key = env if env is not None else cfg.patient_key
    if key:
        demo = key == DEMO_KEY
        if demo and not synthetic:
            raise ConfigError(
                f"privacy: the patient key given is the public demo key, and {sources} are not marked as "
                f"synthetic. {how_to_set(cfg)}"
            )
        return PatientKey(key.encode(), demo=demo)
    if not cfg.allow_demo_key:
        raise ConfigError(
            f"privacy: no patient key for {sources}. {how_to_set(cfg)}. For data written by `allmtl synth` "
            "only, privacy.allow_demo_key=true uses a public demo key"
        )
    if not synthetic:
        raise ConfigError(
            f"privacy: no patient key, and {sources} are not marked as synthetic: the public demo key "
            f"(privacy.allow_demo_key) is only for data written by `allmtl synth`. {how_to_set(cfg)}"
        )
    log.warning("using the public demo patient key: the sources were written by allmtl synth")
    return PatientKey(DEMO_KEY.encode(), demo=True)


def hash_patient_id(patient_id: str | None, key: bytes) -> str | None:
    """HMAC-SHA256 hex digest of the stripped patient id; None for a missing or empty id."""
    if patient_id is None or not str(patient_id).strip():
        return None
    return hmac.new(key, str(patient_id).strip().encode(), hashlib.sha256).hexdigest()


def write_synthetic_marker(root: str | os.PathLike, files: list[str]) -> Path:
    """Record that ``allmtl synth`` wrote ``files`` (paths relative to ``root``) with their SHA-256 now.

    Returns:
        The marker's path, ``<root>/SYNTHETIC_MARKER``.
    """
    root = Path(root)
    digests = {}
    for rel in sorted(files):
        with open(root / rel, "rb") as handle:
            digests[rel] = hashlib.sha256(handle.read()).hexdigest()
    path = root / SYNTHETIC_MARKER
    partial = path.with_name(f"{SYNTHETIC_MARKER}.tmp-{os.getpid()}")
    partial.write_text(json.dumps({"written_by": "allmtl synth", "files": digests}, indent=1, sort_keys=True))
    os.replace(partial, path)
    return path


@dataclass(frozen=True)
class SyntheticMarker:
    """A parsed ``SYNTHETIC_MARKER``: the folder it lies in (a qualified URI) and {qualified path: sha256}."""

    folder: str
    files: dict[str, str]

    @classmethod
    def parse(cls, folder: str, text: bytes) -> SyntheticMarker | None:
        """None when ``text`` is not a marker written by ``allmtl synth``."""
        try:
            data = json.loads(text)
            files = data["files"] if data.get("written_by") == "allmtl synth" else None
        except (ValueError, TypeError, AttributeError, KeyError):
            return None
        if not isinstance(files, dict):
            return None
        base = folder.rstrip("/")
        return cls(folder, {f"{base}/{rel}": str(digest) for rel, digest in files.items()})


def not_synthetic(marker: SyntheticMarker | None, listed: list[str], place: str) -> str | None:
    """Why the files ``listed`` (qualified paths) of a source are not all the generator's; None when they are."""
    if marker is None:
        return f"{place} (no {SYNTHETIC_MARKER} in its folder or the folder above)"
    foreign = sorted(p for p in listed if p not in marker.files)
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        return f"{place}: {foreign[0]}{more} was not written by `allmtl synth`"
    return None


def changed_since_written(marker_files: dict[str, str], read: dict[str, str | None]) -> list[str]:
    """Paths whose bytes read now (``{path: sha256 or None}``) are not the ones the generator recorded."""
    return sorted(path for path, digest in read.items() if marker_files.get(path) != digest)
