"""The wheel leaves the cluster's Spark alone, and the hashed lock pins the whole CPU environment."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "deploy" / "lock" / "cpu.txt"
HOROVOD_LOCK = REPO / "deploy" / "lock" / "horovod.txt"
SPARK_SIDE = {"pyspark", "delta-spark"}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return normalize(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip()).group(0))


def lock_pins(path: Path) -> dict[str, str]:
    return {normalize(m.group(1)): m.group(2) for line in path.read_text().splitlines() if (m := PIN.match(line))}


def base_requirements(wheel: Path) -> list[str]:
    """Requires-Dist lines of the wheel that apply without any extra."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        lines = archive.read(name).decode().splitlines()
    requirements = [line.split(":", 1)[1].strip() for line in lines if line.startswith("Requires-Dist:")]
    return [r for r in requirements if "extra ==" not in r]


def closure(names: list[str]) -> set[str]:
    """Every distribution the installed metadata says ``names`` pull in (without extras)."""
    seen, todo = set(), list(names)
    while todo:
        name = normalize(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [requirement_name(r) for r in requires if "extra ==" not in r]
    return seen


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(folder), str(REPO)],
        check=True,
        capture_output=True,
    )
    (built,) = folder.glob("allmtl_spark-*.whl")
    return built


def test_the_wheels_base_dependencies_pull_in_no_spark(wheel):
    base = [requirement_name(r) for r in base_requirements(wheel)]

    assert base and "mlflow-skinny" in base and "numpy" in base
    assert SPARK_SIDE.isdisjoint(base), base
    pulled = closure(base)  # transitively: petastorm, for one, requires pyspark
    assert SPARK_SIDE.isdisjoint(pulled), sorted(SPARK_SIDE & pulled)
    assert "tensorflow-cpu" not in pulled and "horovod" not in pulled


def test_the_spark_extra_brings_spark_delta_and_petastorm(wheel):
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        text = archive.read(name).decode()
    lines = [line for line in text.splitlines() if 'extra == "spark"' in line]
    spark_extra = {requirement_name(line.split(":", 1)[1]) for line in lines}

    assert spark_extra == SPARK_SIDE | {"petastorm"}


def test_the_lock_pins_every_package_with_hashes_and_agrees_with_the_constraints():
    pins = lock_pins(LOCK)
    text = LOCK.read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text[text.index("\n", text.index("uv pip compile")) + 1 :])
    assert all("--hash=sha256:" in entry for entry in entries if PIN.match(entry)), "an entry without hashes"
    for requirement in ("tensorflow-cpu", "pyspark", "delta-spark", "petastorm", "mlflow-skinny", "pytest", "pyarrow"):
        assert requirement in pins, f"{requirement} is not locked"
    assert "horovod" not in pins and lock_pins(HOROVOD_LOCK) == {"horovod": "0.28.1"}
    assert "--hash=sha256:" in HOROVOD_LOCK.read_text()
    constraints = lock_pins(REPO / "deploy" / "constraints.txt")
    assert {name: pins.get(name) for name in constraints} == constraints, "make lock after changing a pin"


def test_this_environment_is_the_lock():
    """`make setup` installed exactly the locked versions (this venv is the proof)."""
    wrong = {
        name: (version, metadata.version(name))
        for name, version in lock_pins(LOCK).items()
        if name != "uv" and _installed(name) and metadata.version(name) != version
    }
    missing = [name for name in lock_pins(LOCK) if not _installed(name)]

    assert wrong == {} and missing == []


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


def test_make_setup_installs_from_the_lock_with_hashes():
    makefile = (REPO / "Makefile").read_text()

    assert "--require-hashes --no-deps -r $(LOCK)" in makefile
    assert "--require-hashes --no-deps --no-build-isolation -r $(HOROVOD_LOCK)" in makefile
    assert re.search(r"^LOCK := deploy/lock/cpu.txt$", makefile, re.MULTILINE)
