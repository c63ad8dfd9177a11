"""What the controller asks of a position source, whichever it is: motion capture or the leg-odometry estimator.

The controller calls :meth:`PoseSource.poll` once per cycle with the cycle's state (servos and IMU, the pose fields
still empty): the mocap receiver ignores it and takes what arrived on its socket, the estimator integrates it. The
newest valid pose comes back as a :class:`PoseSample` with the host time it was received or computed; a source that
stops producing valid poses shows as a sample that stops getting younger, which the controller's ``tracker.max_age_s``
watchdog turns into a safety stop, as it does the IMU's silence. Nothing here raises for bad data: it is counted.

The torso orientation the task sees keeps the IMU's tilt (faster, and what the stand task already uses) and takes
the source's heading (:func:`with_heading`): an IMU without a magnetometer has a yaw reference of its own that
drifts, the tracker's is the world's.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np

from robot.streams import StreamCounters
from sim.rotations import normalize_quat, quat_from_yaw, quat_mul, yaw_of
from sim.state import RobotState
from sim.tasks.spec import FloatArray


@dataclass(frozen=True)
class PoseSample:
    """The newest valid torso pose."""

    position: FloatArray
    """Torso origin in the world (m)."""
    yaw: float
    """Heading of the torso's x axis about world z (rad)."""
    linvel: FloatArray
    """Torso origin's velocity in the world frame (m/s), differenced over the source's own sample times."""
    sequence: int
    """Sequence number of the datagram it came in (the estimator's update count)."""
    capture_time_s: float
    """When the pose was taken, on the source's clock (s)."""
    receive_time: float
    """Host time of the poll that received or computed it (s, the controller's clock)."""


@dataclass(frozen=True, kw_only=True)
class TrackerCounters(StreamCounters):
    """A snapshot of a position source's counters since it was made: ``received`` poses, ``rejected`` datagrams by
    kind (``robot.tracker.protocol.REJECT_KINDS``; the estimator: ``invalid`` states), and datagrams out of order."""

    ITEMS: ClassVar[str] = "poses"
    REJECTED: ClassVar[str] = "rejected"
    MISSED: ClassVar[str] = "missed"
    LOGGED: ClassVar[tuple[str, ...]] = ("out_of_order",)

    out_of_order: int = 0
    """Datagrams older than, or repeating, one already taken (dropped)."""

    def _describe_own(self) -> str:
        return f", {self.out_of_order} out of order"


class PoseSource(Protocol):
    """A torso position source: :class:`~robot.tracker.udp.PoseReceiver` or
    :class:`~robot.tracker.estimator.LegOdometry`."""

    def poll(self, state: RobotState) -> PoseSample | None:
        """Take what has arrived (or integrate ``state``); the newest valid pose (``None`` before the first)."""
        ...

    def start_episode(self, base_pose: FloatArray | None, state: RobotState) -> None:
        """An episode starts with the torso at ``base_pose`` (position (m), quaternion; ``None``: unknown) in
        ``state``: a dead-reckoning source restarts there; a measuring one ignores it."""
        ...

    @property
    def counters(self) -> TrackerCounters:
        """Every counter, as a snapshot."""
        ...

    def close(self) -> None:
        """Release the socket; idempotent."""
        ...


def with_heading(quat: FloatArray, yaw: float) -> FloatArray:
    """``quat`` (w, x, y, z; body -> world) turned about world z so that its heading is ``yaw`` (rad), tilt kept."""
    return normalize_quat(quat_mul(quat_from_yaw(yaw - yaw_of(quat)), quat))


class VelocityWindow:
    """The velocity of a sampled position: the difference between the newest sample and the newest one at least
    ``window_s`` older (s of the samples' own capture times), so a millimetre of noise 5 ms apart is not 0.2 m/s."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, FloatArray]] = deque()

    def clear(self) -> None:
        self._samples.clear()

    def add(self, t: float, position: FloatArray) -> FloatArray:
        """Add a sample at capture time ``t`` (s); returns the velocity (m/s; zero until two samples exist)."""
        samples = self._samples
        if samples and t <= samples[-1][0]:
            samples.clear()  # a clock that went back (a restarted sender): start over
        samples.append((t, np.asarray(position, dtype=np.float64).copy()))
        while len(samples) > 2 and t - samples[1][0] >= self.window_s:
            samples.popleft()
        if len(samples) < 2:
            return np.zeros(3)
        t0, p0 = samples[0]
        return (samples[-1][1] - p0) / (t - t0)
