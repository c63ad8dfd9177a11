"""How long a bus transaction may take at worst: the packet timeout dynamixel-sdk waits, the drain after a failure.

The config validator (``robot.config``) uses these to refuse retry counts that cannot fit in the watchdog's
data-age bound, and :class:`robot.dynamixel.DynamixelBus` to stop retrying a state read at that bound. Plain
numbers in and out (no config), so the config can use them without importing the bus.
"""

from __future__ import annotations

from robot.dynamixel.control_table import STATE_BLOCK_SIZE
from robot.dynamixel.units import wire_time_s

SDK_TIMEOUT_MARGIN_S = 0.002
"""dynamixel-sdk's fixed margin in its packet timeout (s)."""
DRAIN_QUIET_MARGIN_S = 0.001
"""Quiet time after a failed transaction, beyond two latency-timer periods, before a retry (s)."""
DRAIN_LONGEST_FACTOR = 10
"""A drain gives up after this many quiet times, however busy the line (a babbling device)."""
STATUS_OVERHEAD_BYTES = 11
"""Bytes of a status packet around its data: header (4), ID, LEN (2), INST, ERR, CRC (2) (e-manual, protocol 2.0)."""
SYNC_READ_OVERHEAD_BYTES = 14
"""Bytes of a SYNC_READ instruction besides its ID list: header (4), ID, LEN (2), INST, address (2), length (2),
CRC (2) (e-manual, protocol 2.0)."""


def packet_timeout_s(baud: int, n_bytes: int, latency_timer_s: float, reply_delays_s: float) -> float:
    """The wait for ``n_bytes`` of replies before a transaction times out (s): as ``TunedPortHandler`` computes it
    (the bytes' wire time, two latency-timer periods, the SDK's margin, every servo's return delay)."""
    return wire_time_s(n_bytes, baud) + 2.0 * latency_timer_s + SDK_TIMEOUT_MARGIN_S + reply_delays_s


def drain_quiet_s(latency_timer_s: float) -> float:
    """How long the line must be silent after a failed transaction before anything is retried (s)."""
    return 2.0 * latency_timer_s + DRAIN_QUIET_MARGIN_S


def state_read_attempt_s(baud: int, n_servos: int, latency_timer_s: float, return_delay_s: float) -> float:
    """The longest one state-read attempt takes when it fails (s): the SYNC_READ instruction's wire time, the packet
    timeout for every servo's status packet (a plain sync read waits longer than a fast one), then the drain on a
    line gone quiet. A babbling line drains longer (up to ``DRAIN_LONGEST_FACTOR`` quiet times), which the bus
    cuts at the read's deadline instead."""
    request = wire_time_s(SYNC_READ_OVERHEAD_BYTES + n_servos, baud)
    replies = n_servos * (STATUS_OVERHEAD_BYTES + STATE_BLOCK_SIZE)
    return (request + packet_timeout_s(baud, replies, latency_timer_s, n_servos * return_delay_s)
            + drain_quiet_s(latency_timer_s))
