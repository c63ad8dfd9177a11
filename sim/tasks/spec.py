"""The types every task module fills in: joints, timing and the observation layout.

A task spec is the one description of a robot task that simulation, training, export and the
hardware controller all read. Nothing here knows about a particular robot.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from sim.camera import CameraSpec

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class ObsField:
    """One named block of the observation vector."""

    name: str
    """Identifier used in logs, export metadata and ``ObsLayout.slice``."""
    size: int
    """Number of scalars in the block."""
    unit: str
    """Physical unit of the block's entries (``"rad"``, ``"-"`` for dimensionless)."""
    doc: str
    """What the block holds, in words."""


@dataclass(frozen=True)
class ObsLayout:
    """The observation vector as an ordered list of named blocks."""

    fields: tuple[ObsField, ...]
    """The blocks in the order they are concatenated."""

    @property
    def size(self) -> int:
        """Total length of the observation vector."""
        return sum(f.size for f in self.fields)

    def slice(self, name: str) -> slice:
        """Where the block ``name`` sits in the observation vector."""
        start = 0
        for f in self.fields:
            if f.name == name:
                return slice(start, start + f.size)
            start += f.size
        raise KeyError(f"observation has no field {name!r}; fields are {self.names}")

    @property
    def names(self) -> tuple[str, ...]:
        """Block names in order."""
        return tuple(f.name for f in self.fields)

    def slices(self) -> dict[str, tuple[int, int]]:
        """``{name: (start, stop)}`` for every block, e.g. for export metadata."""
        out: dict[str, tuple[int, int]] = {}
        for f in self.fields:
            s = self.slice(f.name)
            out[f.name] = (s.start, s.stop)
        return out

    def concat(self, blocks: Mapping[str, FloatArray | float]) -> NDArray[np.float32]:
        """Build the observation vector from named blocks, checking every block's size."""
        parts = []
        for f in self.fields:
            if f.name not in blocks:
                raise KeyError(f"observation block {f.name!r} missing; got {sorted(blocks)}")
            v = np.asarray(blocks[f.name], dtype=np.float64).reshape(-1)
            if v.size != f.size:
                raise ValueError(f"observation block {f.name!r} has {v.size} values, expected {f.size}")
            parts.append(v)
        return np.concatenate(parts).astype(np.float32)


@dataclass(frozen=True)
class GoalField:
    """One named value of a task's goal (the ``goal`` dict of an episode start), as a user may command it."""

    name: str
    """Key in the goal dict (``target``)."""
    unit: str
    """SI unit of the value (``"rad"``)."""
    low: float
    """Smallest value that may be commanded (``unit``)."""
    high: float
    """Largest value that may be commanded (``unit``)."""
    doc: str
    """What the value asks for, in words."""


ACTION_RATE_TERM = "action_rate"
"""Name of the reward term that :attr:`TaskSpec.action_rate_weight` adds."""


