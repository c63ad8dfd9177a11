"""Reading the torso IMU: a non-blocking poll, once per control cycle, keeps the newest valid sample.

The IMU streams frames on its own (``robot.imu.protocol``); nothing is ever requested. The controller calls
:meth:`ImuReader.poll` once per cycle: it takes every byte that has arrived, decodes the frames, and keeps the
newest valid one as an :class:`ImuSample` in the torso frame (``imu.mounting_quat`` applied) with the host time
of the poll that received it. Corrupt frames and sequence gaps are counted, never raised: a device that stops
sending valid frames shows as a sample that stops getting younger, which the controller's silence watchdog turns
into a safety stop. A line the OS refuses to read (the device unplugged, the emulator's process gone) is counted
and raised as :class:`robot.bus.PortLost`: it does not come back, and the controller stops as ``port_lost``.

The receive time is the poll's time, so a sample's age as logged (reading time - receive time) understates
its true age by at most the time the frame waited in the OS buffer: with a device streaming faster than the
control rate, one frame period.
"""

from __future__ import annotations

import errno
import os
import select
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
import serial

from robot.bus import PortLost, port_lost
from robot.config import ImuConfig
from robot.imu.mounting import sensor_to_torso
from robot.imu.protocol import (
    CORRUPT_KINDS,
    S_PER_TIMESTAMP_UNIT,
    TIMESTAMP_MODULUS,
    FrameDecoder,
    ImuFrame,
)
from robot.streams import StreamCounters
from s2r.core.errors import UserError
from sim.tasks.spec import FloatArray

READ_CHUNK_BYTES = 65536
MAX_POLL_BYTES = 1 << 20
"""Most bytes one poll takes (bytes): a bound on its work should a device babble."""


class ByteSource(Protocol):
    """Where IMU bytes come from: a serial port, or the mock's simulated line."""

    def read(self) -> bytes:
        """Every byte that has arrived, without waiting (``b""`` when none); ``OSError`` when the line is gone."""
        ...

    def close(self) -> None:
        """Release the line; idempotent."""
        ...


class SerialByteSource:
    """A serial device (or an emulator's pty) opened non-blocking at a baud rate.

    Bytes that arrived before it was opened are discarded: they are old samples.
    """

    def __init__(self, path: str, baud: int) -> None:
        try:
            self._serial = serial.Serial(path, baud, timeout=0)
        except (OSError, ValueError) as exc:  # serial.SerialException is an OSError
            raise UserError(f"cannot open the IMU's serial port {path!r} at {baud} bit/s: {exc}") from None
        self.path = path
        self._serial.reset_input_buffer()
        self._fd: int | None = self._serial.fileno()

    def read(self) -> bytes:
        if self._fd is None:
            raise OSError(f"the IMU port {self.path} is closed")
        chunks: list[bytes] = []
        total = 0
        while total < MAX_POLL_BYTES:
            try:
                data = os.read(self._fd, READ_CHUNK_BYTES)
            except BlockingIOError:
                break
            if not data:
                if not select.select([self._fd], [], [], 0)[0]:
                    break  # nothing waiting
                data = os.read(self._fd, READ_CHUNK_BYTES)  # bytes may have come in since the empty read
                if not data:  # ready yet empty: hung up (as pyserial judges a disconnected device)
                    raise OSError(errno.EIO, f"the IMU port {self.path} hung up (device disconnected)")
            chunks.append(data)
            total += len(data)
        return b"".join(chunks)

    def close(self) -> None:
        if self._fd is not None:
            self._fd = None
            try:
                self._serial.close()
            except OSError:
                pass  # a line already gone: nothing is left to release but the descriptor, dropped either way


@dataclass(frozen=True)
class ImuSample:
    """The newest valid IMU reading, in the torso frame."""

    quat: FloatArray
    """Torso orientation (w, x, y, z; torso -> world), the IMU's mounting applied."""
    angvel: FloatArray
    """Torso angular velocity in the torso frame (rad/s)."""
    sequence: int
    """Frame counter of the frame it came in."""
    device_time_s: float
    """Device time of the sample (s since the device started; wraps of the 32-bit counter undone)."""
    receive_time: float
    """Host time of the poll that received it (s, the reader's clock)."""


