"""The safety filter between the policy and the bus, as pure functions.

A policy's normalized action becomes a joint command through the task's own mapping
(:func:`sim.tasks.actions.action_to_command`: denormalize, clip to the task's ranges, rate-limit
against the previous command), so the robot sends exactly what the simulator would have applied.
On top of it the filter clips to the hardware config's joint limits (which lie inside the task's
ranges) and refuses non-finite policy output: a NaN or infinity anywhere holds the last safe
command instead (the simulator maps NaN to 0; on hardware no guess is safe).

Invariant: when ``previous_command`` lies inside the hardware limits, every command returned lies
inside them too and within the task's ``max_step`` of ``previous_command`` on every joint, because
clipping into a box that contains the previous command never moves a value away from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from robot.config import RobotConfig
from sim.tasks.actions import action_to_command, clip_action, clip_to_range, rate_limit
from sim.tasks.spec import FloatArray, TaskSpec


class Hold(IntEnum):
    """Why a cycle's command is the previous one instead of the policy's (logged per step as ``hold``)."""

    NONE = 0
    """The policy's action went through."""
    STALE_READING = 1
    """The reading failed, so there was no observation to give the policy."""
    NON_FINITE_ACTION = 2
    """The policy's output held a NaN or an infinity."""


@dataclass(frozen=True)
class SafetyLimits:
    """What the filter enforces: the task's mapping and rate limit, and the hardware's joint limits."""

    spec: TaskSpec
    """Task spec at the loop's control period: ranges for denormalizing, ``max_step`` for the rate limit."""
    low: FloatArray
    """Lower joint limits from the hardware config (rad), inside the task's ranges."""
    high: FloatArray
    """Upper joint limits from the hardware config (rad)."""

    def __post_init__(self) -> None:
        n = self.spec.n_joints
        if self.low.shape != (n,) or self.high.shape != (n,):
            raise ValueError(f"joint limits must have shape ({n},); got {self.low.shape} and {self.high.shape}")
        if np.any(self.low < self.spec.low - 1e-9) or np.any(self.high > self.spec.high + 1e-9):
            raise ValueError("hardware joint limits must lie inside the task's joint ranges")
        if np.any(self.low >= self.high):
            raise ValueError("every lower joint limit must be below the upper one")

    @staticmethod
    def from_config(config: RobotConfig) -> SafetyLimits:
        """The limits of a hardware config, with its task spec at the config's control period."""
        return SafetyLimits(config.task_spec(), config.low, config.high)

    @property
    def max_step(self) -> float:
        """Largest command change per control period (rad)."""
        return self.spec.max_step


@dataclass(frozen=True)
class Filtered:
    """The filter's verdict on one policy output."""

    command: FloatArray
    """Joint targets to send (rad): inside the hardware limits, within ``max_step`` of the previous command."""
    action: FloatArray | None
    """The action as applied, clipped to [-1, 1] (the next observation's ``last_action``); ``None`` when held."""
    hold: Hold
    """``Hold.NONE``, or why the previous command was kept."""

    @property
    def held(self) -> bool:
        """Whether the previous command was kept."""
        return self.hold != Hold.NONE


def clip_to_limits(command: FloatArray, limits: SafetyLimits) -> FloatArray:
    """Clamp joint targets into the hardware limits (rad)."""
    return clip_to_range(command, limits.low, limits.high)


def filter_action(action: object, previous_command: FloatArray, limits: SafetyLimits) -> Filtered:
    """The command for one policy output, given the command of the previous cycle.

    ``action`` must have one entry per joint (anything else is a ``ValueError``: a policy of the wrong
    shape is a bug, not a transient). A NaN or infinity anywhere holds ``previous_command`` (clipped
    into the limits).
    """
    a = np.asarray(action, dtype=np.float64)
    n = limits.spec.n_joints
    if a.shape != (n,):
        raise ValueError(f"the policy returned an action of shape {a.shape}; expected ({n},)")
    previous = clip_to_limits(previous_command, limits)
    if not np.all(np.isfinite(a)):
        return Filtered(previous, None, Hold.NON_FINITE_ACTION)
    applied = clip_action(a)
    command = clip_to_limits(action_to_command(applied, previous, limits.spec), limits)
    return Filtered(command, applied, Hold.NONE)


def hold_command(previous_command: FloatArray, limits: SafetyLimits, why: Hold) -> Filtered:
    """Keep the previous command (clipped into the limits), e.g. for a cycle without a reading."""
    return Filtered(clip_to_limits(previous_command, limits), None, why)


def step_towards(target: FloatArray, previous_command: FloatArray, limits: SafetyLimits) -> FloatArray:
    """One rate-limited step of a scripted move (rad): towards ``target``, inside the limits.

    Non-finite target entries keep the previous command on those joints.
    """
    previous = clip_to_limits(previous_command, limits)
    t = np.asarray(target, dtype=np.float64)
    if t.shape != previous.shape:
        raise ValueError(f"a scripted target of shape {t.shape}; expected {previous.shape}")
    goal = clip_to_limits(np.where(np.isfinite(t), t, previous), limits)
    return clip_to_limits(rate_limit(goal, previous, limits.max_step), limits)
