import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit


def test_transforms_import_no_tensorflow_spark_or_pandas():
    # The pure layer must stay importable (and cheap) in Spark workers and tools without those stacks.
    code = (
        "import sys\n"
        "from allmtl_spark.transforms import color, isolate, masks, roi\n"
        "print(sorted(m for m in ('tensorflow', 'pyspark', 'pandas', 'keras') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