@dataclass(frozen=True)
class TaskSpec:
    """Joints, limits, timing and observation layout of one task; shared by sim and robot."""

    name: str
    """Task id used on the command line and in metadata (e.g. ``"dclaw-turn"``)."""
    robot: str
    """Robot the task runs on (e.g. ``"dclaw"``); hardware configs name the same robot."""
    joint_names: tuple[str, ...]
    """Actuated joints, in the order of actions, commands and joint observations."""
    joint_low: tuple[float, ...]
    """Lower command limit per joint (rad)."""
    joint_high: tuple[float, ...]
    """Upper command limit per joint (rad)."""
    reset_pose: tuple[float, ...]
    """Joint positions at the start of every episode (rad)."""
    joint_velocity_limit: float
    """Fastest a command may move any joint (rad/s); the rate limit per step derives from it."""
    control_period: float
    """Time between two policy actions (s); sets the sim substeps and the robot loop period."""
    episode_duration: float
    """Length of one episode (s); the number of steps is derived from the control period."""
    passive_joints: tuple[str, ...]
    """Unactuated joints the task observes (e.g. the valve); each is a named sensor channel."""
    obs_layout: ObsLayout
    """Names, sizes and order of the observation blocks."""
    reward_terms: tuple[str, ...]
    """Names of the reward terms, in logging order; their sum is the reward."""
    extras: Mapping[str, float] = field(default_factory=dict)
    """Task-specific constants (thresholds, weights) with their unit in the key's doc."""
    periodic_passive: tuple[str, ...] = ()
    """Passive joints the task sees only modulo a full turn (cos/sin, wrapped errors): a valve that turns without
    end. A reset brings each to the nearest angle equivalent to its start instead of unwinding every turn made."""
    base_joint: str | None = None
    """Free joint of a robot that is not fixed to the world (a legged robot's torso), looked up by name in the
    scene; its body carries the IMU and its state fills the ``base_*`` fields of a reading. ``None``: fixed base."""
    action_rate_weight: float = 0.0
    """Cost per unit of the squared change of the normalized action from one step to the next (1 / action²).
    Above 0 the task's reward gets the term ``"action_rate"`` (:func:`sim.tasks.base.step_reward_terms`), which
    ``reward_terms`` must then list; it keeps a policy from jittering its targets where the state alone does
    not show it."""
    cameras: tuple[CameraSpec, ...] = ()
    """World-fixed cameras of the task, each rendered by name by every engine
    (:meth:`sim.engines.base.Engine.render_camera`); names are unique."""

    def __post_init__(self) -> None:
        n = len(self.joint_names)
        for label, seq in (("joint_low", self.joint_low), ("joint_high", self.joint_high),
                           ("reset_pose", self.reset_pose)):
            if len(seq) != n:
                raise ValueError(f"TaskSpec {self.name}: {label} has {len(seq)} entries, expected {n}")
        for label, values in (("joint_low", self.joint_low), ("joint_high", self.joint_high),
                              ("reset_pose", self.reset_pose), ("extras", tuple(self.extras.values()))):
            if not all(math.isfinite(v) for v in values):
                raise ValueError(f"TaskSpec {self.name}: every {label} value must be a finite number, got {values}")
        if not (self.joint_velocity_limit > 0 and math.isfinite(self.joint_velocity_limit)):
            raise ValueError(f"TaskSpec {self.name}: joint_velocity_limit must be a positive number of rad/s, "
                             f"got {self.joint_velocity_limit!r}")
        if any(lo >= hi for lo, hi in zip(self.joint_low, self.joint_high, strict=True)):
            raise ValueError(f"TaskSpec {self.name}: every joint_low must be below joint_high")
        if not set(self.periodic_passive) <= set(self.passive_joints):
            raise ValueError(f"TaskSpec {self.name}: periodic_passive {list(self.periodic_passive)} must name passive "
                             f"joints, expected a subset of {list(self.passive_joints)}")
        if not (self.control_period > 0 and math.isfinite(self.control_period)):
            raise ValueError(f"TaskSpec {self.name}: control_period must be a positive number of seconds, "
                             f"got {self.control_period!r}")
        if not math.isfinite(self.episode_duration) or self.episode_duration < self.control_period:
            raise ValueError(f"TaskSpec {self.name}: episode_duration must be a finite number of seconds holding at "
                             f"least one control period ({self.control_period!r} s), got {self.episode_duration!r}")
        if not (self.action_rate_weight >= 0.0 and math.isfinite(self.action_rate_weight)):
            raise ValueError(f"TaskSpec {self.name}: action_rate_weight must be a finite number >= 0, "
                             f"got {self.action_rate_weight!r}")
        names = [c.name for c in self.cameras]
        if not all(isinstance(c, CameraSpec) for c in self.cameras) or len(set(names)) != len(names):
            raise ValueError(f"TaskSpec {self.name}: cameras must be CameraSpec objects with unique names, "
                             f"got {names}")
        if (self.action_rate_weight > 0.0) != (ACTION_RATE_TERM in self.reward_terms):
            raise ValueError(f"TaskSpec {self.name}: reward_terms must list {ACTION_RATE_TERM!r} exactly when "
                             f"action_rate_weight is above 0 (it is {self.action_rate_weight})")

    def camera(self, name: str) -> CameraSpec:
        """The camera called ``name``; a ``KeyError`` naming the task's cameras otherwise."""
        for c in self.cameras:
            if c.name == name:
                return c
        raise KeyError(f"task {self.name} has no camera {name!r}; its cameras are {[c.name for c in self.cameras]}")

    @property
    def n_joints(self) -> int:
        """Number of actuated joints (the action size)."""
        return len(self.joint_names)

    @property
    def joint_ranges(self) -> dict[str, tuple[float, float]]:
        """Each joint's (low, high) limit by name (rad), as the scene builders take them."""
        return {n: (lo, hi) for n, lo, hi in zip(self.joint_names, self.joint_low, self.joint_high, strict=True)}

    @property
    def low(self) -> FloatArray:
        """Lower joint limits as an array (rad)."""
        return np.asarray(self.joint_low, dtype=np.float64)

    @property
    def high(self) -> FloatArray:
        """Upper joint limits as an array (rad)."""
        return np.asarray(self.joint_high, dtype=np.float64)

    @property
    def reset(self) -> FloatArray:
        """Reset pose as an array (rad)."""
        return np.asarray(self.reset_pose, dtype=np.float64)

    @property
    def max_step(self) -> float:
        """Largest command change per control period (rad)."""
        return self.joint_velocity_limit * self.control_period

    @property
    def episode_steps(self) -> int:
        """Control steps per episode."""
        return max(1, round(self.episode_duration / self.control_period))

    def substeps(self, physics_timestep: float) -> tuple[int, float]:
        """Physics substeps per control period and the exact physics step (s) that fills it.

        The step is shortened from ``physics_timestep`` so that a whole number of substeps spans
        exactly one control period.
        """
        if not (physics_timestep > 0 and math.isfinite(physics_timestep)):
            raise ValueError(f"physics_timestep must be a positive number of seconds, got {physics_timestep!r}")
        n = max(1, math.ceil(self.control_period / physics_timestep - 1e-9))
        return n, self.control_period / n

    def with_control_period(self, period: float) -> TaskSpec:
        """The same task at another control period (s)."""
        from dataclasses import replace

        return replace(self, control_period=float(period))
