"""A D'Kitty-like quadruped on a floor, described once and emitted for each engine.

Every dimension, mass and gain lives in :class:`KittyGeometry`; :func:`mjcf` turns it into MuJoCo XML and
``sim.models.dkitty_urdf`` turns the same numbers into URDF for PyBullet. :func:`foot_positions` is the
legs' forward kinematics from the same numbers, used by the task (start placement, the height estimate a
real robot can compute from its servos and IMU) and checked against MuJoCo in the tests.

Frames: the torso frame has x forward, y to the left, z up, its origin at the centre of the torso box;
the free joint ``root`` moves it, and the ``imu`` site sits at its origin with the same axes. Legs are
``fr``, ``fl``, ``bl``, ``br`` (front/back, right/left), each with three hinges:

* ``{leg}_hip`` at the torso's side face, about the torso's x axis, mirrored per side so that a positive
  angle swings the leg outward on both sides;
* ``{leg}_knee1`` at the outer end of the hip bracket, about y: positive swings the thigh backward;
* ``{leg}_knee2`` at the end of the thigh, about y: negative swings the shin forward.

At zero angles a leg hangs straight down. Link frames coincide with their joint frames and carry the
same names in both engines: ``{leg}_hip_link``, ``{leg}_thigh_link``, ``{leg}_shin_link`` (the shin ends in
the foot sphere ``{leg}_foot``). The floor is the static body ``floor`` (top face at z = 0).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from sim.models.links import Capsule
from sim.models.mjcf_parts import fmt, head, position_actuators, servo_defaults
from sim.models.servo import ServoJoints
from sim.models.terrain import DEFAULT_TERRAIN, Terrain
from sim.tasks.spec import FloatArray

LEGS = ("fr", "fl", "bl", "br")
"""Leg order of joints, actions and observations (ROBEL's D'Kitty order)."""
JOINT_SUFFIXES = ("hip", "knee1", "knee2")
LINK_SUFFIXES = ("hip_link", "thigh_link", "shin_link")
BASE_JOINT = "root"
"""Free joint of the torso (URDF: a ``floating`` joint from ``floor``)."""
TORSO = "torso"
FLOOR = "floor"
IMU_SITE = "imu"
TERRAIN_IDLE_CONTYPE = 2
"""Collision bits of the heightfield geom in the file: a class no other geom has, so it touches nothing, yet it is
compiled into MuJoCo's collision structures (which leave out geoms with no bits at all) for the engine to swap in."""
LEG_SIGNS: Mapping[str, tuple[int, int]] = {"fr": (1, -1), "fl": (1, 1), "bl": (-1, 1), "br": (-1, -1)}
"""(front +1 / back -1, left +1 / right -1) of each leg."""


@dataclass(frozen=True)
class KittyGeometry:
    """Dimensions (m), masses (kg), gains and joint dynamics of the quadruped and its floor."""

    torso_length: float = 0.26
    """Torso box along x (m)."""
    torso_width: float = 0.15
    """Torso box along y (m); the hip joints sit on its side faces."""
    torso_height: float = 0.06
    """Torso box along z (m)."""
    torso_mass: float = 0.90
    """Torso with battery, electronics and the four hip servos (kg)."""
    hip_x: float = 0.10
    """Distance of the front and back hip axes from the torso centre along x (m)."""
    hip: Capsule = Capsule(length=0.03, radius=0.015, mass=0.08)
    """Hip bracket: from the hip axis outward to the knee1 axis, with the knee1 servo."""
    thigh: Capsule = Capsule(length=0.10, radius=0.014, mass=0.10)
    """Thigh: knee1 axis to knee2 axis, with the knee2 servo."""
    shin: Capsule = Capsule(length=0.10, radius=0.010, mass=0.035)
    """Shin: knee2 axis to the centre of the foot sphere, without the foot."""
    foot_radius: float = 0.020
    """Radius of the foot sphere, the part that touches the floor (m)."""
    foot_mass: float = 0.015
    """Foot sphere (kg)."""

    legs: ServoJoints = ServoJoints(kp=5.0, force_limit=3.0, damping=0.1, armature=0.001, frictionloss=0.0)
    """The servos of the leg joints: stiffness (N m / rad), peak torque (N m; an XM430-W210 stalls at about 3 N m),
    viscous damping (N m s / rad), reflected rotor inertia (kg m^2) and dry friction (N m) of each joint."""
    foot_friction: float = 1.0
    """Sliding friction coefficient between feet and floor (-); the floor carries the same value."""

    start_height: float = 0.30
    """Height of the torso origin in the scene file (m); tasks place the robot themselves at every reset."""
    physics_timestep: float = 0.0025
    """Largest physics step the model is meant to run at (s); the env derives the real step from the control period."""

    @property
    def total_mass(self) -> float:
        """Mass of the whole robot (kg)."""
        leg = self.hip.mass + self.thigh.mass + self.shin.mass + self.foot_mass
        return self.torso_mass + len(LEGS) * leg

    def hip_position(self, leg: str) -> tuple[float, float, float]:
        """Hip axis origin of ``leg`` in the torso frame (m)."""
        fx, side = LEG_SIGNS[leg]
        return (fx * self.hip_x, side * self.torso_width / 2.0, 0.0)

    def torso_half_sizes(self) -> tuple[float, float, float]:
        """Half sizes of the torso box (m)."""
        return (self.torso_length / 2.0, self.torso_width / 2.0, self.torso_height / 2.0)


