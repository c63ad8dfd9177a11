"""Soft Actor-Critic, TD3 and DDPG on one off-policy core, and CrossQ; training, evaluation and checkpoints.

Modules: :mod:`policies.sac` (``sac_update``; :mod:`policies.sac_reference`, the same update with autograd, is its
tested reference), :mod:`policies.crossq`, :mod:`policies.td3` (``td3_update``, DDPG's too),
:mod:`policies.exploration` (TD3's and DDPG's Gaussian or Ornstein-Uhlenbeck noise), :mod:`policies.networks`
(actor, critic ensemble, hand-written backward passes, ``PolicyModule``), :mod:`policies.replay` (buffer,
``Batch``), :mod:`policies.her` (Hindsight Experience Replay), :mod:`policies.normalizer` (running observation
statistics), :mod:`policies.offpolicy` (learner interface, fused Adam), :mod:`policies.config` (``TrainConfig``),
:mod:`policies.train` (the loop) and the parts it calls: :mod:`policies.agent` (learner, policy, normalization,
checkpoints), :mod:`policies.observations`, :mod:`policies.collector` (environments, stepping, evaluation),
:mod:`policies.metrics` and :mod:`policies.rundir` (the run directory); :mod:`policies.evaluate` (``evaluate``),
:mod:`policies.checkpoint` (``load_checkpoint``, ``policy_from_checkpoint``), :mod:`s2r.commands.policies` (``s2r
train``, ``s2r eval``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from s2r.core.lazy import lazy_exports

if TYPE_CHECKING:
    from policies.checkpoint import Checkpoint as Checkpoint
    from policies.checkpoint import load_checkpoint as load_checkpoint
    from policies.checkpoint import policy_from_checkpoint as policy_from_checkpoint
    from policies.checkpoint import resolve_checkpoint_path as resolve_checkpoint_path
    from policies.config import ALGOS as ALGOS
    from policies.config import TrainConfig as TrainConfig
    from policies.config import config_from_mapping as config_from_mapping
    from policies.config import load_config_file as load_config_file
    from policies.config import parse_overrides as parse_overrides
    from policies.dataset import save_dataset as save_dataset
    from policies.dataset import trajlog_to_dataset as trajlog_to_dataset
    from policies.envs import make_env as make_env
    from policies.envs import resolve_task as resolve_task
    from policies.finetune_config import FinetuneConfig as FinetuneConfig
    from policies.train import Trainer as Trainer

_PUBLIC: dict[str, tuple[str, ...]] = {
    "config": ("ALGOS", "TrainConfig", "config_from_mapping", "load_config_file", "parse_overrides"),
    "finetune_config": ("FinetuneConfig",),
    "dataset": ("save_dataset", "trajlog_to_dataset"),
    "envs": ("make_env", "resolve_task"),
    "checkpoint": ("Checkpoint", "load_checkpoint", "policy_from_checkpoint", "resolve_checkpoint_path"),
    "train": ("Trainer",),
}
"""Where each public name lives, imported on first use: ``import policies`` loads no torch (only ``Checkpoint``, the
checkpoint functions and ``Trainer`` need it). Training itself: :func:`s2r.api.train`."""
__getattr__, __dir__, __all__ = lazy_exports(__name__, _PUBLIC)
