"""Leg odometry: the torso's position on the floor by dead reckoning from the standing feet, on the IMU's heading.

Shared by the robot (``robot.tracker.estimator``, the position source of a robot without motion capture) and the
simulator (``SimEnv(position_source="odometry")``, which trains and evaluates a walk on the position the robot will
measure, not the simulator's), so the two integrate the same readings with the same code.

Each update turns the feet's positions relative to the torso (forward kinematics of the joint angles,
``legs.feet``) into the world's axes by the IMU orientation with the estimate's heading. A foot is taken to have
stood on the floor between the last update and this one when it was low at both: its higher height of the two,
above the lowest foot of its update, within ``stance_tolerance_m`` of the least such height over the feet (so at
least one foot always counts). A standing foot has not moved in the world, so the torso moved by the opposite of its
change relative to the torso (the mean over the standing feet). Height is the lowest foot's depth below the torso
plus the foot radius, as the stand task estimates it. The heading is the IMU's yaw, shifted by
:meth:`~StanceOdometry.align_heading` so that it equals the start pose's (an IMU's yaw reference is its own).

What it cannot see: a foot that slips, a foot taken for standing while it swings low, motion between two updates
when the stance set changes completely, and the IMU's yaw drift. Its error grows with the distance walked and with
the gait's slip: ``benchmarks/tracker_drift.py`` measures it over a 16 s walk.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from sim.rotations import normalize_quat, quat_from_yaw, quat_mul, quat_to_matrix, yaw_of
from sim.state import OdometryState
from sim.tasks.spec import FloatArray

DEFAULT_STANCE_TOLERANCE_M = 0.002
"""How close to the floor a foot must stay between two updates to count as standing (m): 2 mm suits the trot of
``benchmarks/tracker_drift.py`` at the 10 Hz control rate (the robot config's ``tracker.stance_tolerance_m``)."""


class Legs(Protocol):
    """A legged task's kinematics (``sim.tasks.dkitty.KittyTask``)."""

    @property
    def foot_radius(self) -> float:
        """Radius of the feet's contact spheres (m)."""
        ...

    def feet(self, joint_pos: FloatArray) -> FloatArray:
        """Centres of the feet in the torso frame (m), shape (n_feet, 3), from the joint angles (rad)."""
        ...


def with_heading(quat: FloatArray, yaw: float) -> FloatArray:
    """``quat`` (w, x, y, z; body -> world) turned about world z so that its heading is ``yaw`` (rad), tilt kept."""
    return normalize_quat(quat_mul(quat_from_yaw(yaw - yaw_of(quat)), quat))


class StanceOdometry:
    """Dead reckoning from the standing feet; see the module docstring. Pure: no clock, no I/O."""

    def __init__(self, legs: Legs, stance_tolerance_m: float = DEFAULT_STANCE_TOLERANCE_M) -> None:
        if not stance_tolerance_m >= 0.0:
            raise ValueError(f"stance_tolerance_m must be >= 0 m, got {stance_tolerance_m!r}")
        self.legs = legs
        self.stance_tolerance_m = stance_tolerance_m
        self.position = np.zeros(3)
        """The torso origin's estimated position in the world (m)."""
        self._yaw_offset = 0.0
        self._feet: FloatArray | None = None
        self._heights: FloatArray | None = None

    def restart(self, position: FloatArray) -> None:
        """Start again at ``position`` (m): the next update only takes the feet's positions."""
        self.position = np.asarray(position, dtype=np.float64)[:3].copy()
        self._feet = None
        self._heights = None

    def align_heading(self, yaw: float, imu_quat: FloatArray) -> None:
        """From now on the heading is ``yaw`` (rad) where the IMU reads ``imu_quat``."""
        self._yaw_offset = yaw - yaw_of(imu_quat)

    def heading(self, imu_quat: FloatArray) -> float:
        """The estimate's heading (rad) where the IMU reads ``imu_quat``."""
        return yaw_of(imu_quat) + self._yaw_offset

    def snapshot(self) -> OdometryState:
        """Where the integration stands, to :meth:`restore` later."""
        return OdometryState(self.position.copy(), self._yaw_offset,
                             None if self._feet is None else self._feet.copy(),
                             None if self._heights is None else self._heights.copy())

    def restore(self, state: OdometryState) -> None:
        """Continue from a :meth:`snapshot`, exactly as the odometry that took it would have."""
        self.position = np.asarray(state.position, dtype=np.float64).copy()
        self._yaw_offset = float(state.yaw_offset)
        self._feet = None if state.feet is None else np.asarray(state.feet, dtype=np.float64).copy()
        self._heights = None if state.heights is None else np.asarray(state.heights, dtype=np.float64).copy()

    def update(self, joint_pos: FloatArray, imu_quat: FloatArray) -> FloatArray:
        """Integrate one reading (finite joint angles (rad) and IMU orientation); returns the new position (m)."""
        rot = quat_to_matrix(with_heading(imu_quat, self.heading(imu_quat)))
        feet = self.legs.feet(joint_pos) @ rot.T
        lowest = float(feet[:, 2].min())
        heights = feet[:, 2] - lowest
        if self._feet is not None and self._heights is not None:
            low = np.maximum(heights, self._heights)
            stood = low <= low.min() + self.stance_tolerance_m
            self.position[:2] += np.mean(self._feet[stood, :2] - feet[stood, :2], axis=0)
        self.position[2] = -lowest + self.legs.foot_radius
        self._feet, self._heights = feet, heights
        return self.position.copy()
