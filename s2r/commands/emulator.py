"""``s2r emulate``: serve a physics-backed Dynamixel servo emulator on a pseudo-terminal.

The first line on stdout is the servos' device path to open (``/dev/pts/N``). A robot whose config has an
``imu`` section (``hardware_configs/dkitty.yaml``) gets its IMU on a second pty, whose path is the second line
(``s2r deploy ... --port LINE1 --imu-port LINE2``); a robot without one prints one line. Both are flushed at
once; the emulator then serves until SIGINT or SIGTERM and exits 0, printing its counters to stderr. Also
runnable as ``python -m s2r.commands.emulator --robot hardware_configs/dclaw.yaml``.

``--lockstep`` serves in simulated time (``robot.emulator.server``, "Lock-step"): time stands still until a client
moves it. A last line then names the time socket, a Unix socket that takes one client at a time; the client speaks
``multiprocessing.connection`` framing (pickled tuples) on it: ``("advance", t_target, bytes_written, until_reply)``
answered ``("at", t, servo_bytes, imu_bytes, tracker_datagrams)``, and ``("stats",)``. ``s2r deploy --driver emulator
--port LINE1 [--imu-port LINE2] --lockstep --clock-socket LAST_LINE`` is such a client
(``robot.emulator.lockstep.connect_clock``); a client that hangs up leaves the emulator waiting for the next one.

An emulator started here has no owner to ask for scene placements, so a legged robot's episodes start where
the previous one left it (as on the real robot without a person to put it down); ``s2r deploy --driver emulator``
without ``--port`` starts its own emulator, which places the robot at every episode's start.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any

from robot.config import load_config
from robot.emulator.faults import faults_from_arg
from robot.emulator.reality import NOMINAL_REALITY, load_reality
from robot.emulator.server import build_server
from robot.simtime import SimTime
from s2r import cliargs
from s2r.core.errors import UserError
from s2r.core.extras import MissingExtra


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
    p.add_argument("--lockstep", action="store_true",
                   help="serve in simulated time, moved by a client through the time socket printed last")


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; returns the exit code."""
    # No camera stream here: a deployment reads one only from an emulator it starts itself (its servos' thread renders
    # the frames, which in real time would cost the servos' replies their timing).
    config = replace(load_config(args.robot), camera=None)
    reality = load_reality(args.reality, config) if args.reality else NOMINAL_REALITY
    faults = faults_from_arg(args.faults)
    sim_time = SimTime() if args.lockstep else None
    server = (build_server(config, reality, faults, clock=sim_time) if sim_time is not None
              else build_server(config, reality, faults))
    stop = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        lines = [server.open()]
        if server.imu_path is not None:
            lines.append(server.imu_path)
        if sim_time is None:
            print("\n".join(lines), flush=True)
            server.serve(lambda: stop)
        else:
            _serve_lockstep(server, sim_time, lines, lambda: stop)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        stats = server.stats()
        server.close()
    print(json.dumps({"emulator_stats": stats, "faults": faults.describe()}), file=sys.stderr)
    return 0


ACCEPT_POLL_S = 0.2
"""How often a lock-step emulator waiting for a client checks for SIGINT/SIGTERM (s)."""


def _serve_lockstep(server: Any, sim_time: Any, lines: list[str], should_stop: Any) -> None:
    """Print the device lines and the time socket, then serve one lock-step client after another."""
    folder = tempfile.mkdtemp(prefix="s2r-lockstep-")
    path = os.path.join(folder, "clock.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path)
        listener.listen(1)
        listener.settimeout(ACCEPT_POLL_S)
        print("\n".join([*lines, path]), flush=True)
        while not should_stop():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            client.setblocking(True)
            conn = Connection(client.detach())
            try:
                server.serve_lockstep(sim_time, conn, should_stop)
            finally:
                conn.close()
    finally:
        listener.close()
        if os.path.exists(path):
            os.unlink(path)
        os.rmdir(folder)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m s2r.commands.emulator``: the same as ``s2r emulate``."""
    parser = cliargs.Parser(prog="python -m s2r.commands.emulator")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (UserError, MissingExtra, FileNotFoundError) as exc:
        print(f"emulate: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
