"""What a task module provides; the env, the robot controller and export rely only on this."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from sim.engines.base import ParamSpec
from sim.state import RobotState
from sim.tasks.spec import ACTION_RATE_TERM, FloatArray, TaskSpec


class EpisodeStartLike(Protocol):
    """Initial joint positions, passive-joint positions and named goal values of an episode.

    A task whose robot has a floating base may also give ``base_pose``: 7 values, the base's position in
    the world (m) and orientation (w, x, y, z), as in :class:`~sim.state.SimState`. Starts without it
    leave the base where the scene puts it; read it with :func:`start_base_pose`.
    """

    @property
    def joint_pos(self) -> FloatArray: ...
    @property
    def passive_pos(self) -> FloatArray: ...
    @property
    def goal(self) -> dict[str, float]: ...


class Task(Protocol):
    """A robot task: spec, scene, starts, observation, reward terms and success."""

    @property
    def spec(self) -> TaskSpec: ...

    def model_xml(self, timestep: float) -> str:
        """MuJoCo XML of the scene at a physics step (s)."""
        ...

    def model_urdf(self) -> str:
        """URDF of the same scene, for PyBullet."""
        ...

    def param_specs(self) -> tuple[ParamSpec, ...]:
        """Named physical parameters of the scene."""
        ...

    def sample_start(self, rng: np.random.Generator) -> EpisodeStartLike:
        """Where the next episode starts and what it asks for."""
        ...

    def observe(self, state: RobotState, last_action: FloatArray, goal: dict[str, float]) -> np.ndarray:
        """The policy's observation."""
        ...

    def reward_terms(self, state: RobotState, goal: dict[str, float]) -> dict[str, float]:
        """Named reward terms; the reward is their sum."""
        ...

    def success(self, state: RobotState, goal: dict[str, float]) -> bool:
        """Whether the goal is met in this state."""
        ...

    def terminated(self, state: RobotState, goal: dict[str, float]) -> bool:
        """Whether the episode ends here, failed, before its time is up: a state the robot's controller stops in
        (the quadruped's walk past the IMU's tilt bound), so that simulation ends where the robot does. Tasks that
        end by time only return False."""
        ...


def start_base_pose(start: EpisodeStartLike) -> FloatArray | None:
    """The optional ``base_pose`` of an episode start (position (m), quaternion (w, x, y, z)), or ``None``."""
    pose = getattr(start, "base_pose", None)
    if pose is None:
        return None
    arr = np.asarray(pose, dtype=np.float64)
    if arr.shape != (7,):
        raise ValueError(f"an episode start's base_pose has 7 values (x, y, z, qw, qx, qy, qz), got shape {arr.shape}")
    return arr


def observes_base_position(task: object) -> bool:
    """Whether ``task`` observes its torso's position (the walk): on hardware a position source must give it."""
    return bool(getattr(task, "needs_base_position", False))


def base_height(task: Task, state: RobotState) -> float:
    """Height of a floating base's origin above the floor (m), estimated by the task from joint angles and the IMU.

    A task whose robot has a floating base and must run without a position source gives ``height(state)``;
    anything that needs the base's position then (replaying logged transitions in simulation) asks here.
    """
    height = getattr(task, "height", None)
    if height is None:
        raise ValueError(f"task {task.spec.name} has a floating base but no height(state) estimate: its logs need the "
                         "base position (base_pos) from a position source")
    return float(height(state))


def total_reward(terms: dict[str, float]) -> float:
    """The one place reward terms are summed."""
    return float(sum(terms.values()))


def step_reward_terms(task: Task, state: RobotState, goal: dict[str, float], action: FloatArray,
                      previous_action: FloatArray) -> dict[str, float]:
    """The named reward terms of one step, the same in the sim env and on the robot: the task's own terms of the
    state reached, and the spec's ``action_rate`` cost of going from ``previous_action`` to ``action`` (both the
    normalized actions as applied, clipped to [-1, 1]) where the spec weighs it."""
    terms = task.reward_terms(state, goal)
    weight = task.spec.action_rate_weight
    if weight > 0.0:
        change = np.asarray(action, dtype=np.float64) - np.asarray(previous_action, dtype=np.float64)
        terms[ACTION_RATE_TERM] = -weight * float(change @ change)
    return terms
