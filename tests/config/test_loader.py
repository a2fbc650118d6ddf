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
    for stage in (train.stage2, train.stage3):
        assert (stage.epochs, stage.batch_size, stage.learning_rate) == (160, 48, 0.001)


def test_dotted_override_reaches_nested_key_and_parses_yaml_types():
    cfg = load_config("conf/demo.yaml", ["synth.n_slides=7", "spark.master=null", "synth.rbc_diameter_px=[20, 30]"])
    assert cfg.synth.n_slides == 7
    assert cfg.spark.master is None
    assert cfg.synth.rbc_diameter_px == (20.0, 30.0)


def test_unknown_key_is_named_with_allowed_keys():
    with pytest.raises(ConfigError, match=r"synth\.n_slide\b.*allowed: .*n_slides"):
        load_config(None, ["synth.n_slide=3"])


def test_literal_error_names_key_and_allowed_values():
    allowed = r"ingest\.sources\[0\]\.kind is 'zip'; allowed values: allidb1, allidb2, manifest"
    with pytest.raises(ConfigError, match=allowed):
        load_config(None, ["ingest.sources=[{kind: zip, path: x}]"])


def test_post_init_validation_is_prefixed_with_the_section():
    with pytest.raises(ConfigError, match=r"^synth\.jpeg_quality must be in 1\.\.100"):
        load_config(None, ["synth.jpeg_quality=0"])


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
