"""The fallback position source for a robot without motion capture: leg odometry on the IMU's heading.

The dead reckoning itself is :class:`sim.odometry.StanceOdometry` (its docstring says how it works and what it
cannot see), the same code the simulator runs for a walk trained on this source (``SimEnv(position_source=
"odometry")``). This wraps it as a :class:`~robot.tracker.source.PoseSource`: once per control cycle, on the cycle's
reading; a stale reading or one without an IMU sample is counted and leaves the pose to age, so the controller's
``tracker.max_age_s`` watchdog judges it. Its error grows with the distance walked: ``benchmarks/tracker_drift.py``
measures it over a 16 s walk in simulation. Use motion capture where the walk task's success must be judged.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from robot.tracker.source import PoseSample, TrackerCounters, VelocityWindow
from sim.odometry import Legs, StanceOdometry
from sim.rotations import yaw_of
from sim.state import RobotState
from sim.tasks.spec import FloatArray


class LegOdometry:
    """Torso pose by leg odometry on the IMU's heading; see the module docstring."""

    def __init__(self, legs: Legs, *, stance_tolerance_m: float, velocity_window_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._odometry = StanceOdometry(legs, stance_tolerance_m)
        self._clock = clock
        self._velocity = VelocityWindow(velocity_window_s)
        self._latest: PoseSample | None = None
        self._poses = 0
        self._invalid = 0

    @property
    def stance_tolerance_m(self) -> float:
        """How close to the floor a foot must stay between two polls to count as standing (m)."""
        return self._odometry.stance_tolerance_m

    def start_episode(self, base_pose: FloatArray | None, state: RobotState) -> None:
        """Restart from ``base_pose`` (position (m), quaternion): the episode's world frame is the start's. Without
        one the pose goes on from where it is."""
        if base_pose is None:
            return
        pose = np.asarray(base_pose, dtype=np.float64)
        self._odometry.restart(pose[:3])
        quat = np.asarray(state.base_quat, dtype=np.float64)
        if quat.shape == (4,) and np.all(np.isfinite(quat)):
            self._odometry.align_heading(yaw_of(pose[3:]), quat)
        self._velocity.clear()
        self._latest = None

    def poll(self, state: RobotState) -> PoseSample | None:
        """Integrate one reading; the newest pose (``None`` before the first valid reading or after a restart)."""
        quat = np.asarray(state.base_quat, dtype=np.float64)
        joints = np.asarray(state.joint_pos, dtype=np.float64)
        if quat.shape != (4,) or not (np.all(np.isfinite(quat)) and np.all(np.isfinite(joints))):
            self._invalid += 1  # a stale reading or no IMU sample yet: the pose ages, the watchdog judges it
            return self._latest
        position = self._odometry.update(joints, quat)
        self._poses += 1
        linvel = self._velocity.add(state.time, position)
        self._latest = PoseSample(position, self._odometry.heading(quat), linvel, self._poses, state.time,
                                  self._clock())
        return self._latest

    @property
    def counters(self) -> TrackerCounters:
        return TrackerCounters(received=self._poses, rejected={"invalid": self._invalid},
                               last_receive_time=None if self._latest is None else self._latest.receive_time)

    def close(self) -> None:
        """Nothing to release."""
