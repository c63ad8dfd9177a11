"""D'Kitty-like quadruped: stand and walk tasks (spec, observation, reward terms, success), for sim and robot.

Reference: ROBEL (Ahn et al. 2019, "ROBEL: Robotics Benchmarks for Learning with Low-Cost Robots", CoRL), the
D'Kitty stand and walk tasks.

Observation: only what a real robot measures with its twelve servos and an IMU on the torso, so the robot
controller builds it from a hardware :class:`~sim.state.RobotState` with the same code: the gravity
direction in the torso frame (from the IMU orientation; yaw-free), the torso's angular velocity (gyroscope),
joint positions and velocities (servos) and the last action. Walk adds the target's offset in the torso's
heading frame, which needs the torso's position and heading in the world: in simulation from the engine, on
hardware from a position source (ROBEL used an external tracker). Stand needs no position source: its
reward and success use the torso height *estimated* from joint angles and orientation (forward
kinematics down to the lowest foot), never the simulated position.

Stand starts crouched (legs folded, the torso resting low on its feet, small joint and yaw noise) and must
rise to the standing pose and stay upright there to the end of the episode: 80 steps (8 s) at 10 Hz, about
1 s to rise at the joint speed limit and the rest to show that the pose holds (success is judged at the last
step). Walk starts standing and must bring the torso within 0.5 m of a target 2 m ahead: 160 steps (16 s),
ROBEL's length.

The spec's tilt bound (45 degrees) is where the robot's controller stops: a safety stop, or with a recovery reset
the end of the episode. Walk ends there in simulation too (``terminated``), with a ``fall`` penalty, so what a walk
policy learns holds under the robot's rule: without it, SAC learned to roll past the bound and back, and 27 of 200
simulated walks that succeeded would have been stopped on the robot. Stand ends by time only: its reward already
costs any tilt, and no stand policy came near the bound on the robot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from sim.engines.base import ParamSpec
from sim.models.dkitty import (
    BASE_JOINT,
    FLOOR,
    NOMINAL_GEOMETRY,
    TORSO,
    KittyGeometry,
    foot_link_names,
    foot_positions,
    leg_joint_names,
    leg_link_names,
    mjcf,
    torso_corners,
)
from sim.models.terrain import DEFAULT_TERRAIN, Terrain
from sim.rotations import gravity_in_body, quat_from_yaw, quat_to_matrix, tilt, upright, yaw_of
from sim.state import RobotState
from sim.tasks.spec import ACTION_RATE_TERM, FloatArray, ObsField, ObsLayout, TaskSpec

JOINT_NAMES = leg_joint_names()
_RANGE_BY_SUFFIX_RAD = {"hip": (-0.5, 0.28), "knee1": (0.0, math.pi / 2), "knee2": (-2.0, 0.0)}
_STAND_BY_SUFFIX_RAD = {"hip": 0.0, "knee1": 0.4, "knee2": -0.8}
"""Standing pose: thigh 0.4 rad back, shin 0.4 rad forward, so each foot sits under its knee1 axis. The middle of
the joint ranges, where a zero action puts the legs, is 0.385 rad away on knee1, outside the success tolerance:
standing is learned, not given. (Straighter legs, 0.3 / -0.6, topple backward in a third of open-loop rises.)"""
_CROUCH_BY_SUFFIX_RAD = {"hip": 0.0, "knee1": 1.3, "knee2": -1.9}
"""Crouched pose: legs folded, the torso about 7.5 cm lower than standing."""


def _per_joint(by_suffix: dict[str, float]) -> tuple[float, ...]:
    return tuple(by_suffix[n.split("_", 1)[1]] for n in JOINT_NAMES)


JOINT_LOW_RAD = tuple(_RANGE_BY_SUFFIX_RAD[n.split("_", 1)[1]][0] for n in JOINT_NAMES)
JOINT_HIGH_RAD = tuple(_RANGE_BY_SUFFIX_RAD[n.split("_", 1)[1]][1] for n in JOINT_NAMES)
STAND_POSE_RAD = _per_joint(_STAND_BY_SUFFIX_RAD)
CROUCH_POSE_RAD = _per_joint(_CROUCH_BY_SUFFIX_RAD)

JOINT_VELOCITY_LIMIT_RAD_S = math.pi
CONTROL_PERIOD_S = 0.1
STAND_EPISODE_S = 8.0
WALK_EPISODE_S = 16.0
MAX_TILT_RAD = math.radians(45.0)
"""Tilt beyond which the robot must stop safely (fold legs, torque off); the controller reads it from the spec."""
SUCCESS_TILT_RAD = 0.25
"""Largest torso tilt (rad) that counts as upright for stand success."""
STAND_HEIGHT_TOL_M = 0.015
"""Band around the standing height (m) that counts as standing."""
STAND_POSE_TOL_RAD = 0.25
"""Largest error of any joint from the standing pose (rad) that counts as standing."""
TARGET_DISTANCE_M = 2.0
"""Walk target distance ahead of the start, along world x (m)."""
SUCCESS_RADIUS_M = 0.5
"""Walk success: torso within this horizontal distance of the target (m)."""
START_CLEARANCE_M = 0.002
"""Gap between the robot's lowest point and the floor at reset (m); it settles within the first step."""
STAND_RESET_NOISE_RAD = 0.1
"""Uniform noise on the crouched start pose per joint (rad)."""
WALK_RESET_NOISE_RAD = 0.05
"""Uniform noise on the standing start pose per joint (rad)."""
START_YAW_NOISE_RAD = 0.1
"""Uniform noise on the start heading (rad)."""

