"""Jobs check the runtime they start on and stop, saying what to use, on an unsupported one."""

from __future__ import annotations

import pytest

from allmtl_spark.runtime import NEEDS, Runtime, RuntimeMismatch, check_runtime, compute_runtime_problems, detect

SUPPORTED = Runtime(python=(3, 11, 7), spark="3.5.7", tensorflow="2.15.1", horovod="0.28.1", databricks="15.4")


@pytest.mark.unit
def test_this_environment_and_databricks_15_4_fit_every_job():
    assert detect().tensorflow == "2.15.1" and detect().horovod == "0.28.1"
    for job, needs in NEEDS.items():
        assert compute_runtime_problems(detect(), needs) == [], job
        assert compute_runtime_problems(SUPPORTED, needs) == [], job


@pytest.mark.unit
@pytest.mark.parametrize(
    ("change", "needs", "named"),
    [
        ({"python": (3, 12, 3)}, (), "Python 3.12.3: need 3.10 or 3.11"),
        ({"spark": "4.0.0"}, (), "Spark 4.0.0: need 3.5.x"),
        ({"spark": None}, (), "Spark not found"),
        ({"tensorflow": "2.16.1"}, ("tensorflow",), "TensorFlow 2.16.1: need 2.15.x, whose tf.keras is Keras 2"),
        ({"tensorflow": None}, ("tensorflow",), "TensorFlow not installed"),
        ({"horovod": None}, ("tensorflow", "horovod"), "horovod not installed: need 0.28.x"),
        ({"databricks": "16.4"}, ("tensorflow",), "Databricks Runtime 16.4: runtimes after 15.4 LTS ML"),
    ],
)
def test_each_unsupported_part_is_named_with_what_to_use(change, needs, named):
    problems = compute_runtime_problems(Runtime(**{**SUPPORTED.__dict__, **change}), needs)

    assert len(problems) == 1 and problems[0].startswith(named), problems


@pytest.mark.unit
def test_what_a_job_does_not_use_is_not_checked():
    no_tf = Runtime(**{**SUPPORTED.__dict__, "tensorflow": None, "horovod": None, "databricks": "17.3"})

    assert compute_runtime_problems(no_tf, NEEDS["ingest"]) == []  # ingest needs Python and Spark only
    assert len(compute_runtime_problems(no_tf, NEEDS["train"])) == 3


@pytest.mark.unit
def test_modes_error_warn_off(monkeypatch, caplog):
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "16.4")

    expected = r"`allmtl score` cannot run on this runtime:\n  - Databricks Runtime 16.4"
    with pytest.raises(RuntimeMismatch, match=expected):
        check_runtime("score", "error")
    assert check_runtime("score", "warn") and "Databricks Runtime 16.4" in caplog.text
    assert check_runtime("score", "off") == []
    assert check_runtime("ingest", "error") == []


@pytest.mark.spark
def test_a_job_on_an_unsupported_runtime_stops_before_any_work(spark, tmp_path, monkeypatch, capsys):
    from allmtl_spark.cli import EXIT_UNUSABLE, main

    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "16.4")
    lakehouse = tmp_path / "lakehouse"

    code = main(["score", "--config", "conf/demo.yaml", "--set", f"lakehouse.path={lakehouse}"])

    assert code == EXIT_UNUSABLE
    assert "15.4.x-cpu-ml-scala2.12" in capsys.readouterr().err
    assert not lakehouse.exists(), "nothing was read or written"


def test_version_prints_the_package_and_each_pinned_part_of_the_stack(capsys):
    from allmtl_spark.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    assert out.startswith("allmtl 0.") or out.startswith("allmtl (not installed")
    for name in ("Python", "Spark", "Delta", "TensorFlow", "horovod", "Petastorm", "MLflow"):
        assert f"  {name} " in out
    assert "differs from the pin" not in out and "not installed" not in out.split("\n", 1)[1]  # this venv fits


def test_version_marks_what_differs_from_the_pins():
    from allmtl_spark.runtime import compute_stack_lines

    lines = compute_stack_lines({"Python": "3.11.7", "Spark": "3.5.7", "TensorFlow": "2.16.1", "MLflow": "2.22.5"})
    marked = {line.split()[0]: line for line in lines}
    assert marked["TensorFlow"].endswith("<- differs from the pin") and "pinned ==2.15.1" in marked["TensorFlow"]
    assert marked["horovod"].endswith("<- not installed")
    assert "<-" not in marked["Spark"] + marked["Python"] + marked["MLflow"]


def test_the_pins_shown_are_those_pyproject_and_the_horovod_lock_declare():
    import re
    from pathlib import Path

    import tomllib

    from allmtl_spark.runtime import PINNED_STACK

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    declared = {"python": project["requires-python"]}
    for requirement in project["dependencies"] + sum(project["optional-dependencies"].values(), []):
        match = re.match(r"([A-Za-z0-9_.-]+)(?:\[[^]]*\])?\s*(.*)", requirement)
        declared.setdefault(match.group(1).lower(), match.group(2).replace(" ", ""))
    horovod = re.search(r"^horovod(==[0-9.]+)", (root / "deploy/lock/horovod.txt").read_text(), re.M).group(1)
    declared["horovod"] = horovod
    declared["tensorflow"] = declared["tensorflow-cpu"]
    for name, dists, pin in PINNED_STACK:
        assert declared[(dists[0] if dists else "python").lower()] == pin, name
