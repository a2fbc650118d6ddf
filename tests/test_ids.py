import pytest

from allmtl_spark.config import ConfigError
from allmtl_spark.ids import check_run_id

pytestmark = pytest.mark.unit

BAD = ["../x", "a/b", "..", ".", "", "x" * 65, "run id", "run\n", "é", "a\\b", "$(rm)"]


@pytest.mark.parametrize("good", ["demo", "demo-mtl", "v1.2_3", "A" * 64, ".hidden-ok"])
def test_allowed_run_ids(good):
    assert check_run_id(good) == good


@pytest.mark.parametrize("bad", BAD)
def test_refused_run_ids_name_the_rule(bad):
    with pytest.raises(ConfigError, match=r"--run-id .* A-Z a-z 0-9 \. _ -"):
        check_run_id(bad)


@pytest.mark.parametrize("option", ["--run-id", "--eval-id"])
def test_cli_refuses_a_path_as_run_id_with_exit_2(option, capsys):
    from allmtl_spark.cli import main

    command = "evaluate" if option == "--eval-id" else "score"
    with pytest.raises(SystemExit) as stop:
        main([command, option, "../../etc"])
    assert stop.value.code == 2
    assert f"{option} '../../etc' is not a usable run id" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["eval-detection --boxes b.csv", "import-models --from lake", "bench segment"])
def test_commands_that_record_no_run_refuse_run_id(command, capsys):
    """They write no run's rows: a --run-id there would be silently ignored, so argparse refuses it."""
    from allmtl_spark.cli import main

    with pytest.raises(SystemExit) as stop:
        main([*command.split(), "--run-id", "mine"])
    assert stop.value.code == 2
    assert "unrecognized arguments: --run-id mine" in capsys.readouterr().err


def test_library_entry_points_refuse_before_touching_anything(tmp_path):
    from allmtl_spark.config import load_config
    from allmtl_spark.evaluation.job import run_evaluate
    from allmtl_spark.lakehouse import Lakehouse
    from allmtl_spark.scoring.job import run_score
    from allmtl_spark.training.job import run_train

    cfg = load_config("conf/demo.yaml", [f"lakehouse.path={tmp_path}/lake"])
    lake = Lakehouse.from_config(cfg.lakehouse)
    with pytest.raises(ConfigError, match="--run-id '../x'"):
        run_train(None, cfg.train, lake, run_id="../x")
    with pytest.raises(ConfigError, match="--eval-id '../x'"):
        run_evaluate(None, cfg.evaluate, cfg.train, lake, eval_id="../x")
    with pytest.raises(ConfigError, match="--run-id '../x'"):
        run_score(None, cfg, lake, run_id="../x")
    assert not (tmp_path / "lake").exists()
