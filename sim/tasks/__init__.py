"""Task modules (spec, observation, reward terms, success) and the registry of task ids."""

from __future__ import annotations

from sim.tasks.base import Task
from sim.tasks.dclaw_turn import DClawTurn
from sim.tasks.dkitty import DKittyStand, DKittyWalk

TASK_IDS = {
    "dclaw-turn": "s2r/DClawTurnFixed-v0",
    "dclaw-turn-random": "s2r/DClawTurnRandom-v0",
    "dkitty-stand": "s2r/DKittyStandFixed-v0",
    "dkitty-walk": "s2r/DKittyWalkFixed-v0",
}
"""Short task names used on the command line, mapped to their gymnasium ids."""
GOAL_IDS = ("s2r/DClawTurnGoal-v0",)
"""Goal-conditioned ids (dict observations, :mod:`sim.goal_env`), outside the flat tasks above."""
PIXEL_IDS = {"s2r/DClawTurnPixels-v0": "s2r/DClawTurnFixed-v0",
             "s2r/DClawTurnPixelsRandom-v0": "s2r/DClawTurnRandom-v0"}
"""Camera ids (dict observations with an image and no valve angle, :mod:`sim.pixels_env`), each mapped to the flat
id of the same task and physics."""


def make_task(env_id: str) -> Task:
    """The task object behind one of our gymnasium ids."""
    env_id = PIXEL_IDS.get(env_id, env_id)
    if env_id == "s2r/DClawTurnFixed-v0":
        return DClawTurn(variant="fixed")
    if env_id == "s2r/DClawTurnRandom-v0":
        return DClawTurn(variant="random")
    if env_id == "s2r/DClawTurnGoal-v0":
        return DClawTurn(variant="goal")
    if env_id == "s2r/DKittyStandFixed-v0":
        return DKittyStand()
    if env_id == "s2r/DKittyWalkFixed-v0":
        return DKittyWalk()
    raise KeyError(f"unknown s2r task {env_id!r}; known: {', '.join(TASK_IDS.values())}")
