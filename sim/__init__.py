"""Simulated tasks; importing this package registers the s2r gymnasium environments."""

from __future__ import annotations

import os

# Headless rendering must be chosen before anything imports mujoco; EGL renders offscreen with no display.
os.environ.setdefault("MUJOCO_GL", "egl")

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import gymnasium as gym

from s2r.core.lazy import lazy_exports
from sim.tasks import GOAL_IDS, PIXEL_IDS, TASK_IDS, make_task
from sim.tasks.dclaw_turn import DClawTurn

if TYPE_CHECKING:
    from sim.engines import make_engine as make_engine
    from sim.env import SimEnv as SimEnv
    from sim.params import ParameterSet as ParameterSet
    from sim.rollout import run_episodes as run_episodes
    from sim.tasks.spec import TaskSpec as TaskSpec


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


def make_dclaw_turn_goal(reward_type: str = "sparse", **kwargs: Any) -> gym.Env:
    """``s2r/DClawTurnGoal-v0``: turn the valve to any commanded angle; a dict observation with a sparse (or
    ``reward_type="dense"``) goal reward, for Hindsight Experience Replay (:mod:`sim.goal_env`)."""
    from sim.goal_env import GoalEnv

    return GoalEnv(DClawTurn(variant="goal"), reward_type, **kwargs)


def make_dclaw_turn_pixels_fixed(**kwargs: Any) -> gym.Env:
    """``s2r/DClawTurnPixels-v0``: the fixed turn seen by the top camera, with no valve angle in the
    observation (:mod:`sim.pixels_env`)."""
    return _make_pixels("s2r/DClawTurnPixels-v0", **kwargs)


def make_dclaw_turn_pixels_random(**kwargs: Any) -> gym.Env:
    """``s2r/DClawTurnPixelsRandom-v0``: the random-start, random-target turn seen by the top camera."""
    return _make_pixels("s2r/DClawTurnPixelsRandom-v0", **kwargs)


def _make_pixels(env_id: str, **kwargs: Any) -> gym.Env:
    from sim.pixels_env import PixelsEnv

    return PixelsEnv(make_task(env_id), **kwargs)


def resolve_env_id(task: str) -> str:
    """A short task name (``dclaw-turn``) or a gymnasium id, as a gymnasium id."""
    return TASK_IDS.get(task, task)


def max_episode_steps(env_id: str, control_period: float | None = None) -> int:
    """Policy steps in an episode of one of our ids, at ``control_period`` (s; default the task's).

    The registered ``max_episode_steps`` is this at the task's own period. An env made with another
    ``control_period`` has as many steps as fit its episode duration, so ``gym.make`` needs this number as its
    ``max_episode_steps`` too, or gymnasium's ``TimeLimit`` would end a finer-period episode early.
    """
    spec = make_task(env_id).spec
    return (spec if control_period is None else spec.with_control_period(control_period)).episode_steps


def time_limit(env_id: str, kwargs: Mapping[str, Any]) -> int | None:
    """``gym.make``'s ``max_episode_steps`` for env kwargs that change the control period; ``None`` (the registered
    one) otherwise."""
    period = kwargs.get("control_period")
    if not env_id.startswith("s2r/") or period is None:
        return None
    return max_episode_steps(env_id, period)


# String entry points (and a time limit) make each env's EnvSpec serializable: gymnasium writes it as JSON and
# makes it again (Minari's recover_environment, a saved spec). SimEnv still ends its episodes itself, at the same
# step as the time limit.
for _id, _entry in (
    ("s2r/DClawTurnFixed-v0", "sim:make_dclaw_turn_fixed"),
    ("s2r/DClawTurnRandom-v0", "sim:make_dclaw_turn_random"),
    ("s2r/DKittyStandFixed-v0", "sim:make_dkitty_stand_fixed"),
    ("s2r/DKittyWalkFixed-v0", "sim:make_dkitty_walk_fixed"),
):
    if _id not in gym.registry:
        gym.register(id=_id, entry_point=_entry, max_episode_steps=max_episode_steps(_id),
                     disable_env_checker=True)
if GOAL_IDS[0] not in gym.registry:
    gym.register(id=GOAL_IDS[0], entry_point="sim:make_dclaw_turn_goal",
                 max_episode_steps=max_episode_steps(GOAL_IDS[0]), disable_env_checker=True)

for _id, _entry in zip(PIXEL_IDS, ("sim:make_dclaw_turn_pixels_fixed", "sim:make_dclaw_turn_pixels_random"),
                       strict=True):
    if _id not in gym.registry:
        gym.register(id=_id, entry_point=_entry, max_episode_steps=max_episode_steps(_id),
                     disable_env_checker=True)

_PUBLIC: dict[str, tuple[str, ...]] = {
    "env": ("SimEnv",),
    "engines": ("make_engine",),
    "params": ("ParameterSet",),
    "rollout": ("run_episodes",),
    "tasks.spec": ("TaskSpec",),
}
"""The public names not defined above, imported on first use."""
__getattr__, __dir__, __all__ = lazy_exports(__name__, _PUBLIC, defined=(
    "GOAL_IDS",
    "PIXEL_IDS",
    "TASK_IDS",
    "make_dclaw_turn_fixed",
    "make_dclaw_turn_goal",
    "make_dclaw_turn_pixels_fixed",
    "make_dclaw_turn_pixels_random",
    "make_dclaw_turn_random",
    "make_dkitty_stand_fixed",
    "make_dkitty_walk_fixed",
    "make_task",
    "max_episode_steps",
    "resolve_env_id",
    "time_limit",
))
