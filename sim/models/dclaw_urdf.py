"""The D'Claw valve-turn scene as URDF, for PyBullet: the same numbers as :func:`sim.models.dclaw.mjcf`.

Links and joints carry the MJCF names: a fixed base link ``world`` (floor, finger mounts, valve post),
three finger chains ``f{i}_top_link`` / ``f{i}_mid_link`` / ``f{i}_bot_link`` on the revolute joints
``f{i}_top`` / ``f{i}_mid`` / ``f{i}_bot``, and the link ``valve`` on the continuous joint ``valve``
about the world z axis. The finger mount frames of the MJCF (``f{i}_base``, welded to the world)
become the origins of the ``f{i}_top`` joints, so every link frame coincides with its MJCF body frame.

Masses and inertias follow MuJoCo's rule for ``mass=`` geoms: each geom is a solid of uniform density
with the given mass (capsule = cylinder + two hemispheres, sphere, cylinder), and a link's inertia is
the sum of its geoms' about the link's centre of mass. The result equals MuJoCo's compiled
``body_mass`` / ``body_ipos`` / ``body_inertia`` to rounding for every finger link. The valve weighs
``valve_mass`` (hub and spokes, as the ``valve_mass`` parameter says); the angle marks (the disc on
spoke 0's end, the pointer on the hub) are visual only and massless in both.
The inertial frame is written in principal axes (``rpy`` plus a diagonal tensor), which is what
PyBullet stores. The mass and XML helpers live in :mod:`sim.models.urdf`.

Joint dynamics go in ``<dynamics damping friction>`` (MuJoCo's ``damping`` and ``frictionloss``) plus
an ``armature`` attribute (MuJoCo's reflected rotor inertia, kg m^2) that URDF has no element for;
PyBullet ignores the unknown attribute and :class:`sim.engines.pybullet_engine.PybulletEngine` reads
it. ``<limit effort>`` is the servo torque limit (MuJoCo's ``forcerange``).

Friction: ``<contact><lateral_friction>`` per link, MuJoCo's sliding coefficient of its geoms (one value
per link, so the distal link takes its fingertip's ``tip_friction``).

Collision geometry: the floor plane becomes a thick box whose top face lies where the plane is; the
finger mounts, the valve post and the valve's angle marker and pointer are visual only, as in the MJCF.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from sim.models.dclaw import (
    FINGER_AZIMUTH_STEP_RAD,
    FINGER_COUNT,
    VALVE_MARKER_RGBA,
    VALVE_MARKER_THICKNESS_M,
    ClawGeometry,
)
from sim.models.urdf import (
    MassProps,
    both,
    box,
    capsule_props,
    collision,
    combine,
    contact,
    cylinder_props,
    dynamics,
    fmt,
    inertial,
    origin,
    servo_dynamics,
    shape,
    sphere_props,
    visual,
)

DEFAULT_GEOMETRY = ClawGeometry()
"""The nominal claw, the default of :func:`urdf`."""
FLOOR_TOP_Z_M = -0.02
"""Height of the floor plane (m), as in the MJCF."""
FLOOR_HALF_SIZE_M = 0.3
"""Half side of the drawn floor (m), the MJCF plane's size."""
FLOOR_COLLISION_HALF_SIZE_M = 1.0
"""Half side of the floor's collision box (m): MuJoCo planes are infinite, so make it wide."""
FLOOR_COLLISION_THICKNESS_M = 0.1
"""Thickness of the floor's collision box below the plane (m)."""
MJCF_DEFAULT_FRICTION = 1.0
"""Sliding friction (-) of MJCF geoms without a ``friction=`` (finger links, floor): MuJoCo's default."""
JOINT_VELOCITY_LIMIT_URDF_RAD_S = 100.0
"""``<limit velocity>`` of the finger joints (rad/s): URDF requires one; MuJoCo has none, so it is informative."""

