"""Checkpoints: what a trained policy is (for evaluation, rendering and ONNX export) and how to resume.

A checkpoint file is a ``torch.save`` of plain data — dicts, lists, numbers, strings and tensors —
so it loads with ``torch.load(weights_only=True)``. Keys (format ``s2r-offpolicy``, version 1):

- ``algo``, ``env_id``, ``task``, ``engine``, ``step``, ``config`` (the resolved training config);
- ``actor``: ``state_dict`` plus the architecture ``obs_dim``, ``act_dim``, ``hidden``,
  ``activation``, ``stochastic`` (rebuild with :class:`policies.networks.Actor`);
- ``obs_norm``: ``enabled``, ``mean``, ``var`` (float64), ``count``, ``clip``, ``eps``;
- ``action_space``: ``low``, ``high`` (float64; the policy's [-1, 1] maps linearly onto them);
- ``eval``: the evaluation that triggered the save, or ``None``;
- ``training``: learner state for ``--resume`` and ``s2r finetune`` (critics, targets, optimizers,
  temperature, RNG), in ``last.pt`` and ``best.pt`` (``best.pt`` files of older runs hold none).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from policies.networks import ACTIVATIONS, Activation, Actor, ObsNormalizer, PolicyModule
from policies.offpolicy import load_module_state
from s2r.core.atomicio import atomic_path
from s2r.core.errors import UserError

CHECKPOINT_FORMAT = "s2r-offpolicy"
CHECKPOINT_VERSION = 1
BEST_NAME = "best.pt"
"""The checkpoint with the best evaluation (success rate, then return) in a run directory."""
LAST_NAME = "last.pt"
"""The most recent checkpoint in a run directory, with the training state for ``--resume``."""
REPLAY_NAME = "replay.pt"
"""The replay buffer saved next to ``last.pt``."""


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint (see the module docstring for the file layout)."""

    algo: str
    """``crossq``, ``sac``, ``td3`` or ``ddpg``."""
    env_id: str
    """Gymnasium id trained on."""
    task: str
    """Task as given on the command line (short name or id)."""
    engine: str
    """Physics engine trained on (for ``s2r/`` ids)."""
    step: int
    """Environment steps trained when saved."""
    config: dict[str, Any]
    """The resolved training config as plain data."""
    obs_dim: int
    act_dim: int
    hidden: tuple[int, ...]
    activation: Activation
    stochastic: bool
    """Actor architecture: stochastic (SAC, CrossQ: outputs mean and log-std) or deterministic (TD3, DDPG)."""
    actor_state: dict[str, Tensor]
    """Actor ``state_dict``."""
    obs_norm: bool
    """Whether observations are normalized (when False the normalizer below is the identity)."""
    obs_mean: np.ndarray
    """Running mean of observations (float64, observation units)."""
    obs_var: np.ndarray
    """Running variance of observations (float64, observation units squared)."""
    obs_count: float
    """Observations folded into the statistics."""
    obs_clip: float
    """Clip of normalized observations (standard deviations)."""
    obs_eps: float
    """Added to the variance before the square root."""
    action_low: np.ndarray
    action_high: np.ndarray
    """The environment's action bounds; normalized action ``a`` maps to ``low + (a + 1) / 2 * (high - low)``."""
    eval: dict[str, Any] | None = None
    """The evaluation that triggered this save."""
    training: dict[str, Any] | None = None
    """Learner and loop state for ``--resume``."""

    def build_actor(self) -> Actor:
        """The actor with its weights loaded (CPU, float32)."""
        actor = Actor(self.obs_dim, self.act_dim, self.hidden, self.activation, self.stochastic)
        load_module_state(actor, self.actor_state, "actor")
        return actor

    def build_normalizer(self) -> ObsNormalizer:
        """The observation normalizer as a module (identity when normalization was off)."""
        if not self.obs_norm:
            return ObsNormalizer(torch.zeros(self.obs_dim), torch.ones(self.obs_dim), clip=float("inf"), eps=0.0)
        return ObsNormalizer(
            torch.from_numpy(self.obs_mean), torch.from_numpy(self.obs_var), self.obs_clip, self.obs_eps
        )

    def policy_module(self) -> PolicyModule:
        """Raw observation -> deterministic normalized action, in eval mode."""
        return PolicyModule(self.build_normalizer(), self.build_actor()).eval()

    def to_dict(self) -> dict[str, Any]:
        """The plain-data form that :func:`save_checkpoint` writes."""
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "algo": self.algo,
            "env_id": self.env_id,
            "task": self.task,
            "engine": self.engine,
            "step": int(self.step),
            "config": self.config,
            "actor": {
                "state_dict": {k: v.detach().cpu().clone() for k, v in self.actor_state.items()},
                "obs_dim": self.obs_dim,
                "act_dim": self.act_dim,
                "hidden": list(self.hidden),
                "activation": self.activation,
                "stochastic": self.stochastic,
            },
            "obs_norm": {
                "enabled": self.obs_norm,
                "mean": torch.from_numpy(np.asarray(self.obs_mean, dtype=np.float64).copy()),
                "var": torch.from_numpy(np.asarray(self.obs_var, dtype=np.float64).copy()),
                "count": float(self.obs_count),
                "clip": float(self.obs_clip),
                "eps": float(self.obs_eps),
            },
            "action_space": {
                "low": torch.from_numpy(np.asarray(self.action_low, dtype=np.float64).copy()),
                "high": torch.from_numpy(np.asarray(self.action_high, dtype=np.float64).copy()),
            },
            "eval": self.eval,
            "training": self.training,
        }


