"""The training run's observation normalization, kept in one place: running statistics, the learner's view of an
observation, normalized replay batches and the deployed policy's normalizer module."""

from __future__ import annotations

import math

import numpy as np
import torch

from policies.networks import Actor, ObsNormalizer, PolicyModule
from policies.normalizer import DEFAULT_NORM_EPS, RunningMeanStd
from policies.replay import Batch, Replay

NORM_BATCH = 32
"""Observations folded into the running statistics at a time (per-step numpy calls cost more)."""


class ObservationNormalization:
    """Running statistics of the observations seen, and normalization with them (the identity when ``enabled``
    is false: the statistics are still kept, and checkpointed, but never applied)."""

    def __init__(self, obs_dim: int, enabled: bool, clip: float, device: torch.device) -> None:
        self.obs_dim = obs_dim
        self.enabled = enabled
        self.norm_clip = clip
        """The configured clip (±standard deviations); :attr:`clip` is the one in force."""
        self.device = device
        self.stats = RunningMeanStd.zeros(obs_dim)
        self._pending = np.zeros((NORM_BATCH, obs_dim))
        self._n_pending = 0
        self._refresh()

    def _refresh(self) -> None:
        """Recompute the float32 copies (numpy for single observations, torch for batches) from the statistics."""
        if self.enabled:
            inv_std = 1.0 / np.sqrt(self.stats.var + DEFAULT_NORM_EPS)
            mean = self.stats.mean
            self.clip = self.norm_clip
        else:
            inv_std = np.ones(self.obs_dim)
            mean = np.zeros(self.obs_dim)
            self.clip = math.inf
        self._np_mean = mean.astype(np.float32)
        self._np_inv_std = inv_std.astype(np.float32)
        self._t_mean = torch.from_numpy(self._np_mean.copy()).to(self.device)
        self._t_inv_std = torch.from_numpy(self._np_inv_std.copy()).to(self.device)

    def observe(self, obs: np.ndarray) -> None:
        """Queue an observation for the running statistics, folded in every ``NORM_BATCH`` observations."""
        if self.enabled:
            self._pending[self._n_pending] = obs
            self._n_pending += 1
            if self._n_pending == NORM_BATCH:
                self.flush()

    def flush(self) -> None:
        """Fold the queued observations into the statistics now."""
        if self._n_pending:
            self.stats.update(self._pending[: self._n_pending])
            self._n_pending = 0
            self._refresh()

    def load(self, stats: RunningMeanStd) -> None:
        """Replace the statistics (a checkpoint's)."""
        self.stats = stats
        self._refresh()

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        """The learner's view of a raw observation (float32)."""
        out = (np.asarray(obs, dtype=np.float32) - self._np_mean) * self._np_inv_std
        return np.clip(out, -self.clip, self.clip, out=out)

    def sample(self, buffer: Replay, n: int) -> Batch:
        """``n`` transitions of ``buffer``, normalized with the current statistics."""
        return buffer.sample(n, self._t_mean, self._t_inv_std, self.clip)

    def policy_module(self, actor: Actor) -> PolicyModule:
        """Normalizer (current statistics) + ``actor``, the deterministic policy as deployed."""
        if self.enabled:
            norm = ObsNormalizer(torch.from_numpy(self.stats.mean), torch.from_numpy(self.stats.var), self.norm_clip,
                                 DEFAULT_NORM_EPS)
        else:
            norm = ObsNormalizer(torch.zeros(self.obs_dim), torch.ones(self.obs_dim), math.inf, 0.0)
        return PolicyModule(norm.to(self.device), actor).eval()
