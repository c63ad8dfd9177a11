"""Goal-conditioned tasks in the gymnasium-robotics convention, for Hindsight Experience Replay.

The observation is a dict of ``observation`` (what the policy sees besides the goal), ``achieved_goal`` (where the
system is, in goal coordinates) and ``desired_goal`` (what is commanded), and ``compute_reward(achieved, desired,
info)`` gives the reward of any pair, vectorized, so that a replay buffer can relabel stored transitions with
goals that were reached later (Andrychowicz et al. 2017, "Hindsight Experience Replay", NeurIPS).

The env wraps :class:`sim.env.SimEnv`: physics, actions, randomization parameters and time limits are the task's
own. The reward is the goal's alone, ``sparse`` (0 within the task's tolerance, else -1) or ``dense`` (minus the
distance); the task's shaped terms stay in ``info["reward_terms"]``. The achieved goal is read from the noiseless
state, as the reward of the flat task is.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, SupportsFloat

import gymnasium as gym
import numpy as np
from numpy.typing import NDArray

from sim.env import SimEnv
from sim.state import RobotState
from sim.tasks.base import Task
from sim.tasks.spec import FloatArray

RewardType = Literal["sparse", "dense"]
REWARD_TYPES: tuple[RewardType, ...] = ("sparse", "dense")


class GoalTask(Task, Protocol):
    """A task that can say, of any state, which goal it achieves."""

    @property
    def goal_observation_fields(self) -> tuple[str, ...]:
        """Blocks of the flat observation the policy sees besides the goal (the goal-relative ones are dropped)."""
        ...

    @property
    def goal_tolerance(self) -> float:
        """Distance within which a goal counts as reached (the goal's unit)."""
        ...

    @property
    def goal_size(self) -> int:
        """Length of ``achieved_goal`` and ``desired_goal``."""
        ...

    def achieved_goal(self, state: RobotState) -> FloatArray: ...
    def desired_goal(self, goal: dict[str, float]) -> FloatArray: ...
    def goal_distance(self, achieved: FloatArray, desired: FloatArray) -> FloatArray: ...


def goal_reward(task: GoalTask, achieved: FloatArray, desired: FloatArray,
                reward_type: RewardType) -> NDArray[np.float32]:
    """Rewards of goal pairs (rows of ``achieved`` and ``desired``; any leading axes), as float32."""
    distance = task.goal_distance(achieved, desired)
    if reward_type == "sparse":
        return np.where(distance < task.goal_tolerance, 0.0, -1.0).astype(np.float32)
    return -distance.astype(np.float32)


class GoalEnv(gym.Env[dict[str, Any], np.ndarray]):
    """A goal task on an engine with a dict observation; extra keyword arguments go to :class:`SimEnv`."""

    metadata = SimEnv.metadata

    def __init__(self, task: GoalTask, reward_type: str = "sparse", **sim_kwargs: Any) -> None:
        if reward_type not in REWARD_TYPES:
            raise ValueError(f"reward_type must be one of {', '.join(REWARD_TYPES)}, got {reward_type!r}")
        self.sim = SimEnv(task, **sim_kwargs)
        self.task: GoalTask = task
        self.reward_type: RewardType = "sparse" if reward_type == "sparse" else "dense"
        layout = task.spec.obs_layout
        self._slices = [layout.slice(name) for name in task.goal_observation_fields]
        size = sum(s.stop - s.start for s in self._slices)
        goal_box = gym.spaces.Box(-np.inf, np.inf, (task.goal_size,), np.float32)
        self.observation_space = gym.spaces.Dict({
            "observation": gym.spaces.Box(-np.inf, np.inf, (size,), np.float32),
            "achieved_goal": goal_box,
            "desired_goal": goal_box,
        })
        self.action_space = self.sim.action_space
        self.render_mode = self.sim.render_mode
        self.metadata = self.sim.metadata

    def compute_reward(self, achieved_goal: FloatArray, desired_goal: FloatArray,
                       info: Any) -> NDArray[np.float32]:
        """The reward of reaching ``achieved_goal`` when ``desired_goal`` was commanded (vectorized; ``info`` is
        unused, as the goal alone decides)."""
        return goal_reward(self.task, achieved_goal, desired_goal, self.reward_type)

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        flat, info = self.sim.reset(seed=seed, options=options)
        obs = self._observation(flat)
        return obs, {**info, "is_success": self._reached(obs)}

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], SupportsFloat, bool, bool, dict[str, Any]]:
        flat, _, terminated, truncated, info = self.sim.step(action)
        obs = self._observation(flat)
        reward = float(self.compute_reward(obs["achieved_goal"], obs["desired_goal"], info))
        return obs, reward, terminated, truncated, {**info, "is_success": self._reached(obs)}

    def render(self) -> np.ndarray | None:
        return self.sim.render()

    def close(self) -> None:
        self.sim.close()

    @property
    def unwrapped_sim(self) -> SimEnv:
        """The flat env underneath (parameters, state access)."""
        return self.sim

    def _observation(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        return {
            "observation": np.concatenate([flat[s] for s in self._slices]).astype(np.float32),
            "achieved_goal": self.task.achieved_goal(self.sim.read()).astype(np.float32),
            "desired_goal": self.task.desired_goal(self.sim.goal).astype(np.float32),
        }

    def _reached(self, obs: dict[str, np.ndarray]) -> bool:
        return bool(self.task.goal_distance(obs["achieved_goal"], obs["desired_goal"]) < self.task.goal_tolerance)
