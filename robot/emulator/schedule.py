"""When an emulated periodic device (the IMU, the position source, the camera) sends its next frame.

The serving loop wakes at the earliest due time of everything it serves; a loop that woke late sends one frame for
all the periods it missed, since a late host is not a device that skipped frames. Each device counts the frames so
merged under its own name.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FrameSchedule:
    """The due times of a device with a fixed frame period, in the serving loop's clock (s)."""

    period_s: float
    """Time between two frames (s)."""
    next_due: float
    """When the next frame falls due (s)."""

    def due(self, now: float) -> int | None:
        """``None`` when no frame fell due by ``now``; else the schedule moves to the first due time after ``now``
        and the frames merged into this one (missed periods, 0 when on time) are returned."""
        if now < self.next_due:
            return None
        missed = int((now - self.next_due) / self.period_s)
        self.next_due += (missed + 1) * self.period_s
        return missed
