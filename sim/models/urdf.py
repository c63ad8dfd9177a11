"""Robot-independent URDF helpers shared by :mod:`sim.models.dclaw_urdf` and :mod:`sim.models.dkitty_urdf`.

Mass properties follow MuJoCo's rule for ``mass=`` geoms: each geom is a solid of uniform density with the
given mass (capsule = cylinder + two hemispheres, sphere, cylinder, box), and :func:`combine` sums rigidly
joined parts about their common centre of mass. :func:`inertial` writes the inertia in principal axes
(``rpy`` plus a diagonal tensor), which is what PyBullet stores.

The XML helpers return element strings with numbers written as ``%.9g``; :func:`dynamics` adds an
``armature`` attribute (MuJoCo's reflected rotor inertia, kg m^2) that URDF has no element for, which
PyBullet ignores and :class:`sim.engines.pybullet_engine.PybulletEngine` reads; :func:`servo_dynamics` writes it for
the joints of a :class:`sim.models.servo.ServoJoints`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

import numpy as np
from numpy.typing import NDArray

from sim.models.servo import ServoJoints


def fmt(*values: float) -> str:
    """The numbers as a space-separated URDF attribute value, 9 significant digits each."""
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


def rot_z_to(direction: Sequence[float]) -> NDArray[np.float64]:
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
    rot = rot_z_to(axis)
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


def box_props(mass: float, size: Sequence[float], center: Sequence[float] = (0.0, 0.0, 0.0)) -> MassProps:
    """A solid box of full side lengths ``size`` (m) and uniform density."""
    x, y, z = (float(v) for v in size)
    inertia = np.diag([y * y + z * z, x * x + z * z, x * x + y * y]) * mass / 12.0
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


def principal_rpy(inertia: NDArray[np.float64]) -> tuple[tuple[float, float, float], NDArray[np.float64]]:
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


# --- XML ---------------------------------------------------------------------------------------
def origin(xyz: Sequence[float] | NDArray[np.float64] = (0.0, 0.0, 0.0),
           rpy: Sequence[float] = (0.0, 0.0, 0.0)) -> str:
    """An ``<origin>`` element: position (m) and URDF roll-pitch-yaw (rad)."""
    return f'<origin xyz="{fmt(*xyz)}" rpy="{fmt(*rpy)}"/>'


def inertial(p: MassProps) -> str:
    """An ``<inertial>`` element for ``p``, in principal axes."""
    rpy, moments = principal_rpy(p.inertia)
    ixx, iyy, izz = (float(v) for v in moments)
    return (f"<inertial>{origin(p.com, rpy)}<mass value=\"{p.mass:.9g}\"/>"
            f'<inertia ixx="{ixx:.9g}" ixy="0" ixz="0" iyy="{iyy:.9g}" iyz="0" izz="{izz:.9g}"/></inertial>')


def contact(friction: float) -> str:
    """A ``<contact>`` element with the link's sliding friction coefficient (-)."""
    return f'<contact><lateral_friction value="{friction:.9g}"/></contact>'


def shape(kind: str, dims: Mapping[str, float]) -> str:
    """A ``<geometry>`` element of the given kind (``capsule``, ``sphere``, ``cylinder``) and dimensions (m)."""
    attrs = " ".join(f'{k}="{v:.9g}"' for k, v in dims.items())
    return f"<geometry><{kind} {attrs}/></geometry>"


def box(size: Sequence[float]) -> str:
    """A ``<geometry>`` box of full side lengths ``size`` (m)."""
    return f'<geometry><box size="{fmt(*size)}"/></geometry>'


def visual(name: str, geometry: str, material: str, xyz: Sequence[float] = (0, 0, 0),
           rpy: Sequence[float] = (0, 0, 0)) -> str:
    """A ``<visual>`` element drawing ``geometry`` with the named material at the given pose."""
    return (f"<visual name={quoteattr(name)}>{origin(xyz, rpy)}{geometry}"
            f'<material name="{material}"/></visual>')


def collision(name: str, geometry: str, xyz: Sequence[float] = (0, 0, 0), rpy: Sequence[float] = (0, 0, 0)) -> str:
    """A ``<collision>`` element of ``geometry`` at the given pose."""
    return f"<collision name={quoteattr(name)}>{origin(xyz, rpy)}{geometry}</collision>"


def both(name: str, geometry: str, material: str, xyz: Sequence[float] = (0, 0, 0),
         rpy: Sequence[float] = (0, 0, 0)) -> str:
    """A ``<visual>`` and a ``<collision>`` of the same geometry and pose."""
    return visual(name, geometry, material, xyz, rpy) + collision(name, geometry, xyz, rpy)


def dynamics(damping: float, friction: float, armature: float) -> str:
    """A joint ``<dynamics>`` element with MuJoCo's ``damping``, ``frictionloss`` and ``armature``."""
    return f'<dynamics damping="{damping:.9g}" friction="{friction:.9g}" armature="{armature:.9g}"/>'


def servo_dynamics(servo: ServoJoints) -> str:
    """The :func:`dynamics` of a ``servo``'s joints."""
    return dynamics(servo.damping, servo.frictionloss, servo.armature)
