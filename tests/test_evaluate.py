"""Deterministic evaluation counts what it reports: successes, returns and the episodes the task ended early."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from policies.evaluate import evaluate_env


class _FallsOnOddSeeds(gym.Env[np.ndarray, np.ndarray]):
    """Three steps of reward 1; an odd seed's episode is ended by the task at its second step (a fall), and only an
    episode that runs to its time limit succeeds."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), dtype=np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._falls = seed is not None and seed % 2 == 1
        self._steps = 0
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self._steps += 1
        terminated = self._falls and self._steps == 2
        truncated = not terminated and self._steps == 3
        return np.zeros(1, dtype=np.float32), 1.0, terminated, truncated, {"success": truncated}


def test_evaluation_counts_the_episodes_the_task_ended_before_the_time_limit() -> None:
    result = evaluate_env(lambda obs: np.zeros(1), _FallsOnOddSeeds(), episodes=5, seed=10)  # seeds 10..14
    assert result["terminated"] == 2  # seeds 11 and 13
    assert result["success_rate"] == pytest.approx(3 / 5)
    assert result["return_mean"] == pytest.approx((3 * 3 + 2 * 2) / 5)
