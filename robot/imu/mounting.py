"""The IMU's frame versus the torso's: how a reading of a rotated IMU becomes the torso's orientation, and back.

``mount`` is the IMU's orientation in the torso frame (w, x, y, z; sensor -> torso), the hardware config's
``imu.mounting_quat``. A vector ``v_s`` in the sensor frame is ``R(mount) v_s`` in the torso frame, so the
torso's orientation is ``q_world_torso = q_world_sensor * conj(mount)`` and the angular velocity in the torso
frame is ``R(mount) w_s``. The reader uses :func:`sensor_to_torso`; the emulator and the mock IMU, which
start from the simulated torso, use :func:`torso_to_sensor`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sim.rotations import normalize_quat, quat_conj, quat_mul, quat_to_matrix
from sim.tasks.spec import FloatArray


def sensor_to_torso(quat: FloatArray, angvel: FloatArray,
                    mount: Sequence[float] | FloatArray) -> tuple[FloatArray, FloatArray]:
    """(torso orientation (w, x, y, z), torso angular velocity in the torso frame (rad/s)) from a sensor reading."""
    m = np.asarray(mount, dtype=np.float64)
    return normalize_quat(quat_mul(quat, quat_conj(m))), quat_to_matrix(m) @ np.asarray(angvel, dtype=np.float64)


def torso_to_sensor(quat: FloatArray, angvel: FloatArray,
                    mount: Sequence[float] | FloatArray) -> tuple[FloatArray, FloatArray]:
    """(sensor orientation, sensor-frame angular velocity) an IMU mounted at ``mount`` reads on this torso."""
    m = np.asarray(mount, dtype=np.float64)
    return normalize_quat(quat_mul(quat, m)), quat_to_matrix(m).T @ np.asarray(angvel, dtype=np.float64)