NOMINAL_GEOMETRY = KittyGeometry()


def leg_joint_names() -> tuple[str, ...]:
    """Actuated joint names in the order used everywhere: fr hip/knee1/knee2, fl ..., bl ..., br ..."""
    return tuple(f"{leg}_{s}" for leg in LEGS for s in JOINT_SUFFIXES)


def leg_link_names() -> tuple[str, ...]:
    """Every leg link, leg by leg from hip to shin."""
    return tuple(f"{leg}_{s}" for leg in LEGS for s in LINK_SUFFIXES)


def foot_link_names() -> tuple[str, ...]:
    """The links that end in a foot (the shins)."""
    return tuple(f"{leg}_shin_link" for leg in LEGS)


def _rot_x(a: float) -> FloatArray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rot_y(a: float) -> FloatArray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def foot_positions(joint_pos: FloatArray, g: KittyGeometry = NOMINAL_GEOMETRY) -> FloatArray:
    """Centres of the four foot spheres in the torso frame (m), shape (4, 3), legs in :data:`LEGS` order.

    ``joint_pos`` is the 12 joint angles (rad) in :func:`leg_joint_names` order.
    """
    q = np.asarray(joint_pos, dtype=np.float64)
    if q.shape != (len(LEGS) * len(JOINT_SUFFIXES),):
        raise ValueError(f"foot_positions needs {len(LEGS) * len(JOINT_SUFFIXES)} joint angles, got shape {q.shape}")
    out = np.empty((len(LEGS), 3))
    down = np.array([0.0, 0.0, -1.0])
    for i, leg in enumerate(LEGS):
        hip, knee1, knee2 = q[3 * i: 3 * i + 3]
        side = LEG_SIGNS[leg][1]
        # A hinge about -x by a equals one about +x by -a: the mirrored right-side hips.
        r_hip = _rot_x(side * hip)
        knee1_pos = np.array(g.hip_position(leg)) + r_hip @ np.array([0.0, side * g.hip.length, 0.0])
        r_thigh = r_hip @ _rot_y(knee1)
        knee2_pos = knee1_pos + r_thigh @ (g.thigh.length * down)
        out[i] = knee2_pos + r_thigh @ _rot_y(knee2) @ (g.shin.length * down)
    return out


