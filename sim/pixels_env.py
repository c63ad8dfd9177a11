"""A task as a robot without a sensor on its passive joints sees it: a task camera's image, the robot's own joint
readings and last action, and the commanded goal.

The D'Claw has an encoder on the valve in the lab but often not in the field; this env gives a policy (or a
perception module feeding a state policy, :class:`export.modular_policy.ModularPolicy`) only what such a robot has.
The observation is a dict:

- ``image``: the task camera's RGB uint8 frame (its height x width x 3), with the ``image_*`` effects
  (:meth:`sim.env.SimEnv.render_camera`);
- the blocks of the task's flat observation that come from the robot itself (:data:`PROPRIOCEPTIVE_FIELDS`, read
  from the flat observation by name, so the noise on them is the flat env's);
- ``goal``: the episode's named goal values in the task's ``goal_fields`` order (SI units, as commanded; float64,
  so a policy rebuilding the flat observation from it gets the flat env's values exactly).

The passive joints' positions are in none of them. Physics, actions, rewards, parameters (the visual ones too),
time limits and ``info`` are the wrapped :class:`~sim.env.SimEnv`'s.
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from sim.env import DictObservationEnv, SimEnv
from sim.tasks.base import Task

PROPRIOCEPTIVE_FIELDS = ("joint_pos", "last_action")
"""Blocks of the flat observation a robot measures without a sensor on its passive joints."""
IMAGE_KEY = "image"
GOAL_KEY = "goal"
STATE_KEY = "state"
"""With ``privileged``: the flat task's whole observation, valve included, for an asymmetric critic in training."""


class PixelsEnv(DictObservationEnv):
    """A task with a camera on an engine, with the dict observation above; extra keyword arguments go to
    :class:`SimEnv`. ``camera`` names the task camera (default the task's first). ``privileged`` adds ``state``
    (:data:`STATE_KEY`), the flat observation with the valve, for a learner whose critic sees the simulator's state
    (an asymmetric actor-critic); a policy that runs on a robot must not read it."""

    metadata = SimEnv.metadata

    def __init__(self, task: Task, camera: str | None = None, privileged: bool = False, **sim_kwargs: Any) -> None:
        cameras = {c.name: c for c in task.spec.cameras}
        if not cameras:
            raise ValueError(f"task {task.spec.name!r} has no camera")
        name = camera if camera is not None else task.spec.cameras[0].name
        if name not in cameras:
            raise ValueError(f"task {task.spec.name!r} has no camera {name!r}; its cameras: {', '.join(cameras)}")
        goal_fields = getattr(task, "goal_fields", ())
        if not goal_fields:
            raise ValueError(f"task {task.spec.name!r} declares no named goal values (goal_fields)")
        self.sim = SimEnv(task, **sim_kwargs)
        self.task = task
        self.camera = cameras[name]
        self.goal_names: tuple[str, ...] = tuple(f.name for f in goal_fields)
        layout = self.sim.spec_.obs_layout
        self._slices = {n: layout.slice(n) for n in PROPRIOCEPTIVE_FIELDS}
        n_act = self.sim.spec_.n_joints
        spaces: dict[str, gym.Space[Any]] = {
            IMAGE_KEY: gym.spaces.Box(0, 255, (self.camera.height, self.camera.width, 3), np.uint8),
            **{n: gym.spaces.Box(-np.inf, np.inf, (s.stop - s.start,), np.float32) for n, s in self._slices.items()},
            GOAL_KEY: gym.spaces.Box(-np.inf, np.inf, (len(self.goal_names),), np.float64),
        }
        if "last_action" in spaces:
            spaces["last_action"] = gym.spaces.Box(-1.0, 1.0, (n_act,), np.float32)
        self.privileged = privileged
        if privileged:
            spaces[STATE_KEY] = self.sim.observation_space
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = self.sim.action_space
        self.render_mode = self.sim.render_mode
        self.metadata = self.sim.metadata

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        flat, info = self.sim.reset(seed=seed, options=options)
        return self._observation(flat), info

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], SupportsFloat, bool, bool, dict[str, Any]]:
        flat, reward, terminated, truncated, info = self.sim.step(action)
        return self._observation(flat), reward, terminated, truncated, info

    def _observation(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        goal = self.sim.goal
        return {
            IMAGE_KEY: self.sim.render_camera(self.camera.name),
            **{n: np.asarray(flat[s], dtype=np.float32) for n, s in self._slices.items()},
            GOAL_KEY: np.array([goal[n] for n in self.goal_names], dtype=np.float64),
            **({STATE_KEY: np.asarray(flat, dtype=np.float32)} if self.privileged else {}),
        }
