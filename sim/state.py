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


@dataclass(frozen=True)
class SimState:
    """A simulator's state: joint coordinates in task order (actuated, then passive) and the command.

    ``qpos``/``qvel`` are the same on every engine, so a state logged on one engine (or built from a
    robot reading) can be loaded into another. ``physics`` optionally carries the engine's complete
    internal state (solver warm start, contact cache) for bit-exact restores on the same engine.
    """

    qpos: FloatArray
    """Actuated joint positions, then passive joint positions (rad)."""
    qvel: FloatArray
    """Velocities in the same order (rad/s)."""
    command: FloatArray
    """Position targets currently applied to the actuators (rad)."""
    physics: FloatArray | None = None
    """Engine-specific full state for exact restores; ``None`` when built from a reading."""
