import pytest

from allmtl_spark.ingest.labels import LabelError, parse_allidb_name, parse_label, parse_xyc
from allmtl_spark.ingest.privacy import hash_patient_id

pytestmark = pytest.mark.unit


def test_allidb_name_gives_stem_number_label():
    parsed = parse_allidb_name("Im042_1.jpg")
    assert (parsed.stem, parsed.number, parsed.label) == ("Im042_1", 42, 1)
    assert parse_allidb_name("Im260_0.tif").label == 0


@pytest.mark.parametrize(
    "name, reason",
    [("Im001_2.jpg", "bad_label"), ("Im001_x.jpg", "bad_label"), ("slide.jpg", "bad_name"), ("Im001.jpg", "bad_name")],
)
def test_bad_names_are_rejected_with_reason(name, reason):
    with pytest.raises(LabelError) as err:
        parse_allidb_name(name)
    assert err.value.reason == reason


def test_manifest_labels():
    assert parse_label("L2") == parse_label(" l2 ")
    assert (parse_label("L2").binary, parse_label("L2").fab) == (1, "L2")
    assert (parse_label("normal").binary, parse_label("normal").fab) == (0, "normal")
    assert (parse_label("ALL").binary, parse_label("ALL").fab) == (1, None)
    with pytest.raises(LabelError, match="not one of normal, L1, L2, L3"):
        parse_label("L4")
    for alias in ("leukemia", "leukaemia", "blast", "healthy"):  # every accepted alias is named in the error
        with pytest.raises(LabelError, match=alias):
            parse_label("L4")
    with pytest.raises(LabelError, match="score unlabelled slides as a folder"):
        parse_label("")


def test_xyc_parsing_and_bad_line_number():
    assert parse_xyc("10 20\n\n30 40\n") == [(10, 20), (30, 40)]
    assert parse_xyc("") == []
    with pytest.raises(LabelError, match="line 2"):
        parse_xyc("1 2\n3\n")


def test_patient_hash_is_keyed_and_stable():
    a = hash_patient_id("P001", b"k1")
    assert a == hash_patient_id(" P001 ", b"k1")
    assert a != hash_patient_id("P001", b"k2")
    assert "P001" not in a and len(a) == 64
    assert hash_patient_id("", b"k1") is None
