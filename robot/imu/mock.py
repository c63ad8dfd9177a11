"""An in-process IMU for unit tests: the bytes a device would have streamed by now, on any clock.

:class:`MockImuStream` is a :class:`~robot.imu.reader.ByteSource`: every :meth:`~MockImuStream.read` returns
the frames due since the last one (one every ``1 / rate_hz`` s of ``clock``), encoded with the real protocol,
so an :class:`~robot.imu.reader.ImuReader` on it runs the same decoding, counting and mounting code as on a
serial port. The torso's orientation and angular velocity are whatever a test sets (:attr:`quat`,
:attr:`angvel`; level and still by default): the mock has no physics. The fault spec's IMU items act as in
the emulator: silence from a time or a read cycle on, corrupted and dropped frames.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from robot.config import ImuConfig
from robot.emulator.faults import NO_FAULTS, FaultSpec, ImuFaultInjector, corrupt_imu_frame
from robot.imu.mounting import torso_to_sensor
from robot.imu.protocol import FRAME_BYTES, S_PER_TIMESTAMP_UNIT, encode_frame
from sim.rotations import IDENTITY_QUAT, normalize_quat
from sim.tasks.spec import FloatArray

DUE_TOLERANCE_FRAMES = 1e-6
"""A frame due within this fraction of a period counts as due (-)."""
INPUT_BUFFER_BYTES = 4096
"""Bytes a serial driver buffers for a reader that does not read (a Linux tty's 4 KiB): older frames are lost."""


class MockImuStream:
    """Frames of an IMU on ``clock``, from the torso state tests set; see the module docstring.

    ``cycle`` counts the servo bus's read transactions (for ``imu_silent@N cycles``); a mock bus's
    ``read_transactions``.
    """

    def __init__(self, config: ImuConfig, *, clock: Callable[[], float] = time.monotonic,
                 faults: FaultSpec | None = None, cycle: Callable[[], int] = lambda: 0,
                 quat: FloatArray | None = None, angvel: FloatArray | None = None) -> None:
        self.config = config
        self._clock = clock
        self._cycle = cycle
        self._injector = ImuFaultInjector(faults if faults is not None else NO_FAULTS)
        self.quat: FloatArray = normalize_quat(quat if quat is not None else np.array(IDENTITY_QUAT))
        """The torso's orientation (w, x, y, z); set it to tilt the robot."""
        self.angvel: FloatArray = np.asarray(angvel if angvel is not None else np.zeros(3), dtype=np.float64)
        """The torso's angular velocity in its own frame (rad/s)."""
        self._mount = np.asarray(config.mounting_quat, dtype=np.float64)
        self._t0 = clock()
        self._sent = 0
        """Frames whose due time has passed (sent or not): the next frame's index."""
        self._sequence = 0
        self._open = True
        self.frames_sent = 0
        """Frames put on the simulated line (corrupted ones included, dropped ones not)."""

    def read(self) -> bytes:
        if not self._open:
            raise OSError("the mock IMU is closed")
        now = self._clock()
        period = self.config.frame_period_s
        # Frames 0..due-1 are due by now; the tolerance keeps a clock summed from float steps on the frame it means.
        due = math.floor((now - self._t0) / period + DUE_TOLERANCE_FRAMES) + 1
        # A reader that fell behind finds only the newest frames a serial driver's buffer holds.
        oldest = max(self._sent, due - INPUT_BUFFER_BYTES // FRAME_BYTES[self.config.frame_version])
        self._sequence += oldest - self._sent
        out = bytearray()
        for k in range(oldest, due):
            t = self._t0 + k * period
            sequence = self._sequence
            self._sequence += 1
            if self._injector.silent_now(t - self._t0, self._cycle()):
                continue
            fate = self._injector.fate()
            if fate.dropped:
                continue
            quat, angvel = torso_to_sensor(self.quat, self.angvel, self._mount)
            frame = encode_frame(sequence, round(t / S_PER_TIMESTAMP_UNIT), quat, angvel)
            out += corrupt_imu_frame(frame) if fate.corrupted else frame
            self.frames_sent += 1
        self._sent = max(self._sent, due)
        return bytes(out)

    def place(self, quat: FloatArray, angvel: FloatArray | None = None) -> None:
        """Put the torso at this orientation (w, x, y, z), still unless ``angvel`` (rad/s) is given."""
        self.quat = normalize_quat(quat)
        self.angvel = np.zeros(3) if angvel is None else np.asarray(angvel, dtype=np.float64)

    def close(self) -> None:
        self._open = False