def _get(d: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(d, dict) or key not in d:
        raise ValueError(f"missing {where}{key!r}")
    value = d[key]
    if not isinstance(value, kind) or (kind in (int, float) and isinstance(value, bool)):
        raise ValueError(f"{where}{key!r} has type {type(value).__name__}")
    return value


def checkpoint_from_dict(data: Any) -> Checkpoint:
    """Validate the loaded plain data and build the :class:`Checkpoint` (``ValueError`` when malformed)."""
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"not an s2r policy checkpoint (no format marker {CHECKPOINT_FORMAT!r})")
    if data.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"checkpoint version {data.get('version')!r}; this s2r reads version {CHECKPOINT_VERSION}")
    actor = _get(data, "actor", dict, "")
    norm = _get(data, "obs_norm", dict, "")
    space = _get(data, "action_space", dict, "")
    obs_dim = _get(actor, "obs_dim", int, "actor.")
    act_dim = _get(actor, "act_dim", int, "actor.")
    hidden = tuple(_get(actor, "hidden", (list, tuple), "actor."))
    activation = _get(actor, "activation", str, "actor.")
    if activation not in ACTIVATIONS:
        raise ValueError(f"actor activation {activation!r} is not one of {ACTIVATIONS}")
    if not all(isinstance(h, int) and h > 0 for h in hidden) or not hidden:
        raise ValueError(f"actor hidden sizes {list(hidden)} are not positive ints")
    mean = _get(norm, "mean", Tensor, "obs_norm.").double().numpy()
    var = _get(norm, "var", Tensor, "obs_norm.").double().numpy()
    low = _get(space, "low", Tensor, "action_space.").double().numpy()
    high = _get(space, "high", Tensor, "action_space.").double().numpy()
    if mean.shape != (obs_dim,) or var.shape != (obs_dim,):
        raise ValueError(f"observation statistics have shape {mean.shape}/{var.shape}, the actor expects ({obs_dim},)")
    if low.shape != (act_dim,) or high.shape != (act_dim,):
        raise ValueError(f"action bounds have shape {low.shape}/{high.shape}, the actor expects ({act_dim},)")
    ckpt = Checkpoint(
        algo=_get(data, "algo", str, ""),
        env_id=_get(data, "env_id", str, ""),
        task=_get(data, "task", str, ""),
        engine=_get(data, "engine", str, ""),
        step=_get(data, "step", int, ""),
        config=_get(data, "config", dict, ""),
        obs_dim=obs_dim,
        act_dim=act_dim,
        hidden=hidden,
        activation=activation,
        stochastic=bool(_get(actor, "stochastic", bool, "actor.")),
        actor_state=_get(actor, "state_dict", dict, "actor."),
        obs_norm=bool(_get(norm, "enabled", bool, "obs_norm.")),
        obs_mean=mean,
        obs_var=var,
        obs_count=float(_get(norm, "count", (int, float), "obs_norm.")),
        obs_clip=float(_get(norm, "clip", (int, float), "obs_norm.")),
        obs_eps=float(_get(norm, "eps", (int, float), "obs_norm.")),
        action_low=low,
        action_high=high,
        eval=data.get("eval"),
        training=data.get("training"),
    )
    ckpt.build_actor()  # the weights must fit the declared architecture
    return ckpt


def resolve_checkpoint_path(path: str | os.PathLike[str]) -> Path:
    """A checkpoint file itself, or a run directory's ``best.pt`` (else ``last.pt``)."""
    p = Path(path)
    if p.is_dir():
        for name in (BEST_NAME, LAST_NAME):
            if (p / name).is_file():
                return p / name
        raise UserError(f"run directory {str(p)!r} holds no checkpoint ({BEST_NAME} or {LAST_NAME})")
    if not p.exists():
        raise UserError(f"no checkpoint or run directory at {str(p)!r}")
    return p


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Load and validate a checkpoint file (or a run directory's best/last); bad files raise :class:`UserError`."""
    p = resolve_checkpoint_path(path)
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load fails in many ways on a damaged file (IndexError, UnpicklingError, ...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"cannot read checkpoint {str(p)!r}: the file is corrupted or not a checkpoint ({first})"
        ) from exc
    try:
        return checkpoint_from_dict(data)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise UserError(f"checkpoint {str(p)!r} is not usable: {exc}") from exc


def save_checkpoint(path: str | os.PathLike[str], ckpt: Checkpoint) -> None:
    """Write ``ckpt`` atomically (temporary file, then rename)."""
    save_atomic(ckpt.to_dict(), Path(path))


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` of ``obj`` to ``path`` atomically (:func:`s2r.core.atomicio.atomic_path`)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def policy_from_checkpoint(ckpt: Checkpoint, device: str = "cpu") -> Callable[[np.ndarray], np.ndarray]:
    """The deterministic policy (``tanh`` of the mean) of ``ckpt``.

    The returned function maps a float32 observation ``[obs_dim]`` or a batch ``[N, obs_dim]`` to
    normalized actions in [-1, 1] of the same leading shape. Commands load a policy file through
    :func:`s2r.policy_files.load_policy`.
    """
    module = ckpt.policy_module().to(device)
    obs_dim = ckpt.obs_dim

    def policy(obs: np.ndarray) -> np.ndarray:
        x = np.asarray(obs, dtype=np.float32)
        if x.shape[-1:] != (obs_dim,) or x.ndim not in (1, 2):
            raise ValueError(f"policy expects observations of shape ({obs_dim},) or (N, {obs_dim}), got {x.shape}")
        with torch.inference_mode():
            t = torch.tensor(x, device=device)
            out = module(t.unsqueeze(0) if x.ndim == 1 else t)
        a = out.cpu().numpy()
        return a[0] if x.ndim == 1 else a

    return policy
