"""The per-stage time breakdown: phases, measured pieces inside a phase, shares of the total."""

from __future__ import annotations

import time

import pytest

from allmtl_spark.training.rank import epoch_phases
from allmtl_spark.training.timing import PhaseTimer, format_phases

pytestmark = pytest.mark.unit


def test_laps_split_the_wall_time_and_measured_parts_come_out_of_their_phase():
    timer = PhaseTimer()
    time.sleep(0.05)
    timer.lap("a")
    time.sleep(0.10)
    timer.lap("b", parts={"b1": 0.04})
    timer.lap("a")  # a phase seen again adds up
    assert list(timer.phases) == ["a", "b1", "b"]
    assert timer.phases["a"] == pytest.approx(0.05, abs=0.03)
    assert timer.phases["b1"] == 0.04
    assert timer.phases["b"] == pytest.approx(0.06, abs=0.03)
    assert sum(timer.phases.values()) == pytest.approx(timer.total(), abs=0.02)


def test_format_gives_each_phase_its_share_of_the_total():
    line = format_phases({"launch": 30.0, "epochs": 60.0}, 120.0)
    assert line == "total 120s: launch 30s (25%), epochs 60s (50%)"


def test_the_first_epoch_is_told_apart_from_the_others():
    assert epoch_phases([30.0, 8.0, 7.0]) == {"first epoch": 30.0, "epochs 2-3": 15.0}
    assert epoch_phases([]) == {}


def test_resume_leaves_out_time_spent_elsewhere():
    """A stage waiting while the same Horovod launch trains the stages before it does not count that wait."""
    import time

    timer = PhaseTimer()
    timer.lap("before the launch")
    time.sleep(0.3)  # the other stages train
    timer.resume()
    timer.add("rank phases", 1.0)
    timer.lap("after")
    assert timer.total() >= 0.3
    assert timer.measured() == pytest.approx(1.0, abs=0.15)
    assert set(timer.phases) == {"before the launch", "rank phases", "after"}
