"""``FrameSchedule``: an emulated periodic device sends one frame per period, and one for all it missed when late."""

from __future__ import annotations

import pytest

from robot.emulator.schedule import FrameSchedule


def test_a_frame_falls_due_once_per_period_and_a_late_wake_merges_the_missed_ones() -> None:
    s = FrameSchedule(period_s=0.01, next_due=1.0)
    assert s.due(0.999) is None and s.next_due == 1.0
    assert s.due(1.0) == 0 and s.next_due == pytest.approx(1.01)
    assert s.due(1.005) is None
    # woke 3.5 periods late: the frames due at 1.01, 1.02, 1.03 and 1.04 go as one (3 merged); the next is at 1.05
    assert s.due(1.045) == 3 and s.next_due == pytest.approx(1.05)
    assert s.due(1.05) == 0
