"""A policy for a robot without a valve encoder: a camera's angle estimate in place of the encoder's reading, fed to a
state policy trained with the encoder.

Per step the estimator reads the valve angle from the camera frame; the task's own :meth:`observe` builds the state
policy's observation from it, the joint readings, the last action and the goal (the same pure function the simulator
and the robot's controller call, so no block is indexed by hand); the state policy acts on that. It takes the
observation of :class:`sim.pixels_env.PixelsEnv` and needs numpy and the policy objects only (an
:class:`export.perception_model.OnnxAngleEstimator` and an :class:`export.onnx_policy.OnnxPolicy` run on
onnxruntime, no torch).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

import numpy as np

from sim.pixels_env import GOAL_KEY, IMAGE_KEY
from sim.state import RobotState
from sim.tasks.base import Task
from sim.tasks.spec import GoalField

StatePolicy = Callable[[np.ndarray], np.ndarray]
"""The state policy: the task's flat float32 observation -> normalized action."""


class AngleEstimator(Protocol):
    """Reads one passive joint's angle (rad) from one camera frame."""

    def angle(self, frame: np.ndarray) -> float: ...


class ModularPolicy:
    """``estimator`` (camera frame -> valve angle) then ``state_policy`` (the task's flat observation -> action), on
    ``task``, a task with one passive joint and named goal values (the D'Claw turn).

    The state observation is ``task.observe`` of a reading whose joint positions are the observed ones and whose
    passive position is the estimate; the reading's velocities are zero, so the task's observation must not use
    them (the turn task's does not)."""

    def __init__(self, estimator: AngleEstimator, state_policy: StatePolicy, task: Task) -> None:
        if len(task.spec.passive_joints) != 1:
            raise ValueError(f"task {task.spec.name!r} has {len(task.spec.passive_joints)} passive joints; a modular "
                             "policy estimates exactly one")
        goal_fields: tuple[GoalField, ...] = getattr(task, "goal_fields", ())
        if not goal_fields:
            raise ValueError(f"task {task.spec.name!r} declares no named goal values (goal_fields)")
        self.estimator = estimator
        self.state_policy = state_policy
        self.task = task
        self.goal_names = tuple(f.name for f in goal_fields)
        self.last_angle: float | None = None
        """The estimate of the last call (rad), for logging."""

    def state_observation(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The state policy's observation (float32, the task's layout) from one camera-env observation."""
        angle = float(self.estimator.angle(np.asarray(obs[IMAGE_KEY])))
        self.last_angle = angle
        n = self.task.spec.n_joints
        reading = RobotState(time=0.0, joint_pos=np.asarray(obs["joint_pos"], dtype=np.float64),
                             joint_vel=np.zeros(n), passive_pos=np.array([angle]), passive_vel=np.zeros(1))
        goal = dict(zip(self.goal_names, (float(v) for v in np.asarray(obs[GOAL_KEY]).reshape(-1)), strict=True))
        return self.task.observe(reading, np.asarray(obs["last_action"], dtype=np.float64), goal)

    def __call__(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.state_policy(self.state_observation(obs))
