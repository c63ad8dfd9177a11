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
    "contact_timeconst",
    "contact_impratio",
    "body_mass",
    "body_mass_scale",
    "action_latency",
    "obs_noise_std",
    "control_jitter_std",
    "base_orientation_noise_std",
    "base_angvel_noise_std",
    "push_force_std",
    "passive_torque_std",
    "terrain_roughness",
    "terrain_slope",
    "terrain_seed",
    "color_r",
    "color_g",
    "color_b",
    "light_dx",
    "light_dy",
    "light_dz",
    "light_intensity",
    "light_r",
    "light_g",
    "light_b",
    "camera_dx",
    "camera_dy",
    "camera_dz",
    "camera_droll",
    "camera_dpitch",
    "camera_dyaw",
    "camera_dfovy",
    "distractor_count",
    "distractor_seed",
    "image_brightness",
    "image_contrast",
    "image_blur_sigma",
    "image_noise_std",
]
"""How a parameter acts. Engine kinds change the model; env kinds are applied by the env itself.

Env kinds: ``action_latency`` (s), ``obs_noise_std`` (rad, on joint and passive angles),
``control_jitter_std`` (s), ``base_orientation_noise_std`` (rad, a random rotation of the base orientation
reading), ``base_angvel_noise_std`` (rad/s, on the base angular velocity reading) and ``push_force_std``
(N: every control period, a horizontal force with this std per axis pushes the parameter's target bodies,
through their centres of mass, for that period; applied with :meth:`Engine.set_external_force`) and
``passive_torque_std`` (N m: every control period, a torque with this std turns each of the parameter's target
passive joints for that period, as a hand or a cable nudging them would; applied with
:meth:`Engine.set_passive_torque`).

Terrain kinds (engine kinds, for scenes with a :class:`~sim.models.terrain.Terrain`): ``terrain_roughness`` (m),
``terrain_slope`` (rad) and ``terrain_seed`` (-), the heightfield's bumps, incline and bump pattern (see
:mod:`sim.models.terrain`); an engine supports them exactly when its scene has a terrain.
"""

TERRAIN_KINDS: frozenset[str] = frozenset({"terrain_roughness", "terrain_slope", "terrain_seed"})

IMAGE_KINDS: frozenset[str] = frozenset({"image_brightness", "image_contrast", "image_blur_sigma", "image_noise_std"})
"""Pixel-level visual kinds: the env applies them to rendered images."""

VISUAL_KINDS: frozenset[str] = frozenset({
    "color_r", "color_g", "color_b", "light_dx", "light_dy", "light_dz", "light_intensity", "light_r", "light_g",
    "light_b", "camera_dx", "camera_dy", "camera_dz", "camera_droll", "camera_dpitch", "camera_dyaw", "camera_dfovy",
    "distractor_count", "distractor_seed", *IMAGE_KINDS,
})
"""Kinds that act on rendering only: physics and vector observations are the same whatever their values."""

DISTRACTOR_KINDS: frozenset[str] = frozenset({"distractor_count", "distractor_seed"})
"""Visual kinds only the MuJoCo engine applies: PyBullet's distractors would be bodies of its physics world."""
MUJOCO_ONLY_KINDS: frozenset[str] = DISTRACTOR_KINDS | {"contact_timeconst", "contact_impratio"}
"""Kinds only the MuJoCo engine applies: the distractors, and the time constant and friction-to-normal impedance
ratio of MuJoCo's soft contacts (PyBullet's contacts are another model, which these parameters stand in for)."""

ENV_KINDS: frozenset[str] = frozenset({"action_latency", "obs_noise_std", "control_jitter_std",
                                       "base_orientation_noise_std", "base_angvel_noise_std", "push_force_std",
                                       "passive_torque_std",
                                       *IMAGE_KINDS})


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

    @property
    def is_visual(self) -> bool:
        """True for parameters that change only rendered images, never the physics (:data:`VISUAL_KINDS`)."""
        return self.kind in VISUAL_KINDS

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

    def reset(self, joint_pos: FloatArray, passive_pos: FloatArray, base_pose: FloatArray | None = None) -> None:
        """Place the joints (rad) at rest, with the command equal to ``joint_pos``; no external force acts.

        ``base_pose`` (scenes with a floating base only): position (m) and orientation (w, x, y, z) of the
        base, at rest; ``None`` puts it where the scene places it.
        """
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
        """Restore a snapshot; one without ``physics`` sets joint (and base) positions, velocities and command.

        External forces are inputs, not state: a restore ends every push.
        """
        ...

    def set_external_force(self, body: str, force: FloatArray) -> None:
        """Push ``body`` with ``force`` (N, 3 values, world frame) through its centre of mass on every physics
        step until the next call for that body; zeros end the push."""
        ...

    def set_passive_torque(self, torque: FloatArray) -> None:
        """Generalized torques (N m, one per passive joint in task order) on the passive joints, applied on every
        physics step until the next call; zeros end them, as do a reset and a restore. How the emulator models
        a passive joint's own servo while it is switched on (a robot reset driving the valve)."""
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

    def render_camera(self, name: str) -> np.ndarray:
        """What the task's camera ``name`` (a :class:`sim.camera.CameraSpec`) sees of the current scene: an RGB
        image (its height, its width, 3) of uint8, rendered offscreen, without shadows, on the CPU where the
        machine has no GPU. An unknown name is a ``KeyError`` naming the task's cameras."""
        ...

    def close(self) -> None:
        """Free native resources."""
        ...
