"""The CLI's logging: our INFO lines, not py4j's connection notices (their DEBUG lines would leak properties)."""

from __future__ import annotations

import logging

import pytest

from allmtl_spark.cli import configure_logging


@pytest.fixture
def restore_levels():
    names = ("py4j", "allmtl_spark")
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_py4j_connection_notices_are_hidden_and_never_at_debug(restore_levels):
    configure_logging(verbose=False)
    # py4j logs "Closing down clientserver connection" and a ConnectionResetError traceback at INFO
    assert not logging.getLogger("py4j.clientserver").isEnabledFor(logging.INFO)
    assert logging.getLogger("py4j.clientserver").isEnabledFor(logging.WARNING)
    assert logging.getLogger("allmtl_spark.ingest.job").isEnabledFor(logging.INFO)
    configure_logging(verbose=True)
    assert logging.getLogger("py4j.clientserver").isEnabledFor(logging.INFO)
    assert not logging.getLogger("py4j.java_gateway").isEnabledFor(logging.DEBUG)
