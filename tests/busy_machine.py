"""Bounds for tests that drive the servo emulator in real time on a busy shared machine."""

from __future__ import annotations

LATENCY_TIMER_S = 0.05
"""Latency timer of a test's bus (s), so a packet timeout of about 100 ms. On the shared 2-vCPU VM the suite runs
on, a process can wake tens of ms late (``time.sleep(1 ms)`` has overshot by 87 ms); a timeout from that is not
what any test checks. A test that injects a silent servo or a dropped reply waits the 100 ms for each."""
MAX_DATA_AGE_S = 2.0
"""The watchdog's data-age bound (s) of a test that is not about the watchdog: such a machine can stall the loop or
the emulator for a few hundred ms, past the shipped 250 ms."""