# Reward weights (the reward is the sum of the named terms; see reward_terms).
UPRIGHT_WEIGHT = 1.0
HEIGHT_WEIGHT_PER_M = 10.0
POSE_WEIGHT_PER_RAD = 4.0
"""Per rad of the mean absolute joint error from the standing pose (ROBEL's stand weight). At 0.5 per rad of the
error's norm, SAC settled upright in a half-risen pose (0 of 10 evaluations standing after 50k steps)."""
JOINT_VEL_WEIGHT = 0.01
"""Per rad/s of the joint-velocity norm (walk): the reward sees no action, so joint speed stands in for effort."""
STAND_JOINT_VEL_WEIGHT = 0.1
"""Per rad/s of the joint-velocity norm (stand). A policy that has risen must hold still; at 0.01 SAC kept the
legs twitching by ~0.3 rad around the pose (0-30 % success at 150k steps), outside the success band."""
STAND_ACTION_RATE_WEIGHT = 1.0
"""Per unit of the squared change of the 12 normalized actions between steps (stand): the cost of jitter, which
the state alone hides when the servos do not follow a target that flips every period."""
BASE_ANGVEL_WEIGHT = 0.05
STAND_BONUS = 2.0
TARGET_DIST_WEIGHT_PER_M = 1.0
PROGRESS_WEIGHT_PER_M_S = 5.0
HEADING_WEIGHT = 0.5
WALK_BONUS = 5.0
FALL_PENALTY = 50.0
"""Walk's one-off cost of passing the tilt bound, which ends the episode. Ending must never pay: standing still at
the start earns about -0.5 per step (2 m from the target, upright, facing it), -50 over the rest of an episode
discounted at 0.99, so a fall costs at least that."""

_IMU_FIELDS = (
    ObsField("gravity_body", 3, "-", "unit vector along gravity in the torso frame, from the IMU orientation "
                                      "((0, 0, -1) when upright)"),
    ObsField("base_angvel", 3, "rad/s", "torso angular velocity in the torso frame (IMU gyroscope)"),
    ObsField("joint_pos", 12, "rad", "leg joint positions, task joint order"),
    ObsField("joint_vel", 12, "rad/s", "leg joint velocities"),
    ObsField("last_action", 12, "-", "previous normalized action in [-1, 1]"),
)
STAND_OBS_LAYOUT = ObsLayout(_IMU_FIELDS)
WALK_OBS_LAYOUT = ObsLayout((
    *_IMU_FIELDS,
    ObsField("target_error", 2, "m", "target minus torso position on the floor, in the heading frame (x along the "
                                     "torso's heading, y to its left); needs a position source on hardware"),
))
STAND_REWARD_TERMS = ("upright", "height", "pose", "joint_vel", "base_angvel", "success_bonus", ACTION_RATE_TERM)
WALK_REWARD_TERMS = ("target_dist", "progress", "heading", "upright", "joint_vel", "success_bonus", "fall")