_RGBA = {
    "link": (0.25, 0.28, 0.32, 1.0),
    "tip": (0.1, 0.1, 0.1, 1.0),
    "valve": (0.9, 0.75, 0.3, 1.0),
    "spoke0": (0.85, 0.2, 0.15, 1.0),
    "marker": VALVE_MARKER_RGBA,
    "mount": (0.5, 0.5, 0.55, 1.0),
    "floor": (0.82, 0.84, 0.86, 1.0),
}


def link_mass_props(g: ClawGeometry = DEFAULT_GEOMETRY) -> dict[str, MassProps]:
    """Mass properties of every moving link, by link name, exactly as the URDF states them."""
    props: dict[str, MassProps] = {}
    top, mid, bot = g.top, g.mid, g.bot
    for i in range(FINGER_COUNT):
        props[f"f{i}_top_link"] = capsule_props(top.mass, top.radius, top.length, (0, 0, -top.length / 2))
        props[f"f{i}_mid_link"] = capsule_props(mid.mass, mid.radius, mid.length, (0, 0, -mid.length / 2))
        props[f"f{i}_bot_link"] = combine([
            capsule_props(bot.mass * 0.7, bot.radius, bot.length, (0, 0, -bot.length / 2)),
            sphere_props(g.bot.mass * 0.3, g.tip_sphere_radius, (0, 0, -g.bot.length)),
        ])
    spoke_mass = g.valve_mass * 0.6 / g.spoke_count
    parts = [cylinder_props(g.valve_mass * 0.4, g.hub_radius, 2.0 * g.spoke_height, (0, 0, g.spoke_height))]
    for ux, uy in _spoke_dirs(g):
        center = (ux * g.spoke_length / 2, uy * g.spoke_length / 2, g.spoke_height)
        parts.append(capsule_props(spoke_mass, g.spoke_radius, g.spoke_length, center, axis=(ux, uy, 0.0)))
    props["valve"] = combine(parts)
    return props


def _spoke_dirs(g: ClawGeometry) -> list[tuple[float, float]]:
    return [(math.cos(2.0 * math.pi * k / g.spoke_count), math.sin(2.0 * math.pi * k / g.spoke_count))
            for k in range(g.spoke_count)]


