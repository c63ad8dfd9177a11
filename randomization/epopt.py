"""EPOpt-epsilon hard-model mining for an off-policy learner.

EPOpt (Rajeswaran et al., 2017) trains on the worst epsilon-fraction of sampled models: per iteration it
draws N models from the source distribution, rolls the current policy out once in each, and hands the
policy-gradient step only the trajectories whose return lies in the lowest epsilon-quantile (with
epsilon = 1, i.e. every trajectory, for the first iterations, so the policy first learns the task at all).
That optimizes the conditional value at risk of the return over models instead of its mean.

How the selection enters SAC, and why not the obvious way. An on-policy learner throws each batch away
after its update, so discarding the easy 90 % costs nothing that would have been kept. SAC learns from a
replay buffer: filtering what enters it would throw away 90 % of the environment steps (the step budget
is what we compare methods at) and leave the critic ignorant of the easy models it still acts in. So here
the selection decides *which models the next episodes are collected in*:

* **probe** phase: N episodes, one in each of N fresh draws from the distribution, with the current
  (exploring) policy. Their transitions enter the replay buffer like any others, and their returns rank
  the N models.
* **focus** phase: N more episodes, in models drawn uniformly from the worst ``ceil(epsilon * N)`` of the
  probe (all N during the warm-up iterations).

Half of all experience therefore comes from the current policy's hard tail, and the replay buffer, the
critic's targets and the actor's loss are weighted towards it, while no step is wasted. The ranking is
redone with the current policy every iteration, so the hard set follows the policy as it improves.
``benchmarks/robustness.py`` compares this with plain randomization and nominal training at an equal step
budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from randomization.distributions import ParameterDistribution
from randomization.wrapper import RandomizedEnv, param_rng
from s2r.core.errors import ParameterError


@dataclass(frozen=True)
class EpoptConfig:
    """The hard-model mining schedule."""

    eps: float
    """Fraction of the probed models kept as the hard set, in (0, 1]."""
    models: int
    """Models probed per iteration (N), one episode each; the focus phase runs as many episodes."""
    warmup_iterations: int
    """Iterations at the start that keep every probed model (epsilon = 1)."""

    def __post_init__(self) -> None:
        if not (0.0 < self.eps <= 1.0):
            raise ParameterError("eps", f"must be in (0, 1], got {self.eps}", "epopt")
        if self.models < 1:
            raise ParameterError("models", f"must be at least 1, got {self.models}", "epopt")
        if self.warmup_iterations < 0:
            raise ParameterError("warmup_iterations", f"must be >= 0 iterations, got {self.warmup_iterations}", "epopt")


def worst_fraction(returns: Sequence[float], eps: float) -> list[int]:
    """Indices of the ``ceil(eps * n)`` lowest returns (at least one), lowest first; ties keep their order."""
    n = len(returns)
    if n == 0:
        return []
    k = max(1, min(n, math.ceil(eps * n - 1e-9)))
    order = sorted(range(n), key=lambda i: (returns[i], i))
    return order[:k]


class EpoptSchedule:
    """Which model the next episode runs in; fed the return of every finished probe episode.

    Not tied to an environment: :class:`EpoptEnv` drives it, tests drive it directly.
    """

    def __init__(self, config: EpoptConfig, distribution: ParameterDistribution, rng: np.random.Generator) -> None:
        self.config = config
        self.distribution = distribution
        self.rng = rng
        self.iteration = 0
        """Iterations started (the first is 1)."""
        self.phase = "probe"
        self._probes: list[dict[str, float]] = []
        self._probe_returns: list[float | None] = []
        self._next_probe = 0
        self._hard: list[dict[str, float]] = []
        self._focus_left = 0
        self.last: dict[str, float] = {}
        """Summary of the last finished ranking: probe return mean, hard-set return mean, threshold, eps."""
        self._start_iteration()

    @property
    def eps_now(self) -> float:
        """Epsilon of the current iteration (1 during the warm-up)."""
        return 1.0 if self.iteration <= self.config.warmup_iterations else self.config.eps

    def _start_iteration(self) -> None:
        self.iteration += 1
        self.phase = "probe"
        self._probes = [self.distribution.sample(self.rng) for _ in range(self.config.models)]
        self._probe_returns = [None] * self.config.models
        self._next_probe = 0

    def next_model(self) -> tuple[dict[str, float], int | None]:
        """The next episode's parameter values, and its probe index (``None`` for a focus episode)."""
        if self.phase == "probe":
            if self._next_probe < len(self._probes):
                k = self._next_probe
                self._next_probe += 1
                return dict(self._probes[k]), k
            # Every probe has been handed out but some return is still missing (an episode cut short):
            # rank what came back rather than stall.
            self._rank()
        if self._focus_left <= 0:
            self._start_iteration()
            return self.next_model()
        self._focus_left -= 1
        pick = self._hard[int(self.rng.integers(len(self._hard)))]
        return dict(pick), None

    def report(self, probe: int, episode_return: float) -> None:
        """The return of probe episode ``probe`` of the current iteration."""
        if self.phase != "probe" or not 0 <= probe < len(self._probe_returns):
            return  # a probe of an iteration already ranked
        self._probe_returns[probe] = float(episode_return)
        if all(r is not None for r in self._probe_returns):
            self._rank()

    def _rank(self) -> None:
        done = [(m, r) for m, r in zip(self._probes, self._probe_returns, strict=True) if r is not None]
        if not done:
            done = [(m, -math.inf) for m in self._probes]
        returns = [r for _, r in done]
        eps = self.eps_now
        worst = worst_fraction(returns, eps)
        self._hard = [done[i][0] for i in worst]
        hard_returns = [returns[i] for i in worst]
        self.last = {
            "iteration": float(self.iteration),
            "eps": eps,
            "probe_return_mean": float(np.mean(returns)),
            "hard_return_mean": float(np.mean(hard_returns)),
            "threshold_return": float(max(hard_returns)),
            "hard_models": float(len(worst)),
        }
        self.phase = "focus"
        self._focus_left = self.config.models


class EpoptEnv(RandomizedEnv):
    """:class:`RandomizedEnv` whose per-episode parameters follow an :class:`EpoptSchedule`.

    The episode's return is summed here and reported to the schedule at the next reset, so the trainer
    needs no change beyond wrapping its environment. ``info["epopt_probe"]`` at reset says whether the new
    episode is a probe.
    """

    def __init__(self, env: gym.Env, distribution: ParameterDistribution, config: EpoptConfig,
                 seed: int | None = None) -> None:
        super().__init__(env, distribution, seed)
        self.schedule = EpoptSchedule(config, distribution, param_rng(seed))
        self._probe: int | None = None
        self._return = 0.0
        self._stepped = False

    def step(self, action: Any) -> tuple[np.ndarray, Any, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._return += float(reward)
        self._stepped = True
        return obs, reward, terminated, truncated, info

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if self._stepped and self._probe is not None:
            self.schedule.report(self._probe, self._return)
        if seed is not None:
            self.schedule.rng = param_rng(seed)
        values, self._probe = self.schedule.next_model()
        self.apply(values)
        self._return, self._stepped = 0.0, False
        obs, info = self.env.reset(seed=seed, options=options)
        return obs, {**info, "params": values, "epopt_probe": self._probe is not None}