def standing_height(g: KittyGeometry = NOMINAL_GEOMETRY) -> float:
    """Height of the torso origin above the floor in the standing pose, upright (m)."""
    return float(-foot_positions(np.asarray(STAND_POSE_RAD), g)[:, 2].min() + g.foot_radius)


def height_above_feet(joint_pos: FloatArray, base_quat: FloatArray, g: KittyGeometry = NOMINAL_GEOMETRY) -> float:
    """Torso origin height above the bottom of the lowest foot (m), from joint angles and orientation only.

    This is the torso's height above the floor whenever a foot touches it, and a real robot computes it
    from its servos and IMU without any position source.
    """
    feet_world = foot_positions(joint_pos, g) @ quat_to_matrix(base_quat).T
    return float(-feet_world[:, 2].min() + g.foot_radius)


def base_pose_on_floor(joint_pos: FloatArray, quat: FloatArray, g: KittyGeometry = NOMINAL_GEOMETRY,
                       clearance: float = START_CLEARANCE_M) -> FloatArray:
    """Base pose (x, y, z, qw, qx, qy, qz) at the origin, oriented ``quat``, its lowest point (a foot or a torso
    corner) ``clearance`` up."""
    rot = quat_to_matrix(quat)
    feet_z = (foot_positions(joint_pos, g) @ rot.T)[:, 2] - g.foot_radius
    torso_z = (torso_corners(g) @ rot.T)[:, 2]
    z = clearance - min(float(feet_z.min()), float(torso_z.min()))
    return np.concatenate([[0.0, 0.0, z], quat])


def resting_base_pose(joint_pos: FloatArray, yaw: float, g: KittyGeometry = NOMINAL_GEOMETRY,
                      clearance: float = START_CLEARANCE_M) -> FloatArray:
    """Base pose (x, y, z, qw, qx, qy, qz) at the origin, level, heading ``yaw``, lowest point ``clearance`` up."""
    return base_pose_on_floor(joint_pos, quat_from_yaw(yaw), g, clearance)


def _spec(name: str, reset: tuple[float, ...], duration: float, layout: ObsLayout, terms: tuple[str, ...],
          extras: dict[str, float], action_rate_weight: float = 0.0) -> TaskSpec:
    return TaskSpec(
        name=name,
        robot="dkitty",
        joint_names=JOINT_NAMES,
        joint_low=JOINT_LOW_RAD,
        joint_high=JOINT_HIGH_RAD,
        reset_pose=reset,
        joint_velocity_limit=JOINT_VELOCITY_LIMIT_RAD_S,
        control_period=CONTROL_PERIOD_S,
        episode_duration=duration,
        passive_joints=(),
        obs_layout=layout,
        reward_terms=terms,
        extras={
            "max_tilt_rad": MAX_TILT_RAD,
            "success_tilt_rad": SUCCESS_TILT_RAD,
            "stand_height_m": standing_height(),
            "stand_height_tol_m": STAND_HEIGHT_TOL_M,
            "stand_pose_tol_rad": STAND_POSE_TOL_RAD,
            **extras,
        },
        base_joint=BASE_JOINT,
        action_rate_weight=action_rate_weight,
    )


STAND_SPEC = _spec("dkitty-stand", CROUCH_POSE_RAD, STAND_EPISODE_S, STAND_OBS_LAYOUT, STAND_REWARD_TERMS, {},
                   STAND_ACTION_RATE_WEIGHT)
WALK_SPEC = _spec("dkitty-walk", STAND_POSE_RAD, WALK_EPISODE_S, WALK_OBS_LAYOUT, WALK_REWARD_TERMS,
                  {"target_distance_m": TARGET_DISTANCE_M, "success_radius_m": SUCCESS_RADIUS_M})


@dataclass(frozen=True)
class EpisodeStart:
    """Where an episode begins and what it asks for."""

    joint_pos: FloatArray
    """Leg joint positions at reset (rad)."""
    passive_pos: FloatArray
    """No passive joints: an empty vector."""
    goal: dict[str, float]
    """Named goal values: none for stand; ``{"target_x", "target_y"}`` (m, world) for walk."""
    base_pose: FloatArray = field(default_factory=lambda: np.zeros(0))
    """Torso position (m) and orientation (w, x, y, z) at reset, resting just above the floor."""


