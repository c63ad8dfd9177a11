"""Exploration noise of the deterministic actors (TD3, DDPG), added to ``tanh(mu(s))`` in normalized action units.

- ``gaussian``: independent ``N(0, sigma^2)`` per step and action dimension (Fujimoto et al. 2018); no state.
- ``ou``: an Ornstein-Uhlenbeck process (Lillicrap et al. 2016, after Uhlenbeck & Ornstein 1930), temporally
  correlated noise for inertial systems. Per environment step, the Euler-Maruyama step
  ``x <- x + theta * (0 - x) * dt + sigma * sqrt(dt) * N(0, 1)``, the action ``clip(tanh(mu(s)) + x, -1, 1)``.
  ``x`` starts at 0 with every episode (:meth:`OrnsteinUhlenbeckNoise.reset`). Its stationary standard deviation
  is ``sigma * sqrt(dt / (theta * dt * (2 - theta * dt)))`` (about ``sigma / sqrt(2 * theta)`` for small
  ``theta * dt``: 1.90 ``sigma`` at the paper's ``theta = 0.15``, ``dt = 1``), and successive steps correlate by
  ``1 - theta * dt``.

Both draw from the learner's generator, so a run's exploration is fixed by its seed. The config fields are
``exploration``, ``exploration_noise`` (``sigma``), ``ou_theta`` and ``ou_dt`` (:class:`policies.config.TrainConfig`).
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch
from torch import Tensor

from policies.config import EXPLORATIONS, Exploration


class ExplorationNoise(Protocol):
    """Noise added to a deterministic actor's action while it explores."""

    def add_(self, a: Tensor) -> Tensor:
        """``a`` (normalized actions ``[N, act_dim]``) plus one step of noise, in place; not clipped."""
        ...

    def reset(self) -> None:
        """A new episode begins."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The process's state between steps (empty when it has none)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        ...


class GaussianNoise:
    """Independent ``N(0, std^2)`` noise per step (normalized action units)."""

    def __init__(self, std: float, generator: torch.Generator) -> None:
        if std < 0:
            raise ValueError(f"exploration noise std must be >= 0, got {std}")
        self.std = float(std)
        self.generator = generator

    def add_(self, a: Tensor) -> Tensor:
        noise = torch.randn(a.shape, generator=self.generator, dtype=a.dtype, device=a.device)
        return a.add_(noise, alpha=self.std)

    def reset(self) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class OrnsteinUhlenbeckNoise:
    """Ornstein-Uhlenbeck noise around 0 (see the module docstring): ``theta`` per unit of process time, ``sigma``
    in normalized action units per square root of process time, ``dt`` process time per step."""

    def __init__(self, theta: float, sigma: float, dt: float, generator: torch.Generator) -> None:
        if sigma < 0:
            raise ValueError(f"Ornstein-Uhlenbeck sigma must be >= 0, got {sigma}")
        if theta <= 0 or dt <= 0 or theta * dt > 1:
            raise ValueError(f"Ornstein-Uhlenbeck theta and dt must be positive with theta * dt <= 1 (a step reverts "
                             f"at most all the way to 0), got theta {theta}, dt {dt}")
        self.theta = float(theta)
        self.sigma = float(sigma)
        self.dt = float(dt)
        self.generator = generator
        self.x: Tensor | None = None
        """The process's value (``None``: 0, at an episode's start)."""

    def stationary_std(self) -> float:
        """Standard deviation of ``x`` after many steps (normalized action units)."""
        k = self.theta * self.dt
        return self.sigma * math.sqrt(self.dt / (k * (2.0 - k)))

    def add_(self, a: Tensor) -> Tensor:
        step = torch.randn(a.shape, generator=self.generator, dtype=a.dtype, device=a.device)
        step.mul_(self.sigma * math.sqrt(self.dt))
        x = self.x
        if x is not None:
            if x.shape != a.shape:
                raise ValueError(f"Ornstein-Uhlenbeck noise of shape {tuple(x.shape)} for actions of shape "
                                 f"{tuple(a.shape)}: call reset() when the number of environments changes")
            step.add_(x.to(a), alpha=1.0 - self.theta * self.dt)
        self.x = step
        return a.add_(step)

    def reset(self) -> None:
        self.x = None

    def state_dict(self) -> dict[str, Any]:
        return {"ou_x": None if self.x is None else self.x.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        x = state["ou_x"]
        if x is not None and not isinstance(x, Tensor):
            raise ValueError(f"Ornstein-Uhlenbeck state: expected a tensor or None, got {type(x).__name__}")
        self.x = None if x is None else x.clone()


def make_exploration(kind: Exploration, sigma: float, theta: float, dt: float,
                     generator: torch.Generator) -> ExplorationNoise:
    """The exploration noise ``kind`` of scale ``sigma`` (``theta`` and ``dt`` for ``ou``)."""
    if kind == "gaussian":
        return GaussianNoise(sigma, generator)
    if kind == "ou":
        return OrnsteinUhlenbeckNoise(theta, sigma, dt, generator)
    raise ValueError(f"exploration must be one of {EXPLORATIONS}, got {kind!r}")
