"""Where a training stage's wall time goes: named phases, measured in the driver and in the rank.

Each stage prints one ``[<stage>] time: ...`` line from these phases, so the fixed cost of a stage
(Spark work, the Horovod launch, TensorFlow start-up, the first epoch's graph building, scoring and
registration) can be told from the epochs that scale with the data.
"""

from __future__ import annotations

import time


class PhaseTimer:
    """Seconds per named phase, in the order first seen; ``lap(name)`` closes the phase running since the last lap."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self.started = self._last = time.time()

    def lap(self, name: str, parts: dict[str, float] | None = None) -> float:
        """Close the running phase as ``name``; ``parts`` (name -> seconds) are measured pieces of it
        recorded first under their own names, ``name`` keeps the rest."""
        now = time.time()
        elapsed = now - self._last
        for part, seconds in (parts or {}).items():
            self.add(part, seconds)
            elapsed -= seconds
        self.add(name, elapsed)
        self._last = now
        return now

    def resume(self) -> None:
        """Start the next phase now, counting nothing for the time since the last lap (spent elsewhere:
        e.g. a stage waiting while the same Horovod launch trains the stages before it)."""
        self._last = time.time()

    def measured(self) -> float:
        """The sum of the recorded phases (the total without the time skipped by :meth:`resume`)."""
        return sum(self.phases.values())

    def add(self, name: str, seconds: float) -> None:
        self.phases[name] = self.phases.get(name, 0.0) + max(0.0, seconds)

    def total(self) -> float:
        return time.time() - self.started


def format_phases(phases: dict[str, float], total: float) -> str:
    """``total 152s: a 12s (8%), b 30s (20%), ...`` with each phase's share of ``total``."""
    parts = [f"{name} {seconds:.0f}s ({100 * seconds / max(total, 1e-9):.0f}%)" for name, seconds in phases.items()]
    return f"total {total:.0f}s: " + ", ".join(parts)
