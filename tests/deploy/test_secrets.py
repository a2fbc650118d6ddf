"""Deployments run a production config and take the patient key from a secret, never from a command line."""

from __future__ import annotations

import re
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from allmtl_spark.config import load_config
from tests.deploy.test_deploy import DEPLOY, REPO, dry_run_command, option

pytestmark = pytest.mark.unit
KEY = "k3y-that-must-not-leak-0123456789"


def _bash(snippet: str, **env: str) -> subprocess.CompletedProcess:
    import os

    script = f'set -euo pipefail; source "{DEPLOY}/spark-submit/common.sh"; {snippet}'
    return subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env={**os.environ, **env}, timeout=60, check=False
    )


def test_production_config_has_no_demo_defaults():
    cfg = load_config(REPO / "conf" / "prod.yaml")
    assert cfg.privacy.allow_demo_key is False and cfg.privacy.patient_key is None
    assert cfg.spark.master is None and cfg.ingest.sources == () and cfg.score.source is None
    assert "extends" not in yaml.safe_load((REPO / "conf" / "prod.yaml").read_text())


def test_no_deploy_example_runs_the_demo_config():
    demo = [
        str(p.relative_to(REPO))
        for p in DEPLOY.rglob("*")
        if p.is_file() and re.search(r"conf/demo\.yaml", p.read_text(errors="ignore"))
    ]
    assert demo == []
    assert _bash("allmtl_config_file").stdout.strip() == str(REPO / "conf" / "prod.yaml")


@pytest.mark.parametrize("path", ["k8s/sparkapplication.yaml", "k8s/scheduledsparkapplication.yaml"])
def test_kubernetes_driver_takes_the_key_from_a_secret(path):
    spec = yaml.safe_load((DEPLOY / path).read_text())["spec"]
    spec = spec.get("template", spec)
    env = {e["name"]: e for e in spec["driver"]["env"]}
    assert "secretKeyRef" in env["ALLMTL_PATIENT_KEY"]["valueFrom"]
    assert KEY not in (DEPLOY / path).read_text()


def test_yarn_cluster_mode_hands_the_key_to_the_driver_in_a_private_file(tmp_path):
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    (conf_dir / "spark-defaults.conf").write_text("spark.yarn.queue analytics\n")
    made = _bash("allmtl_secret_properties", ALLMTL_PATIENT_KEY=KEY, SPARK_CONF_DIR=str(conf_dir))
    path = Path(made.stdout.strip())
    assert made.returncode == 0 and path.is_file(), made.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = path.read_text().splitlines()
    assert "spark.yarn.queue analytics" in lines  # a --properties-file replaces spark-defaults.conf
    assert f"spark.yarn.appMasterEnv.ALLMTL_PATIENT_KEY {KEY}" in lines
    assert any(line.startswith("spark.redaction.regex ") and "patient" in line for line in lines)
    path.unlink()

    command = dry_run_command(
        "yarn.sh",
        "score_archive",
        ALLMTL_LAKEHOUSE="hdfs:///lake",
        ALLMTL_PYENV_ARCHIVE="hdfs:///env.tar.gz",
        ALLMTL_PATIENT_KEY=KEY,
        TMPDIR=str(tmp_path),
    )
    assert KEY not in " ".join(command)
    (properties,) = option(command, "--properties-file")
    assert not Path(properties).exists()  # deleted once spark-submit returned (here: the dry run)
    assert not list(tmp_path.glob("allmtl-secret.*"))
    client = dry_run_command(
        "yarn.sh", "score_archive", ALLMTL_LAKEHOUSE="hdfs:///l", ALLMTL_DEPLOY_MODE="client", ALLMTL_PATIENT_KEY=KEY
    )
    assert not option(client, "--properties-file")  # the driver runs here and inherits the variable


def test_an_empty_key_stops_the_submit_script():
    result = _bash("allmtl_secret_properties", ALLMTL_PATIENT_KEY="  ")
    assert result.returncode == 2 and "ALLMTL_PATIENT_KEY is set but empty" in result.stderr
