"""The newcomer's path, through the real CLI: a lakehouse of their own takes the models (allmtl import-models),
scores a plain folder, shows which model scored it, lists the results, and nothing outside it changes (issue:
scoring into another lakehouse wrote TFLite conversions beside the first one's models)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import cv2
import pytest

from tests.scoring.conftest import cli, overrides

pytestmark = [pytest.mark.spark, pytest.mark.slow]  # 10-20 min on a loaded 2-core machine

REPO = Path(__file__).resolve().parents[2]


def _snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` except under ``skip``: path -> (size, mtime in ns)."""
    found = {}
    for folder, _, names in os.walk(root):
        if Path(folder) == skip or skip in Path(folder).parents:
            continue
        for name in names:
            stat = (Path(folder) / name).stat()
            found[str(Path(folder) / name)] = (stat.st_size, stat.st_mtime_ns)
    return found


def test_own_lakehouse_imports_the_models_scores_a_plain_folder_and_nothing_outside_it_changes(scoring_lake, tmp_path):
    cfg, lake, models = scoring_lake
    root = Path(lake.root).parent  # the fixture's folder: data, the original lakehouse
    # a newcomer's folder: photos named after wards and patients, in a subfolder too, and a note
    mine = tmp_path / "my_slides"
    (mine / "day2").mkdir(parents=True)
    photos = sorted((root / "data" / "ALL_IDB1" / "im").glob("*.jpg"))[:3]
    names = ["ward3_patient1_smear1.jpg", "ward3_patient1_smear2.jpg", "day2/ward4_patient2_smear1.jpg"]
    for photo, name in zip(photos, names, strict=True):  # re-encoded: new bytes, not the ingested slides
        cv2.imwrite(str(mine / name), cv2.imread(str(photo)), [cv2.IMWRITE_JPEG_QUALITY, 80])
    (mine / "README.txt").write_text("smears from ward 3 and 4")
    copy = tmp_path / "copy"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    before = _snapshot(root, skip=copy) | _snapshot(tmp_path, skip=copy)
    env = {"ALLMTL_JARS_DIR": str(REPO / ".cache" / "jars"), "HOME": str(tmp_path / "home")}
    config = ["--config", str(REPO / "conf/demo.yaml")]
    config += [a for o in [*overrides(tmp_path), f"lakehouse.path={copy}"] for a in ("--set", o)]

    imported = cli("import-models", *config, "--from", str(lake.root), env=env, cwd=cwd)
    assert imported.returncode == 0, imported.stderr[-3000:]
    assert f"classifier {models['stage3'].model_id}: copied" in imported.stdout
    scored = cli("score", *config, "--source", str(mine), "--run-id", "mine-1", env=env, cwd=cwd)
    assert scored.returncode == 0, scored.stderr[-3000:]
    out = scored.stdout
    stage3 = models["stage3"].model_id
    assert f"model {stage3} (run tiny" in out and "score.model=latest, task fab4, approach mtl" in out
    assert "registered by a training run" in out and f"cell model {models['stage2'].model_id}" in out
    assert "3 slide(s) scored, 0 rejected" in out

    listed = cli("results", *config, "--format", "json", env=env, cwd=cwd)
    assert listed.returncode == 0, listed.stderr[-3000:]
    payload = json.loads(listed.stdout)
    assert payload["query"].startswith("scoring run mine-1")
    assert len(payload["slides"]) == 3 and {s["model_version"] for s in payload["slides"]} == {stage3}
    # a plain folder's names are pseudonymised by default: what is printed and the report carry no ward or patient
    assert all(re.fullmatch(r"[0-9a-f]{16}", s["slide_id"]) for s in payload["slides"])
    report = (copy / "_reports" / "score" / "mine-1" / "index.html").read_text()
    assert all(s["slide_id"] in report for s in payload["slides"])  # the report lists every slide
    assert not any(name in text for name in ("ward", "patient") for text in (scored.stdout, listed.stdout, report))

    # the TFLite conversions were made in the copy, keyed by the artifact hashes; nothing else moved
    conversions = copy / "_cache" / "tflite"
    assert {p.name for p in conversions.iterdir()} == {
        models["stage3"].artifact_sha256,
        models["stage2"].artifact_sha256,
    }
    after = _snapshot(root, skip=copy) | _snapshot(tmp_path, skip=copy)
    changed = sorted(set(before.items()) ^ set(after.items()))
    assert [p for p, _ in changed if not p.startswith(str(tmp_path / "home"))] == []
    assert list(cwd.iterdir()) == []