def _require_base(state: RobotState) -> FloatArray:
    if not state.has_base:
        raise ValueError("the quadruped's tasks need the torso orientation (RobotState.base_quat, from the IMU)")
    if state.base_angvel.shape != (3,):
        raise ValueError("the quadruped's tasks need the torso angular velocity (RobotState.base_angvel, from the "
                         "IMU gyroscope)")
    return np.asarray(state.base_quat, dtype=np.float64)


def _require_position(state: RobotState) -> tuple[FloatArray, FloatArray]:
    if state.base_pos.shape != (3,) or state.base_linvel.shape != (3,):
        raise ValueError("the walk task needs the torso position and velocity (RobotState.base_pos, base_linvel): "
                         "the simulator gives them; on hardware a position source (tracker) must")
    return np.asarray(state.base_pos, dtype=np.float64), np.asarray(state.base_linvel, dtype=np.float64)


@dataclass(frozen=True)
class KittyTask:
    """What the quadruped's tasks share: the scene, its named parameters and the proprioceptive observation."""

    spec: TaskSpec = STAND_SPEC
    """The task spec; replace it (e.g. another control period) with ``dataclasses.replace``."""
    geometry: KittyGeometry = NOMINAL_GEOMETRY
    """Dimensions, masses and gains of the scene."""
    terrain: Terrain = DEFAULT_TERRAIN
    """The heightfield the ``terrain_*`` parameters shape (flat at their nominal values)."""

    def model_xml(self, timestep: float) -> str:
        """MuJoCo XML of the scene at the given physics step (s)."""
        return mjcf(self.spec.joint_ranges, self.geometry, timestep=timestep, terrain=self.terrain)

    def model_urdf(self) -> str:
        """URDF of the same scene for PyBullet, from the same geometry and joint limits."""
        from sim.models.dkitty_urdf import urdf

        return urdf(self.spec.joint_ranges, self.geometry)

    def param_specs(self) -> tuple[ParamSpec, ...]:
        """The named physical parameters of this scene, with nominal values from the geometry."""
        return kitty_params(self.geometry, self.spec, self.terrain)

    def _start(self, rng: np.random.Generator, noise_rad: float, goal: dict[str, float]) -> EpisodeStart:
        noise = rng.uniform(-noise_rad, noise_rad, self.spec.n_joints)
        joint_pos = np.clip(self.spec.reset + noise, self.spec.low, self.spec.high)
        yaw = float(rng.uniform(-START_YAW_NOISE_RAD, START_YAW_NOISE_RAD))
        return EpisodeStart(joint_pos, np.zeros(0), goal, resting_base_pose(joint_pos, yaw, self.geometry))

    def _proprioception(self, state: RobotState, last_action: FloatArray) -> dict[str, FloatArray]:
        quat = _require_base(state)
        return {
            "gravity_body": gravity_in_body(quat),
            "base_angvel": state.base_angvel,
            "joint_pos": state.joint_pos,
            "joint_vel": state.joint_vel,
            "last_action": last_action,
        }

    def fallen(self, state: RobotState) -> bool:
        """The torso tilts beyond the spec's ``max_tilt_rad``: where the robot's controller stops."""
        return tilt(_require_base(state)) > self.spec.extras["max_tilt_rad"]

    def height(self, state: RobotState) -> float:
        """Torso height above the lowest foot (m), estimated from joint angles and the IMU orientation."""
        return height_above_feet(state.joint_pos, _require_base(state), self.geometry)

    def feet(self, joint_pos: FloatArray) -> FloatArray:
        """Centres of the four feet in the torso frame (m), shape (4, 3): the robot's leg odometry uses them."""
        return foot_positions(joint_pos, self.geometry)

    @property
    def foot_radius(self) -> float:
        """Radius of the feet's contact spheres (m)."""
        return self.geometry.foot_radius


