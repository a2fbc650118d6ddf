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
