"""The counters of a sensor stream the controller polls once per cycle: the IMU's frames, the tracker's poses.

Both streams take numbered items, reject some by kind, see gaps in the sequence numbers, and keep the receive time
of the newest valid item, whose age the controller's silence watchdogs check. A snapshot of these counters is
:class:`StreamCounters`; each stream's subclass names its items for the log's meta and for people
(:class:`robot.imu.reader.ImuCounters`, :class:`robot.tracker.source.TrackerCounters`) and adds its own counters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Self


@dataclass(frozen=True, kw_only=True)
class StreamCounters:
    """A snapshot of a sensor stream's counters since its reader was made."""

    ITEMS: ClassVar[str]
    """What the stream's valid items are called (``frames``): the log's meta key of ``received`` and its word."""
    REJECTED: ClassVar[str]
    """What its rejected items are called (``corrupt``): the meta keys' prefix of ``rejected``'s kinds and its word."""
    MISSED: ClassVar[str]
    """The log's meta key of ``missed`` (``frames_missed``); people read it with spaces."""
    KINDS: ClassVar[tuple[str, ...] | None] = None
    """Every kind of rejection, in the order the log's meta lists them; ``None``: those either snapshot counted,
    sorted."""
    LOGGED: ClassVar[tuple[str, ...]] = ()
    """The subclass's own counters whose changes the log's meta records too, under their field names."""

    received: int
    """Valid items taken."""
    rejected: dict[str, int] = field(default_factory=dict)
    """Rejected items by kind."""
    gaps: int = 0
    """Jumps of the sequence number (items lost)."""
    missed: int = 0
    """Items the jumps skipped."""
    last_receive_time: float | None = None
    """Receive time of the newest valid item (s), ``None`` before the first."""

    @property
    def total_rejected(self) -> int:
        """Rejected items of every kind."""
        return sum(self.rejected.values())

    def age(self, now: float) -> float:
        """Seconds since the newest valid item was received (infinite before the first)."""
        return math.inf if self.last_receive_time is None else now - self.last_receive_time

    def since(self, earlier: Self) -> dict[str, int]:
        """What happened between ``earlier`` and this snapshot, for a log's meta."""
        out = {self.ITEMS: self.received - earlier.received, "gaps": self.gaps - earlier.gaps,
               self.MISSED: self.missed - earlier.missed}
        for name in self.LOGGED:
            out[name] = getattr(self, name) - getattr(earlier, name)
        kinds = self.KINDS if self.KINDS is not None else sorted(set(self.rejected) | set(earlier.rejected))
        for kind in kinds:
            out[f"{self.REJECTED}_{kind}"] = self.rejected.get(kind, 0) - earlier.rejected.get(kind, 0)
        return out

    def describe(self) -> str:
        """``"1960 frames, 3 corrupt (crc 3), 1 gaps (2 frames missed)"`` and the subclass's :meth:`_describe_own`."""
        kinds = ", ".join(f"{k} {v}" for k, v in self.rejected.items() if v)
        rejected = f"{self.total_rejected} {self.REJECTED}" + (f" ({kinds})" if kinds else "")
        return (f"{self.received} {self.ITEMS}, {rejected}, {self.gaps} gaps ({self.missed} "
                f"{self.MISSED.replace('_', ' ')})" + self._describe_own())

    def _describe_own(self) -> str:
        """The subclass's own counters for :meth:`describe`, each after ``", "``."""
        return ""
