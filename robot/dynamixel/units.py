"""Servo units <-> SI units, and the per-joint calibration.

Calibration convention (ROBEL's, Ahn et al. 2019, "ROBEL: Robotics Benchmarks for Learning with Low-Cost
Robots", CoRL): ``joint = raw_rad * scale + offset``, where
``raw_rad`` is the servo's own angle with 2048 ticks = 0 rad. Every function here is pure and works on
scalars or numpy arrays.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

TICKS_PER_TURN = 4096
CENTER_TICK = 2048
"""Raw position that is 0 raw rad."""
MAX_POSITION_TICK = TICKS_PER_TURN - 1
"""Largest goal position in (single-turn) position mode."""
RAD_PER_TICK = 2.0 * math.pi / TICKS_PER_TURN
RPM_PER_VELOCITY_UNIT = 0.229
RAD_S_PER_VELOCITY_UNIT = RPM_PER_VELOCITY_UNIT * 2.0 * math.pi / 60.0
A_PER_CURRENT_UNIT = 0.00269
"""XM430-W350 current unit (2.69 mA)."""
S_PER_RETURN_DELAY_UNIT = 2e-6
V_PER_VOLTAGE_UNIT = 0.1
TORQUE_NM_PER_A = 4.1 / 2.3
"""Approximate XM430-W350 torque constant: stall torque 4.1 N m at stall current 2.3 A (12 V datasheet);
used to report joint effort from Present Current and, in the emulator, current from simulated torque."""
BIT_TIME_PER_BYTE = 10
"""Bits on the wire per byte: start + 8 data + stop."""

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]


def joint_to_ticks(joint_rad: ArrayLike, scale: ArrayLike, offset_rad: ArrayLike) -> IntArray:
    """Raw position (ticks) that reads as ``joint_rad`` under the calibration, rounded to the nearest tick."""
    raw_rad = (np.asarray(joint_rad, dtype=np.float64) - np.asarray(offset_rad)) / np.asarray(scale)
    return np.rint(raw_rad / RAD_PER_TICK).astype(np.int64) + CENTER_TICK


def ticks_to_joint(ticks: ArrayLike, scale: ArrayLike, offset_rad: ArrayLike) -> FloatArray:
    """Joint angle (rad) of a raw position (ticks)."""
    raw_rad = (np.asarray(ticks, dtype=np.float64) - CENTER_TICK) * RAD_PER_TICK
    return raw_rad * np.asarray(scale) + np.asarray(offset_rad)


def velocity_units_to_joint(units: ArrayLike, scale: ArrayLike) -> FloatArray:
    """Joint velocity (rad/s) of a Present Velocity value (0.229 rpm units)."""
    return np.asarray(units, dtype=np.float64) * RAD_S_PER_VELOCITY_UNIT * np.asarray(scale)


def joint_velocity_to_units(joint_rad_s: ArrayLike, scale: ArrayLike) -> IntArray:
    """Present Velocity value (0.229 rpm units, rounded) of a joint velocity (rad/s)."""
    raw = np.asarray(joint_rad_s, dtype=np.float64) / np.asarray(scale)
    return np.rint(raw / RAD_S_PER_VELOCITY_UNIT).astype(np.int64)


def current_units_to_a(units: ArrayLike) -> FloatArray:
    """Current (A) of a Present/Goal Current value (2.69 mA units)."""
    return np.asarray(units, dtype=np.float64) * A_PER_CURRENT_UNIT


def current_a_to_units(current_a: ArrayLike) -> IntArray:
    """Current register value (2.69 mA units, rounded) of a current (A)."""
    return np.rint(np.asarray(current_a, dtype=np.float64) / A_PER_CURRENT_UNIT).astype(np.int64)


def speed_rad_s_to_units(speed_rad_s: float) -> int:
    """Velocity register value (0.229 rpm units, rounded down) for a speed limit (rad/s)."""
    return math.floor(speed_rad_s / RAD_S_PER_VELOCITY_UNIT + 1e-9)


def joint_limits_to_ticks(low_rad: float, high_rad: float, scale: float, offset_rad: float) -> tuple[int, int]:
    """(min, max) raw position limits (ticks) for joint limits (rad), rounded inwards.

    Every tick inside the result reads as an angle inside [low, high], whatever the sign of ``scale``.
    """
    a = ((low_rad - offset_rad) / scale) / RAD_PER_TICK + CENTER_TICK
    b = ((high_rad - offset_rad) / scale) / RAD_PER_TICK + CENTER_TICK
    lo, hi = min(a, b), max(a, b)
    return math.ceil(lo - 1e-9), math.floor(hi + 1e-9)


def return_delay_s_to_units(delay_s: float) -> int:
    """Return Delay Time register value (2 us units, rounded)."""
    return round(delay_s / S_PER_RETURN_DELAY_UNIT)


def wire_time_s(n_bytes: int, baud: int) -> float:
    """Time (s) ``n_bytes`` take on a UART at ``baud`` bit/s (10 bits per byte)."""
    return n_bytes * BIT_TIME_PER_BYTE / baud
