"""The s2r IMU serial protocol: frames a torso IMU streams, as pure functions and one small stateful decoder.

The IMU needs no request: once powered it streams one frame per sample at a fixed rate (``imu.rate_hz`` of the
hardware config, typically 100-400 Hz) on its own serial line (8N1, ``imu.baud``). Every multi-byte field
is little-endian.

Frame version 1 (40 bytes)::

    offset size  field             meaning
    0      2     sync              0xA5 0x5A
    2      1     version           frame format version, 1
    3      1     length            bytes from `sequence` to the end of the payload: 34 in version 1
    4      2     sequence          u16 frame counter, +1 for every frame the device sends, wraps 65535 -> 0
    6      4     timestamp         u32 device time of the sample (us since the device started), wraps
                                   after 2**32 us (71.6 min)
    10     16    orientation       float32 w, x, y, z: unit quaternion rotating sensor-frame vectors into
                                   the world frame (z up; the yaw reference is the device's own, and drifts
                                   on an IMU without a magnetometer: use only yaw-free quantities)
    26     12    angular velocity  float32 x, y, z (rad/s) in the sensor frame (the gyroscope)
    38     2     crc               CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, not reflected, no final
                                   xor) of bytes 2..37: version, length, sequence, timestamp, payload

Why these choices: a two-byte sync followed by a known version and length makes a false frame start in
the middle of the float payload rare, and the CRC rejects the rest; the length lets a receiver skip a
future, longer frame format it does not know without losing sync; the sequence number shows frames lost on
the line (a gap), the device timestamp shows the sampling jitter apart from the host's; float32 keeps the
quaternion's unit norm to 1e-7, far below any IMU's accuracy, and needs no scale factors.

A receiver (:class:`FrameDecoder`) scans for the sync, checks version, length and CRC, and rejects a frame
whose quaternion is not finite and of unit norm (within :data:`QUAT_NORM_TOLERANCE`) or whose angular
velocity is not finite: a NaN must never reach an observation. After any bad frame it resumes the scan
one byte after the bad frame's sync, so a real frame that starts inside a garbled one is still found.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

import numpy as np

from sim.tasks.spec import FloatArray

SYNC = b"\xa5\x5a"
"""First two bytes of every frame."""
VERSION = 1
"""The frame format this module writes."""
HEADER_BYTES = 4
"""Sync (2), version (1), length (1)."""
CRC_BYTES = 2
_BODY_V1 = struct.Struct("<HI4f3f")
"""Sequence, timestamp (us), quaternion w x y z, angular velocity x y z."""
BODY_BYTES: dict[int, int] = {1: _BODY_V1.size}
"""Value of the length field per version (bytes from the sequence number to the end of the payload)."""
FRAME_BYTES: dict[int, int] = {v: HEADER_BYTES + n + CRC_BYTES for v, n in BODY_BYTES.items()}
"""Whole frame size per version (bytes): 40 for version 1."""
SUPPORTED_VERSIONS: tuple[int, ...] = tuple(BODY_BYTES)
"""Frame versions this module decodes."""
SEQUENCE_MODULUS = 1 << 16
"""The sequence number counts modulo this."""
TIMESTAMP_MODULUS = 1 << 32
"""The device timestamp counts microseconds modulo this."""
S_PER_TIMESTAMP_UNIT = 1e-6
"""The device timestamp's unit (s)."""
QUAT_NORM_TOLERANCE = 1e-3
"""How far from 1 a frame's quaternion norm may be (-): float32 rounding is 1e-7; more means a broken device."""
CORRUPT_KINDS = ("crc", "length", "version", "invalid")
"""Kinds of rejected frames: ``crc`` checksum mismatch; ``length`` a length field that does not fit the version;
``version`` an unknown frame version; ``invalid`` a frame whose CRC holds but whose values cannot be a reading
(non-finite, or a quaternion that is not of unit norm)."""


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16_ccitt(data: bytes | bytearray | memoryview, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE of ``data`` (check value: ``b"123456789"`` -> 0x29B1); ``crc`` continues a running one."""
    table = _CRC_TABLE
    for b in bytes(data):
        crc = ((crc << 8) & 0xFFFF) ^ table[((crc >> 8) ^ b) & 0xFF]
    return crc


@dataclass(frozen=True)
class ImuFrame:
    """One decoded frame, in the sensor's frame and the device's time."""

    sequence: int
    """Frame counter (0..65535)."""
    timestamp_us: int
    """Device time of the sample (us, wrapping at 2**32)."""
    quat: FloatArray
    """Orientation, sensor frame -> world (w, x, y, z), normalized."""
    angvel: FloatArray
    """Angular velocity in the sensor frame (rad/s)."""
    version: int = VERSION
    """Frame format version it came in."""


def encode_frame(sequence: int, timestamp_us: int, quat: FloatArray, angvel: FloatArray) -> bytes:
    """One version-1 frame; ``sequence`` and ``timestamp_us`` wrap to their field widths."""
    q = np.asarray(quat, dtype=np.float64)
    w = np.asarray(angvel, dtype=np.float64)
    if q.shape != (4,) or w.shape != (3,):
        raise ValueError(f"an IMU frame carries a quaternion (4,) and an angular velocity (3,); got {q.shape} "
                         f"and {w.shape}")
    body = bytes((VERSION, BODY_BYTES[VERSION])) + _BODY_V1.pack(
        sequence % SEQUENCE_MODULUS, timestamp_us % TIMESTAMP_MODULUS, *q.tolist(), *w.tolist())
    crc = crc16_ccitt(body)
    return SYNC + body + bytes((crc & 0xFF, crc >> 8))


class FrameError(ValueError):
    """A frame that cannot be used; ``kind`` is one of :data:`CORRUPT_KINDS`."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def decode_frame(frame: bytes | bytearray | memoryview) -> ImuFrame:
    """One complete frame (sync included) -> :class:`ImuFrame`; a bad one is a :class:`FrameError`."""
    data = bytes(frame)
    if data[:2] != SYNC:
        raise ValueError(f"a frame starts with {SYNC.hex()}; got {data[:2].hex()}")
    if len(data) < HEADER_BYTES:
        raise FrameError("length", f"a frame has at least {HEADER_BYTES} bytes; got {len(data)}")
    version, length = data[2], data[3]
    if version not in BODY_BYTES:
        raise FrameError("version", f"unknown IMU frame version {version}; known: {SUPPORTED_VERSIONS}")
    if length != BODY_BYTES[version]:
        raise FrameError("length", f"length field {length}; version {version} frames have {BODY_BYTES[version]}")
    total = HEADER_BYTES + length + CRC_BYTES
    if len(data) != total:
        raise FrameError("length", f"a version {version} frame has {total} bytes; got {len(data)}")
    got = data[-2] | (data[-1] << 8)
    want = crc16_ccitt(data[2:-2])
    if got != want:
        raise FrameError("crc", f"CRC {got:#06x}, computed {want:#06x}")
    seq, stamp, *values = _BODY_V1.unpack_from(data, HEADER_BYTES)
    quat = np.array(values[:4], dtype=np.float64)
    angvel = np.array(values[4:], dtype=np.float64)
    if not (np.all(np.isfinite(quat)) and np.all(np.isfinite(angvel))):
        raise FrameError("invalid", f"non-finite values in frame {seq}")
    norm = math.sqrt(float(quat @ quat))
    if abs(norm - 1.0) > QUAT_NORM_TOLERANCE:
        raise FrameError("invalid", f"frame {seq} has a quaternion of norm {norm:.6g}, not 1")
    return ImuFrame(seq, stamp, quat / norm, angvel, version)


@dataclass
class DecoderCounters:
    """What a :class:`FrameDecoder` has seen since it was made."""

    frames: int = 0
    """Valid frames decoded (duplicates not included)."""
    corrupt: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CORRUPT_KINDS, 0))
    """Rejected frames by kind (see :data:`CORRUPT_KINDS`)."""
    gaps: int = 0
    """Times the sequence number jumped by more than one: frames lost on the line or dropped by the device."""
    frames_missed: int = 0
    """Frames those jumps skipped, added up."""
    duplicates: int = 0
    """Frames repeating the previous sequence number (rejected)."""
    bytes_skipped: int = 0
    """Bytes outside any frame (joining mid-stream, line noise, the rest of a rejected frame)."""

    @property
    def total_corrupt(self) -> int:
        """Rejected frames of every kind."""
        return sum(self.corrupt.values())


