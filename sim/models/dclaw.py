"""The D'Claw valve-turn scene, described once and emitted for each engine.

Every dimension, mass and gain lives in :class:`ClawGeometry`; :func:`mjcf` turns it into MuJoCo XML
and ``sim.models.dclaw_urdf`` turns the same numbers into URDF for PyBullet, so the two engines can
only differ where the engines themselves differ.

Frames: the valve axis is the world z axis; finger ``i`` hangs from the mount at azimuth
``120 deg * i``. In a finger's own frame x points radially *inward* (towards the valve axis), z points
up, and y completes the right-handed frame (tangential). The top joint turns about x (the finger
swings sideways, across a spoke); the middle and bottom joints turn about y (the finger curls in
or out). At the reset pose ``[0, -pi/3, pi/3]`` the middle link leans inward and the distal link
hangs vertically, so the fingertips sit ``tip_radius_at_reset`` from the axis, just above the spokes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sim.camera import CameraSpec
from sim.models.links import Capsule
from sim.models.mjcf_parts import fmt, head, position_actuators, servo_defaults
from sim.models.servo import ServoJoints

FINGER_COUNT = 3
VALVE_FRICTION_TIMECONST_S = 0.01
"""Time constant of MuJoCo's soft dry-friction constraint on the valve. It must be short against the
valve's damping time (inertia / damping) or the soft constraint pushes a coasting valve forward instead
of braking it; twice the 2.5 ms physics step is MuJoCo's floor for a stable constraint."""
FINGER_AZIMUTH_STEP_RAD = 2.0 * math.pi / FINGER_COUNT
JOINT_SUFFIXES = ("top", "mid", "bot")
VALVE_MARKER_RGBA = (0.1, 0.85, 0.2, 1.0)
"""Colour of the valve's angle marks, the disc on spoke 0's end and the pointer on the hub: green, found nowhere
else in the nominal scene, so a camera image locates them."""
VALVE_MARKER_THICKNESS_M = 0.004
"""Thickness of the valve's angle marker disc and pointer (m)."""
VALVE_RGBA = (0.9, 0.75, 0.3, 1.0)
"""Colour of the valve's hub and of every spoke but the first."""
SPOKE0_RGBA = (0.85, 0.2, 0.15, 1.0)
"""Colour of spoke 0, the one under finger 0 at valve angle 0."""
FLOOR_RGBA = (0.82, 0.84, 0.86, 1.0)
"""Colour of the floor."""
FLOOR_Z_M = -0.02
"""Height of the floor plane (m)."""
KEY_LIGHT_POS_M = (0.3, -0.3, 0.6)
"""Position of the key light (m): front right, above."""
KEY_LIGHT_DIR = (-0.4, 0.4, -1.0)
"""Direction the key light shines in (-), towards the valve."""


