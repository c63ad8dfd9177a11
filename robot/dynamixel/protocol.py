"""Protocol 2.0 packet codec: CRC-16, byte stuffing, encoding and an incremental decoder.

The bus itself talks through dynamixel-sdk; this codec is the servo side (the emulator) and lets tests
craft raw bytes. Packet layout (ROBOTIS e-manual, "Protocol 2.0", https://emanual.robotis.com/docs/en/dxl/protocol2/)::

    instruction: FF FF FD 00 | ID | LEN_L LEN_H | INST | params | CRC_L CRC_H    LEN = len(params) + 3
    status:      FF FF FD 00 | ID | LEN_L LEN_H | 0x55 | ERR | params | CRC_L CRC_H

LEN and the CRC cover the stuffed body: after every FF FF FD inside INST..params an extra FD is sent. The one
exception is the combined status of FAST_SYNC_READ, which is never stuffed (see ``parse_fast_sync_status``).
"""

from __future__ import annotations

from dataclasses import dataclass

from robot.dynamixel.control_table import Instruction

HEADER = b"\xff\xff\xfd\x00"
MIN_PACKET_BYTES = 10
"""Header (4) + ID + LEN (2) + INST + CRC (2)."""
MAX_LENGTH_FIELD = 1024
"""Largest LEN accepted before a header is treated as noise (dynamixel-sdk's buffer size)."""
_CRC_POLY = 0x8005


def _crc_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ _CRC_POLY) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16(data: bytes | bytearray, crc: int = 0) -> int:
    """CRC-16 of protocol 2.0 (polynomial 0x8005, initial value 0, not reflected)."""
    for b in data:
        crc = ((crc << 8) ^ _CRC_TABLE[((crc >> 8) ^ b) & 0xFF]) & 0xFFFF
    return crc


def stuff(body: bytes | bytearray) -> bytes:
    """Insert FD after every FF FF FD in ``body`` (INST .. last param)."""
    if b"\xff\xff\xfd" not in body:
        return bytes(body)
    out = bytearray()
    for b in body:
        out.append(b)
        if b == 0xFD and len(out) >= 3 and out[-3] == 0xFF and out[-2] == 0xFF:
            out.append(0xFD)
    return bytes(out)


def unstuff(body: bytes | bytearray) -> bytes:
    """Remove the FD that follows every FF FF FD in a received body."""
    if b"\xff\xff\xfd" not in body:
        return bytes(body)
    out = bytearray()
    i = 0
    n = len(body)
    while i < n:
        b = body[i]
        out.append(b)
        if b == 0xFD and len(out) >= 3 and out[-3] == 0xFF and out[-2] == 0xFF and i + 1 < n and body[i + 1] == 0xFD:
            i += 1
        i += 1
    return bytes(out)


def _frame(dxl_id: int, body: bytes) -> bytes:
    stuffed = stuff(body)
    length = len(stuffed) + 2
    head = HEADER + bytes((dxl_id & 0xFF, length & 0xFF, length >> 8))
    packet = head + stuffed
    crc = crc16(packet)
    return packet + bytes((crc & 0xFF, crc >> 8))


def encode_instruction(dxl_id: int, instruction: int, params: bytes = b"") -> bytes:
    """A complete, stuffed instruction packet."""
    return _frame(dxl_id, bytes((instruction,)) + bytes(params))


def encode_status(dxl_id: int, error: int, params: bytes = b"") -> bytes:
    """A complete, stuffed status packet."""
    return _frame(dxl_id, bytes((Instruction.STATUS, error)) + bytes(params))


@dataclass(frozen=True)
class Packet:
    """One received packet; ``params`` are unstuffed."""

    id: int
    """ID field (0xFE for broadcast)."""
    instruction: int
    """Instruction code (0x55 for a status packet)."""
    params: bytes
    """Parameters after INST (for a status packet: ERR first, then the data)."""
    crc_ok: bool
    """Whether the CRC matched; a servo ignores a packet whose CRC does not."""
    raw: bytes
    """The bytes as received."""


