"""Deterministic evaluation of a policy (any callable obs -> normalized action) on an environment."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from policies.envs import make_env, to_env_action

Policy = Callable[[np.ndarray], np.ndarray]
"""float32 observation (one or a batch) -> normalized action(s) in [-1, 1]."""


def evaluate(
    policy: Policy,
    env_id: str,
    episodes: int,
    seed: int,
    engine: str = "mujoco",
    env_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``episodes`` episodes seeded ``seed, seed + 1, ...``; see :func:`evaluate_env` for the result."""
    env = make_env(env_id, engine, env_kwargs)
    try:
        return evaluate_env(policy, env, episodes, seed)
    finally:
        env.close()


def evaluate_env(policy: Policy, env: gym.Env, episodes: int, seed: int) -> dict[str, Any]:
    """``{"episodes", "success_rate", "return_mean", "return_std"}`` over ``episodes`` episodes.

    An episode succeeds when ``info["success"]`` is true at its last step; for an environment that
    does not report ``success`` the rate is ``None``.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    stats = run_episodes(policy, env, episodes, seed)
    returns = np.asarray(stats["returns"], dtype=np.float64)
    successes = stats["successes"]
    return {
        "episodes": episodes,
        "success_rate": None if None in successes else float(np.mean(successes)),
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
    }


def run_episodes(policy: Policy, env: gym.Env, episodes: int, seed: int) -> dict[str, list[Any]]:
    """Per-episode ``returns``, ``successes`` (bool or None) and ``reward_terms`` (sums per named term)."""
    space = env.action_space
    assert isinstance(space, gym.spaces.Box)
    low = np.asarray(space.low)
    high = np.asarray(space.high)
    returns: list[float] = []
    successes: list[bool | None] = []
    term_sums: list[dict[str, float]] = []
    for i in range(episodes):
        obs, info = env.reset(seed=seed + i)
        total = 0.0
        terms: dict[str, float] = {}
        while True:
            action = policy(np.asarray(obs, dtype=np.float32))
            obs, reward, terminated, truncated, info = env.step(to_env_action(action, low, high))
            total += float(reward)
            for name, value in info.get("reward_terms", {}).items():
                terms[name] = terms.get(name, 0.0) + float(value)
            if terminated or truncated:
                break
        returns.append(total)
        success = info.get("success")
        successes.append(None if success is None else bool(success))
        term_sums.append(terms)
    return {"returns": returns, "successes": successes, "reward_terms": term_sums}
