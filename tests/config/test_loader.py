import pytest

from allmtl_spark.config import ConfigError, load_config, to_dict
from allmtl_spark.config.loader import apply_overrides, parse_override

pytestmark = pytest.mark.unit


def test_demo_and_paper_configs_load_and_validate():
    demo = load_config("conf/demo.yaml")
    paper = load_config("conf/paper.yaml")
    assert demo.spark.master == "local[2]"
    assert demo.ingest.sources[0].kind == "manifest"
    assert paper.synth.slide_width == 2592


def test_paper_config_carries_the_papers_training_schedule():
    train = load_config("conf/paper.yaml").train
    assert set(train.backbones) == {"InceptionV3", "Xception", "InceptionResNetV2"}
    assert (train.weights, train.input_size, train.augment.balance_to) == ("imagenet", 299, 1700)
    from allmtl_spark.training.rank import learning_rate_at

    for stage in (train.stage2, train.stage3):
        # the paper's one batch of 48 at 0.001, whatever the ranks: batches are per rank, and the
        # rate the optimiser gets at epoch 0 is the effective one (it used to be 4 x 48 at 0.004)
        assert stage.epochs == 160 and train.num_proc * stage.batch_size == 48
        rate = learning_rate_at(
            0, stage.learning_rate, train.num_proc, stage.decay_rate, train.scale_learning_rate_by_ranks
        )
        assert rate == pytest.approx(0.001)
    # every cell at the scale of the paper's ALL-IDB2 crops: 257 px at ALL-IDB1's 0.155 um/px
    assert train.cell_tile_um == pytest.approx(257 * 0.155, abs=0.05)


def test_dotted_override_reaches_nested_key_and_parses_yaml_types():
    cfg = load_config("conf/demo.yaml", ["synth.n_slides=7", "spark.master=null", "synth.pixel_size_um=[0.1, 0.2]"])
    assert cfg.synth.n_slides == 7
    assert cfg.spark.master is None
    assert cfg.synth.pixel_size_um == (0.1, 0.2)


def test_unknown_key_is_named_with_allowed_keys():
    with pytest.raises(ConfigError, match=r"synth\.n_slide\b.*allowed: .*n_slides"):
        load_config(None, ["synth.n_slide=3"])


def test_literal_error_names_key_and_allowed_values():
    allowed = r"ingest\.sources\[0\]\.kind is 'zip'; allowed values: allidb1, allidb2, manifest"
    with pytest.raises(ConfigError, match=allowed):
        load_config(None, ["ingest.sources=[{kind: zip, path: x}]"])


def test_post_init_validation_is_prefixed_with_the_section():
    with pytest.raises(ConfigError, match=r"^synth\.optics\.jpeg_quality must be >= 1"):
        load_config(None, ["synth.optics.jpeg_quality=[0, 90]"])


def test_cell_tile_must_be_positive_micrometres():
    assert load_config(None, ["train.cell_tile_um=24"]).train.cell_tile_um == 24
    with pytest.raises(ConfigError, match=r"^train\.cell_tile_um must be null or > 0"):
        load_config(None, ["train.cell_tile_um=0"])


def test_removed_pixel_key_names_its_physical_replacement():
    with pytest.raises(ConfigError, match=r"^synth\.rbc_diameter_px was removed: use synth\.pixel_size_um"):
        load_config(None, ["synth.rbc_diameter_px=[40, 60]"])
    with pytest.raises(ConfigError, match=r"^synth\.cell_crop_size was removed: use synth\.cell_crop_size_um"):
        load_config("conf/demo.yaml", ["synth.cell_crop_size=257"])


def test_wrong_type_is_reported_with_key():
    with pytest.raises(ConfigError, match=r"synth\.n_slides must be an integer, got 'many'"):
        load_config(None, ["synth.n_slides=many"])


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("no-equals-sign")
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides({"synth": {"seed": 1}}, ["synth.seed.x=2"])


def test_missing_file_says_which():
    with pytest.raises(ConfigError, match="conf/nope.yaml does not exist"):
        load_config("conf/nope.yaml")


def test_to_dict_round_trips():
    cfg = load_config("conf/demo.yaml")
    from allmtl_spark.config.loader import build
    from allmtl_spark.config.schema import AppConfig

    assert build(AppConfig, to_dict(cfg)) == cfg


# ---------------------------------------------------------------- malformed input is a configuration error


def test_malformed_yaml_file_names_file_line_and_column(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("synth:\n  n_slides: 3\n  seed: [1, 2\nlakehouse: {path: x}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml is not valid YAML: line \d+, column \d+"):
        load_config(bad)


def test_malformed_set_value_is_a_configuration_error():
    message = r"--set 'synth\.rbc_diameter_px=\[20, 30': the value is not valid YAML: line 1, column 8"
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["synth.rbc_diameter_px=[20, 30"])


