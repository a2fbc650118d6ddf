"""Pseudonymised patient identifiers: a keyed hash, never the raw id.

HMAC-SHA256 with a secret key per deployment: the same patient maps to the same hash within a
lakehouse (so splits can keep a patient on one side), but the hash cannot be reversed or
recomputed without the key, unlike a plain hash of a short id.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os

from allmtl_spark.config.loader import ConfigError
from allmtl_spark.config.schema import PrivacyConfig

log = logging.getLogger(__name__)

# Public on purpose: only for synthetic demo data (privacy.allow_demo_key: true).
DEMO_KEY = "allmtl-demo-key-not-secret"


def patient_key(cfg: PrivacyConfig) -> bytes:
    """The HMAC key: ``$<patient_key_env>``, else ``patient_key``, else the demo key if allowed.

    Raises:
        ConfigError: when no key is configured and the demo key is not allowed, or the environment
            variable is set but empty (it never falls back to the demo key).
    """
    env = os.environ.get(cfg.patient_key_env)
    if env is not None and not env.strip():
        raise ConfigError(
            f"privacy: ${cfg.patient_key_env} is set but empty; it does not fall back to the demo key. Set it to "
            f"a secret (export {cfg.patient_key_env}=$(openssl rand -hex 32), kept for the lifetime of the "
            "lakehouse; in deployments from a secret store: docs/privacy.md) or unset it"
        )
    key = env if env is not None else cfg.patient_key
    if key:
        return key.encode()
    if cfg.allow_demo_key:
        log.warning("using the public demo patient key: fine for synthetic data, never for real patients")
        return DEMO_KEY.encode()
    raise ConfigError(
        f"privacy: no patient key. Set the environment variable {cfg.patient_key_env} to a secret "
        "(on Databricks, from a secret scope), or privacy.allow_demo_key=true for synthetic data"
    )


def hash_patient_id(patient_id: str | None, key: bytes) -> str | None:
    """HMAC-SHA256 hex digest of the stripped patient id; None for a missing or empty id."""
    if patient_id is None or not str(patient_id).strip():
        return None
    return hmac.new(key, str(patient_id).strip().encode(), hashlib.sha256).hexdigest()
