"""The emulator as a child process: :class:`Emulator` starts it, hands out its pty path and stops it.

It runs in its own process because dynamixel-sdk busy-polls the port while it waits for a reply: in
one process the waiting client would hold the GIL and delay the emulator's answer by up to the
interpreter's switch interval (5 ms). The child is a fresh interpreter (``python -m
robot.emulator.child``, safe whatever threads the parent runs, and unlike multiprocessing's ``spawn`` it
never re-imports the caller's ``__main__``); it talks to its owner over a socket pair: it receives the
config, reality and faults, answers ready/paths, stats, scene placements, its physics' true state and stop, and
exits when the owner goes away. A robot with an IMU gets a second pty for it (:attr:`Emulator.imu_port`); one started
with ``camera=True`` (its config has a ``camera`` section) streams its camera over HTTP on loopback
(:attr:`Emulator.camera_url`).

An emulator started with ``lockstep=True`` serves in simulated time (``ChainServer.serve_lockstep``): its
:attr:`Emulator.clock` is the :class:`~robot.emulator.lockstep.LockstepClock` that moves that time, on the same
connection.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import numpy as np

from robot.config import RobotConfig
from robot.emulator.faults import NO_FAULTS, FaultSpec
from robot.emulator.reality import NOMINAL_REALITY, RealityConfig
from robot.simtime import SimTime
from s2r.core.errors import UserError
from sim.state import RobotState
from sim.tasks.spec import FloatArray

if TYPE_CHECKING:
    from robot.emulator.lockstep import LockstepClock

START_TIMEOUT_S = 60.0
"""Longest wait for the child to load the physics and open its pty (s)."""
STOP_TIMEOUT_S = 5.0
"""Longest wait for the child to exit after ``stop`` before it is terminated (s)."""
STATS_TIMEOUT_S = 5.0
PLACE_TIMEOUT_S = 5.0
"""Longest wait for the child to confirm a scene placement (s)."""
TRUTH_TIMEOUT_S = 5.0
"""Longest wait for the child to send its physics' state (s)."""


class EmulatorError(UserError):
    """The emulator could not start (e.g. its engine is not installed) or stopped answering."""


def child_main(conn: Connection) -> None:
    """The child's body: receive what to emulate, open the pty, report the path, serve until told to stop."""
    try:
        config, reality, faults, lockstep = conn.recv()
        from robot.emulator.server import build_server

        sim_time = SimTime() if lockstep else None
        server = (build_server(config, reality, faults, clock=sim_time) if sim_time is not None
                  else build_server(config, reality, faults))
        path = server.open()
    except Exception as exc:  # reported to the owner, who raises it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        conn.close()
        return
    conn.send(("ready", path, server.imu_path, server.camera_url))
    try:
        if sim_time is not None:
            server.serve_lockstep(sim_time, conn)
        else:
            server.serve(lambda: False, control=conn)
    finally:
        server.close()
        conn.close()


