"""Deterministic evaluation of a policy (any callable obs -> normalized action) on an environment."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from policies.envs import make_env
from sim.rollout import Policy, run_episodes


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
    """``{"episodes", "success_rate", "return_mean", "return_std", "terminated"}`` over ``episodes`` episodes.

    An episode succeeds when ``info["success"]`` is true at its last step; for an environment that
    does not report ``success`` the rate is ``None``. ``terminated`` counts the episodes the task ended before
    their time limit (a walk's falls past the tilt bound).
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
        "terminated": int(sum(stats["terminated"])),
    }
