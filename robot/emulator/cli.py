"""``s2r emulate``: serve a physics-backed Dynamixel servo emulator on a pseudo-terminal.

The first line on stdout is the servos' device path to open (``/dev/pts/N``). A robot whose config has an
``imu`` section (``hardware_configs/dkitty.yaml``) gets its IMU on a second pty, whose path is the second line
(``s2r deploy ... --port LINE1 --imu-port LINE2``); a robot without one prints one line. Both are flushed at
once; the emulator then serves until SIGINT or SIGTERM and exits 0, printing its counters to stderr. Also
runnable as ``python -m robot.emulator.cli --robot hardware_configs/dclaw.yaml``.

An emulator started here has no owner to ask for scene placements, so a legged robot's episodes start where
the previous one left it (as on the real robot without a person to put it down); ``s2r deploy --driver emulator``
without ``--port`` starts its own emulator, which places the robot at every episode's start.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any

from robot.config import load_config
from robot.emulator.faults import faults_from_arg
from robot.emulator.reality import NOMINAL_REALITY, load_reality


def register(sub: Any) -> None:
    """Add ``emulate`` to the ``s2r`` subcommands."""
    p = sub.add_parser(
        "emulate",
        help="serve an emulated Dynamixel servo chain (protocol 2.0) on a pseudo-terminal",
        description="Emulate the robot's servos on a pseudo-terminal: the simulated robot answers Dynamixel "
        "protocol 2.0 in real time. Prints the device path on the first line (and, for a robot with an IMU, the "
        "IMU's device path on the second), then serves until interrupted (SIGINT/SIGTERM).",
    )
    add_arguments(p)
    p.set_defaults(func=run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``emulate``."""
    p.add_argument("--robot", required=True, metavar="YAML", help="hardware config, e.g. hardware_configs/dclaw.yaml")
    p.add_argument("--reality", metavar="YAML",
                   help="reality file: named physics parameters, engine, latency, sensor noise, bus timing")
    p.add_argument("--faults", metavar="SPEC",
                   help="faults to inject: a YAML file or a spec such as 'drop=0.01,crc=0.005,late=0.01:5ms,"
                   "overload=21@2s,overheat=31@100cycles,silent=12@10s,seed=1' (IMU: imu_silent@2s, "
                   "imu_corrupt=0.05, imu_drop=0.01)")


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; returns the exit code."""
    from robot.emulator.server import build_server

    config = load_config(args.robot)
    reality = load_reality(args.reality, config) if args.reality else NOMINAL_REALITY
    faults = faults_from_arg(args.faults)
    server = build_server(config, reality, faults)
    stop = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        lines = [server.open()]
        if server.imu_path is not None:
            lines.append(server.imu_path)
        print("\n".join(lines), flush=True)
        server.serve(lambda: stop)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        stats = server.stats()
        server.close()
    print(json.dumps({"emulator_stats": stats, "faults": faults.describe()}), file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m robot.emulator.cli``: the same as ``s2r emulate``."""
    from s2r.errors import UserError
    from s2r.extras import MissingExtra

    parser = argparse.ArgumentParser(prog="python -m robot.emulator.cli")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (UserError, MissingExtra, FileNotFoundError) as exc:
        print(f"emulate: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
