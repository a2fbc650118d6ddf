"""Notices a user cannot act on are dropped; anything else still shows."""

from __future__ import annotations

import logging
import os

import pytest

from allmtl_spark import quiet

pytestmark = pytest.mark.unit

CONVERTER_NOTICES = (
    "2026-12-07 19:20:55.263864: W tensorflow/compiler/mlir/lite/python/tf_tfl_flatbuffer_helpers.cc:378] "
    "Ignored output_format.\n"
    "Summary on the non-converted ops:\n"
    "---------------------------------\n"
    " * Accepted dialects: tfl, builtin, func\n"
    " * Non-Converted Ops: 195, Total Ops 325, % non-converted = 60.00 %\n"
    " * 195 ARITH ops\n"
    "\n"
    "- arith.constant:  195 occurrences  (f32: 194, i32: 1)\n"
    "  (f32: 9)\n"
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
)


def test_native_notices_are_dropped_to_debug_and_other_lines_written_back(capfd, caplog):
    log = logging.getLogger("test.native")
    capfd.readouterr()
    with caplog.at_level(logging.DEBUG, logger="test.native"), quiet.native_stderr(log):
        os.write(2, CONVERTER_NOTICES.encode())
        os.write(2, b"ERROR: the flatbuffer could not be written\n")

    err = capfd.readouterr().err
    assert err == "ERROR: the flatbuffer could not be written\n"
    kept = [r.getMessage() for r in caplog.records if r.name == "test.native"]
    assert "Summary on the non-converted ops:" in kept and len(kept) == 9  # every notice line but the blank one


def test_native_stderr_is_restored_when_the_block_raises(capfd):
    open_fds = sorted(os.listdir("/proc/self/fd"))
    with pytest.raises(RuntimeError), quiet.native_stderr(logging.getLogger("test.native")):
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        raise RuntimeError("conversion failed")
    os.write(2, b"after the block\n")
    assert capfd.readouterr().err == "after the block\n"
    assert sorted(os.listdir("/proc/self/fd")) == open_fds  # the pipe and the saved descriptor are closed
