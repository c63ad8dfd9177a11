"""The fallback position source for a robot without motion capture: leg odometry on the IMU's heading.

Heading is the IMU's yaw, shifted at each episode start so that it equals the start pose's (an IMU's yaw reference is
its own). Position is dead reckoning from the stance feet: every poll the feet's positions relative to the torso
(forward kinematics of the joint angles, ``legs.feet``) are turned into the world's axes by the IMU orientation with
that heading. A foot is taken to have stood on the floor between the last poll and this one when it was low at both:
its higher height of the two, above the lowest foot of its poll, within ``stance_tolerance_m`` of the least such height
over the feet (so at least one foot always counts). A standing foot has not moved in the world, so the torso moved by
the opposite of its change relative to the torso (the mean over the standing feet). Height is the lowest foot's depth
below the torso plus the foot radius, as the stand task estimates it.

What it cannot see: a foot that slips, a foot taken for standing while it swings low, motion between two polls
when the stance set changes completely, and the IMU's yaw drift (a gyroscope's bias integrated: degrees per minute
on a cheap IMU without a magnetometer). Its error grows with the distance walked: ``benchmarks/tracker_drift.py``
measures it over a 16 s walk in simulation. Use motion capture where the walk task's success must be judged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import numpy as np

from robot.tracker.source import PoseSample, TrackerCounters, VelocityWindow, with_heading
from sim.rotations import quat_to_matrix, yaw_of
from sim.state import RobotState
from sim.tasks.spec import FloatArray


class Legs(Protocol):
    """A legged task's kinematics (``sim.tasks.dkitty.KittyTask``)."""

    @property
    def foot_radius(self) -> float:
        """Radius of the feet's contact spheres (m)."""
        ...

    def feet(self, joint_pos: FloatArray) -> FloatArray:
        """Centres of the feet in the torso frame (m), shape (n_feet, 3), from the joint angles (rad)."""
        ...


class LegOdometry:
    """Torso pose by leg odometry on the IMU's heading; see the module docstring."""

    def __init__(self, legs: Legs, *, stance_tolerance_m: float, velocity_window_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.legs = legs
        self.stance_tolerance_m = stance_tolerance_m
        self._clock = clock
        self._velocity = VelocityWindow(velocity_window_s)
        self._position = np.zeros(3)
        self._yaw_offset = 0.0
        self._feet: FloatArray | None = None
        self._heights: FloatArray | None = None
        self._latest: PoseSample | None = None
        self._poses = 0
        self._invalid = 0

    def start_episode(self, base_pose: FloatArray | None, state: RobotState) -> None:
        """Restart from ``base_pose`` (position (m), quaternion): the episode's world frame is the start's. Without
        one the pose goes on from where it is."""
        if base_pose is None:
            return
        pose = np.asarray(base_pose, dtype=np.float64)
        self._position = pose[:3].copy()
        quat = np.asarray(state.base_quat, dtype=np.float64)
        if quat.shape == (4,) and np.all(np.isfinite(quat)):
            self._yaw_offset = yaw_of(pose[3:]) - yaw_of(quat)
        self._feet = None
        self._heights = None
        self._velocity.clear()
        self._latest = None

    def poll(self, state: RobotState) -> PoseSample | None:
        """Integrate one reading; the newest pose (``None`` before the first valid reading or after a restart)."""
        quat = np.asarray(state.base_quat, dtype=np.float64)
        joints = np.asarray(state.joint_pos, dtype=np.float64)
        if quat.shape != (4,) or not (np.all(np.isfinite(quat)) and np.all(np.isfinite(joints))):
            self._invalid += 1  # a stale reading or no IMU sample yet: the pose ages, the watchdog judges it
            return self._latest
        yaw = yaw_of(quat) + self._yaw_offset
        rot = quat_to_matrix(with_heading(quat, yaw))
        feet = self.legs.feet(joints) @ rot.T
        lowest = float(feet[:, 2].min())
        heights = feet[:, 2] - lowest
        if self._feet is not None and self._heights is not None:
            low = np.maximum(heights, self._heights)
            stood = low <= low.min() + self.stance_tolerance_m
            self._position[:2] += np.mean(self._feet[stood, :2] - feet[stood, :2], axis=0)
        self._position[2] = -lowest + self.legs.foot_radius
        self._feet, self._heights = feet, heights
        self._poses += 1
        linvel = self._velocity.add(state.time, self._position)
        self._latest = PoseSample(self._position.copy(), yaw, linvel, self._poses, state.time, self._clock())
        return self._latest

    @property
    def counters(self) -> TrackerCounters:
        return TrackerCounters(received=self._poses, rejected={"invalid": self._invalid},
                               last_receive_time=None if self._latest is None else self._latest.receive_time)

    def close(self) -> None:
        """Nothing to release."""
