"""What a task sees of its robot, and what an engine needs to restore itself exactly."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.tasks.spec import FloatArray


@dataclass(frozen=True)
class RobotState:
    """One reading of the robot, in SI units; built by an engine in sim and by the bus on hardware."""

    time: float
    """When the reading was taken (s, monotonic)."""
    joint_pos: FloatArray
    """Actuated joint positions in task-spec order (rad)."""
    joint_vel: FloatArray
    """Actuated joint velocities (rad/s)."""
    passive_pos: FloatArray
    """Positions of the task's passive joints, e.g. the valve (rad)."""
    passive_vel: FloatArray
    """Velocities of the passive joints (rad/s)."""
    joint_effort: FloatArray = field(default_factory=lambda: np.zeros(0))
    """Actuator torque per joint (N m) where the source reports it; empty otherwise."""
    base_quat: FloatArray = field(default_factory=lambda: np.zeros(0))
    """Orientation of a floating base (w, x, y, z; body -> world), e.g. from an IMU; empty for a fixed robot."""
    base_angvel: FloatArray = field(default_factory=lambda: np.zeros(0))
    """Angular velocity of the floating base in its own frame (rad/s), what a gyroscope reads; empty if none."""
    base_pos: FloatArray = field(default_factory=lambda: np.zeros(0))
    """Position of the base frame's origin in the world (m): simulation or an external tracker; empty if none."""
    base_linvel: FloatArray = field(default_factory=lambda: np.zeros(0))
    """Velocity of the base frame's origin in the world frame (m/s): simulation or a tracker; empty if none."""

    @property
    def has_base(self) -> bool:
        """Whether the reading carries a floating base's orientation (a legged robot with an IMU)."""
        return self.base_quat.size == 4


BASE_QPOS_SIZE = 7
"""Entries of a floating base in :attr:`SimState.qpos`: position (3, m), then orientation (w, x, y, z)."""
BASE_QVEL_SIZE = 6
"""Entries of a floating base in :attr:`SimState.qvel`: linear (3, m/s, world), then angular (3, rad/s, body)."""


@dataclass(frozen=True)
class OdometryState:
    """Where leg odometry (:class:`sim.odometry.StanceOdometry`) stands in its integration, for exact restores."""

    position: FloatArray
    """The torso origin's estimated position in the world (m)."""
    yaw_offset: float
    """The estimate's heading less the IMU's yaw (rad)."""
    feet: FloatArray | None
    """The feet's positions at the last update, in the world's axes relative to the torso (m), shape (n_feet, 3);
    ``None`` before the first update after a restart."""
    heights: FloatArray | None
    """The feet's heights above the lowest foot at the last update (m); ``None`` with ``feet``."""


@dataclass(frozen=True)
class SimState:
    """A simulator's state: coordinates in task order (actuated, passive, then the floating base) and the command.

    ``qpos``/``qvel`` are the same on every engine, so a state logged on one engine (or built from a
    robot reading) can be loaded into another. ``physics`` optionally carries the engine's complete
    internal state (solver warm start, contact cache) for bit-exact restores on the same engine.

    A scene with a floating base (``TaskSpec.base_joint``) appends the base to both vectors, with
    MuJoCo's free-joint convention: ``qpos`` gets the base frame's origin in the world (m) and its
    orientation quaternion (w, x, y, z; body -> world), ``qvel`` the origin's velocity in the world frame
    (m/s) and the angular velocity in the base's own frame (rad/s). A fixed-base scene has neither.
    """

    qpos: FloatArray
    """Actuated joint positions (rad), then passive joint positions (rad), then the base pose if any (see above)."""
    qvel: FloatArray
    """Velocities in the same order (rad/s; the base's linear velocity in m/s)."""
    command: FloatArray
    """Position targets currently applied to the actuators (rad)."""
    physics: FloatArray | None = None
    """Engine-specific full state for exact restores; ``None`` when built from a reading."""
    last_action: FloatArray | None = None
    """The env's last applied normalized action (the observation's ``last_action``, the action-rate term's
    reference); ``None``, as an engine gives it: the command normalized, as at a reset."""
    odometry: OdometryState | None = None
    """The leg odometry of an env that observes it (``SimEnv(position_source="odometry")``); ``None``, as an engine
    or a reading gives it: the odometry restarts at the restored pose, as at a reset."""