@dataclass(frozen=True)
class ClawGeometry:
    """Dimensions (m), masses (kg), gains and joint dynamics of the claw and the valve."""

    top: Capsule = Capsule(length=0.020, radius=0.008, mass=0.030)
    """Top link: from the abduction axis down to the middle joint."""
    mid: Capsule = Capsule(length=0.068, radius=0.008, mass=0.060)
    """Middle link: middle joint to bottom joint, with the servo that drives the bottom joint."""
    bot: Capsule = Capsule(length=0.060, radius=0.008, mass=0.040)
    """Distal link: bottom joint to the centre of the fingertip sphere; its mass includes the fingertip's (the
    models put 30 % of it in the sphere)."""
    tip_sphere_radius: float = 0.010
    """Radius of the fingertip sphere, the part that touches the valve (m)."""
    tip_radius_at_reset: float = 0.030
    """Horizontal distance of each fingertip from the valve axis at the reset pose (m)."""
    tip_gap_at_reset: float = 0.005
    """Vertical gap between the bottom of a fingertip and the top of the spoke below it at reset (m)."""
    reset_mid_angle: float = -math.pi / 3
    """Middle-joint angle of the reset pose (rad); the bottom joint undoes it so the tip hangs vertically."""

    spoke_count: int = 3
    """Spokes on the valve; spoke 0 lies under finger 0 at valve angle 0."""
    spoke_length: float = 0.085
    """Length of each spoke from the valve axis (m)."""
    spoke_radius: float = 0.008
    """Capsule radius of the spokes (m)."""
    spoke_height: float = 0.015
    """Height of the spoke axes above the valve base (m)."""
    hub_radius: float = 0.015
    """Radius of the valve hub cylinder (m)."""
    marker_radius: float = 0.014
    """Radius of the angle marker, a thin visual-only disc centred on the end of spoke 0 (m). Its round shape,
    wider than any spoke, tells a camera which spoke is marked where colours do not (a pink spoke on a pink
    floor); a real valve needs the same disc glued on (README, Reading the valve angle from the camera)."""
    pointer_corner_angles: tuple[float, ...] = (1.05, 0.65, 0.26)
    """The angle pointer, a thin visual-only "D" in the marker's colour on the hub's top, over the half of it towards
    spoke 0: one box per entry, from the hub's axis towards spoke 0 with its outer corners on the hub's rim at these
    angles from spoke 0 (rad), so together they fill most of that half. The fingers cover the spokes' outer ends (the
    disc too) whenever the spokes lie under them, as at the start; the hub's top stays in sight between the
    fingertips, and in the task camera's 84 x 84 image half of it is a mark 9 px wide and 4 px deep (a bar 10 mm
    wide, the pointer before, was 3 px wide)."""
    valve_mass: float = 0.080
    """Total mass of the valve (hub and spokes) (kg)."""

    fingers: ServoJoints = ServoJoints(kp=4.0, force_limit=4.0, damping=0.1, armature=0.001, frictionloss=0.0)
    """The servos of the finger joints: stiffness (N m / rad), peak torque (N m; an XM430-W350 stalls at about
    4.1 N m), viscous damping (N m s / rad), reflected rotor inertia (kg m^2) and dry friction (N m) of each joint."""
    valve_damping: float = 0.05
    """Viscous damping of the valve hinge (N m s / rad)."""
    valve_frictionloss: float = 0.01
    """Dry friction of the valve hinge (N m)."""
    valve_armature: float = 0.001
    """Extra rotational inertia on the valve hinge (kg m^2): the back-driven encoder servo's gearbox."""
    tip_friction: float = 1.0
    """Sliding friction coefficient between fingertips and the valve (-)."""

    physics_timestep: float = 0.0025
    """Largest physics step the model is meant to run at (s); the env derives the real step from the control period."""

    @property
    def finger_base_radius(self) -> float:
        """Horizontal distance of each finger's abduction axis from the valve axis (m)."""
        inward = self.mid.length * math.sin(-self.reset_mid_angle)
        return self.tip_radius_at_reset + inward

    @property
    def spoke_top_z(self) -> float:
        """Height of the top of the spokes (m)."""
        return self.spoke_height + self.spoke_radius

    @property
    def marker_center(self) -> tuple[float, float, float]:
        """Centre of the angle marker disc in the valve frame (m): on spoke 0's end, its bottom on the spoke's top."""
        return (self.spoke_length, 0.0, self.spoke_top_z + VALVE_MARKER_THICKNESS_M / 2)

    @property
    def pointer_boxes(self) -> tuple[tuple[tuple[float, float, float], tuple[float, float, float]], ...]:
        """Centre and half sizes of each box of the angle pointer in the valve frame (m), on the hub's top: box k
        spans ``[0, r cos a_k]`` along spoke 0 and ``r sin a_k`` to either side, ``a_k`` its corner angle."""
        half_height = VALVE_MARKER_THICKNESS_M / 2
        z = 2.0 * self.spoke_height + half_height
        boxes = []
        for angle in self.pointer_corner_angles:
            half_length = self.hub_radius * math.cos(angle) / 2
            boxes.append(((half_length, 0.0, z), (half_length, self.hub_radius * math.sin(angle), half_height)))
        return tuple(boxes)

    @property
    def mount_height(self) -> float:
        """Height of the finger abduction axes above the valve base (m)."""
        drop = (
            self.top.length
            + self.mid.length * math.cos(self.reset_mid_angle)
            + self.bot.length
        )
        return self.spoke_top_z + self.tip_gap_at_reset + self.tip_sphere_radius + drop