def urdf(joint_ranges: Mapping[str, tuple[float, float]], g: ClawGeometry = DEFAULT_GEOMETRY) -> str:
    """The URDF of the claw scene (see the module docstring for the conventions).

    ``joint_ranges`` maps each finger joint name to its (low, high) limit in rad, as for :func:`mjcf`.
    """
    props = link_mass_props(g)
    materials = "".join(f'<material name="{k}"><color rgba="{fmt(*v)}"/></material>' for k, v in _RGBA.items())

    # Base: floor, mounts and post (the MJCF worldbody and the welded f{i}_base bodies).
    floor_center = (0.0, 0.0, FLOOR_TOP_Z_M - FLOOR_COLLISION_THICKNESS_M / 2)
    base = [
        visual("floor", box((2 * FLOOR_HALF_SIZE_M, 2 * FLOOR_HALF_SIZE_M, 0.002)), "floor",
               (0.0, 0.0, FLOOR_TOP_Z_M - 0.001)),
        collision("floor", box((2 * FLOOR_COLLISION_HALF_SIZE_M, 2 * FLOOR_COLLISION_HALF_SIZE_M,
                                FLOOR_COLLISION_THICKNESS_M)), floor_center),
        visual("valve_post", shape("cylinder", {"radius": 0.01, "length": 0.02}), "mount", (0.0, 0.0, -0.01)),
    ]
    joints: list[str] = []
    links: list[str] = []
    for i in range(FINGER_COUNT):
        az = i * FINGER_AZIMUTH_STEP_RAD
        base_xyz = (g.finger_base_radius * math.cos(az), g.finger_base_radius * math.sin(az), g.mount_height)
        yaw = az + math.pi
        # The MJCF mount box sits 0.012 m above the finger frame's origin.
        base.append(visual(f"f{i}_mount", box((0.024, 0.036, 0.02)), "mount",
                           (base_xyz[0], base_xyz[1], base_xyz[2] + 0.012), (0.0, 0.0, yaw)))
        chain = (
            ("top", "world", base_xyz, (0.0, 0.0, yaw), (1, 0, 0), g.top),
            ("mid", f"f{i}_top_link", (0.0, 0.0, -g.top.length), (0.0, 0.0, 0.0), (0, 1, 0), g.mid),
            ("bot", f"f{i}_mid_link", (0.0, 0.0, -g.mid.length), (0.0, 0.0, 0.0), (0, 1, 0), g.bot),
        )
        for suffix, parent, xyz, rpy, axis, link in chain:
            name = f"f{i}_{suffix}"
            lo, hi = joint_ranges[name]
            capsule = shape("capsule", {"radius": link.radius, "length": link.length})
            geoms = both(f"{name}_geom", capsule, "link", (0.0, 0.0, -link.length / 2))
            if suffix == "bot":
                tip = shape("sphere", {"radius": g.tip_sphere_radius})
                geoms += both(f"f{i}_tip", tip, "tip", (0.0, 0.0, -link.length))
            # One friction coefficient per link: the distal link's is the fingertip's.
            friction = g.tip_friction if suffix == "bot" else MJCF_DEFAULT_FRICTION
            links.append(f'<link name="{name}_link">{inertial(props[f"{name}_link"])}{contact(friction)}'
                         f"{geoms}</link>")
            joints.append(
                f'<joint name="{name}" type="revolute"><parent link="{parent}"/><child link="{name}_link"/>'
                f"{origin(xyz, rpy)}<axis xyz=\"{fmt(*axis)}\"/>"
                f'<limit lower="{lo:.9g}" upper="{hi:.9g}" effort="{g.fingers.force_limit:.9g}" '
                f'velocity="{JOINT_VELOCITY_LIMIT_URDF_RAD_S:.9g}"/>'
                f"{servo_dynamics(g.fingers)}</joint>"
            )

    valve_geoms = [both("valve_hub", shape("cylinder", {"radius": g.hub_radius, "length": 2 * g.spoke_height}),
                        "valve", (0.0, 0.0, g.spoke_height))]
    for k, (ux, uy) in enumerate(_spoke_dirs(g)):
        mid = (ux * g.spoke_length / 2, uy * g.spoke_length / 2, g.spoke_height)
        # A URDF capsule lies along its z axis: pitch it onto x, then yaw it onto the spoke.
        rpy = (0.0, math.pi / 2, math.atan2(uy, ux))
        valve_geoms.append(both(f"valve_spoke{k}", shape("capsule", {"radius": g.spoke_radius,
                                                                     "length": g.spoke_length}),
                                "spoke0" if k == 0 else "valve", mid, rpy))
    marker = shape("cylinder", {"radius": g.marker_radius, "length": VALVE_MARKER_THICKNESS_M})
    valve_geoms.append(visual("valve_marker", marker, "marker", g.marker_center))
    for k, (pointer_pos, pointer_half) in enumerate(g.pointer_boxes):
        valve_geoms.append(visual(f"valve_pointer{k}", box(tuple(2.0 * h for h in pointer_half)), "marker",
                                  pointer_pos))
    links.append(f'<link name="valve">{inertial(props["valve"])}{contact(g.tip_friction)}'
                 f'{"".join(valve_geoms)}</link>')
    joints.append(
        '<joint name="valve" type="continuous"><parent link="world"/><child link="valve"/>'
        f'{origin()}<axis xyz="0 0 1"/>{dynamics(g.valve_damping, g.valve_frictionloss, g.valve_armature)}</joint>'
    )

    base_link = ('<link name="world"><inertial><origin xyz="0 0 0" rpy="0 0 0"/><mass value="0"/>'
                 '<inertia ixx="0" ixy="0" ixz="0" iyy="0" iyz="0" izz="0"/></inertial>'
                 f"{contact(MJCF_DEFAULT_FRICTION)}"
                 f"{''.join(base)}</link>")
    body = "\n  ".join([materials, base_link, *links, *joints])
    return f'<?xml version="1.0"?>\n<robot name="dclaw_turn">\n  {body}\n</robot>\n'