def test_extends_loop_names_the_chain_and_line(tmp_path):
    (tmp_path / "a.yaml").write_text("# a\nextends: b.yaml\nsynth: {seed: 1}\n")
    (tmp_path / "b.yaml").write_text("synth: {seed: 2}\n\n\nextends: a.yaml\n")
    loop = r"b\.yaml, line 4: extends 'a\.yaml' makes a loop: .*a\.yaml -> .*b\.yaml -> .*a\.yaml"
    with pytest.raises(ConfigError, match=loop):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "self.yaml").write_text("extends: self.yaml\n")
    with pytest.raises(ConfigError, match=r"self\.yaml, line 1: extends 'self\.yaml' makes a loop"):
        load_config(tmp_path / "self.yaml")


def test_extends_of_a_missing_file_names_where_it_was_resolved(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: nope.yaml\n")
    message = (
        rf"a\.yaml, line 1: extends 'nope\.yaml', but .* resolved against the folder of the file that names it "
        rf"\({tmp_path}\)$"
    )
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "a.yaml")


def test_extends_written_from_the_current_folder_gets_the_path_that_works(tmp_path, monkeypatch):
    """A newcomer's my_slides/score.yaml saying `extends: conf/demo.yaml` is told to write ../conf/demo.yaml."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "demo.yaml").write_text("synth: {seed: 3}\n")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "score.yaml").write_text("extends: conf/demo.yaml\n")
    with pytest.raises(
        ConfigError, match=r"to extend conf/demo\.yaml of the current folder, write extends: \.\./conf/demo\.yaml"
    ):
        load_config("mine/score.yaml")
    (tmp_path / "mine" / "score.yaml").write_text("extends: ../conf/demo.yaml\n")
    assert load_config("mine/score.yaml").synth.seed == 3


def test_missing_config_hint_never_suggests_the_path_that_failed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no conf/demo.yaml here
    with pytest.raises(ConfigError) as missing:
        load_config("conf/demo.yaml")
    assert "try conf/demo.yaml" not in str(missing.value) and f"current folder, {tmp_path}" in str(missing.value)


@pytest.mark.parametrize(
    "args",
    [
        ["config", "--set", "synth.rbc_diameter_px=[20, 30"],
        ["config", "--set", "ingest.max_partitions=0"],
        ["config", "--config", "{bad}"],
        ["config", "--config", "{loop}"],
    ],
)
def test_cli_exits_2_without_a_traceback(args, tmp_path, capsys):
    from allmtl_spark.cli import main

    (tmp_path / "bad.yaml").write_text("a: [1\n")
    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\n")
    args = [a.format(bad=tmp_path / "bad.yaml", loop=tmp_path / "loop.yaml") for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("allmtl: configuration error:") and "Traceback" not in err


def _int_fields(cls, prefix=""):
    """Dotted keys of every integer field (plain, optional or a tuple of ints) in the config tree."""
    import dataclasses
    import typing

    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hint):
            yield from _int_fields(hint, f"{key}.")
        elif hint is int or hint == (int | None) or typing.get_args(hint)[:1] == (int,):
            yield key, hint


def test_every_integer_key_refuses_negative_values():
    from allmtl_spark.config.schema import AppConfig

    signed = {"roi.offsets"}  # added to R, G, B: negative offsets are meaningful
    keys = [(k, h) for k, h in _int_fields(AppConfig) if k not in signed]
    assert len(keys) > 40  # the walk found the tree's integer keys
    accepted = []
    for key, hint in keys:
        value = _minus_one(hint)
        try:
            load_config("conf/demo.yaml", [f"{key}={value}"])
        except ConfigError:
            continue
        accepted.append(key)
    assert accepted == [], f"integer keys that accept -1 (add a check in __post_init__): {accepted}"


def _minus_one(hint) -> str:
    """-1 in the shape of ``hint``: a plain value, or a tuple of the declared length (2 for ``tuple[int, ...]``)."""
    import typing

    if typing.get_origin(hint) is not tuple:
        return "-1"
    args = typing.get_args(hint)
    return str([-1] * (2 if args[-1] is Ellipsis else len(args)))


@pytest.mark.parametrize(
    "override",
    ["ingest.max_partitions=0", "train.shuffle_buffer=0", "train.head_dense_units=[128, 0]", "score.report_sample=-1"],
)
def test_counts_are_validated_when_loaded(override):
    with pytest.raises(ConfigError, match=override.split("=")[0].split(".")[1]):
        load_config("conf/demo.yaml", [override])


@pytest.mark.parametrize(
    "old, new",
    [
        ("segment.min_cell_area_px=400", "segment.min_cell_area_um2"),
        ("segment.watershed_min_distance=10", "segment.watershed_min_distance_um"),
        ("segment.crop_size=257", "segment.crop_size_um"),
        ("segment.match_radius_px=40", "segment.match_radius_um"),
        ("segment.working_scale=0.5", "segment.pixel_size_um"),
        ("segmenter.working_scale=0.5", "segmenter.pixel_size_um"),
    ],
)
def test_a_removed_pixel_key_names_its_physical_replacement(old, new):
    from allmtl_spark.config import load_config

    with pytest.raises(ConfigError, match=f"{old.split('=')[0]} was removed: use {new}"):
        load_config(None, [old])
