"""Environment creation for training and evaluation, and the normalized-action mapping."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

import sim  # (importing it registers the s2r/ ids)
from s2r.core.errors import UserError
from sim.engines import ENGINES

S2R_PREFIX = "s2r/"
"""Our gymnasium ids start with this; only they take the ``engine`` argument."""


def resolve_task(task: str) -> str:
    """A short task name or gymnasium id, as a gymnasium id."""
    return sim.resolve_env_id(task)


Env = gym.Env[np.ndarray, np.ndarray]
"""An environment of flat observation and action vectors (what :func:`make_env` makes)."""

ComputeReward = Callable[[np.ndarray, np.ndarray, Any], np.ndarray]
"""A goal environment's vectorized ``compute_reward(achieved_goal, desired_goal, info)`` (rows of goals -> rewards)."""


@dataclass(frozen=True)
class GoalLayout:
    """How a goal environment's dict observation lies in the flat vector the networks see."""

    obs_size: int
    """Length of ``observation`` (the vector's first part)."""
    goal_size: int
    """Length of ``desired_goal`` (the vector's last part) and of ``achieved_goal``."""

    @property
    def size(self) -> int:
        """Length of the flat vector ``concat(observation, desired_goal)``."""
        return self.obs_size + self.goal_size

    def flatten(self, observation: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """``concat(observation, goal)`` as float32."""
        return np.concatenate([np.asarray(observation, np.float32).reshape(-1),
                               np.asarray(goal, np.float32).reshape(-1)])

    def observation(self, flat: np.ndarray) -> np.ndarray:
        """The ``observation`` part of flat vector(s)."""
        return np.asarray(flat)[..., : self.obs_size]

    def goal(self, flat: np.ndarray) -> np.ndarray:
        """The goal part of flat vector(s)."""
        return np.asarray(flat)[..., self.obs_size :]


GOAL_KEYS = ("observation", "achieved_goal", "desired_goal")
"""The keys of a goal-conditioned environment's dict observation (gymnasium-robotics' convention)."""


def goal_layout_of(space: gym.Space[Any]) -> GoalLayout | None:
    """The layout of a goal-conditioned observation space (a dict of 1-d Boxes under :data:`GOAL_KEYS`, the goals
    of one length), or ``None`` for any other space."""
    if not isinstance(space, gym.spaces.Dict) or set(space.spaces) != set(GOAL_KEYS):
        return None
    boxes = [space.spaces[k] for k in GOAL_KEYS]
    if not all(isinstance(b, gym.spaces.Box) and len(b.shape) == 1 for b in boxes):
        return None
    obs, achieved, desired = (int(b.shape[0]) for b in boxes)  # type: ignore[index]
    return GoalLayout(obs, desired) if achieved == desired else None


class FlatGoalEnv(gym.Wrapper[Any, np.ndarray, np.ndarray, np.ndarray]):
    """A goal-conditioned environment as the networks see it: the flat vector ``concat(observation,
    desired_goal)``. The achieved goal goes in ``info["achieved_goal"]`` (for Hindsight Experience Replay, which
    relabels with it through :meth:`compute_reward`), and ``info["success"]`` is the env's ``is_success`` where it
    reports no ``success`` of its own."""

    def __init__(self, env: gym.Env[Any, np.ndarray], layout: GoalLayout) -> None:
        super().__init__(env)
        self.layout = layout
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (layout.size,), np.float32)
        reward = getattr(env.unwrapped, "compute_reward", None)
        if not callable(reward):
            raise UserError(f"goal-conditioned environment {type(env.unwrapped).__name__} has no compute_reward")
        self.compute_reward: ComputeReward = reward

    def _flat(self, obs: dict[str, Any], info: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        info = {**info, "achieved_goal": np.asarray(obs["achieved_goal"], np.float32)}
        if "success" not in info and "is_success" in info:
            info["success"] = bool(info["is_success"])
        return self.layout.flatten(obs["observation"], obs["desired_goal"]), info

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        return self._flat(obs, info)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        flat, info = self._flat(obs, info)
        return flat, reward, terminated, truncated, info


def find_goal_env(env: gym.Env[Any, Any]) -> FlatGoalEnv | None:
    """The :class:`FlatGoalEnv` among ``env``'s wrappers, or ``None`` for a flat task."""
    while True:
        if isinstance(env, FlatGoalEnv):
            return env
        inner = getattr(env, "env", None)
        if not isinstance(inner, gym.Env):
            return None
        env = inner


def make_env(env_id: str, engine: str = "mujoco", env_kwargs: Mapping[str, Any] | None = None,
             dict_obs: bool = False) -> Env:
    """``gym.make(env_id)`` (with ``engine`` for our ids), checked to have flat Box spaces; a goal-conditioned
    environment comes as a :class:`FlatGoalEnv`. With ``dict_obs`` a camera env (:data:`sim.PIXEL_IDS`) comes as it
    is, its dict observation for a policy that takes it (a modular policy; no learner here does)."""
    kwargs = dict(env_kwargs or {})
    if env_id.startswith(S2R_PREFIX):
        if engine not in ENGINES:
            raise UserError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
        kwargs["engine"] = engine
    try:
        env = gym.make(env_id, **kwargs, max_episode_steps=sim.time_limit(env_id, kwargs))
    except gym.error.Error as exc:
        raise UserError(f"cannot make environment {env_id!r}: {exc}") from exc
    except TypeError as exc:
        raise UserError(f"environment {env_id!r} rejected the arguments {sorted(kwargs)}: {exc}") from exc
    except (ValueError, KeyError) as exc:
        # A value the environment cannot run with (a control period longer than the episode, an unknown
        # parameter name): the user's env_kwargs, since every other argument is checked before this.
        reason = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise UserError(f"config field 'env_kwargs': environment {env_id!r} cannot run with {kwargs}: {reason}"
                        ) from exc
    obs_space, act_space = env.observation_space, env.action_space
    if not isinstance(act_space, gym.spaces.Box) or len(act_space.shape) != 1:
        env.close()
        raise UserError(f"environment {env_id!r} needs a 1-d Box action space, it has {act_space}")
    if not (np.all(np.isfinite(act_space.low)) and np.all(np.isfinite(act_space.high))):
        env.close()
        raise UserError(f"environment {env_id!r} has an unbounded action space {act_space}")
    layout = goal_layout_of(obs_space)
    if layout is not None:
        return FlatGoalEnv(env, layout)
    if dict_obs and env_id in sim.PIXEL_IDS:
        return env
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        env.close()
        raise UserError(f"environment {env_id!r} needs a 1-d Box observation space, or a goal-conditioned dict of "
                        f"1-d Boxes {', '.join(GOAL_KEYS)}; it has {obs_space}")
    return env
