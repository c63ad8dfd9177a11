"""The emulated robot's torso IMU: ``robot.imu.protocol`` frames on a second pseudo-terminal.

It runs in the emulator's one serving thread next to the servo chain and shares its physics: every
``1 / imu.rate_hz`` s the serving loop writes a frame with the simulated torso's orientation and angular
velocity (at most one physics step old), rotated into the sensor's frame by the config's mounting, with the
reality's IMU noise (``base_orientation_noise_std``, ``base_angvel_noise_std``, as the sim env applies them)
and the fault spec's IMU faults. A loop that wakes late sends one frame for the missed due times, not a
burst of identical ones (counted as ``imu_frames_merged``): that is the host's lateness, not the device's.
Nobody reading the pty is a line with nobody listening: once the slave's buffer is full, frames are lost
(``imu_overflow_bytes``). Frames take no wire time here: at the IMU's baud a frame is under a millisecond.
"""

from __future__ import annotations

import os
import tty
from collections import Counter
from collections.abc import Callable

import numpy as np

from robot.config import ImuConfig
from robot.emulator.faults import FaultSpec, ImuFaultInjector, corrupt_imu_frame
from robot.emulator.reality import RealityConfig
from robot.emulator.schedule import FrameSchedule
from robot.imu.mounting import torso_to_sensor
from robot.imu.protocol import S_PER_TIMESTAMP_UNIT, encode_frame
from sim.rotations import quat_from_rotvec, quat_mul
from sim.state import RobotState


class EmulatedImu:
    """Frames of the simulated torso on a pty; :meth:`serve` is called by the serving loop whenever it wakes."""

    def __init__(self, config: ImuConfig, state: Callable[[], RobotState], reality: RealityConfig,
                 faults: FaultSpec, *, t_start: float, cycle: Callable[[], int]) -> None:
        self.config = config
        self._state = state
        self._reality = reality
        self._injector = ImuFaultInjector(faults)
        self._rng = np.random.default_rng([reality.seed, 1])  # apart from the servos' noise stream
        self._mount = np.asarray(config.mounting_quat, dtype=np.float64)
        self._t_start = t_start
        self._cycle = cycle
        self._schedule = FrameSchedule(config.frame_period_s, t_start)
        self._sequence = 0
        self._master = -1
        self._slave = -1
        self.path = ""
        self.bytes_written = 0
        """Bytes written to the pty (a lock-step client waits for this many)."""
        self.stats: Counter[str] = Counter()
        """``imu_frames`` sent (corrupted included), ``imu_corrupted``, ``imu_dropped``, ``imu_silent`` (1 once
        silent), ``imu_frames_merged``, ``imu_overflow_bytes``."""

    def open(self) -> str:
        """Create the pty; returns the slave path for the reader."""
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        return self.path

    def close(self) -> None:
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1

    def next_due(self) -> float:
        """When the next frame falls due (s, the serving loop's clock)."""
        return self._schedule.next_due

    def serve(self, now: float) -> None:
        """Send the frame that fell due, if one did."""
        missed = self._schedule.due(now)
        if missed is None:
            return
        self.stats["imu_frames_merged"] += missed
        sequence = self._sequence
        self._sequence += 1
        if self._injector.silent_now(now - self._t_start, self._cycle()):
            self.stats["imu_silent"] = 1
            return
        fate = self._injector.fate()
        if fate.dropped:
            self.stats["imu_dropped"] += 1
            return
        frame = self._frame(sequence, now)
        if fate.corrupted:
            self.stats["imu_corrupted"] += 1
            frame = corrupt_imu_frame(frame)
        self.stats["imu_frames"] += 1
        self._write(frame)

    def _frame(self, sequence: int, now: float) -> bytes:
        st = self._state()
        quat, angvel = np.asarray(st.base_quat, dtype=np.float64), np.asarray(st.base_angvel, dtype=np.float64)
        r = self._reality
        if r.imu_orientation_noise_std_rad:
            # A small rotation of the body frame, as an IMU's attitude estimate is off by (the sim env's model).
            quat = quat_mul(quat, quat_from_rotvec(self._rng.normal(0.0, r.imu_orientation_noise_std_rad, 3)))
        if r.imu_angvel_noise_std_rad_s:
            angvel = angvel + self._rng.normal(0.0, r.imu_angvel_noise_std_rad_s, 3)
        quat, angvel = torso_to_sensor(quat, angvel, self._mount)
        return encode_frame(sequence, round((now - self._t_start) / S_PER_TIMESTAMP_UNIT), quat, angvel)

    def _write(self, frame: bytes) -> None:
        try:
            n = os.write(self._master, frame)
        except BlockingIOError:
            n = 0  # nobody reads the slave and its buffer is full: lost, as on an open line
        self.bytes_written += n
        if n < len(frame):
            self.stats["imu_overflow_bytes"] += len(frame) - n
