"""``s2r emulate``: serve a physics-backed Dynamixel servo emulator on a pseudo-terminal.

The first line on stdout is the device path to open (``/dev/pts/N``), flushed at once; the emulator then
serves until SIGINT or SIGTERM and exits 0, printing its counters to stderr. Also runnable as
``python -m robot.emulator.cli --robot hardware_configs/dclaw.yaml``.
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
        "protocol 2.0 in real time. Prints the device path on the first line, then serves until "
        "interrupted (SIGINT/SIGTERM).",
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
                   "overload=21@2s,overheat=31@100cycles,silent=12@10s,seed=1'")


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; returns the exit code."""
    from robot.emulator.server import ChainServer, build_chain

    config = load_config(args.robot)
    reality = load_reality(args.reality, config) if args.reality else NOMINAL_REALITY
    faults = faults_from_arg(args.faults)
    server = ChainServer(build_chain(config, reality, faults))
    stop = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(server.open(), flush=True)
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