@dataclass(frozen=True)
class DKittyStand(KittyTask):
    """Rise from a crouch to the standing pose and stay upright."""

    spec: TaskSpec = STAND_SPEC
    """The stand task spec."""

    def sample_start(self, rng: np.random.Generator) -> EpisodeStart:
        """The crouched pose with small joint and heading noise, resting on the floor."""
        return self._start(rng, STAND_RESET_NOISE_RAD, {})

    def observe(self, state: RobotState, last_action: FloatArray, goal: dict[str, float]) -> np.ndarray:
        """The policy's observation (float32, ``STAND_OBS_LAYOUT``): servos and IMU only."""
        return self.spec.obs_layout.concat(self._proprioception(state, last_action))

    def reward_terms(self, state: RobotState, goal: dict[str, float]) -> dict[str, float]:
        """Named reward terms from servos and IMU alone; the reward is their sum."""
        quat = _require_base(state)
        stand = np.asarray(STAND_POSE_RAD)
        return {
            "upright": UPRIGHT_WEIGHT * upright(quat),
            "height": -HEIGHT_WEIGHT_PER_M * abs(self.height(state) - self.spec.extras["stand_height_m"]),
            "pose": -POSE_WEIGHT_PER_RAD * float(np.mean(np.abs(state.joint_pos - stand))),
            "joint_vel": -STAND_JOINT_VEL_WEIGHT * float(np.linalg.norm(state.joint_vel)),
            "base_angvel": -BASE_ANGVEL_WEIGHT * float(np.linalg.norm(state.base_angvel)),
            "success_bonus": STAND_BONUS if self.success(state, goal) else 0.0,
        }

    def success(self, state: RobotState, goal: dict[str, float]) -> bool:
        """Upright (tilt below ``success_tilt_rad``) at the standing height (within ``stand_height_tol_m``), in the
        standing pose (every joint within ``stand_pose_tol_rad``)."""
        x = self.spec.extras
        pose_error = float(np.max(np.abs(state.joint_pos - np.asarray(STAND_POSE_RAD))))
        return (tilt(_require_base(state)) < x["success_tilt_rad"]
                and abs(self.height(state) - x["stand_height_m"]) < x["stand_height_tol_m"]
                and pose_error < x["stand_pose_tol_rad"])

    def terminated(self, state: RobotState, goal: dict[str, float]) -> bool:
        """Never: stand ends by time only (see the module docstring)."""
        return False


@dataclass(frozen=True)
class DKittyWalk(KittyTask):
    """Walk to a target 2 m ahead."""

    spec: TaskSpec = WALK_SPEC
    """The walk task spec."""
    needs_base_position: ClassVar[bool] = True
    """The observation holds the target in the heading frame: on hardware a position source (the config's
    ``tracker``) must give the torso's position and heading."""

    def sample_start(self, rng: np.random.Generator) -> EpisodeStart:
        """Standing at the origin with small joint and heading noise; the target lies 2 m along world x."""
        return self._start(rng, WALK_RESET_NOISE_RAD,
                           {"target_x": self.spec.extras["target_distance_m"], "target_y": 0.0})

    @staticmethod
    def _to_target(state: RobotState, goal: dict[str, float]) -> FloatArray:
        pos, _ = _require_position(state)
        return np.array([goal["target_x"] - pos[0], goal["target_y"] - pos[1]])

    def observe(self, state: RobotState, last_action: FloatArray, goal: dict[str, float]) -> np.ndarray:
        """The policy's observation (float32, ``WALK_OBS_LAYOUT``): servos, IMU and the target in the heading frame."""
        blocks = self._proprioception(state, last_action)
        yaw = yaw_of(_require_base(state))
        c, s = math.cos(yaw), math.sin(yaw)
        dx, dy = self._to_target(state, goal)
        blocks["target_error"] = np.array([c * dx + s * dy, -s * dx + c * dy])
        return self.spec.obs_layout.concat(blocks)

    def reward_terms(self, state: RobotState, goal: dict[str, float]) -> dict[str, float]:
        """Named reward terms; the reward is their sum."""
        quat = _require_base(state)
        _, linvel = _require_position(state)
        delta = self._to_target(state, goal)
        dist = float(np.linalg.norm(delta))
        toward = delta / dist if dist > 0.0 else np.zeros(2)
        yaw = yaw_of(quat)
        return {
            "target_dist": -TARGET_DIST_WEIGHT_PER_M * dist,
            "progress": PROGRESS_WEIGHT_PER_M_S * float(linvel[:2] @ toward),
            "heading": HEADING_WEIGHT * float(np.array([math.cos(yaw), math.sin(yaw)]) @ toward),
            "upright": UPRIGHT_WEIGHT * upright(quat),
            "joint_vel": -JOINT_VEL_WEIGHT * float(np.linalg.norm(state.joint_vel)),
            "success_bonus": WALK_BONUS if dist < self.spec.extras["success_radius_m"] else 0.0,
            "fall": -FALL_PENALTY if self.fallen(state) else 0.0,
        }

    def success(self, state: RobotState, goal: dict[str, float]) -> bool:
        """The torso is within ``success_radius_m`` of the target on the floor."""
        return float(np.linalg.norm(self._to_target(state, goal))) < self.spec.extras["success_radius_m"]

    def terminated(self, state: RobotState, goal: dict[str, float]) -> bool:
        """The torso passed the tilt bound, where the robot's controller stops the episode."""
        return self.fallen(state)


