"""D'Claw valve turn: the task spec, observation, reward terms and success, used by sim and robot.

Reference: ROBEL (Ahn et al. 2019, "ROBEL: Robotics Benchmarks for Learning with Low-Cost Robots", CoRL), the
D'Claw turn task.
The observation (21 values) is joint positions (9), cos/sin of the valve angle (2), the last
normalized action (9) and the signed target error wrapped to [-pi, pi] (1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from sim.camera import CameraSpec
from sim.engines.base import ParamSpec
from sim.models.dclaw import (
    FINGER_COUNT,
    FLOOR_RGBA,
    NOMINAL_GEOMETRY,
    SPOKE0_RGBA,
    VALVE_RGBA,
    ClawGeometry,
    finger_joint_names,
    mjcf,
)
from sim.models.mjcf_parts import LINK_RGBA
from sim.state import RobotState
from sim.tasks.actions import wrap_angle
from sim.tasks.spec import FloatArray, GoalField, ObsField, ObsLayout, TaskSpec
from sim.visual import MAX_DISTRACTORS

JOINT_NAMES = finger_joint_names()
_RANGE_BY_SUFFIX_RAD = {
    "top": (-0.48, 0.48),
    "mid": (-math.pi / 3, math.pi / 3),
    "bot": (-math.pi / 2, math.pi / 2),
}
_RESET_BY_SUFFIX_RAD = {"top": 0.0, "mid": -math.pi / 3, "bot": math.pi / 3}

JOINT_VELOCITY_LIMIT_RAD_S = 2.0 * math.pi / 3.0
CONTROL_PERIOD_S = 0.1
EPISODE_DURATION_S = 4.0
SUCCESS_THRESHOLD_RAD = 0.1
NEAR_THRESHOLD_RAD = 0.25
FAST_JOINT_RAD_S = 0.5
FIXED_TARGET_RAD = math.pi
RANDOM_OFFSET_RAD = math.pi / 3
RESET_JOINT_NOISE_RAD = 0.02
"""Uniform noise on the finger reset pose, so repeated evaluations of the fixed task differ."""

OBS_LAYOUT = ObsLayout(
    (
        ObsField("joint_pos", 9, "rad", "finger joint positions, task joint order"),
        ObsField("valve_cos_sin", 2, "-", "cos and sin of the valve angle"),
        ObsField("last_action", 9, "-", "previous normalized action in [-1, 1]"),
        ObsField("target_error", 1, "rad", "target angle minus valve angle, wrapped to [-pi, pi]"),
    )
)

TOP_CAMERA = CameraSpec(
    name="top",
    width=84,
    height=84,
    position=(0.0, 0.0, 0.35),
    target=(0.0, 0.0, 0.0),
    up=(0.0, 1.0, 0.0),
    fovy_deg=45.0,
)
"""Looks straight down the valve axis, world x to the right of the image and y up: the whole valve, at the
84 x 84 of image-based policies."""

REWARD_TERMS = ("target_dist", "pose_dev", "joint_vel", "near_bonus", "success_bonus")

SPEC = TaskSpec(
    name="dclaw-turn",
    robot="dclaw",
    joint_names=JOINT_NAMES,
    joint_low=tuple(_RANGE_BY_SUFFIX_RAD[n.rsplit("_", 1)[1]][0] for n in JOINT_NAMES),
    joint_high=tuple(_RANGE_BY_SUFFIX_RAD[n.rsplit("_", 1)[1]][1] for n in JOINT_NAMES),
    reset_pose=tuple(_RESET_BY_SUFFIX_RAD[n.rsplit("_", 1)[1]] for n in JOINT_NAMES),
    joint_velocity_limit=JOINT_VELOCITY_LIMIT_RAD_S,
    control_period=CONTROL_PERIOD_S,
    episode_duration=EPISODE_DURATION_S,
    passive_joints=("valve",),
    periodic_passive=("valve",),
    obs_layout=OBS_LAYOUT,
    reward_terms=REWARD_TERMS,
    cameras=(TOP_CAMERA,),
)

Variant = Literal["fixed", "random", "goal"]


@dataclass(frozen=True)
class EpisodeStart:
    """Where an episode begins and what it asks for."""

    joint_pos: FloatArray
    """Finger joint positions at reset (rad)."""
    passive_pos: FloatArray
    """Valve angle at reset (rad), as a 1-vector."""
    goal: dict[str, float]
    """Named goal values; for the turn task ``{"target": rad}``."""


@dataclass(frozen=True)
class DClawTurn:
    """The valve-turn task; ``variant`` picks the fixed or randomized start and target."""

    variant: Variant = "fixed"
    """``"fixed"``: valve at 0, target pi. ``"random"``: start U(-pi/3, pi/3), target pi + U(-pi/3, pi/3).
    ``"goal"``: start U(-pi/3, pi/3), target anywhere, U(-pi, pi) (the goal-conditioned task)."""
    spec: TaskSpec = SPEC
    """The task spec; replace it (e.g. another control period) with ``dataclasses.replace``."""
    geometry: ClawGeometry = NOMINAL_GEOMETRY
    """Dimensions, masses and gains of the scene."""

    def model_xml(self, timestep: float) -> str:
        """MuJoCo XML of the scene at the given physics step (s)."""
        return mjcf(self.spec.joint_ranges, self.geometry, timestep=timestep, cameras=self.spec.cameras)

    def model_urdf(self) -> str:
        """URDF of the same scene for PyBullet, from the same geometry and joint limits."""
        from sim.models.dclaw_urdf import urdf

        return urdf(self.spec.joint_ranges, self.geometry)

    def param_specs(self) -> tuple[ParamSpec, ...]:
        """The named physical parameters of this scene, with nominal values from the geometry."""
        return claw_params(self.geometry, self.spec)

    def sample_start(self, rng: np.random.Generator) -> EpisodeStart:
        """Reset pose with small noise, and the valve start and target for this variant."""
        noise = rng.uniform(-RESET_JOINT_NOISE_RAD, RESET_JOINT_NOISE_RAD, self.spec.n_joints)
        joint_pos = np.clip(self.spec.reset + noise, self.spec.low, self.spec.high)
        if self.variant == "fixed":
            start, target = 0.0, FIXED_TARGET_RAD
        elif self.variant == "random":
            start = float(rng.uniform(-RANDOM_OFFSET_RAD, RANDOM_OFFSET_RAD))
            target = FIXED_TARGET_RAD + float(rng.uniform(-RANDOM_OFFSET_RAD, RANDOM_OFFSET_RAD))
        else:
            start = float(rng.uniform(-RANDOM_OFFSET_RAD, RANDOM_OFFSET_RAD))
            target = float(rng.uniform(-math.pi, math.pi))
        return EpisodeStart(joint_pos, np.array([start]), {"target": target})

    def observe(self, state: RobotState, last_action: FloatArray, goal: dict[str, float]) -> np.ndarray:
        """The policy's observation (float32, ``OBS_LAYOUT``) from a reading and the last action."""
        angle = float(state.passive_pos[0])
        return OBS_LAYOUT.concat(
            {
                "joint_pos": state.joint_pos,
                "valve_cos_sin": np.array([math.cos(angle), math.sin(angle)]),
                "last_action": last_action,
                "target_error": wrap_angle(goal["target"] - angle),
            }
        )

    def reward_terms(self, state: RobotState, goal: dict[str, float]) -> dict[str, float]:
        """The named reward terms for a reading; the reward is their sum (see :func:`total_reward`)."""
        err = abs(float(wrap_angle(goal["target"] - float(state.passive_pos[0]))))
        fast = np.abs(state.joint_vel) >= FAST_JOINT_RAD_S
        return {
            "target_dist": -5.0 * err,
            "pose_dev": -1.0 * float(np.linalg.norm(state.joint_pos - self.spec.reset)),
            "joint_vel": -1.0 * float(np.linalg.norm(state.joint_vel[fast])),
            "near_bonus": 10.0 if err < NEAR_THRESHOLD_RAD else 0.0,
            "success_bonus": 50.0 if err < SUCCESS_THRESHOLD_RAD else 0.0,
        }

    def success(self, state: RobotState, goal: dict[str, float]) -> bool:
        """The valve is within 0.1 rad of the target (judged at the end of an episode)."""
        return abs(float(wrap_angle(goal["target"] - float(state.passive_pos[0])))) < SUCCESS_THRESHOLD_RAD

    def terminated(self, state: RobotState, goal: dict[str, float]) -> bool:
        """Never: the claw's episodes end by time only."""
        return False

    # --- the goal-conditioned view (sim.goal_env) -------------------------------------------------
    goal_observation_fields: ClassVar[tuple[str, ...]] = ("joint_pos", "valve_cos_sin", "last_action")
    """The observation without the goal: the target error moves into ``desired_goal``."""
    goal_tolerance: ClassVar[float] = SUCCESS_THRESHOLD_RAD
    """Distance (rad) within which a goal counts as reached; the same as :meth:`success`."""
    goal_size: ClassVar[int] = 2
    """(cos, sin) of the valve angle."""
    goal_fields: ClassVar[tuple[GoalField, ...]] = (
        GoalField("target", "rad", -math.pi, math.pi, "valve angle to turn to (angles wrap: give it in [-pi, pi])"),
    )
    """The named goal values a user may command (``s2r deploy --goal target=1.57``); every variant's goal."""
    goal_encoding: ClassVar[str] = "desired_goal = (cos(target), sin(target))"
    """How the named goal values become ``desired_goal`` (:meth:`desired_goal`), in words for the export metadata."""

    def achieved_goal(self, state: RobotState) -> FloatArray:
        """Where the valve is, as (cos, sin) of its angle: a goal without a wrap-around."""
        angle = float(state.passive_pos[0])
        return np.array([math.cos(angle), math.sin(angle)])

    def desired_goal(self, goal: dict[str, float]) -> FloatArray:
        """The commanded valve angle as (cos, sin)."""
        return np.array([math.cos(goal["target"]), math.sin(goal["target"])])

    @staticmethod
    def goal_distance(achieved: FloatArray, desired: FloatArray) -> FloatArray:
        """Angle (rad) between valve positions given as (cos, sin) rows; vectorized over leading axes."""
        a, d = np.asarray(achieved, dtype=np.float64), np.asarray(desired, dtype=np.float64)
        cross = a[..., 0] * d[..., 1] - a[..., 1] * d[..., 0]
        return np.asarray(np.abs(np.arctan2(cross, np.sum(a * d, axis=-1))))


