import pytest

from allmtl_spark.docs import REFERENCE_PATH, reference_markdown
from allmtl_spark.tables import ALL_TABLES

pytestmark = pytest.mark.unit


def test_reference_is_up_to_date():
    with open(REFERENCE_PATH) as handle:
        assert handle.read() == reference_markdown(), "docs/reference.md is stale: run `allmtl docs`"


def test_reference_lists_every_table_and_key():
    text = reference_markdown()
    for table in ALL_TABLES:
        assert f"### `{table.name}`" in text
        for field in table.schema.fields:
            assert f"| `{field.name}` |" in text
    for key in ("spark.master", "train.stage3.finetune_learning_rate", "score.source", "segment.mask_source"):
        assert f"| `{key}` |" in text


def test_reference_lists_the_keys_of_sources_with_their_meaning():
    # A newcomer scoring a folder needs score.source's keys; their meaning is the comment in schema.py.
    text = reference_markdown()
    for key in ("ingest.sources[].pixel_size_um", "score.source.pixel_size_um", "score.source.patient_pattern"):
        assert f"| `{key}` |" in text
    line = next(row for row in text.splitlines() if row.startswith("| `score.source.site` |"))
    assert line.endswith("| source / site name carried into the tables and the scoring aggregates |")