class FrameDecoder:
    """Frames out of a byte stream fed in arbitrary pieces; counts what it rejects and sequence gaps."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._last_sequence: int | None = None
        self.counters = DecoderCounters()

    def feed(self, data: bytes) -> list[ImuFrame]:
        """The valid frames completed by ``data``, in order."""
        buf = self._buf
        buf += data
        out: list[ImuFrame] = []
        c = self.counters
        while True:
            start = buf.find(SYNC)
            if start < 0:
                # Keep a trailing first sync byte: the frame may start there.
                keep = 1 if buf[-1:] == SYNC[:1] else 0
                c.bytes_skipped += len(buf) - keep
                del buf[:len(buf) - keep]
                break
            if start:
                c.bytes_skipped += start
                del buf[:start]
            if len(buf) < HEADER_BYTES:
                break
            version, length = buf[2], buf[3]
            if version not in BODY_BYTES or length != BODY_BYTES[version]:
                c.corrupt["version" if version not in BODY_BYTES else "length"] += 1
                self._skip_one()
                continue
            total = HEADER_BYTES + length + CRC_BYTES
            if len(buf) < total:
                break
            try:
                frame = decode_frame(buf[:total])
            except FrameError as exc:
                c.corrupt[exc.kind] += 1
                self._skip_one()
                continue
            del buf[:total]
            if self._sequence_ok(frame.sequence):
                c.frames += 1
                out.append(frame)
        return out

    def _skip_one(self) -> None:
        """Resume the scan one byte after a rejected frame's start."""
        del self._buf[:1]
        self.counters.bytes_skipped += 1

    def _sequence_ok(self, sequence: int) -> bool:
        """Count a gap or a duplicate; whether the frame is new."""
        last, self._last_sequence = self._last_sequence, sequence
        if last is None:
            return True
        step = (sequence - last) % SEQUENCE_MODULUS
        if step == 0:
            self.counters.duplicates += 1
            return False
        if step != 1:
            self.counters.gaps += 1
            self.counters.frames_missed += step - 1
        return True

    def clear(self) -> None:
        """Forget a partial frame (the line was reopened); counters stay."""
        self._buf.clear()
        self._last_sequence = None
