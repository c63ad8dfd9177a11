"""Simulated tasks; importing this package registers the s2r gymnasium environments."""

from __future__ import annotations

import os

# Headless rendering must be chosen before anything imports mujoco; EGL renders offscreen with no display.
os.environ.setdefault("MUJOCO_GL", "egl")

from typing import TYPE_CHECKING, Any

import gymnasium as gym

from s2r.core.lazy import lazy_exports
from sim.tasks import TASK_IDS, make_task

if TYPE_CHECKING:
    from sim.engines import make_engine
    from sim.env import SimEnv
    from sim.params import ParameterSet
    from sim.rollout import run_episodes
    from sim.tasks.spec import TaskSpec


def _make(env_id: str, **kwargs: Any) -> gym.Env:
    from sim.env import SimEnv

    return SimEnv(make_task(env_id), **kwargs)


def make_dclaw_turn_fixed(**kwargs: Any) -> gym.Env:
    """``s2r/DClawTurnFixed-v0``: valve starts at 0, target pi."""
    return _make("s2r/DClawTurnFixed-v0", **kwargs)


def make_dclaw_turn_random(**kwargs: Any) -> gym.Env:
    """``s2r/DClawTurnRandom-v0``: random valve start and target."""
    return _make("s2r/DClawTurnRandom-v0", **kwargs)


def make_dkitty_stand_fixed(**kwargs: Any) -> gym.Env:
    """``s2r/DKittyStandFixed-v0``: the quadruped rises from a crouch and stands."""
    return _make("s2r/DKittyStandFixed-v0", **kwargs)


def make_dkitty_walk_fixed(**kwargs: Any) -> gym.Env:
    """``s2r/DKittyWalkFixed-v0``: the quadruped walks to a target 2 m ahead."""
    return _make("s2r/DKittyWalkFixed-v0", **kwargs)


def resolve_env_id(task: str) -> str:
    """A short task name (``dclaw-turn``) or a gymnasium id, as a gymnasium id."""
    return TASK_IDS.get(task, task)


for _id, _fn in (
    ("s2r/DClawTurnFixed-v0", make_dclaw_turn_fixed),
    ("s2r/DClawTurnRandom-v0", make_dclaw_turn_random),
    ("s2r/DKittyStandFixed-v0", make_dkitty_stand_fixed),
    ("s2r/DKittyWalkFixed-v0", make_dkitty_walk_fixed),
):
    if _id not in gym.registry:
        gym.register(id=_id, entry_point=_fn, disable_env_checker=True)

__all__ = [
    "TASK_IDS",
    "ParameterSet",
    "SimEnv",
    "TaskSpec",
    "make_dclaw_turn_fixed",
    "make_dclaw_turn_random",
    "make_dkitty_stand_fixed",
    "make_dkitty_walk_fixed",
    "make_engine",
    "make_task",
    "resolve_env_id",
    "run_episodes",
]
_PUBLIC: dict[str, tuple[str, ...]] = {
    "env": ("SimEnv",),
    "engines": ("make_engine",),
    "params": ("ParameterSet",),
    "rollout": ("run_episodes",),
    "tasks.spec": ("TaskSpec",),
}
"""The public names not defined above, imported on first use."""
__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