class PacketDecoder:
    """Splits a byte stream into packets; skips noise and resynchronises on the next header."""

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes received that do not yet form a complete packet."""
        return len(self._buf)

    def clear(self) -> None:
        """Drop a partial packet (e.g. after the line was idle for too long)."""
        self._buf.clear()

    def feed(self, data: bytes) -> list[Packet]:
        """Add received bytes; return every packet they complete, in order."""
        self._buf.extend(data)
        packets: list[Packet] = []
        buf = self._buf
        while True:
            start = buf.find(HEADER)
            if start < 0:
                # Keep a possible header prefix at the end; drop everything before it.
                keep = next((k for k in (3, 2, 1) if buf.endswith(HEADER[:k])), 0)
                del buf[: len(buf) - keep]
                return packets
            if start:
                del buf[:start]
            if len(buf) < 7:
                return packets
            length = buf[5] | (buf[6] << 8)
            if length < 3 or length > MAX_LENGTH_FIELD:
                del buf[:1]
                continue
            total = 7 + length
            if len(buf) < total:
                return packets
            raw = bytes(buf[:total])
            del buf[:total]
            crc_ok = crc16(raw[:-2]) == (raw[-2] | (raw[-1] << 8))
            body = unstuff(raw[7:-2])
            packets.append(Packet(raw[4], body[0], body[1:], crc_ok, raw))


# --- FAST_SYNC_READ status ----------------------------------------------------------------------------------
# ROBOTIS e-manual, Protocol 2.0, "Fast Sync Read (0x8A)"
# (https://emanual.robotis.com/docs/en/dxl/protocol2/#fast-sync-read-0x8a): every servo appends its segment
# (ERR, ID, data, CRC) to ONE status packet from the broadcast ID; the first segment's ERR is the packet's ERR.
# "Fast Sync Read Status Packet does not perform Byte Stuffing(0xFD) process" (a note in that section), and
# dynamixel-sdk's rxPacket(port, fast_option=True) accordingly skips removeStuffing. Each segment's CRC is the
# packet's CRC-16 run from the header up to the end of that segment's data, earlier segments' CRC bytes
# included, so the last one is the packet's CRC (the section's example, ids 3, 7 and 4, checks out this way).
FAST_SEGMENT_OVERHEAD = 4
"""Bytes around each servo's data in a FAST_SYNC_READ status: ERR, ID and the CRC (2)."""
FAST_STATUS_HEAD = 8
"""Header (4), ID, LEN (2) and INST in front of the first segment."""


def encode_fast_sync_status(segments: list[tuple[int, int, bytes]]) -> bytes:
    """The combined status a chain of servos sends for FAST_SYNC_READ: ``segments`` are (ERR, ID, data) in the
    requested order, all data of one length. Not stuffed (see the e-manual note above)."""
    length = 1 + sum(len(data) + FAST_SEGMENT_OVERHEAD for _, _, data in segments)
    out = bytearray(HEADER + bytes((0xFE, length & 0xFF, length >> 8, Instruction.STATUS)))
    crc = crc16(out)
    for k, (error, servo_id, data) in enumerate(segments):
        seg = bytes((error, servo_id)) + bytes(data)
        out += seg
        crc = crc16(seg, crc)
        tail = bytes((crc & 0xFF, crc >> 8))
        out += tail
        if k < len(segments) - 1:
            crc = crc16(tail, crc)  # the next servo's CRC runs on over this one
    return bytes(out)


@dataclass(frozen=True)
class FastSegment:
    """One servo's part of a FAST_SYNC_READ status, checked on its own."""

    servo_id: int
    """The ID that was asked for at this position."""
    error: int
    """The segment's ERR byte (meaningful only when ``failure`` is ``None``)."""
    data: bytes
    """The servo's data bytes; empty when ``failure`` is set."""
    failure: str | None
    """``None`` when the segment's CRC and ID are right; else why not (``"corrupt: ..."``, ``"short_data: ..."``):
    the data is then unknown, never a guess."""


def parse_fast_sync_status(packet: bytes | bytearray, ids: list[int] | tuple[int, ...],
                           data_length: int) -> tuple[FastSegment, ...]:
    """Check every segment of a received FAST_SYNC_READ status (raw bytes as on the wire) on its own.

    Segment ``k`` sits at a fixed offset (no stuffing shifts it) and is right when its ID is ``ids[k]`` and its
    CRC matches: the first segment's over the header and itself, a later one's continued from the CRC bytes
    received before it. So a bad segment fails that servo only, and a packet cut short or damaged further on
    leaves the segments before the damage valid. Never raises; pure.
    """
    seg_len = data_length + FAST_SEGMENT_OVERHEAD
    raw = bytes(packet)
    head: str | None = None
    if len(raw) < FAST_STATUS_HEAD or raw[:4] != HEADER or raw[7] != Instruction.STATUS:
        head = "corrupt: not a FAST_SYNC_READ status packet"
    elif raw[4] != 0xFE:
        # A whole status packet of one servo (a late reply to an earlier request): the combined one is missing.
        head = f"short_data: a status packet of ID {raw[4]}, not the combined one"
    out = []
    for k, servo_id in enumerate(ids):
        start = FAST_STATUS_HEAD + k * seg_len
        end = start + seg_len
        if head is not None:
            out.append(FastSegment(servo_id, 0, b"", head))
            continue
        if len(raw) < end:
            out.append(FastSegment(servo_id, 0, b"", f"short_data: reply cut at {len(raw)} of {end} bytes"))
            continue
        got = raw[end - 2] | (raw[end - 1] << 8)
        if k == 0:
            crc = crc16(raw[:end - 2])
        else:
            crc = crc16(raw[start - 2:end - 2], raw[start - 2] | (raw[start - 1] << 8))
        if crc != got:
            out.append(FastSegment(servo_id, 0, b"", "corrupt: segment CRC mismatch"))
        elif raw[start + 1] != servo_id:
            out.append(FastSegment(servo_id, 0, b"", f"corrupt: segment of ID {raw[start + 1]}"))
        else:
            out.append(FastSegment(servo_id, raw[start], raw[start + 2:end - 2], None))
    return tuple(out)