MUJOCO_SOLREF_TIMECONST_S = 0.02
"""MuJoCo's default contact time constant (solref[0], s), which the claw's geoms keep."""
MUJOCO_IMPRATIO = 1.0
"""MuJoCo's default friction-to-normal impedance ratio (``<option impratio>``, -), which the claw's model keeps."""
MIN_CONTACT_TIMECONST_S = 0.005
"""Smallest contact time constant (s): MuJoCo raises anything below two physics steps (2 x 2.5 ms) to that."""


def claw_params(g: ClawGeometry, spec: TaskSpec) -> tuple[ParamSpec, ...]:
    """The claw scene's named parameters; names are shared by both engines and the emulator."""
    fingers = spec.joint_names
    links = tuple(f"f{i}_{s}_link" for i in range(FINGER_COUNT) for s in ("top", "mid", "bot"))
    contact_bodies = (*(f"f{i}_bot_link" for i in range(FINGER_COUNT)), "valve")
    return (
        ParamSpec("valve_damping", "joint_damping", "N m s/rad", g.valve_damping, ("valve",),
                  "viscous damping of the valve hinge"),
        ParamSpec("valve_frictionloss", "joint_frictionloss", "N m", g.valve_frictionloss, ("valve",),
                  "dry friction of the valve hinge"),
        ParamSpec("valve_mass", "body_mass", "kg", g.valve_mass, ("valve",),
                  "mass of the valve; its rotational inertia scales with it", low=1e-4),
        ParamSpec("finger_damping", "joint_damping", "N m s/rad", g.fingers.damping, fingers,
                  "viscous damping of every finger joint"),
        ParamSpec("finger_kp", "actuator_kp", "N m/rad", g.fingers.kp, fingers,
                  "position-servo stiffness of every finger joint", low=1e-3),
        ParamSpec("tip_friction", "contact_friction", "-", g.tip_friction, contact_bodies,
                  "sliding friction coefficient between fingertips and valve", low=1e-3, high=5.0),
        ParamSpec("contact_timeconst", "contact_timeconst", "s", MUJOCO_SOLREF_TIMECONST_S, contact_bodies,
                  "time constant of the fingertip-valve contacts' spring-damper (MuJoCo's solref; larger is softer): "
                  "how another engine's or the robot's contacts differ from MuJoCo's",
                  low=MIN_CONTACT_TIMECONST_S, high=1.0),
        ParamSpec("contact_impratio", "contact_impratio", "-", MUJOCO_IMPRATIO, (),
                  "ratio of the contacts' friction impedance to their normal impedance (MuJoCo's impratio; larger is "
                  "harder friction that creeps less): a rigid-contact engine's or the robot's rubber tips grip "
                  "harder than MuJoCo's default soft friction", low=0.1, high=100.0),
        ParamSpec("finger_mass_scale", "body_mass_scale", "-", 1.0, links,
                  "multiplier on every finger link's mass and inertia", low=0.05, high=20.0),
        ParamSpec("action_latency", "action_latency", "s", 0.0, (),
                  "delay between the policy's action and the servos receiving it", high=1.0),
        ParamSpec("obs_noise_std", "obs_noise_std", "rad", 0.0, (),
                  "std of Gaussian noise on every joint and valve angle reading"),
        ParamSpec("valve_torque_std", "passive_torque_std", "N m", 0.0, ("valve",),
                  "std of a random torque on the valve hinge, drawn afresh for every control period: knocks the "
                  "valve about, as contacts the simulator does not model would", high=1.0),
        ParamSpec("control_jitter_std", "control_jitter_std", "s", 0.0, (),
                  "std of the per-step deviation of the control period", high=0.05),
        *claw_visual_params(g, spec),
    )


