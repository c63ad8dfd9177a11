"""Per-episode domain randomization as a gymnasium wrapper around an s2r simulated env."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from randomization.distributions import ParameterDistribution
from s2r.core.errors import UserError
from sim.env import SimEnv
from sim.goal_env import GoalEnv
from sim.pixels_env import PixelsEnv

PARAM_STREAM_KEY = 0x5EED
"""Spawn key that separates the parameter draws from the env's own random stream for the same seed."""


def param_rng(seed: int | None) -> np.random.Generator:
    """The generator of parameter draws for ``seed`` (fresh entropy for ``None``)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(PARAM_STREAM_KEY,)))


def sim_env_of(env: gym.Env) -> SimEnv:
    """The :class:`~sim.env.SimEnv` inside ``env``'s wrappers (a goal or camera env's flat one), or a
    ``UserError``."""
    inner = env.unwrapped
    if isinstance(inner, (GoalEnv, PixelsEnv)):
        return inner.unwrapped_sim
    if not isinstance(inner, SimEnv):
        raise UserError(f"randomization needs an s2r simulated env, got {type(inner).__name__}")
    return inner


def check_applicable(distribution: ParameterDistribution, env: SimEnv) -> None:
    """Every name of ``distribution`` must be a parameter of ``env`` that its engine can apply."""
    known = env.params.names()
    for name in distribution.names():
        if name not in known:
            raise UserError(f"unknown parameter {name!r} for this env; known parameters: {', '.join(known)}")
        if not env.params.supported(name):
            raise UserError(f"parameter {name!r} is not supported by the {env.engine.name} engine; "
                            "remove it from the randomization file or use another engine")


class RandomizedEnv(gym.Wrapper[np.ndarray, np.ndarray, np.ndarray, np.ndarray]):
    """Draws new parameter values from ``distribution`` at every reset and applies them from nominal.

    Parameters outside the distribution are put back to nominal at every reset, so nothing set
    earlier leaks into an episode. ``reset(seed=s)`` re-seeds the parameter draws too (as gymnasium
    re-seeds the env), from a stream separate from the env's own. ``info["params"]`` holds the values
    of the new episode; :attr:`current_params` keeps them.
    """

    def __init__(self, env: gym.Env, distribution: ParameterDistribution, seed: int | None = None) -> None:
        super().__init__(env)
        self.sim = sim_env_of(env)
        check_applicable(distribution, self.sim)
        self.distribution = distribution
        self._rng = param_rng(seed)
        self.current_params: dict[str, float] = {}

    def resample(self) -> dict[str, float]:
        """Draw and apply a new set of values (every other parameter back to nominal); returns the draw."""
        values = self.distribution.sample(self._rng)
        self.apply(values)
        return dict(values)

    def apply(self, values: dict[str, float]) -> None:
        """Apply ``values`` from nominal: every parameter not in them goes back to its nominal value."""
        self.sim.params.assign(values)
        self.current_params = dict(values)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is not None:
            self._rng = param_rng(seed)
        # Before the inner reset: the reset observation already carries the new observation noise.
        values = self.resample()
        obs, info = self.env.reset(seed=seed, options=options)
        return obs, {**info, "params": values}
