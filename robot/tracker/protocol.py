"""The s2r pose datagram: one torso pose per UDP datagram, sent on loopback by a motion-capture bridge or the emulator.

A bridge on the robot's computer turns the motion-capture system's stream (Vicon DataStream, OptiTrack NatNet, a
ROS ``PoseStamped``...) into these datagrams and sends each to ``127.0.0.1:<tracker.port>`` of the hardware config;
the emulator sends the same from its physics. One datagram holds one complete sample, so a lost datagram is a lost
sample, never a torn one. Every multi-byte field is little-endian; units are SI.

Version 1 (80 bytes)::

    offset size  field         meaning
    0      4     magic         b"S2RP"
    4      1     version       datagram format version, 1
    5      1     flags         bit 0 TRACKED: the pose is valid (0: the system lost the body, e.g. occluded
                               markers; counted, never used); bits 1-7 are 0
    6      2     reserved      0
    8      4     sequence      u32 datagram counter, +1 for every datagram the sender sends, wraps 2**32 -> 0
    12     8     timestamp     u64 capture time of the pose on the sender's clock (us; monotonic, any origin)
    20     24    position      float64 x, y, z (m): the torso frame's origin in the world frame (z up)
    44     32    orientation   float64 w, x, y, z: unit quaternion rotating torso-frame vectors into the world
                               frame (torso x forward, y left, z up)
    76     4     crc           CRC-32 (IEEE 802.3, zlib.crc32) of bytes 0..75

Why these choices: UDP on loopback has no connection to lose and no head-of-line blocking (a late pose is worth
less than the next one); the magic and version reject stray datagrams on the port; the CRC rejects anything a
buggy bridge garbles (the kernel's UDP checksum is not computed on loopback); the sequence number shows lost and
reordered datagrams (an older or repeated one is dropped: the newest pose wins); the timestamp is the capture
time, so the receiver differences poses over the time they were taken, not over when they happened to arrive;
float64 keeps millimetres exact across a large room.

A receiver (:func:`decode_datagram`) checks length, magic, version, CRC, flags, and rejects a pose that is not
finite or whose quaternion is not of unit norm (within :data:`QUAT_NORM_TOLERANCE`): a NaN must never reach an
observation.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from sim.tasks.spec import FloatArray

MAGIC = b"S2RP"
"""First four bytes of every datagram."""
VERSION = 1
"""The datagram format this module writes and reads."""
FLAG_TRACKED = 0x01
"""``flags`` bit: the pose is valid."""
_BODY = struct.Struct("<4sBBHIQ3d4d")
"""Magic, version, flags, reserved, sequence, timestamp (us), position x y z (m), quaternion w x y z."""
CRC_BYTES = 4
DATAGRAM_BYTES = _BODY.size + CRC_BYTES
"""Whole datagram size (bytes): 80."""
SEQUENCE_MODULUS = 1 << 32
"""The sequence number counts modulo this."""
TIMESTAMP_MODULUS = 1 << 64
US_PER_S = 1e6
QUAT_NORM_TOLERANCE = 1e-3
"""How far from 1 a datagram's quaternion norm may be (-): more means a broken bridge, not rounding."""
REJECT_KINDS = ("length", "magic", "version", "crc", "invalid", "untracked")
"""Kinds of rejected datagrams: ``length`` not :data:`DATAGRAM_BYTES` long; ``magic`` not an s2r pose datagram;
``version`` an unknown format version; ``crc`` checksum mismatch; ``invalid`` a CRC that holds around values that
cannot be a pose (non-finite, a quaternion not of unit norm, unknown flag bits); ``untracked`` the sender says the
body is lost."""


@dataclass(frozen=True)
class PoseDatagram:
    """One decoded datagram."""

    sequence: int
    """Datagram counter (0..2**32-1)."""
    timestamp_us: int
    """Capture time on the sender's clock (us)."""
    position: FloatArray
    """Torso origin in the world (m)."""
    quat: FloatArray
    """Torso orientation, torso -> world (w, x, y, z), normalized."""


class DatagramError(ValueError):
    """A datagram that cannot be used; ``kind`` is one of :data:`REJECT_KINDS`, ``sequence`` its sequence number where
    the CRC vouches for it (``None`` otherwise): an untracked datagram still counts in the sequence."""

    def __init__(self, kind: str, message: str, sequence: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.sequence = sequence


def encode_datagram(sequence: int, timestamp_us: int, position: FloatArray, quat: FloatArray, *,
                    tracked: bool = True) -> bytes:
    """One version-1 datagram; ``sequence`` and ``timestamp_us`` wrap to their field widths."""
    p = np.asarray(position, dtype=np.float64)
    q = np.asarray(quat, dtype=np.float64)
    if p.shape != (3,) or q.shape != (4,):
        raise ValueError(f"a pose datagram carries a position (3,) and a quaternion (4,); got {p.shape} and {q.shape}")
    body = _BODY.pack(MAGIC, VERSION, FLAG_TRACKED if tracked else 0, 0, sequence % SEQUENCE_MODULUS,
                      timestamp_us % TIMESTAMP_MODULUS, *p.tolist(), *q.tolist())
    return body + struct.pack("<I", zlib.crc32(body))


def decode_datagram(data: bytes | bytearray | memoryview) -> PoseDatagram:
    """One datagram -> :class:`PoseDatagram`; anything unusable is a :class:`DatagramError`."""
    raw = bytes(data)
    if len(raw) != DATAGRAM_BYTES:
        raise DatagramError("length", f"a pose datagram has {DATAGRAM_BYTES} bytes; got {len(raw)}")
    magic, version, flags, _reserved, seq, stamp, *values = _BODY.unpack_from(raw)
    if magic != MAGIC:
        raise DatagramError("magic", f"a pose datagram starts with {MAGIC!r}; got {magic!r}")
    if version != VERSION:
        raise DatagramError("version", f"unknown pose datagram version {version}; known: {VERSION}")
    (got,) = struct.unpack_from("<I", raw, _BODY.size)
    want = zlib.crc32(raw[: _BODY.size])
    if got != want:
        raise DatagramError("crc", f"CRC32 {got:#010x}, computed {want:#010x}")
    if flags & ~FLAG_TRACKED:
        raise DatagramError("invalid", f"datagram {seq} sets unknown flag bits {flags:#04x}", seq)
    if not flags & FLAG_TRACKED:
        raise DatagramError("untracked", f"datagram {seq}: the sender lost the body", seq)
    position = np.array(values[:3], dtype=np.float64)
    quat = np.array(values[3:], dtype=np.float64)
    if not (np.all(np.isfinite(position)) and np.all(np.isfinite(quat))):
        raise DatagramError("invalid", f"non-finite values in datagram {seq}", seq)
    norm = math.sqrt(float(quat @ quat))
    if abs(norm - 1.0) > QUAT_NORM_TOLERANCE:
        raise DatagramError("invalid", f"datagram {seq} has a quaternion of norm {norm:.6g}, not 1", seq)
    return PoseDatagram(seq, stamp, position, quat / norm)


def sequence_delta(new: int, old: int) -> int:
    """How far ``new`` is ahead of ``old`` on the wrapping counter: in [-2**31, 2**31); <= 0 is old or repeated."""
    return (new - old + SEQUENCE_MODULUS // 2) % SEQUENCE_MODULUS - SEQUENCE_MODULUS // 2
