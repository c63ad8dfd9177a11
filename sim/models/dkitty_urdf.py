"""The quadruped scene as URDF, for PyBullet: the same numbers as :func:`sim.models.dkitty.mjcf`.

The root link ``floor`` (massless: the world) holds the floor; the joint ``root`` of URDF type ``floating``
(six degrees of freedom, MuJoCo's free joint) carries the ``torso`` link, whose origin starts
``start_height`` above the floor. PyBullet has no floating joint: its engine splits the scene there into
a fixed floor body and a free-base robot (see :mod:`sim.engines.pybullet_engine`). Leg links and joints
carry the MJCF names and frames.

Masses and inertias follow MuJoCo's rule for ``mass=`` geoms (uniform solids; a link's inertia is the sum
of its geoms' about the link's centre of mass), as in :mod:`sim.models.dclaw_urdf`; both take their mass and
XML helpers from :mod:`sim.models.urdf`. The torso's visual nose marker and the IMU site are massless in the MJCF and
left out here.

Joint dynamics and friction follow the claw's conventions: ``<dynamics damping friction armature>``,
``<limit effort>`` the servo torque limit, one ``<lateral_friction>`` per link (the shins take the foot's
coefficient; the floor the same value, so a foot-floor contact has it on both engines). MuJoCo's floor plane is
infinite; here it is a box 2 km across whose top face lies at z = 0: a walk chained unattended for 50 episodes goes
tens of metres (it walked off the edge of a 20 m box, and fell, in about one run in three). Bullet's own infinite
plane broke the exact restore of a scene with a heightfield.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from sim.models.dkitty import (
    BASE_JOINT,
    FLOOR,
    LEG_SIGNS,
    LEGS,
    NOMINAL_GEOMETRY,
    TORSO,
    KittyGeometry,
)
from sim.models.urdf import (
    MassProps,
    both,
    box,
    box_props,
    capsule_props,
    collision,
    combine,
    contact,
    fmt,
    inertial,
    origin,
    servo_dynamics,
    shape,
    sphere_props,
    visual,
)

FLOOR_COLLISION_HALF_SIZE_M = 1000.0
"""Half side of the floor's collision box (m): far beyond any walk (MuJoCo's plane is infinite)."""
FLOOR_COLLISION_THICKNESS_M = 10.0
"""Thickness of the floor's collision box below z = 0 (m): pybullet_data's plane.urdf proportions."""
FLOOR_VISUAL_HALF_SIZE_M = 5.0
"""Half side of the drawn floor (m), the MJCF plane's size."""
MJCF_DEFAULT_FRICTION = 1.0
"""Sliding friction (-) of MJCF geoms without a ``friction=`` (torso and leg links): MuJoCo's default."""
JOINT_VELOCITY_LIMIT_URDF_RAD_S = 100.0
"""``<limit velocity>`` of the leg joints (rad/s): URDF requires one; MuJoCo has none, so it is informative."""

CAPSULE_ALONG_Y_RPY = (-math.pi / 2, 0.0, 0.0)
"""URDF ``rpy`` (rad) that lays a capsule, which URDF puts along z, along y (the hip brackets)."""

_RGBA = {
    "link": (0.25, 0.28, 0.32, 1.0),
    "torso": (0.55, 0.6, 0.68, 1.0),
    "foot": (0.1, 0.1, 0.1, 1.0),
    "floor": (0.7, 0.72, 0.75, 1.0),
}


def link_mass_props(g: KittyGeometry = NOMINAL_GEOMETRY) -> dict[str, MassProps]:
    """Mass properties of the torso and every leg link, by link name, exactly as the URDF states them."""
    props = {TORSO: box_props(g.torso_mass, (g.torso_length, g.torso_width, g.torso_height))}
    for leg in LEGS:
        side = LEG_SIGNS[leg][1]
        props[f"{leg}_hip_link"] = capsule_props(g.hip.mass, g.hip.radius, g.hip.length,
                                                 (0.0, side * g.hip.length / 2, 0.0), axis=(0.0, 1.0, 0.0))
        props[f"{leg}_thigh_link"] = capsule_props(g.thigh.mass, g.thigh.radius, g.thigh.length,
                                                   (0.0, 0.0, -g.thigh.length / 2))
        props[f"{leg}_shin_link"] = combine([
            capsule_props(g.shin.mass, g.shin.radius, g.shin.length, (0.0, 0.0, -g.shin.length / 2)),
            sphere_props(g.foot_mass, g.foot_radius, (0.0, 0.0, -g.shin.length)),
        ])
    return props