def finger_joint_names() -> tuple[str, ...]:
    """Actuated joint names in the order used everywhere: finger 0 top/mid/bot, finger 1 ..., finger 2 ..."""
    return tuple(f"f{i}_{s}" for i in range(FINGER_COUNT) for s in JOINT_SUFFIXES)


NOMINAL_GEOMETRY = ClawGeometry()


def mjcf(
    joint_ranges: Mapping[str, tuple[float, float]],
    g: ClawGeometry = NOMINAL_GEOMETRY,
    timestep: float | None = None,
    cameras: Sequence[CameraSpec] = (),
) -> str:
    """The MuJoCo XML of the claw scene.

    ``joint_ranges`` maps each finger joint name to its (low, high) limit in rad; it comes from the
    task spec so the model's limits and the command ranges cannot drift apart. ``timestep``
    overrides ``g.physics_timestep``. ``cameras`` (the task's) follow the scene's own ``front`` view.
    """
    dt = g.physics_timestep if timestep is None else timestep
    fingers = []
    for i in range(FINGER_COUNT):
        az = i * FINGER_AZIMUTH_STEP_RAD
        # The finger frame's x axis points inward, i.e. along -radial.
        bx, by = g.finger_base_radius * math.cos(az), g.finger_base_radius * math.sin(az)
        yaw_rad = az + math.pi
        fingers.append(
            f"""
    <body name="f{i}_base" pos="{fmt(bx, by, g.mount_height)}" euler="0 0 {yaw_rad:.6g}">
      <geom name="f{i}_mount" type="box" size="0.012 0.018 0.01" pos="0 0 0.012" class="visual"/>
      <body name="f{i}_top_link">
        <joint name="f{i}_top" axis="1 0 0" range="{fmt(*joint_ranges[f"f{i}_top"])}" class="finger"/>
        <geom name="f{i}_top_geom" type="capsule" fromto="0 0 0 0 0 {-g.top.length:.6g}"
              size="{g.top.radius:.6g}" mass="{g.top.mass:.6g}" class="link"/>
        <body name="f{i}_mid_link" pos="0 0 {-g.top.length:.6g}">
          <joint name="f{i}_mid" axis="0 1 0" range="{fmt(*joint_ranges[f"f{i}_mid"])}" class="finger"/>
          <geom name="f{i}_mid_geom" type="capsule" fromto="0 0 0 0 0 {-g.mid.length:.6g}"
                size="{g.mid.radius:.6g}" mass="{g.mid.mass:.6g}" class="link"/>
          <body name="f{i}_bot_link" pos="0 0 {-g.mid.length:.6g}">
            <joint name="f{i}_bot" axis="0 1 0" range="{fmt(*joint_ranges[f"f{i}_bot"])}" class="finger"/>
            <geom name="f{i}_bot_geom" type="capsule" fromto="0 0 0 0 0 {-g.bot.length:.6g}"
                  size="{g.bot.radius:.6g}" mass="{g.bot.mass * 0.7:.6g}" class="link"/>
            <geom name="f{i}_tip" type="sphere" pos="0 0 {-g.bot.length:.6g}"
                  size="{g.tip_sphere_radius:.6g}" mass="{g.bot.mass * 0.3:.6g}" class="tip"/>
            <site name="f{i}_tip_site" pos="0 0 {-g.bot.length:.6g}" size="0.002"/>
          </body>
        </body>
      </body>
    </body>"""
        )

    spoke_mass = g.valve_mass * 0.6 / g.spoke_count
    hub_mass = g.valve_mass * 0.4
    spokes = []
    for k in range(g.spoke_count):
        a = k * 2.0 * math.pi / g.spoke_count
        ex, ey = g.spoke_length * math.cos(a), g.spoke_length * math.sin(a)
        rgba = fmt(*(SPOKE0_RGBA if k == 0 else VALVE_RGBA))
        spokes.append(
            f'<geom name="valve_spoke{k}" type="capsule" fromto="0 0 {g.spoke_height:.6g} '
            f'{ex:.6g} {ey:.6g} {g.spoke_height:.6g}" size="{g.spoke_radius:.6g}" '
            f'mass="{spoke_mass:.6g}" rgba="{rgba}" class="valve"/>'
        )
    mx, my, mz = g.marker_center
    pointers = "".join(
        f'<geom name="valve_pointer{k}" type="box" size="{fmt(*half)}" pos="{fmt(*pos)}" '
        f'rgba="{fmt(*VALVE_MARKER_RGBA)}" class="visual"/>'
        for k, (pos, half) in enumerate(g.pointer_boxes)
    )
    actuators = position_actuators(finger_joint_names(), g.fingers, joint_ranges)
    defaults = servo_defaults("finger", g.fingers, "tip", g.tip_friction)
    return f"""{head("dclaw_turn", dt)}
  <default>
    {defaults}
    <default class="valve">
      <geom contype="2" conaffinity="1" condim="3" friction="{g.tip_friction:.6g} 0.005 0.0001"/>
    </default>
    <default class="visual"><geom contype="0" conaffinity="0" density="0" rgba="0.5 0.5 0.55 1"/></default>
  </default>
  <worldbody>
    <light name="key" pos="{fmt(*KEY_LIGHT_POS_M)}" dir="{fmt(*KEY_LIGHT_DIR)}" diffuse="0.8 0.8 0.8"/>
    <light name="fill" pos="-0.3 0.3 0.5" dir="0.4 -0.4 -1" diffuse="0.3 0.3 0.3"/>
    <geom name="floor" type="plane" size="0.3 0.3 0.01" pos="0 0 {FLOOR_Z_M:.6g}" rgba="{fmt(*FLOOR_RGBA)}"
          contype="2" conaffinity="1"/>
    <camera name="front" pos="0 -0.42 0.32" xyaxes="1 0 0 0 0.6 0.8" fovy="45"/>
    {"".join(c.mjcf() for c in cameras)}
    <geom name="valve_post" type="cylinder" size="0.01 0.01" pos="0 0 -0.01" class="visual"/>
    {"".join(fingers)}
    <body name="valve" pos="0 0 0">
      <joint name="valve" type="hinge" axis="0 0 1" damping="{g.valve_damping:.6g}"
             frictionloss="{g.valve_frictionloss:.6g}" armature="{g.valve_armature:.6g}" limited="false"
             solreffriction="{VALVE_FRICTION_TIMECONST_S:.6g} 1"/>
      <geom name="valve_hub" type="cylinder" size="{g.hub_radius:.6g} {g.spoke_height:.6g}"
            pos="0 0 {g.spoke_height:.6g}" mass="{hub_mass:.6g}" rgba="{fmt(*VALVE_RGBA)}" class="valve"/>
      {"".join(spokes)}
      <geom name="valve_marker" type="cylinder" size="{g.marker_radius:.6g} {VALVE_MARKER_THICKNESS_M / 2:.6g}"
            pos="{mx:.6g} {my:.6g} {mz:.6g}" rgba="{fmt(*VALVE_MARKER_RGBA)}" class="visual"/>
      {pointers}
    </body>
  </worldbody>
  <actuator>
    {actuators}
  </actuator>
</mujoco>
"""

