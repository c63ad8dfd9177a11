"""Simulated time for lock-step runs: a clock (s) that stands still until something moves it.

The lock-step emulator's server sets it as it walks through events (``robot.emulator.server``); the mock's lock-step
moves it only when the controller sleeps (``robot.hardware``). Either way a run takes no wall time it does not need
and ends the same on any host.
"""

from __future__ import annotations


class SimTime:
    """Simulated time (s), starting at 0: ``clock()`` reads it, :meth:`sleep` lets time pass, and an owner that
    schedules events (the lock-step server) sets :attr:`t` directly."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, dt: float) -> None:
        """Let ``dt`` seconds pass (a negative wait passes no time)."""
        self.t += max(0.0, dt)