def urdf(joint_ranges: Mapping[str, tuple[float, float]], g: KittyGeometry = NOMINAL_GEOMETRY) -> str:
    """The URDF of the quadruped scene (see the module docstring for the conventions).

    ``joint_ranges`` maps each leg joint name to its (low, high) limit in rad, as for :func:`sim.models.dkitty.mjcf`.
    """
    props = link_mass_props(g)
    materials = "".join(f'<material name="{k}"><color rgba="{fmt(*v)}"/></material>' for k, v in _RGBA.items())
    floor = (
        f'<link name="{FLOOR}"><inertial><origin xyz="0 0 0" rpy="0 0 0"/><mass value="0"/>'
        '<inertia ixx="0" ixy="0" ixz="0" iyy="0" iyz="0" izz="0"/></inertial>'
        f"{contact(g.foot_friction)}"
        + visual(FLOOR, box((2 * FLOOR_VISUAL_HALF_SIZE_M, 2 * FLOOR_VISUAL_HALF_SIZE_M, 0.002)), "floor",
                 (0.0, 0.0, -0.001))
        + collision(FLOOR, box((2 * FLOOR_COLLISION_HALF_SIZE_M, 2 * FLOOR_COLLISION_HALF_SIZE_M,
                                FLOOR_COLLISION_THICKNESS_M)), (0.0, 0.0, -FLOOR_COLLISION_THICKNESS_M / 2))
        + "</link>"
    )
    torso_geom = both("torso_geom", box((g.torso_length, g.torso_width, g.torso_height)), "torso")
    torso = f'<link name="{TORSO}">{inertial(props[TORSO])}{contact(MJCF_DEFAULT_FRICTION)}{torso_geom}</link>'
    links = [floor, torso]
    joints = [f'<joint name="{BASE_JOINT}" type="floating"><parent link="{FLOOR}"/><child link="{TORSO}"/>'
              f"{origin((0.0, 0.0, g.start_height))}</joint>"]
    leg_dynamics = servo_dynamics(g.legs)
    for leg in LEGS:
        side = LEG_SIGNS[leg][1]
        hip_geom = both(f"{leg}_hip_geom", shape("capsule", {"radius": g.hip.radius,
                                                             "length": g.hip.length}),
                        "link", (0.0, side * g.hip.length / 2, 0.0), CAPSULE_ALONG_Y_RPY)
        thigh_geom = both(f"{leg}_thigh_geom", shape("capsule", {"radius": g.thigh.radius, "length": g.thigh.length}),
                          "link", (0.0, 0.0, -g.thigh.length / 2))
        shin_geom = (both(f"{leg}_shin_geom", shape("capsule", {"radius": g.shin.radius, "length": g.shin.length}),
                          "link", (0.0, 0.0, -g.shin.length / 2))
                     + both(f"{leg}_foot", shape("sphere", {"radius": g.foot_radius}), "foot",
                            (0.0, 0.0, -g.shin.length)))
        chain = (
            ("hip", TORSO, g.hip_position(leg), (side, 0, 0), "hip_link", hip_geom, MJCF_DEFAULT_FRICTION),
            ("knee1", f"{leg}_hip_link", (0.0, side * g.hip.length, 0.0), (0, 1, 0), "thigh_link", thigh_geom,
             MJCF_DEFAULT_FRICTION),
            ("knee2", f"{leg}_thigh_link", (0.0, 0.0, -g.thigh.length), (0, 1, 0), "shin_link", shin_geom,
             g.foot_friction),
        )
        for suffix, parent, xyz, axis, link_suffix, geoms, friction in chain:
            name, link = f"{leg}_{suffix}", f"{leg}_{link_suffix}"
            lo, hi = joint_ranges[name]
            links.append(f'<link name="{link}">{inertial(props[link])}{contact(friction)}{geoms}</link>')
            joints.append(
                f'<joint name="{name}" type="revolute"><parent link="{parent}"/><child link="{link}"/>'
                f"{origin(xyz)}<axis xyz=\"{fmt(*axis)}\"/>"
                f'<limit lower="{lo:.9g}" upper="{hi:.9g}" effort="{g.legs.force_limit:.9g}" '
                f'velocity="{JOINT_VELOCITY_LIMIT_URDF_RAD_S:.9g}"/>{leg_dynamics}</joint>'
            )
    body = "\n  ".join([materials, *links, *joints])
    return f'<?xml version="1.0"?>\n<robot name="dkitty">\n  {body}\n</robot>\n'
