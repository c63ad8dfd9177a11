"""Unit quaternions and rotations as pure functions, shared by engines, tasks and the robot side.

Convention everywhere in s2r: a quaternion is ``(w, x, y, z)`` (MuJoCo's order) and rotates vectors from
the body frame into the world frame (``v_world = R(q) v_body``). Angular velocities are rad/s; a
"rotation vector" is axis * angle (rad).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from sim.tasks.spec import FloatArray

Vector = FloatArray | Sequence[float]
"""A vector or quaternion given as an array or a plain sequence of floats."""

IDENTITY_QUAT = (1.0, 0.0, 0.0, 0.0)
"""The quaternion of no rotation, (w, x, y, z)."""
WORLD_UP = (0.0, 0.0, 1.0)
"""World up direction (-): gravity points along its negative."""
SMALL_ANGLE_RAD = 1e-12
"""Below this rotation angle (rad) the axis is undefined and the first-order formula is used."""


def normalize_quat(q: Vector) -> FloatArray:
    """``q`` scaled to unit length; a zero or non-finite quaternion is a ``ValueError``."""
    q = np.asarray(q, dtype=np.float64)
    if q.shape != (4,):
        raise ValueError(f"a quaternion has 4 values (w, x, y, z), got shape {q.shape}")
    n = math.sqrt(float(q @ q))
    if not (n > 0.0 and math.isfinite(n)):
        raise ValueError(f"quaternion {q.tolist()} has no direction (norm {n})")
    return q / n


def quat_mul(a: Vector, b: Vector) -> FloatArray:
    """Hamilton product ``a * b`` (rotate by ``b`` first, then by ``a``)."""
    aw, ax, ay, az = (float(v) for v in a)
    bw, bx, by, bz = (float(v) for v in b)
    return np.array([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ])


def quat_conj(q: Vector) -> FloatArray:
    """The inverse of a unit quaternion."""
    q = np.asarray(q, dtype=np.float64)
    return np.array([q[0], -q[1], -q[2], -q[3]])


def quat_to_matrix(q: Vector) -> FloatArray:
    """3x3 rotation matrix (body -> world) of a unit quaternion."""
    w, x, y, z = (float(v) for v in q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def rotate(q: Vector, v: Vector) -> FloatArray:
    """``v`` (body frame) expressed in the world frame."""
    return quat_to_matrix(q) @ np.asarray(v, dtype=np.float64)


def rotate_inverse(q: Vector, v: Vector) -> FloatArray:
    """``v`` (world frame) expressed in the body frame."""
    return quat_to_matrix(q).T @ np.asarray(v, dtype=np.float64)


def quat_from_rotvec(rotvec: Vector) -> FloatArray:
    """The unit quaternion turning by ``|rotvec|`` rad about ``rotvec``'s direction."""
    x, y, z = (float(v) for v in rotvec)
    angle = math.sqrt(x * x + y * y + z * z)
    if angle < SMALL_ANGLE_RAD:
        return normalize_quat(np.array([1.0, x / 2.0, y / 2.0, z / 2.0]))
    k = math.sin(angle / 2.0) / angle
    return np.array([math.cos(angle / 2.0), x * k, y * k, z * k])


def quat_from_yaw(yaw: float) -> FloatArray:
    """The rotation by ``yaw`` rad about the world z axis."""
    return np.array([math.cos(yaw / 2.0), 0.0, 0.0, math.sin(yaw / 2.0)])


def yaw_of(q: Vector) -> float:
    """Heading (rad, about world z) of the body's x axis projected on the ground plane."""
    m = quat_to_matrix(q)
    return math.atan2(float(m[1, 0]), float(m[0, 0]))


def gravity_in_body(q: Vector) -> FloatArray:
    """Unit vector along gravity (world -z) in the body frame: ``(0, 0, -1)`` when the body is upright.

    This is what an accelerometer at rest reads (negated, normalized); it does not depend on yaw.
    """
    return rotate_inverse(q, -np.asarray(WORLD_UP))


def upright(q: Vector) -> float:
    """Cosine of the body's tilt: the world up axis's component along the body's z axis (1 upright, -1 upside down)."""
    return float(quat_to_matrix(q)[2, 2])


def tilt(q: Vector) -> float:
    """Angle between the body's z axis and world up (rad), in [0, pi]."""
    return math.acos(min(1.0, max(-1.0, upright(q))))


def xyzw_to_wxyz(q: Vector) -> FloatArray:
    """A scalar-last quaternion (PyBullet, SciPy) in this module's scalar-first order."""
    q = np.asarray(q, dtype=np.float64)
    return np.array([q[3], q[0], q[1], q[2]])


def wxyz_to_xyzw(q: Vector) -> FloatArray:
    """A scalar-first quaternion in scalar-last order (PyBullet)."""
    q = np.asarray(q, dtype=np.float64)
    return np.array([q[1], q[2], q[3], q[0]])
