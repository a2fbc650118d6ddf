"""The patient key is never shown and never silently replaced: redaction, an empty key refused."""

from __future__ import annotations

import pytest

from allmtl_spark.config import ConfigError
from allmtl_spark.config.schema import PrivacyConfig
from allmtl_spark.ingest.privacy import DEMO_KEY, patient_key
from allmtl_spark.session import REDACTION_REGEX, _static_conf

pytestmark = pytest.mark.unit
SECRET = "a-patient-key-that-must-never-show-0123456789"


def test_an_empty_key_is_refused_not_replaced_by_the_demo_key(monkeypatch):
    demo = PrivacyConfig(allow_demo_key=True)
    for empty in ("", "   "):
        monkeypatch.setenv("ALLMTL_PATIENT_KEY", empty)
        with pytest.raises(ConfigError, match=r"ALLMTL_PATIENT_KEY is set but empty.*openssl rand"):
            patient_key(demo, synthetic=True)
    monkeypatch.delenv("ALLMTL_PATIENT_KEY")
    assert patient_key(demo, synthetic=True).key == DEMO_KEY.encode()  # unset: the fallback for synthetic data
    monkeypatch.setenv("ALLMTL_PATIENT_KEY", SECRET)
    key = patient_key(demo, synthetic=False)
    assert key.key == SECRET.encode() and not key.demo and SECRET not in repr(key)
    with pytest.raises(ConfigError, match="patient_key.*is empty"):
        PrivacyConfig(patient_key=" ")


def test_allmtl_config_and_reprs_redact_the_key(capsys):
    from allmtl_spark.cli import main

    assert main(["config", "--set", f"privacy.patient_key={SECRET}"]) == 0
    printed = capsys.readouterr().out
    assert SECRET not in printed and "patient_key: '*** redacted ***'" in printed
    shown = repr(PrivacyConfig(patient_key=SECRET))
    assert SECRET not in shown and "redacted" in shown
    assert main(["config"]) == 0
    assert "patient_key: null" in capsys.readouterr().out  # no key set: nothing to hide, says so


def test_sparks_redaction_pattern_covers_the_key():
    import re

    from allmtl_spark.config.schema import SparkConfig

    conf = _static_conf(SparkConfig())
    assert conf["spark.redaction.regex"] == REDACTION_REGEX
    pattern = re.compile(REDACTION_REGEX)
    for name in ("spark.yarn.appMasterEnv.ALLMTL_PATIENT_KEY", "spark.executorEnv.ALLMTL_PATIENT_KEY"):
        assert pattern.search(name), name
    assert pattern.search(f"--set privacy.patient_key={SECRET}")  # a command line holding the key
    assert pattern.search("spark.hadoop.fs.s3a.secret.key")  # Spark's default pattern kept
