"""``s2r calibrate``: measure each joint's offset and direction in two poses and write them into the hardware config.

The servos' torque is off throughout (``Bus.torque_disabled``). On the real robot (``--driver dynamixel``, the
default) a person puts the robot in pose A, presses Enter, then in pose B (the config's ``calibration_poses``, shown
joint by joint); ``robot.calibrate`` reads and solves. The emulator driver started here puts its emulated robot in
each pose itself (its scene placement, in lock-step), so it needs no person: CI calibrates an emulator whose
reality has ``mounting`` offsets and flipped servos. Asking a person needs one: with no terminal on stdin, or with
``CI`` set, the command stops with an error before it touches the bus, never waiting for an Enter that cannot come.

The config is rewritten only when every joint fits: the joint's two poses agree, and its limits map into one servo
turn. Only the ``scale`` and ``offset_rad`` numbers change (comments and layout are kept); the file is replaced
atomically, and the one it replaces is kept beside it as ``FILE.bak``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from robot.bus import BusError, make_bus
from robot.calibrate import Calibration, PoseSource, calibrated_text, measure, pose_lines, required_poses
from robot.config import RobotConfig, load_config
from robot.dynamixel.bus import DynamixelBus
from robot.emulator.reality import RealityConfig, load_reality
from robot.hardware import OpenOptions, RobotIO, ScenePlacer, open_robot
from s2r import cliargs
from s2r.core.atomicio import write_bytes_atomic, write_text_atomic
from s2r.core.errors import ParameterError, UserError
from s2r.core.resources import config_path
from sim.tasks.spec import FloatArray

BACKUP_SUFFIX = ".bak"
"""Added to the config's file name for the copy of the file that calibration replaced."""
CI_VARIABLE = "CI"
"""Set (to anything but empty, ``0`` or ``false``) by CI services: nobody is there to press Enter."""


def register(sub: Any) -> None:
    """Add ``calibrate`` to the ``s2r`` subcommands."""
    p = sub.add_parser(
        "calibrate",
        help="measure every joint's offset and direction in two poses and write them into the hardware config",
        description="With the torque off, put the robot in the config's calibration pose A, then pose B (a person "
        "on the real robot, prompted on the terminal; the emulator places itself); the servos are read in each and "
        "every joint's scale (direction) and offset_rad are written into the config, its old file kept as FILE.bak. "
        "Nothing is written when a joint's readings do not fit the poses or its limits.",
    )
    p.add_argument("--robot", required=True, metavar="YAML", help="hardware config to calibrate, e.g. "
                   "hardware_configs/dclaw.yaml; it is rewritten unless --out names another file")
    p.add_argument("--driver", choices=("dynamixel", "emulator"), default="dynamixel",
                   help="dynamixel: the real servos, a person sets the poses; emulator: an emulated robot started "
                   "here (lock-step), which the command puts in the poses itself")
    p.add_argument("--port", metavar="PATH", help="serial device (overrides the config's port), or the pty of a "
                   "running `s2r emulate` (a person is asked for the poses)")
    p.add_argument("--reality", metavar="YAML", help="reality file of the emulator started here, e.g. one with "
                   "`mounting` offsets and flipped servos")
    p.add_argument("--out", metavar="FILE.yaml", help="calibrated config to write (default: the --robot file, the "
                   f"file it replaces kept as FILE.yaml{BACKUP_SUFFIX})")
    cliargs.add_json_flag(p, "the written file, the backup and every joint's old and new scale and offset")
    p.set_defaults(func=run_calibrate)


def ci_says_noninteractive(environ: dict[str, str] | os._Environ[str]) -> bool:
    """Whether ``CI`` is set to something that means yes."""
    return environ.get(CI_VARIABLE, "").strip().lower() not in ("", "0", "false", "no")


def person_poses(config: RobotConfig, ask: Callable[[str], str], out: TextIO) -> PoseSource:
    """The pose source of a person: each pose's angles on ``out``, then ``ask`` (``input``) waits for Enter. A closed
    input is a :class:`UserError` (nothing is written)."""

    def put_in_pose(name: str, pose: tuple[float, ...]) -> None:
        print(f"\nPut the robot in calibration pose {name} (torque is off; move each joint by hand):", file=out)
        for line in pose_lines(config, pose):
            print(f"  {line}", file=out)
        out.flush()
        try:
            ask(f"Press Enter when the robot is in pose {name} (Ctrl-C aborts, nothing is written): ")
        except EOFError:
            raise UserError(f"the input closed before pose {name} was confirmed; nothing was written") from None

    return put_in_pose