MAX_LIGHT_SHIFT_M = 0.5
"""Largest move of the key light along an axis (m): it stays above the scene (the light sits 0.6 m up)."""
MAX_CAMERA_SHIFT_M = 0.1
"""Largest shift of a task camera along an axis (m): the top camera stays above the fingers (0.35 m up)."""
MAX_CAMERA_TURN_RAD = 0.5
"""Largest turn of a task camera about each of its axes (rad)."""
MAX_FOVY_CHANGE_RAD = 0.5
"""Largest change of a task camera's vertical field of view (rad; the top camera's is 0.785)."""


def _rgb(prefix: str, what: str, rgba: tuple[float, ...], geoms: tuple[str, ...]) -> tuple[ParamSpec, ...]:
    return tuple(ParamSpec(f"{prefix}_{ch}", f"color_{ch}", "-", rgba[i], geoms,  # type: ignore[arg-type]
                           f"[visual] {name} channel of the colour of {what}", high=1.0)
                 for i, (ch, name) in enumerate((("r", "red"), ("g", "green"), ("b", "blue"))))


def claw_visual_params(g: ClawGeometry, spec: TaskSpec) -> tuple[ParamSpec, ...]:
    """The claw scene's visual parameters (rendering only: :data:`sim.engines.base.VISUAL_KINDS`)."""
    cams = tuple(c.name for c in spec.cameras)
    links = tuple(f"f{i}_{s}_geom" for i in range(FINGER_COUNT) for s in ("top", "mid", "bot"))
    valve = ("valve_hub", *(f"valve_spoke{k}" for k in range(1, g.spoke_count)))
    lights = ("key", "fill")
    m, t, f = MAX_LIGHT_SHIFT_M, MAX_CAMERA_TURN_RAD, MAX_CAMERA_SHIFT_M
    return (
        *_rgb("valve", "the valve's hub and spokes (all but spoke 0)", VALVE_RGBA, valve),
        *_rgb("spoke0", "spoke 0, the marked spoke", SPOKE0_RGBA, ("valve_spoke0",)),
        *_rgb("finger", "the finger links", LINK_RGBA, links),
        *_rgb("floor", "the floor", FLOOR_RGBA, ("floor",)),
        *(ParamSpec(f"light_d{a}", f"light_d{a}", "m", 0.0, ("key",),  # type: ignore[arg-type]
                    f"[visual] shift of the key light along world {a}; it stays aimed at the valve", low=-m, high=m)
          for a in "xyz"),
        ParamSpec("light_intensity", "light_intensity", "-", 1.0, lights,
                  "[visual] factor on the diffuse brightness of every light", high=5.0),
        *(ParamSpec(f"light_{ch}", f"light_{ch}", "-", 1.0, lights,  # type: ignore[arg-type]
                    f"[visual] factor on the {name} channel of every light's colour", high=2.0)
          for ch, name in (("r", "red"), ("g", "green"), ("b", "blue"))),
        *(ParamSpec(f"camera_d{a}", f"camera_d{a}", "m", 0.0, cams,  # type: ignore[arg-type]
                    f"[visual] shift of every task camera along world {a}", low=-f, high=f) for a in "xyz"),
        ParamSpec("camera_droll", "camera_droll", "rad", 0.0, cams,
                  "[visual] turn of every task camera about its optical axis", low=-t, high=t),
        ParamSpec("camera_dpitch", "camera_dpitch", "rad", 0.0, cams,
                  "[visual] turn of every task camera about its image x axis (positive looks up)", low=-t, high=t),
        ParamSpec("camera_dyaw", "camera_dyaw", "rad", 0.0, cams,
                  "[visual] turn of every task camera about its image y axis (positive looks left)", low=-t, high=t),
        ParamSpec("camera_dfovy", "camera_dfovy", "rad", 0.0, cams,
                  "[visual] change of every task camera's vertical field of view",
                  low=-MAX_FOVY_CHANGE_RAD, high=MAX_FOVY_CHANGE_RAD),
        ParamSpec("distractor_count", "distractor_count", "-", 0.0, ("floor",),
                  f"[visual] boxes and spheres resting on the floor, out of the fingers' reach (whole number, at most "
                  f"{MAX_DISTRACTORS}; mujoco only)", high=float(MAX_DISTRACTORS)),
        ParamSpec("distractor_seed", "distractor_seed", "-", 0.0, ("floor",),
                  "[visual] picks the distractors' places, sizes and colours (whole number)", high=2.0**31),
        ParamSpec("image_brightness", "image_brightness", "-", 0.0, (),
                  "[visual] added to every pixel of task camera images (full scale 1)", low=-1.0, high=1.0),
        ParamSpec("image_contrast", "image_contrast", "-", 1.0, (),
                  "[visual] factor on every pixel's difference from the image's mean", high=5.0),
        ParamSpec("image_blur_sigma", "image_blur_sigma", "px", 0.0, (),
                  "[visual] std of a Gaussian blur of task camera images", high=10.0),
        ParamSpec("image_noise_std", "image_noise_std", "-", 0.0, (),
                  "[visual] std of Gaussian noise per pixel and channel (full scale 1)", high=1.0),
    )
