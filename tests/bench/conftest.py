"""The scoring tests' tiny lakehouse (ingested synthetic slides, untrained tiny models), for the benches."""

from tests.scoring.conftest import scoring_lake  # noqa: F401 - re-exported as a fixture