class Emulator:
    """A servo-chain emulator of ``config``'s robot serving protocol 2.0 on a pty, in a child process.

    Use as a context manager, or :meth:`start` / :meth:`stop`. ``port`` is the device path to open, ``imu_port``
    the IMU's when the config has one. It is also a scene placer (:meth:`place`) for the controller. With
    ``lockstep`` it runs in simulated time, which :attr:`clock` moves.
    """

    def __init__(self, config: RobotConfig, reality: RealityConfig | None = None,
                 faults: FaultSpec | None = None, *, lockstep: bool = False, camera: bool = False) -> None:
        # The camera is rendered and streamed only when asked for: a config's camera section alone costs nothing.
        self.config = config if camera else replace(config, camera=None)
        self.reality = reality if reality is not None else NOMINAL_REALITY
        self.faults = faults if faults is not None else NO_FAULTS
        self.lockstep = lockstep
        self._clock: LockstepClock | None = None
        self._process: Any = None
        self._conn: Connection | None = None
        self._port = ""
        self._imu_port: str | None = None
        self._camera_url: str | None = None

    @property
    def camera_url(self) -> str | None:
        """The camera's MJPEG stream once started (``http://127.0.0.1:PORT/``); ``None`` without one."""
        return self._camera_url

    @property
    def port(self) -> str:
        """The pty slave path (``/dev/pts/N``); empty before :meth:`start`."""
        return self._port

    @property
    def imu_port(self) -> str | None:
        """The IMU's pty slave path once started; ``None`` for a robot without an IMU (or before :meth:`start`)."""
        return self._imu_port

    @property
    def clock(self) -> LockstepClock:
        """The simulated time of a lock-step emulator once started (its ``now`` and ``sleep`` are the controller's)."""
        if self._clock is None:
            raise EmulatorError("only a started lock-step emulator has a clock")
        return self._clock

    @property
    def pid(self) -> int | None:
        """The child's process ID (``None`` before :meth:`start`): what a test kills to pull the cable."""
        return None if self._process is None else int(self._process.pid)

    @property
    def running(self) -> bool:
        """Whether the child process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> str:
        """Start the child, wait until it serves, and return the device path."""
        if self.running:
            return self._port
        parent_sock, child_sock = socket.socketpair()
        fd = child_sock.fileno()
        process = subprocess.Popen([sys.executable, "-m", "robot.emulator.child", str(fd)], pass_fds=(fd,),
                                   stdin=subprocess.DEVNULL)
        child_sock.close()
        parent = Connection(parent_sock.detach())
        self._process, self._conn = process, parent
        parent.send((self.config, self.reality, self.faults, self.lockstep))
        if not parent.poll(START_TIMEOUT_S):
            self.stop()
            raise EmulatorError(f"the emulator did not start within {START_TIMEOUT_S:g} s")
        try:
            status, value, *rest = parent.recv()
        except EOFError:
            self.stop()
            raise EmulatorError("the emulator exited while starting") from None
        if status != "ready":
            self.stop()
            raise EmulatorError(f"the emulator could not start: {value}")
        self._port = value
        self._imu_port = rest[0] if rest else None
        self._camera_url = rest[1] if len(rest) > 1 else None
        if self.lockstep:
            from robot.emulator.lockstep import LockstepClock

            self._clock = LockstepClock(parent)
        return value

    def stats(self) -> dict[str, float]:
        """The emulator's counters (absent keys are 0).

        ``instructions`` packets received; ``crc_errors_received`` of them ignored for a bad CRC;
        ``unknown_id`` addressed to no servo; ``malformed``; ``refused_writes`` (sync/bulk writes a servo
        refused); ``read_transactions`` SYNC_READ/FAST_SYNC_READ/BULK_READ received (= ``cycle``);
        ``read_transactions_faulted`` of them with at least one reply dropped or corrupted; ``replies``,
        ``dropped_replies``, ``corrupted_replies``, ``late_replies``; ``reboots``; ``fault_<kind>`` servo
        faults started; ``partial_packets_dropped``; ``output_overflow_bytes``; ``placements`` (scene resets);
        the IMU's ``imu_*`` counters (``robot.emulator.imu``) for a robot with one; ``physics_steps``,
        ``physics_lag_s`` (simulated time skipped because the host fell behind); ``handle_time_total_s``
        and ``handle_time_max_s`` (time spent acting on instructions).
        """
        stats: dict[str, float] = self._ask(("stats",), STATS_TIMEOUT_S, "answer a stats request")
        return stats

    def place(self, joint_pos: FloatArray, passive_pos: FloatArray, base_pose: FloatArray | None) -> None:
        """Reset the emulated scene: the robot at rest with these joints and passive joints (rad) and, for a floating
        base, this pose (position (m), quaternion (w, x, y, z)); its servos hold the placed joints. Returns once
        the emulator has done it."""
        pose = None if base_pose is None else np.asarray(base_pose, dtype=np.float64)
        status, detail = self._ask(("place", np.asarray(joint_pos, dtype=np.float64),
                                    np.asarray(passive_pos, dtype=np.float64), pose),
                                   PLACE_TIMEOUT_S, "confirm a scene placement")
        if status != "placed":
            raise EmulatorError(f"the emulator refused a scene placement: {detail}")

    def true_state(self) -> RobotState:
        """The emulated world's state now, from its physics: what the robot's sensors measure, without their noise,
        latency and drift (the torso's true position where the robot only estimates it). For measuring a run, never
        for acting on: no real robot can answer it."""
        status, state = self._ask(("truth",), TRUTH_TIMEOUT_S, "send its state")
        if status != "truth":
            raise EmulatorError(f"the emulator answered a state request with {status!r}")
        truth: RobotState = state
        return truth

    def _ask(self, message: tuple[Any, ...], timeout_s: float, what: str) -> Any:
        """Send ``message`` on the control connection and return the answer; an :class:`EmulatorError` when the
        emulator is not running or does not ``what`` within ``timeout_s``."""
        if self._conn is None or not self.running:
            raise EmulatorError("the emulator is not running")
        self._conn.send(message)
        if not self._conn.poll(timeout_s):
            raise EmulatorError(f"the emulator did not {what} within {timeout_s:g} s")
        return self._conn.recv()

    def stop(self) -> None:
        """Stop the child (idempotent)."""
        conn, process = self._conn, self._process
        self._conn, self._process, self._clock = None, None, None
        if conn is not None:
            try:
                conn.send(("stop",))
            except (BrokenPipeError, OSError):
                pass
        if process is not None:
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.terminate()
                process.wait(STOP_TIMEOUT_S)
        if conn is not None:
            conn.close()

    def __enter__(self) -> Emulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
