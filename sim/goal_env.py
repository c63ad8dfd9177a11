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

from dataclasses import replace
from typing import Any, Literal, Protocol, SupportsFloat

import gymnasium as gym
import numpy as np
from numpy.typing import NDArray

from sim.engines.base import ParamSpec
from sim.env import DictObservationEnv, SimEnv
from sim.state import RobotState
from sim.tasks.base import EpisodeStartLike, Task
from sim.tasks.spec import FloatArray, GoalField, ObsField, ObsLayout, TaskSpec

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

    @property
    def goal_fields(self) -> tuple[GoalField, ...]:
        """The named goal values (the keys of an episode's goal dict), with their units and commandable ranges."""
        ...

    @property
    def goal_encoding(self) -> str:
        """How the named goal values become ``desired_goal``, in words (for the export metadata)."""
        ...

    def achieved_goal(self, state: RobotState) -> FloatArray: ...
    def desired_goal(self, goal: dict[str, float]) -> FloatArray: ...
    def goal_distance(self, achieved: FloatArray, desired: FloatArray) -> FloatArray: ...


DESIRED_GOAL = "desired_goal"
"""Name of the goal block, the last of a goal policy's flat observation."""
GOAL_MEMBERS = ("goal_observation_fields", "goal_tolerance", "goal_size", "goal_fields", "goal_encoding",
                "achieved_goal", "desired_goal", "goal_distance")


def is_goal_task(task: object) -> bool:
    """Whether ``task`` has the goal-conditioned view of :class:`GoalTask` (the flat D'Claw turn task has it too:
    every variant of it can run a goal policy)."""
    return all(hasattr(task, name) for name in GOAL_MEMBERS)


def goal_obs_layout(task: GoalTask, spec: TaskSpec | None = None) -> ObsLayout:
    """The flat observation a goal policy takes: the task's goal observation fields (of ``spec``'s layout,
    default the task's), then the ``desired_goal`` block, as :func:`policies.envs.make_env` flattens it."""
    layout = (spec or task.spec).obs_layout
    by_name = {f.name: f for f in layout.fields}
    return ObsLayout((*(by_name[n] for n in task.goal_observation_fields),
                      ObsField(DESIRED_GOAL, task.goal_size, "-", task.goal_encoding)))


def goal_observation(task: GoalTask, flat: np.ndarray, goal: dict[str, float]) -> np.ndarray:
    """The goal-conditioned observation ``concat(observation, desired_goal(goal))`` (float32) from the task's
    flat observation ``flat``."""
    layout = task.spec.obs_layout
    parts = [np.asarray(flat, dtype=np.float64)[layout.slice(n)] for n in task.goal_observation_fields]
    return np.concatenate([*parts, task.desired_goal(goal)]).astype(np.float32)


class GoalView:
    """A goal task as its goal policy sees it: a :class:`~sim.tasks.base.Task` whose observation is
    ``concat(observation, desired_goal)`` (:func:`goal_obs_layout`, the spec's ``obs_layout``) and whose every
    other part is the task's. The robot's controller runs a goal policy on this view, with the goals it is given."""

    def __init__(self, task: GoalTask) -> None:
        if not is_goal_task(task):
            raise ValueError(f"task {task.spec.name!r} has no goal-conditioned view")
        self.task = task
        self._spec = replace(task.spec, obs_layout=goal_obs_layout(task))

    @property
    def spec(self) -> TaskSpec:
        return self._spec

    def model_xml(self, timestep: float) -> str:
        return self.task.model_xml(timestep)

    def model_urdf(self) -> str:
        return self.task.model_urdf()

    def param_specs(self) -> tuple[ParamSpec, ...]:
        return self.task.param_specs()

    def sample_start(self, rng: np.random.Generator) -> EpisodeStartLike:
        return self.task.sample_start(rng)

    def observe(self, state: RobotState, last_action: FloatArray, goal: dict[str, float]) -> np.ndarray:
        return goal_observation(self.task, self.task.observe(state, last_action, goal), goal)

    def reward_terms(self, state: RobotState, goal: dict[str, float]) -> dict[str, float]:
        return self.task.reward_terms(state, goal)

    def success(self, state: RobotState, goal: dict[str, float]) -> bool:
        return self.task.success(state, goal)

    def terminated(self, state: RobotState, goal: dict[str, float]) -> bool:
        return self.task.terminated(state, goal)


def goal_reward(task: GoalTask, achieved: FloatArray, desired: FloatArray,
                reward_type: RewardType) -> NDArray[np.float32]:
    """Rewards of goal pairs (rows of ``achieved`` and ``desired``; any leading axes), as float32."""
    distance = task.goal_distance(achieved, desired)
    if reward_type == "sparse":
        return np.where(distance < task.goal_tolerance, 0.0, -1.0).astype(np.float32)
    return -distance.astype(np.float32)


class GoalEnv(DictObservationEnv):
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

    def _observation(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        return {
            "observation": np.concatenate([flat[s] for s in self._slices]).astype(np.float32),
            "achieved_goal": self.task.achieved_goal(self.sim.read()).astype(np.float32),
            "desired_goal": self.task.desired_goal(self.sim.goal).astype(np.float32),
        }

    def _reached(self, obs: dict[str, np.ndarray]) -> bool:
        return bool(self.task.goal_distance(obs["achieved_goal"], obs["desired_goal"]) < self.task.goal_tolerance)
