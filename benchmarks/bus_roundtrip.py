"""Round trip of one control cycle through the emulator: sync read of every servo + sync write of the goals.

For each bus timing (wire time at 1 Mbps on / off) a fresh emulator is started, a DynamixelBus connects
to it over its pty, and the loop's two transactions are timed: ``read()`` (SYNC_READ of the 10-byte state
block from 9 joints + the valve encoder, with retries) and ``write()`` (SYNC_WRITE of 9 goals). The mock
bus is timed on the same calls for reference. The last stdout line is one JSON object.

Usage: python benchmarks/bus_roundtrip.py [--quick] [--cycles N] [--period-ms P]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from robot.bus import Bus
from robot.config import load_config
from robot.dynamixel.bus import DynamixelBus
from robot.emulator import Emulator, RealityConfig
from robot.mock import MockBus

ROOT = Path(__file__).resolve().parents[1]
QUICK_CYCLES = 300
FULL_CYCLES = 3000


def percentiles_us(samples_s: list[float]) -> dict[str, float]:
    a = np.asarray(samples_s) * 1e6
    return {"p50_us": round(float(np.percentile(a, 50)), 1), "p99_us": round(float(np.percentile(a, 99)), 1),
            "max_us": round(float(a.max()), 1)}


def run_cycles(bus: Bus, cycles: int, period_s: float) -> dict[str, Any]:
    command = bus.config.task_spec().reset
    reads, writes, totals = [], [], []
    stale = 0
    next_t = time.perf_counter()
    for _ in range(cycles):
        t0 = time.perf_counter()
        r = bus.read()
        t1 = time.perf_counter()
        bus.write(command)
        t2 = time.perf_counter()
        reads.append(t1 - t0)
        writes.append(t2 - t1)
        totals.append(t2 - t0)
        stale += r.stale
        next_t += period_s
        pause = next_t - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        else:
            next_t = time.perf_counter()
    counters = bus.counters
    return {
        "read": percentiles_us(reads),
        "write": percentiles_us(writes),
        "cycle": percentiles_us(totals),
        "stale_reads": stale,
        "comm_errors": {k: v for k, v in counters.comm_errors.items() if v},
        "read_attempts": counters.read_attempts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_CYCLES} cycles per case")
    parser.add_argument("--cycles", type=int, help=f"cycles per case (default {FULL_CYCLES})")
    parser.add_argument("--period-ms", type=float, default=5.0, help="loop period between cycles (ms)")
    args = parser.parse_args()
    cycles = args.cycles or (QUICK_CYCLES if args.quick else FULL_CYCLES)
    period_s = args.period_ms / 1000.0
    config = load_config(ROOT / "hardware_configs" / "dclaw.yaml")
    results: dict[str, Any] = {}
    for name, reality in (("emulator_wire_time_1mbps", RealityConfig(wire_time=True)),
                          ("emulator_no_wire_time", RealityConfig(wire_time=False))):
        with Emulator(config, reality=reality) as emu:
            bus = DynamixelBus(config, emu.port)
            bus.connect()
            bus.read()  # warm up
            results[name] = run_cycles(bus, cycles, period_s)
            results[name]["emulator_handle_mean_us"] = round(
                emu.stats()["handle_time_total_s"] / max(1.0, emu.stats()["instructions"]) * 1e6, 1)
            bus.close()
        print(f"{name}: read {results[name]['read']}, write {results[name]['write']}, "
              f"errors {results[name]['comm_errors']}")
    mock = MockBus(config)
    mock.connect()
    results["mock"] = run_cycles(mock, cycles, 0.0)
    print(f"mock: read {results['mock']['read']}, write {results['mock']['write']}")
    summary = {
        "benchmark": "bus_roundtrip",
        "cycles": cycles,
        "period_ms": args.period_ms,
        "servos_read": len(config.all_ids),
        "servos_written": len(config.joint_ids),
        "state_block_bytes": 10,
        "latency_timer_s": config.latency_timer_s,
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        **results,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
