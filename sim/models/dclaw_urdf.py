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
``valve_mass`` (hub and spokes, as the ``valve_mass`` parameter says); the MJCF's visual marker box has
no ``mass=`` and so gets MuJoCo's default density (1.15 g more valve) until the MJCF marks it massless.
The inertial frame is written in principal axes (``rpy`` plus a diagonal tensor), which is what
PyBullet stores.

Joint dynamics go in ``<dynamics damping friction>`` (MuJoCo's ``damping`` and ``frictionloss``) plus
an ``armature`` attribute (MuJoCo's reflected rotor inertia, kg m^2) that URDF has no element for;
PyBullet ignores the unknown attribute and :class:`sim.engines.pybullet_engine.PybulletEngine` reads
it. ``<limit effort>`` is the servo torque limit (MuJoCo's ``forcerange``).

Friction: ``<contact><lateral_friction>`` per link, MuJoCo's sliding coefficient of its geoms (one value
per link, so the distal link takes its fingertip's ``tip_friction``).

Collision geometry: the floor plane becomes a thick box whose top face lies where the plane is; the
finger mounts, the valve post and the valve marker are visual only, as in the MJCF.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

import numpy as np
from numpy.typing import NDArray

from sim.models.dclaw import FINGER_AZIMUTH_STEP_RAD, FINGER_COUNT, ClawGeometry

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
VALVE_MARKER_HALF_SIZE_M = (0.006, 0.006, 0.004)
"""Half sizes of the valve's angle marker box (m), as in the MJCF."""
MJCF_DEFAULT_FRICTION = 1.0
"""Sliding friction (-) of MJCF geoms without a ``friction=`` (finger links, floor): MuJoCo's default."""
JOINT_VELOCITY_LIMIT_URDF_RAD_S = 100.0
"""``<limit velocity>`` of the finger joints (rad/s): URDF requires one; MuJoCo has none, so it is informative."""

_RGBA = {
    "link": (0.25, 0.28, 0.32, 1.0),
    "tip": (0.1, 0.1, 0.1, 1.0),
    "valve": (0.9, 0.75, 0.3, 1.0),
    "spoke0": (0.85, 0.2, 0.15, 1.0),
    "marker": (0.9, 0.1, 0.1, 1.0),
    "mount": (0.5, 0.5, 0.55, 1.0),
    "floor": (0.82, 0.84, 0.86, 1.0),
}


def _fmt(*values: float) -> str:
    return " ".join(f"{v:.9g}" for v in values)


# --- mass properties ---------------------------------------------------------------------------
@dataclass(frozen=True)
class MassProps:
    """Mass (kg), centre of mass (m, link frame) and inertia tensor about it (kg m^2, link axes)."""

    mass: float
    """Mass (kg)."""
    com: NDArray[np.float64]
    """Centre of mass in the link frame (m)."""
    inertia: NDArray[np.float64]
    """3x3 inertia tensor about the centre of mass, in link axes (kg m^2)."""


def _rot_z_to(direction: Sequence[float]) -> NDArray[np.float64]:
    """A rotation matrix whose third column is the unit vector along ``direction``."""
    z = np.asarray(direction, dtype=np.float64)
    z = z / np.linalg.norm(z)
    helper = np.array([1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    x = np.cross(helper, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.column_stack([x, y, z])


def capsule_props(mass: float, radius: float, length: float, center: Sequence[float],
                  axis: Sequence[float] = (0.0, 0.0, 1.0)) -> MassProps:
    """A solid capsule (cylinder of ``length`` between the hemisphere centres) of uniform density.

    Same split as MuJoCo: the two hemispheres take the share of the mass their volume has.
    """
    r, h = radius, length
    sphere_mass = mass * (4.0 * r / 3.0) / (h + 4.0 * r / 3.0)
    cyl_mass = mass - sphere_mass
    i_axis = cyl_mass * r * r / 2.0 + sphere_mass * 2.0 * r * r / 5.0
    i_perp = (cyl_mass * (3.0 * r * r + h * h) / 12.0
              + sphere_mass * (2.0 * r * r / 5.0 + h * h / 4.0 + 3.0 * h * r / 8.0))
    rot = _rot_z_to(axis)
    inertia = rot @ np.diag([i_perp, i_perp, i_axis]) @ rot.T
    return MassProps(mass, np.asarray(center, dtype=np.float64), inertia)


def sphere_props(mass: float, radius: float, center: Sequence[float]) -> MassProps:
    """A solid sphere of uniform density."""
    return MassProps(mass, np.asarray(center, dtype=np.float64), np.eye(3) * (2.0 * mass * radius * radius / 5.0))


def cylinder_props(mass: float, radius: float, height: float, center: Sequence[float]) -> MassProps:
    """A solid cylinder of full ``height`` along z."""
    i_perp = mass * (3.0 * radius * radius + height * height) / 12.0
    inertia = np.diag([i_perp, i_perp, mass * radius * radius / 2.0])
    return MassProps(mass, np.asarray(center, dtype=np.float64), inertia)


def combine(parts: Iterable[MassProps]) -> MassProps:
    """The mass properties of rigidly joined parts (parallel-axis theorem about the joint centre of mass)."""
    items = list(parts)
    mass = sum(p.mass for p in items)
    com = sum((p.mass * p.com for p in items), np.zeros(3)) / mass
    inertia = np.zeros((3, 3))
    for p in items:
        d = p.com - com
        inertia += p.inertia + p.mass * (float(d @ d) * np.eye(3) - np.outer(d, d))
    return MassProps(mass, com, inertia)


def _principal_rpy(inertia: NDArray[np.float64]) -> tuple[tuple[float, float, float], NDArray[np.float64]]:
    """URDF ``rpy`` of the principal axes and the principal moments; identity when already diagonal."""
    off = inertia - np.diag(np.diag(inertia))
    if np.max(np.abs(off)) <= 1e-12 * max(float(np.max(np.abs(inertia))), 1e-30):
        return (0.0, 0.0, 0.0), np.diag(inertia).copy()
    moments, rot = np.linalg.eigh(inertia)
    if np.linalg.det(rot) < 0:
        rot[:, 2] = -rot[:, 2]
    # URDF rpy is R = Rz(yaw) Ry(pitch) Rx(roll).
    roll = math.atan2(rot[2, 1], rot[2, 2])
    pitch = math.atan2(-rot[2, 0], math.hypot(rot[2, 1], rot[2, 2]))
    yaw = math.atan2(rot[1, 0], rot[0, 0])
    return (roll, pitch, yaw), moments


def link_mass_props(g: ClawGeometry = DEFAULT_GEOMETRY) -> dict[str, MassProps]:
    """Mass properties of every moving link, by link name, exactly as the URDF states them."""
    props: dict[str, MassProps] = {}
    r = g.link_radius
    for i in range(FINGER_COUNT):
        props[f"f{i}_top_link"] = capsule_props(g.link_top_mass, r, g.link_top_length, (0, 0, -g.link_top_length / 2))
        props[f"f{i}_mid_link"] = capsule_props(g.link_mid_mass, r, g.link_mid_length, (0, 0, -g.link_mid_length / 2))
        props[f"f{i}_bot_link"] = combine([
            capsule_props(g.link_bot_mass * 0.7, r, g.link_bot_length, (0, 0, -g.link_bot_length / 2)),
            sphere_props(g.link_bot_mass * 0.3, g.tip_sphere_radius, (0, 0, -g.link_bot_length)),
        ])
    spoke_mass = g.valve_mass * 0.6 / g.spoke_count
    parts = [cylinder_props(g.valve_mass * 0.4, g.hub_radius, 2.0 * g.spoke_height, (0, 0, g.spoke_height))]
    for ux, uy in _spoke_dirs(g):
        mid = (ux * g.spoke_length / 2, uy * g.spoke_length / 2, g.spoke_height)
        parts.append(capsule_props(spoke_mass, g.spoke_radius, g.spoke_length, mid, axis=(ux, uy, 0.0)))
    props["valve"] = combine(parts)
    return props


def _marker_center(g: ClawGeometry) -> tuple[float, float, float]:
    return (g.spoke_length * 0.8, 0.0, g.spoke_top_z + 0.002)


def _spoke_dirs(g: ClawGeometry) -> list[tuple[float, float]]:
    return [(math.cos(2.0 * math.pi * k / g.spoke_count), math.sin(2.0 * math.pi * k / g.spoke_count))
            for k in range(g.spoke_count)]


# --- XML ---------------------------------------------------------------------------------------
def _origin(xyz: Sequence[float] | NDArray[np.float64] = (0.0, 0.0, 0.0),
            rpy: Sequence[float] = (0.0, 0.0, 0.0)) -> str:
    return f'<origin xyz="{_fmt(*xyz)}" rpy="{_fmt(*rpy)}"/>'


def _inertial(p: MassProps) -> str:
    rpy, moments = _principal_rpy(p.inertia)
    ixx, iyy, izz = (float(v) for v in moments)
    return (f"<inertial>{_origin(p.com, rpy)}<mass value=\"{p.mass:.9g}\"/>"
            f'<inertia ixx="{ixx:.9g}" ixy="0" ixz="0" iyy="{iyy:.9g}" iyz="0" izz="{izz:.9g}"/></inertial>')


def _contact(friction: float) -> str:
    return f'<contact><lateral_friction value="{friction:.9g}"/></contact>'


def _shape(kind: str, dims: Mapping[str, float]) -> str:
    attrs = " ".join(f'{k}="{v:.9g}"' for k, v in dims.items())
    return f"<geometry><{kind} {attrs}/></geometry>"


def _box(size: Sequence[float]) -> str:
    return f'<geometry><box size="{_fmt(*size)}"/></geometry>'


def _visual(name: str, geometry: str, material: str, xyz: Sequence[float] = (0, 0, 0),
            rpy: Sequence[float] = (0, 0, 0)) -> str:
    return (f"<visual name={quoteattr(name)}>{_origin(xyz, rpy)}{geometry}"
            f'<material name="{material}"/></visual>')


def _collision(name: str, geometry: str, xyz: Sequence[float] = (0, 0, 0), rpy: Sequence[float] = (0, 0, 0)) -> str:
    return f"<collision name={quoteattr(name)}>{_origin(xyz, rpy)}{geometry}</collision>"


def _both(name: str, geometry: str, material: str, xyz: Sequence[float] = (0, 0, 0),
          rpy: Sequence[float] = (0, 0, 0)) -> str:
    return _visual(name, geometry, material, xyz, rpy) + _collision(name, geometry, xyz, rpy)


def _dynamics(damping: float, friction: float, armature: float) -> str:
    return f'<dynamics damping="{damping:.9g}" friction="{friction:.9g}" armature="{armature:.9g}"/>'


def urdf(joint_ranges: Mapping[str, tuple[float, float]], g: ClawGeometry = DEFAULT_GEOMETRY) -> str:
    """The URDF of the claw scene (see the module docstring for the conventions).

    ``joint_ranges`` maps each finger joint name to its (low, high) limit in rad, as for :func:`mjcf`.
    """
    props = link_mass_props(g)
    materials = "".join(f'<material name="{k}"><color rgba="{_fmt(*v)}"/></material>' for k, v in _RGBA.items())

    # Base: floor, mounts and post (the MJCF worldbody and the welded f{i}_base bodies).
    floor_center = (0.0, 0.0, FLOOR_TOP_Z_M - FLOOR_COLLISION_THICKNESS_M / 2)
    base = [
        _visual("floor", _box((2 * FLOOR_HALF_SIZE_M, 2 * FLOOR_HALF_SIZE_M, 0.002)), "floor",
                (0.0, 0.0, FLOOR_TOP_Z_M - 0.001)),
        _collision("floor", _box((2 * FLOOR_COLLISION_HALF_SIZE_M, 2 * FLOOR_COLLISION_HALF_SIZE_M,
                                  FLOOR_COLLISION_THICKNESS_M)), floor_center),
        _visual("valve_post", _shape("cylinder", {"radius": 0.01, "length": 0.02}), "mount", (0.0, 0.0, -0.01)),
    ]
    joints: list[str] = []
    links: list[str] = []
    r = g.link_radius
    for i in range(FINGER_COUNT):
        az = i * FINGER_AZIMUTH_STEP_RAD
        base_xyz = (g.finger_base_radius * math.cos(az), g.finger_base_radius * math.sin(az), g.mount_height)
        yaw = az + math.pi
        # The MJCF mount box sits 0.012 m above the finger frame's origin.
        base.append(_visual(f"f{i}_mount", _box((0.024, 0.036, 0.02)), "mount",
                            (base_xyz[0], base_xyz[1], base_xyz[2] + 0.012), (0.0, 0.0, yaw)))
        chain = (
            ("top", "world", base_xyz, (0.0, 0.0, yaw), (1, 0, 0), g.link_top_length),
            ("mid", f"f{i}_top_link", (0.0, 0.0, -g.link_top_length), (0.0, 0.0, 0.0), (0, 1, 0), g.link_mid_length),
            ("bot", f"f{i}_mid_link", (0.0, 0.0, -g.link_mid_length), (0.0, 0.0, 0.0), (0, 1, 0), g.link_bot_length),
        )
        for suffix, parent, xyz, rpy, axis, length in chain:
            name = f"f{i}_{suffix}"
            lo, hi = joint_ranges[name]
            capsule = _shape("capsule", {"radius": r, "length": length})
            geoms = _both(f"{name}_geom", capsule, "link", (0.0, 0.0, -length / 2))
            if suffix == "bot":
                tip = _shape("sphere", {"radius": g.tip_sphere_radius})
                geoms += _both(f"f{i}_tip", tip, "tip", (0.0, 0.0, -length))
            # One friction coefficient per link: the distal link's is the fingertip's.
            friction = g.tip_friction if suffix == "bot" else MJCF_DEFAULT_FRICTION
            links.append(f'<link name="{name}_link">{_inertial(props[f"{name}_link"])}{_contact(friction)}'
                         f"{geoms}</link>")
            joints.append(
                f'<joint name="{name}" type="revolute"><parent link="{parent}"/><child link="{name}_link"/>'
                f"{_origin(xyz, rpy)}<axis xyz=\"{_fmt(*axis)}\"/>"
                f'<limit lower="{lo:.9g}" upper="{hi:.9g}" effort="{g.finger_force_limit:.9g}" '
                f'velocity="{JOINT_VELOCITY_LIMIT_URDF_RAD_S:.9g}"/>'
                f"{_dynamics(g.finger_damping, g.finger_frictionloss, g.finger_armature)}</joint>"
            )

    valve_geoms = [_both("valve_hub", _shape("cylinder", {"radius": g.hub_radius, "length": 2 * g.spoke_height}),
                         "valve", (0.0, 0.0, g.spoke_height))]
    for k, (ux, uy) in enumerate(_spoke_dirs(g)):
        mid = (ux * g.spoke_length / 2, uy * g.spoke_length / 2, g.spoke_height)
        # A URDF capsule lies along its z axis: pitch it onto x, then yaw it onto the spoke.
        rpy = (0.0, math.pi / 2, math.atan2(uy, ux))
        valve_geoms.append(_both(f"valve_spoke{k}", _shape("capsule", {"radius": g.spoke_radius,
                                                                       "length": g.spoke_length}),
                                 "spoke0" if k == 0 else "valve", mid, rpy))
    marker_size = tuple(2.0 * h for h in VALVE_MARKER_HALF_SIZE_M)
    valve_geoms.append(_visual("valve_marker", _box(marker_size), "marker", _marker_center(g)))
    links.append(f'<link name="valve">{_inertial(props["valve"])}{_contact(g.tip_friction)}'
                 f'{"".join(valve_geoms)}</link>')
    joints.append(
        '<joint name="valve" type="continuous"><parent link="world"/><child link="valve"/>'
        f'{_origin()}<axis xyz="0 0 1"/>{_dynamics(g.valve_damping, g.valve_frictionloss, g.valve_armature)}</joint>'
    )

    base_link = ('<link name="world"><inertial><origin xyz="0 0 0" rpy="0 0 0"/><mass value="0"/>'
                 '<inertia ixx="0" ixy="0" ixz="0" iyy="0" iyz="0" izz="0"/></inertial>'
                 f"{_contact(MJCF_DEFAULT_FRICTION)}"
                 f"{''.join(base)}</link>")
    body = "\n  ".join([materials, base_link, *links, *joints])
    return f'<?xml version="1.0"?>\n<robot name="dclaw_turn">\n  {body}\n</robot>\n'
