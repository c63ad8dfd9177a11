"""Running observation statistics (parallel Welford / Chan et al.) and the pure normalization function."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_NORM_EPS = 1e-8
"""Added to the variance before the square root (observation units squared)."""
DEFAULT_NORM_CLIP = 10.0
"""Normalized observations are clipped to ±this many standard deviations."""


def normalize(obs: np.ndarray, mean: np.ndarray, var: np.ndarray, clip: float, eps: float) -> np.ndarray:
    """``clip((obs - mean) / sqrt(var + eps), -clip, clip)`` as float32."""
    out = (np.asarray(obs, dtype=np.float64) - mean) / np.sqrt(var + eps)
    return np.clip(out, -clip, clip).astype(np.float32)


@dataclass
class RunningMeanStd:
    """Mean, variance and count of every observation seen so far (float64, per dimension)."""

    mean: np.ndarray
    """Per-dimension mean (observation units)."""
    var: np.ndarray
    """Per-dimension population variance (observation units squared)."""
    count: float
    """Number of observations folded in (0 before the first)."""

    @classmethod
    def zeros(cls, dim: int) -> RunningMeanStd:
        """No data yet: mean 0, variance 1 (normalization is the identity until data arrives)."""
        return cls(np.zeros(dim), np.ones(dim), 0.0)

    def update(self, batch: np.ndarray) -> None:
        """Fold in a batch ``[n, dim]`` (or one observation ``[dim]``)."""
        x = np.asarray(batch, dtype=np.float64).reshape(-1, self.mean.shape[0])
        n = x.shape[0]
        if n == 0:
            return
        b_mean = x.mean(axis=0)
        b_var = x.var(axis=0)
        if self.count == 0:
            self.mean, self.var, self.count = b_mean, b_var, float(n)
            return
        total = self.count + n
        delta = b_mean - self.mean
        m2 = self.var * self.count + b_var * n + delta**2 * self.count * n / total
        self.mean = self.mean + delta * n / total
        self.var = m2 / total
        self.count = total