def kitty_params(g: KittyGeometry, spec: TaskSpec, terrain: Terrain = DEFAULT_TERRAIN) -> tuple[ParamSpec, ...]:
    """The quadruped scene's named parameters; names are shared by both engines and the emulator."""
    joints = spec.joint_names
    return (
        ParamSpec("torso_mass", "body_mass", "kg", g.torso_mass, (TORSO,),
                  "mass of the torso (battery, electronics, hip servos); its inertia scales with it", low=0.05),
        ParamSpec("leg_mass_scale", "body_mass_scale", "-", 1.0, leg_link_names(),
                  "multiplier on every leg link's mass and inertia", low=0.05, high=20.0),
        ParamSpec("foot_friction", "contact_friction", "-", g.foot_friction, (*foot_link_names(), FLOOR),
                  "sliding friction coefficient between feet and floor (set on both)", low=1e-3, high=5.0),
        ParamSpec("leg_kp", "actuator_kp", "N m/rad", g.legs.kp, joints,
                  "position-servo stiffness of every leg joint", low=1e-3),
        ParamSpec("leg_damping", "joint_damping", "N m s/rad", g.legs.damping, joints,
                  "viscous damping of every leg joint"),
        ParamSpec("leg_frictionloss", "joint_frictionloss", "N m", g.legs.frictionloss, joints,
                  "dry friction of every leg joint"),
        ParamSpec("action_latency", "action_latency", "s", 0.0, (),
                  "delay between the policy's action and the servos receiving it", high=1.0),
        ParamSpec("obs_noise_std", "obs_noise_std", "rad", 0.0, (),
                  "std of Gaussian noise on every joint angle reading"),
        ParamSpec("base_orientation_noise_std", "base_orientation_noise_std", "rad", 0.0, (),
                  "std of each component of a random rotation applied to the IMU orientation reading", high=1.0),
        ParamSpec("base_angvel_noise_std", "base_angvel_noise_std", "rad/s", 0.0, (),
                  "std of Gaussian noise on each gyroscope axis"),
        ParamSpec("push_force_std", "push_force_std", "N", 0.0, (TORSO,),
                  "std of each horizontal component of a force pushing the torso through its centre of mass, "
                  "drawn afresh for every control period", high=100.0),
        ParamSpec("control_jitter_std", "control_jitter_std", "s", 0.0, (),
                  "std of the per-step deviation of the control period", high=0.05),
        ParamSpec("terrain_roughness", "terrain_roughness", "m", 0.0, (terrain.body,),
                  f"std of random bumps (about {terrain.bump_spacing_m:g} m apart) of a heightfield replacing the "
                  "flat floor", high=terrain.max_roughness_m),
        ParamSpec("terrain_slope", "terrain_slope", "rad", 0.0, (terrain.body,),
                  "incline of the ground along world x, the walking direction (positive: uphill ahead)",
                  low=-terrain.max_slope_rad, high=terrain.max_slope_rad),
        ParamSpec("terrain_seed", "terrain_seed", "-", 0.0, (terrain.body,),
                  "its integer part seeds the bump pattern (no effect while terrain_roughness is 0)", high=2.0**31),
    )