def torso_corners(g: KittyGeometry = NOMINAL_GEOMETRY) -> FloatArray:
    """The eight corners of the torso box in the torso frame (m), shape (8, 3)."""
    hx, hy, hz = g.torso_half_sizes()
    return np.array([[sx * hx, sy * hy, sz * hz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)


def look_at_xyaxes(eye: tuple[float, float, float], target: tuple[float, float, float]) -> tuple[float, ...]:
    """MuJoCo ``xyaxes`` of a camera at ``eye`` looking at ``target`` (m) with world z up."""
    f = np.subtract(target, eye).astype(np.float64)
    f /= np.linalg.norm(f)
    x = np.cross(f, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(-f, x)
    return (*(float(v) for v in x), *(float(v) for v in y))


CAMERAS: Mapping[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "side": ((1.0, -2.4, 0.9), (0.9, 0.0, 0.1)),
    "close": ((0.55, -0.55, 0.4), (0.0, 0.0, 0.12)),
}
"""Camera name -> (eye, target) in world coordinates (m); the first is the default view. ``side`` sees the
walk from the start to the target 2 m ahead along x; ``close`` frames the robot at the origin."""


def mjcf(
    joint_ranges: Mapping[str, tuple[float, float]],
    g: KittyGeometry = NOMINAL_GEOMETRY,
    timestep: float | None = None,
    terrain: Terrain = DEFAULT_TERRAIN,
) -> str:
    """The MuJoCo XML of the quadruped on its floor.

    ``joint_ranges`` maps each leg joint name to its (low, high) limit in rad; it comes from the task spec
    so the model's limits and the command ranges cannot drift apart. ``timestep`` overrides
    ``g.physics_timestep``. ``terrain`` sizes the heightfield (asset and geom ``terrain.name``) in the floor body:
    its heights are the engine's to write (``terrain_*`` parameters); it touches nothing until the engine swaps it in
    for the plane. Its surface is ``pos_z + data * size_z``, data in [0, 1] (see :mod:`sim.models.terrain`).
    """
    dt = g.physics_timestep if timestep is None else timestep
    hx, hy, hz = g.torso_half_sizes()
    legs = []
    for leg in LEGS:
        side = LEG_SIGNS[leg][1]
        legs.append(f"""
      <body name="{leg}_hip_link" pos="{fmt(*g.hip_position(leg))}">
        <joint name="{leg}_hip" axis="{side} 0 0" range="{fmt(*joint_ranges[f"{leg}_hip"])}" class="leg"/>
        <geom name="{leg}_hip_geom" type="capsule" fromto="0 0 0 0 {side * g.hip.length:.6g} 0"
              size="{g.hip.radius:.6g}" mass="{g.hip.mass:.6g}" class="link"/>
        <body name="{leg}_thigh_link" pos="0 {side * g.hip.length:.6g} 0">
          <joint name="{leg}_knee1" axis="0 1 0" range="{fmt(*joint_ranges[f"{leg}_knee1"])}" class="leg"/>
          <geom name="{leg}_thigh_geom" type="capsule" fromto="0 0 0 0 0 {-g.thigh.length:.6g}"
                size="{g.thigh.radius:.6g}" mass="{g.thigh.mass:.6g}" class="link"/>
          <body name="{leg}_shin_link" pos="0 0 {-g.thigh.length:.6g}">
            <joint name="{leg}_knee2" axis="0 1 0" range="{fmt(*joint_ranges[f"{leg}_knee2"])}" class="leg"/>
            <geom name="{leg}_shin_geom" type="capsule" fromto="0 0 0 0 0 {-g.shin.length:.6g}"
                  size="{g.shin.radius:.6g}" mass="{g.shin.mass:.6g}" class="link"/>
            <geom name="{leg}_foot" type="sphere" pos="0 0 {-g.shin.length:.6g}" size="{g.foot_radius:.6g}"
                  mass="{g.foot_mass:.6g}" class="foot"/>
            <site name="{leg}_foot_site" pos="0 0 {-g.shin.length:.6g}" size="0.003"/>
          </body>
        </body>
      </body>""")
    actuators = position_actuators(leg_joint_names(), g.legs, joint_ranges)
    defaults = servo_defaults("leg", g.legs, "foot", g.foot_friction)
    cameras = "\n    ".join(
        f'<camera name="{name}" pos="{fmt(*eye)}" xyaxes="{fmt(*look_at_xyaxes(eye, target))}" fovy="45"/>'
        for name, (eye, target) in CAMERAS.items()
    )
    return f"""{head("dkitty", dt)}
  <asset>
    <texture name="grid" type="2d" builtin="checker" rgb1="0.78 0.8 0.82" rgb2="0.62 0.64 0.68" width="256"
             height="256"/>
    <material name="grid" texture="grid" texrepeat="8 8" reflectance="0"/>
    <hfield name="{terrain.name}" nrow="{terrain.n}" ncol="{terrain.n}"
            size="{fmt(terrain.half_extent_m, terrain.half_extent_m, terrain.height_range_m, terrain.base_m)}"/>
  </asset>
  <default>
    {defaults}
  </default>
  <worldbody>
    <light name="key" pos="0.5 -1.0 2.0" dir="-0.2 0.4 -1" diffuse="0.8 0.8 0.8"/>
    <light name="fill" pos="-0.5 1.0 1.5" dir="0.2 -0.4 -1" diffuse="0.3 0.3 0.3"/>
    {cameras}
    <body name="{FLOOR}">
      <geom name="{FLOOR}" type="plane" size="5 5 0.1" material="grid" contype="1" conaffinity="1" condim="3"
            friction="{g.foot_friction:.6g} 0.005 0.0001"/>
      <geom name="{terrain.name}" type="hfield" hfield="{terrain.name}" pos="0 0 {-terrain.height_range_m / 2:.9g}"
            contype="{TERRAIN_IDLE_CONTYPE}" conaffinity="{TERRAIN_IDLE_CONTYPE}" condim="3"
            friction="{g.foot_friction:.6g} 0.005 0.0001" rgba="0.62 0.64 0.68 0" mass="0"/>
    </body>
    <body name="{TORSO}" pos="0 0 {g.start_height:.6g}">
      <freejoint name="{BASE_JOINT}"/>
      <geom name="torso_geom" type="box" size="{fmt(hx, hy, hz)}" mass="{g.torso_mass:.6g}" class="link"
            rgba="0.55 0.6 0.68 1"/>
      <geom name="torso_nose" type="box" size="0.01 0.03 0.008" pos="{hx:.6g} 0 {hz:.6g}" rgba="0.9 0.3 0.2 1"
            contype="0" conaffinity="0" density="0"/>
      <site name="{IMU_SITE}" pos="0 0 0" size="0.01" rgba="0.2 0.8 0.2 1"/>{"".join(legs)}
    </body>
  </worldbody>
  <actuator>
    {actuators}
  </actuator>
</mujoco>
"""
