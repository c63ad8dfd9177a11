"""Deterministic episodes of a policy (any callable obs -> normalized action) on a gymnasium environment.

Below the learners and the randomization: ``s2r eval``, training's evaluation, the export's check and the
robustness sweep all run episodes through :func:`run_episodes`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

Policy = Callable[[np.ndarray], np.ndarray]
"""float32 observation (one or a batch) -> normalized action(s) in [-1, 1]."""


def to_env_action(action: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Map a normalized action in [-1, 1] onto the Box ``[low, high]`` (identity for [-1, 1] boxes)."""
    a = np.clip(action, -1.0, 1.0)
    return (low + (a + 1.0) * 0.5 * (high - low)).astype(low.dtype, copy=False)


def run_episodes(policy: Policy, env: gym.Env, episodes: int, seed: int) -> dict[str, list[Any]]:
    """Per-episode ``returns``, ``successes`` (bool or None), ``terminated`` (whether the task ended the episode
    before its time limit: a walk's fall) and ``reward_terms`` (sums per named term)."""
    space = env.action_space
    assert isinstance(space, gym.spaces.Box)
    low = np.asarray(space.low)
    high = np.asarray(space.high)
    returns: list[float] = []
    successes: list[bool | None] = []
    ended: list[bool] = []
    term_sums: list[dict[str, float]] = []
    for i in range(episodes):
        obs, info = env.reset(seed=seed + i)
        total = 0.0
        terms: dict[str, float] = {}
        while True:
            # A dict observation (a camera env's) goes to the policy as it is; a flat one as float32.
            given: Any = obs if isinstance(obs, dict) else np.asarray(obs, dtype=np.float32)
            action = policy(given)
            obs, reward, terminated, truncated, info = env.step(to_env_action(action, low, high))
            total += float(reward)
            for name, value in info.get("reward_terms", {}).items():
                terms[name] = terms.get(name, 0.0) + float(value)
            if terminated or truncated:
                break
        returns.append(total)
        success = info.get("success")
        successes.append(None if success is None else bool(success))
        ended.append(bool(terminated))
        term_sums.append(terms)
    return {"returns": returns, "successes": successes, "terminated": ended, "reward_terms": term_sums}