@dataclass(frozen=True, kw_only=True)
class ImuCounters(StreamCounters):
    """A snapshot of an IMU reader's counters since it was made: ``received`` frames, ``rejected`` (corrupt) frames
    by kind (``robot.imu.protocol.CORRUPT_KINDS``), and the reader's own counters."""

    ITEMS: ClassVar[str] = "frames"
    REJECTED: ClassVar[str] = "corrupt"
    MISSED: ClassVar[str] = "frames_missed"
    KINDS: ClassVar[tuple[str, ...] | None] = CORRUPT_KINDS
    LOGGED: ClassVar[tuple[str, ...]] = ("duplicates", "read_errors")

    duplicates: int = 0
    """Repeated frames (rejected)."""
    bytes_skipped: int = 0
    """Bytes outside any valid frame."""
    read_errors: int = 0
    """Polls whose read of the line failed (device unplugged, emulator gone)."""

    def _describe_own(self) -> str:
        return f", {self.read_errors} read errors" if self.read_errors else ""


class ImuSource(Protocol):
    """What the controller needs from the IMU; :class:`ImuReader` implements it."""

    def poll(self) -> ImuSample | None:
        """Take what has arrived; the newest valid sample so far (``None`` before the first). Raises
        :class:`robot.bus.PortLost` when the line is gone."""
        ...

    @property
    def counters(self) -> ImuCounters:
        """Every counter, as a snapshot."""
        ...

    def close(self) -> None:
        """Release the device; idempotent."""
        ...


class ImuReader:
    """Frames from ``source`` decoded into torso-frame samples; see the module docstring."""

    def __init__(self, source: ByteSource, config: ImuConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.source = source
        self.config = config
        self._clock = clock
        self._decoder = FrameDecoder()
        self._mount = np.asarray(config.mounting_quat, dtype=np.float64)
        self._latest: ImuSample | None = None
        self._read_errors = 0
        self._lost: PortLost | None = None
        self._last_stamp: int | None = None
        self._wraps = 0

    @property
    def latest(self) -> ImuSample | None:
        """The newest valid sample, without polling."""
        return self._latest

    def poll(self) -> ImuSample | None:
        if self._lost is not None:
            raise self._lost
        try:
            data = self.source.read()
        except OSError as exc:
            self._read_errors += 1
            self._lost = port_lost(getattr(self.source, "path", "of the IMU"), "reading the IMU", exc)
            raise self._lost from exc
        if not data:
            return self._latest
        now = self._clock()
        frames = self._decoder.feed(data)
        device_times = [self._unwrap(f) for f in frames]  # every frame, so no wrap of the counter is missed
        if frames:
            newest = frames[-1]
            quat, angvel = sensor_to_torso(newest.quat, newest.angvel, self._mount)
            self._latest = ImuSample(quat, angvel, newest.sequence, device_times[-1], now)
        return self._latest

    def _unwrap(self, frame: ImuFrame) -> float:
        """The device time (s) with the 32-bit counter's wraps undone."""
        stamp = frame.timestamp_us
        if self._last_stamp is not None and stamp < self._last_stamp - TIMESTAMP_MODULUS // 2:
            self._wraps += 1
        self._last_stamp = stamp
        return (self._wraps * TIMESTAMP_MODULUS + stamp) * S_PER_TIMESTAMP_UNIT

    @property
    def counters(self) -> ImuCounters:
        c = self._decoder.counters
        return ImuCounters(received=c.frames, rejected=dict(c.corrupt), gaps=c.gaps, missed=c.frames_missed,
                           duplicates=c.duplicates, bytes_skipped=c.bytes_skipped, read_errors=self._read_errors,
                           last_receive_time=None if self._latest is None else self._latest.receive_time)

    def close(self) -> None:
        self.source.close()

    def __enter__(self) -> ImuReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
