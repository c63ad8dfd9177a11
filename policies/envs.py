"""Environment creation for training and evaluation, and the normalized-action mapping."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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


def make_env(env_id: str, engine: str = "mujoco", env_kwargs: Mapping[str, Any] | None = None) -> Env:
    """``gym.make(env_id)`` (with ``engine`` for our ids), checked to have flat Box spaces."""
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
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        env.close()
        raise UserError(f"environment {env_id!r} needs a 1-d Box observation space, it has {obs_space}")
    return env
