"""Fixtures shared by the test files."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import gymnasium as gym
import pytest


@pytest.fixture
def make_env() -> Iterator[Callable[..., gym.Env]]:
    """``make_env(env_id, engine, **kwargs)``: a fresh ``gym.make`` env, closed after the test; a PyBullet one skips
    the test where PyBullet is not installed."""
    envs: list[gym.Env] = []

    def make(env_id: str, engine: str, **kwargs: Any) -> gym.Env:
        if engine == "pybullet":
            pytest.importorskip("pybullet")
        env = gym.make(env_id, engine=engine, **kwargs)
        envs.append(env)
        return env

    yield make
    for env in envs:
        env.close()
