"""Recording the state blocks a test's packet handler sees, whichever read the bus uses."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from robot.dynamixel.control_table import STATE_BLOCK_SIZE
from robot.dynamixel.protocol import FAST_SEGMENT_OVERHEAD, FAST_STATUS_HEAD, parse_fast_sync_status

FAST_SEGMENT_BYTES = STATE_BLOCK_SIZE + FAST_SEGMENT_OVERHEAD
"""One servo's part of a FAST_SYNC_READ reply of the state block: error, ID, the block, CRC."""


def fast_state_blocks(packet: Sequence[int]) -> Iterator[tuple[int, bytes]]:
    """(servo ID, state block) of each intact segment of a raw FAST_SYNC_READ status of the state block (what the
    bus gets from the SDK's ``rxPacket(port, True)``)."""
    raw = bytes(packet)
    n = max(0, (len(raw) - FAST_STATUS_HEAD) // FAST_SEGMENT_BYTES)
    ids = [raw[FAST_STATUS_HEAD + k * FAST_SEGMENT_BYTES + 1] for k in range(n)]
    for seg in parse_fast_sync_status(raw, ids, STATE_BLOCK_SIZE):
        if seg.failure is None:
            yield seg.servo_id, seg.data
