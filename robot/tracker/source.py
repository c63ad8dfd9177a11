"""What the controller asks of a position source, whichever it is: motion capture or the leg-odometry estimator.

The controller calls :meth:`PoseSource.poll` once per cycle with the cycle's state (servos and IMU, the pose fields
still empty): the mocap receiver ignores it and takes what arrived on its socket, the estimator integrates it. The
newest valid pose comes back as a :class:`PoseSample` with the host time it was received or computed; a source that
stops producing valid poses shows as a sample that stops getting younger, which the controller's ``tracker.max_age_s``
watchdog turns into a safety stop, as it does the IMU's silence. Nothing here raises for bad data: it is counted.

The torso orientation the task sees keeps the IMU's tilt (faster, and what the stand task already uses) and takes
the source's heading (:func:`sim.odometry.with_heading`): an IMU without a magnetometer has a yaw reference of its
own that drifts, the tracker's is the world's.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, replace
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


@dataclass(frozen=True)
class EpisodeFrame:
    """A turn about world z and a shift on the floor, from the position source's world into an episode's frame, in
    which the torso's pose at the episode's start reads as the start the task drew (its position on the floor and
    its heading). A legged robot that was not put down at its start (a self-recovery reset, or a person who set it
    down wherever it stood) then walks to a goal drawn relative to where it stands, as in simulation; its height and
    tilt are the world's."""

    yaw_rad: float
    """The turn (rad)."""
    offset_m: FloatArray
    """The shift on the floor after the turn (m, x and y)."""

    @classmethod
    def anchoring(cls, position: FloatArray, yaw: float, start_pose: FloatArray) -> EpisodeFrame:
        """The frame in which a torso at ``position`` (m) with heading ``yaw`` (rad) is at ``start_pose`` (position,
        quaternion)."""
        turn = math.remainder(yaw_of(start_pose[3:]) - yaw, math.tau)
        return cls(turn, np.asarray(start_pose[:2], dtype=np.float64) - _turned(turn, position[:2]))

    def position(self, position: FloatArray) -> FloatArray:
        """A world position (m) in the episode's frame."""
        p = np.asarray(position, dtype=np.float64)
        if p.size < 2:  # a state without a base position
            return p
        return np.array([*(_turned(self.yaw_rad, p[:2]) + self.offset_m), *p[2:]])

    def velocity(self, velocity: FloatArray) -> FloatArray:
        """A world velocity (m/s) in the episode's frame."""
        v = np.asarray(velocity, dtype=np.float64)
        if v.size < 2:
            return v
        return np.array([*_turned(self.yaw_rad, v[:2]), *v[2:]])

    def quat(self, quat: FloatArray) -> FloatArray:
        """A world orientation (w, x, y, z) in the episode's frame."""
        if np.size(quat) != 4:
            return np.asarray(quat, dtype=np.float64)
        return normalize_quat(quat_mul(quat_from_yaw(self.yaw_rad), np.asarray(quat, dtype=np.float64)))

    def sample(self, pose: PoseSample) -> PoseSample:
        """A source's pose in the episode's frame."""
        return replace(pose, position=self.position(pose.position),
                       yaw=math.remainder(pose.yaw + self.yaw_rad, math.tau), linvel=self.velocity(pose.linvel))

    def state(self, state: RobotState) -> RobotState:
        """A world state's floating base in the episode's frame."""
        return replace(state, base_pos=self.position(state.base_pos), base_quat=self.quat(state.base_quat),
                       base_linvel=self.velocity(state.base_linvel))

    def describe(self) -> dict[str, float]:
        """The frame for an episode's meta."""
        return {"yaw_rad": self.yaw_rad, "offset_x_m": float(self.offset_m[0]), "offset_y_m": float(self.offset_m[1])}


def _turned(yaw: float, xy: FloatArray) -> FloatArray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([c * xy[0] - s * xy[1], s * xy[0] + c * xy[1]])


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
