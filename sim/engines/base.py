"""The small interface every physics backend implements, and the named-parameter description.

An engine knows nothing about rewards or observations: it loads a scene, takes position targets
for the actuated joints, steps, reports a :class:`~sim.state.RobotState`, saves and restores its
state, and sets named physical parameters from their nominal values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from sim.state import RobotState, SimState
from sim.tasks.spec import FloatArray

ParamKind = Literal[
    "joint_damping",
    "joint_frictionloss",
    "actuator_kp",
    "contact_friction",
    "body_mass",
    "body_mass_scale",
    "action_latency",
    "obs_noise_std",
    "control_jitter_std",
]
"""How a parameter acts. Engine kinds change the model; env kinds are applied by the env itself."""

ENV_KINDS: frozenset[str] = frozenset({"action_latency", "obs_noise_std", "control_jitter_std"})


@dataclass(frozen=True)
class ParamSpec:
    """One named physical quantity of a task's simulation."""

    name: str
    """Name used on the command line, in randomization YAML and in reality files."""
    kind: ParamKind
    """How it acts on the model (see :data:`ParamKind`)."""
    unit: str
    """SI unit of the value (``"-"`` for a dimensionless scale)."""
    nominal: float
    """Value of the unperturbed model."""
    targets: tuple[str, ...]
    """Model elements it acts on: joint, actuator (joint) or body names, by kind."""
    doc: str
    """What it is, in words."""
    low: float = 0.0
    """Smallest value accepted."""
    high: float = math.inf
    """Largest value accepted."""

    @property
    def is_env_level(self) -> bool:
        """True for parameters the env applies (latency, noise, jitter) rather than the engine."""
        return self.kind in ENV_KINDS

    def validate(self, value: float) -> float:
        """``value`` as a float, or a ``ValueError`` naming the parameter and its allowed range."""
        v = float(value)
        if not math.isfinite(v) or v < self.low or v > self.high:
            raise ValueError(
                f"parameter {self.name!r} = {value!r} is outside its range [{self.low}, {self.high}] {self.unit}"
            )
        return v


class UnsupportedParameter(KeyError):
    """An engine cannot represent a named parameter."""

    def __str__(self) -> str:
        return str(self.args[0])


class Engine(Protocol):
    """A physics backend for one task scene."""

    name: str
    """Engine id: ``"mujoco"`` or ``"pybullet"``."""
    timestep: float
    """Physics step (s)."""

    def reset(self, joint_pos: FloatArray, passive_pos: FloatArray) -> None:
        """Place the joints (rad) at rest, with the command equal to ``joint_pos``."""
        ...

    def set_command(self, command: FloatArray) -> None:
        """Position targets (rad) for the actuated joints, held until the next call."""
        ...

    def step(self, n: int) -> None:
        """Advance ``n`` physics steps."""
        ...

    def read(self) -> RobotState:
        """The current joint and passive-joint positions, velocities and actuator torques."""
        ...

    def get_state(self) -> SimState:
        """A snapshot from which :meth:`set_state` restores the simulation exactly."""
        ...

    def set_state(self, state: SimState) -> None:
        """Restore a snapshot; one without ``physics`` sets joint positions, velocities and command."""
        ...

    def supports(self, spec: ParamSpec) -> bool:
        """Whether this engine can apply ``spec``."""
        ...

    def set_param(self, spec: ParamSpec, value: float) -> None:
        """Apply ``value`` to the nominal model (never on top of an earlier value)."""
        ...

    def render(self, width: int, height: int, camera: str | None = None) -> np.ndarray:
        """An RGB image (height, width, 3) of uint8 of the current scene."""
        ...

    def close(self) -> None:
        """Free native resources."""
        ...
