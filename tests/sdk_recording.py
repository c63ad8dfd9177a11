"""Recording the state blocks a test's packet handler sees, whichever read the bus uses."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from robot.dynamixel.control_table import STATE_BLOCK_SIZE

FAST_SEGMENT_BYTES = STATE_BLOCK_SIZE + 4
"""One servo's part of a FAST_SYNC_READ reply of the state block: error, ID, the block, CRC."""


def fast_state_blocks(data: Sequence[int], length: int) -> Iterator[tuple[int, bytes]]:
    """(servo ID, state block) of each servo in the data of a FAST_SYNC_READ reply of the state block."""
    if length % FAST_SEGMENT_BYTES:
        return
    for k in range(0, len(data) - FAST_SEGMENT_BYTES + 1, FAST_SEGMENT_BYTES):
        yield data[k + 1], bytes(data[k + 2:k + 2 + STATE_BLOCK_SIZE])