class HeldPose:
    """An emulated person: the emulator's scene placement puts the robot in each pose (passive joints at 0) and holds
    it there while the servos are read.

    Holding matters: with the torque off the emulated joints keep their pose only through the scene's soft finger
    gain, and under gravity a placed finger sags about 8 ticks within 50 ms, which a person holding the joint at its
    jig does not let it do. So the pose is placed again before every reading (a placement takes no simulated time,
    and the reading comes before the next physics step can move it)."""

    def __init__(self, placer: ScenePlacer, servo_angles: Callable[[], FloatArray], n_passive: int) -> None:
        self._placer = placer
        self._servo_angles = servo_angles
        self._passive = np.zeros(n_passive)
        self._pose: FloatArray | None = None

    def put_in_pose(self, name: str, pose: tuple[float, ...]) -> None:
        """A :data:`~robot.calibrate.PoseSource`: the robot in ``pose`` (rad, task order)."""
        self._pose = np.asarray(pose, dtype=np.float64)
        self._placer.place(self._pose, self._passive, None)

    def servo_angles(self) -> FloatArray:
        """The servos' angles (rad) in the held pose."""
        if self._pose is not None:
            self._placer.place(self._pose, self._passive, None)
        return self._servo_angles()


def output_paths(robot: str, out: str | None) -> tuple[Path, Path]:
    """(the config to read, the file to write). Without ``--out`` a shipped config named by name (``dclaw``) is not
    rewritten inside the installed package: that needs ``--out``."""
    source = config_path(robot)
    if out is not None:
        return source, Path(out)
    if source != Path(robot):
        raise ParameterError("out", f"is needed: {robot!r} names the config shipped with s2r ({source}); write the "
                             "calibrated copy to a file of your own with {out}")
    return source, source


def ask_on_stderr(prompt: str) -> str:
    """``input`` with its prompt on stderr: stdout carries only the result (``--json``)."""
    print(prompt, end="", file=sys.stderr, flush=True)
    return input()


def run_calibrate(args: argparse.Namespace, *, ask: Callable[[str], str] = ask_on_stderr,
                  interactive: bool | None = None, out: TextIO | None = None) -> int:
    """``s2r calibrate``; returns the exit code. ``ask`` is the prompt (:func:`ask_on_stderr`); ``interactive``
    whether a person can answer it (default: stdin is a terminal and ``CI`` is not set); ``out`` where the poses are
    shown (stderr)."""
    shown = out if out is not None else sys.stderr
    config = load_config(args.robot)
    required_poses(config)
    try:
        source, target = output_paths(args.robot, args.out)
    except ParameterError as exc:
        raise cliargs.flag_error(exc, args) from None
    if args.reality and (args.driver != "emulator" or args.port):
        raise UserError("--reality applies to the emulator started here (--driver emulator without --port)")
    self_placing = args.driver == "emulator" and args.port is None
    if not self_placing:
        if interactive is None:
            interactive = sys.stdin.isatty() and not ci_says_noninteractive(os.environ)
        if not interactive:
            raise UserError("calibrating this robot needs a person to put it in two poses and press Enter, but there "
                            f"is none: stdin is not a terminal or {CI_VARIABLE} is set. Run it in a terminal at the "
                            "robot, or use --driver emulator (the emulator puts itself in the poses)")
    text = source.read_text(encoding="utf-8")
    reality = load_reality(args.reality, config) if args.reality else None
    io = _open(config, args, reality, self_placing)
    try:
        bus = io.bus
        if not isinstance(bus, DynamixelBus):  # both drivers make one; the mock has no servo angles
            raise UserError(f"the {args.driver} driver has no servo angles to calibrate from")
        try:
            bus.connect(torque_on=False)
            with bus.torque_disabled():
                if io.placer is not None:
                    held = HeldPose(io.placer, bus.servo_angles, len(config.encoders))
                    calibration = measure(config, held.servo_angles, held.put_in_pose)
                else:
                    calibration = measure(config, bus.servo_angles, person_poses(config, ask, shown))
        except BusError as exc:
            raise UserError(f"cannot calibrate on the robot: {exc}") from exc
    finally:
        io.close()
    new_text, _ = calibrated_text(text, str(target), calibration)
    backup = _write(target, new_text)
    _report(args.json, calibration, target, backup)
    return 0


def _open(config: RobotConfig, args: argparse.Namespace, reality: RealityConfig | None,
          self_placing: bool) -> RobotIO:
    """The robot: an emulator started here in lock-step (it places itself), or the bus on the port."""
    try:
        if self_placing:
            # Lock-step: nothing moves between the poses, and no reply times out however busy the machine is.
            return open_robot(config, "emulator", OpenOptions(reality=reality, lockstep=True))
        return RobotIO(make_bus(config, args.driver, args.port))
    except ParameterError as exc:
        raise cliargs.flag_error(exc, args) from None


def _write(target: Path, text: str) -> Path | None:
    """The calibrated config to ``target`` atomically, the file it replaces first copied to ``target.bak``; returns
    the backup's path (``None`` when ``target`` did not exist)."""
    backup: Path | None = None
    if target.exists():
        backup = target.with_name(target.name + BACKUP_SUFFIX)
        write_bytes_atomic(backup, target.read_bytes())
    write_text_atomic(target, text)
    return backup


def _report(as_json: bool, calibration: Calibration, target: Path, backup: Path | None) -> None:
    result = {"out": str(target), "backup": None if backup is None else str(backup), **calibration.to_json()}
    lines = [calibration.describe(), f"wrote {target}" + (f" (the previous file is {backup})" if backup else "")]
    cliargs.print_result(as_json, result, lines)
