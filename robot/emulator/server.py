"""Serving a servo chain on a pseudo-terminal, with the bus timing of a real RS-485 line.

The server owns the master side of a pty in raw mode; a client (dynamixel-sdk's PortHandler) opens the
slave path ``/dev/pts/N`` like a serial port. One thread does everything: it waits for bytes (waking when the
next physics step falls due, to keep the physics on the wall clock), decodes packets, lets the chain act on
them, and writes each status packet when it would have finished arriving on a real line: after the
instruction's own bytes, the servo's Return Delay Time and any injected delay, at 10 bits per byte at the
config's baud.

A robot with an ``imu`` section gets its IMU on a second pty (:class:`~robot.emulator.imu.EmulatedImu`), served by
the same thread from the same physics: the loop also wakes when the next IMU frame falls due.

The owner's control connection (see ``process``) takes ``("stats",)``, ``("stop",)`` and ``("place", joint_pos,
passive_pos, base_pose)``: a scene reset (:meth:`ServoChain.place`), answered ``("placed", None)`` or
``("error", message)``. Only the emulator driver's scene placement sends it: on the real robot a person puts the
robot down.
"""

from __future__ import annotations

import os
import select
import time
import tty
from collections.abc import Callable
from typing import Any

import numpy as np

from robot.config import RobotConfig
from robot.dynamixel.protocol import Packet, PacketDecoder
from robot.dynamixel.units import wire_time_s
from robot.emulator.chain import ServoChain
from robot.emulator.faults import FaultSpec
from robot.emulator.imu import EmulatedImu
from robot.emulator.physics import RealTimePhysics
from robot.emulator.reality import RealityConfig
from s2r.errors import UserError
from s2r.extras import MissingExtra
from sim.engines import UnsupportedParameter
from sim.tasks.base import start_base_pose

IDLE_WAKE_S = 0.004
"""Longest wait for input before the physics is stepped to the wall clock anyway (s)."""
PARTIAL_PACKET_TIMEOUT_S = 0.05
"""A partial packet older than this is dropped, so a garbled length cannot swallow later packets (s)."""
WRITE_EARLY_S = 5e-6
"""A reply is written once it is due within this (s): the client's wake-up takes longer."""
SPIN_S = 0.0005
"""The last part of a wait for a reply's due time is spun, not slept (s)."""
BATCH_GAP_S = 0.0005
"""Packets due closer together than this are written in one go (s)."""
READ_CHUNK_BYTES = 65536


def build_chain(config: RobotConfig, reality: RealityConfig, faults: FaultSpec,
                clock: Callable[[], float] = time.monotonic) -> ServoChain:
    """The servo chain of ``config`` on a freshly loaded physics scene of its task."""
    from sim import resolve_env_id
    from sim.tasks import make_task

    task = make_task(resolve_env_id(config.task))
    spec = config.task_spec()
    joints = np.array(reality.initial_joint_pos_rad if reality.initial_joint_pos_rad is not None else spec.reset)
    passive = np.array(reality.initial_passive_pos_rad if reality.initial_passive_pos_rad is not None
                       else np.zeros(len(spec.passive_joints)))
    base_pose = None
    if spec.base_joint is not None and reality.initial_joint_pos_rad is None:
        # A legged robot powers on resting on the floor as an episode's start puts it, not dropped from the
        # scene file's height.
        start = task.sample_start(np.random.default_rng(reality.seed))
        joints = np.clip(np.asarray(start.joint_pos, dtype=np.float64), config.low, config.high)
        base_pose = start_base_pose(start)
    try:
        physics = RealTimePhysics(task, reality.engine, reality.physics_timestep_s, reality.params,
                                  reality.action_latency_s, joints, passive, clock, base_pose=base_pose)
    except MissingExtra:
        raise
    except ImportError as exc:
        raise UserError(f"the {reality.engine} engine cannot be loaded: {exc}") from exc
    except UnsupportedParameter as exc:
        raise UserError(f"the {reality.engine} engine cannot apply a reality parameter: {exc}") from exc
    return ServoChain(config, physics, reality, faults, clock)


def build_server(config: RobotConfig, reality: RealityConfig, faults: FaultSpec,
                 clock: Callable[[], float] = time.monotonic) -> ChainServer:
    """The server of ``config``'s robot: its servo chain, and its IMU when the config has one."""
    if faults.any_imu and config.imu is None:
        raise UserError(f"IMU faults ({faults.describe()}) need an IMU: {config.source} has no imu section")
    chain = build_chain(config, reality, faults, clock)
    imu = None
    if config.imu is not None:
        imu = EmulatedImu(config.imu, chain.physics.state, reality, faults, t_start=chain.t_start,
                          cycle=lambda: chain.cycle)
    return ChainServer(chain, imu=imu, clock=clock)


class ChainServer:
    """A :class:`ServoChain` behind a pseudo-terminal, and the robot's IMU behind another when it has one."""

    def __init__(self, chain: ServoChain, *, imu: EmulatedImu | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.chain = chain
        self.imu = imu
        self.baud = chain.config.baud
        self.wire_time = chain.reality.wire_time
        self.line_poll_s = chain.reality.line_poll_s
        self._clock = clock
        self._sleep = sleep
        self._decoder = PacketDecoder()
        self._master = -1
        self._slave = -1
        self._line_free = 0.0
        self._last_rx = 0.0
        self.path = ""
        self.handle_time_total_s = 0.0
        """Time spent acting on instructions, replies not included (s)."""
        self.handle_time_max_s = 0.0
        """Longest time spent on one instruction (s)."""

    def open(self) -> str:
        """Create the pty; returns the slave path for the client."""
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        # The slave stays open here so the master never sees a hang-up between two clients.
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        if self.imu is not None:
            self.imu.open()
        return self.path

    @property
    def imu_path(self) -> str | None:
        """The IMU's pty slave path once :meth:`open` ran; ``None`` for a robot without an IMU."""
        return self.imu.path if self.imu is not None else None

    def close(self) -> None:
        """Close the ptys and free the physics."""
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1
        if self.imu is not None:
            self.imu.close()
        self.chain.physics.close()

    def stats(self) -> dict[str, float]:
        """Counters of the chain plus the physics clock."""
        out: dict[str, float] = {k: float(v) for k, v in self.chain.stats.items()}
        out["physics_steps"] = float(self.chain.physics.steps)
        out["physics_lag_s"] = self.chain.physics.lag_s
        out["cycle"] = float(self.chain.cycle)
        out["handle_time_total_s"] = self.handle_time_total_s
        out["handle_time_max_s"] = self.handle_time_max_s
        if self.imu is not None:
            out.update({k: float(v) for k, v in self.imu.stats.items()})
        return out

    def serve(self, should_stop: Callable[[], bool], control: Any = None) -> None:
        """Answer the line (and stream the IMU) until ``should_stop()``; ``control`` is an optional multiprocessing
        connection taking ``("stats",)`` (answered with :meth:`stats`), ``("place", ...)`` and ``("stop",)``."""
        fds = [self._master] + ([control.fileno()] if control is not None else [])
        stop = False
        now = self._clock()
        while not stop and not should_stop():
            wait = min(IDLE_WAKE_S, max(0.0, self.chain.physics.next_step_due() - now))
            if self.imu is not None:
                wait = min(wait, max(0.0, self.imu.next_due() - now))
            if now - self._last_rx < self.line_poll_s:
                wait = 0.0
            ready, _, _ = select.select(fds, [], [], wait)
            now = self._clock()
            if self._master in ready:
                try:
                    data = os.read(self._master, READ_CHUNK_BYTES)
                except (BlockingIOError, InterruptedError):
                    data = b""
                if data:
                    self._last_rx = now
                    for packet in self._decoder.feed(data):
                        self._serve_packet(packet, now)
            elif self._decoder.pending and now - self._last_rx > PARTIAL_PACKET_TIMEOUT_S:
                self._decoder.clear()
                self.chain.stats["partial_packets_dropped"] += 1
            if control is not None and control.fileno() in ready:
                stop = self._control(control)
            t = self._clock()
            self.chain.idle(t)
            if self.imu is not None:
                self.imu.serve(t)

    def _control(self, control: Any) -> bool:
        try:
            message = control.recv()
        except (EOFError, OSError):
            return True  # the owner is gone
        if message == ("stats",):
            control.send(self.stats())
            return False
        if isinstance(message, tuple) and message and message[0] == "place":
            try:
                _, joint_pos, passive_pos, base_pose = message
                self.chain.place(self._clock(), joint_pos, passive_pos, base_pose)
            except (ValueError, TypeError) as exc:  # a bad request must not take the emulator down
                control.send(("error", f"{type(exc).__name__}: {exc}"))
            else:
                control.send(("placed", None))
            return False
        return message == ("stop",)

    def _wire(self, n_bytes: int) -> float:
        return wire_time_s(n_bytes, self.baud) if self.wire_time else 0.0

    def _serve_packet(self, packet: Packet, arrived: float) -> None:
        start = self._clock()
        replies = self.chain.handle(packet, start)
        took = self._clock() - start
        self.handle_time_total_s += took
        self.handle_time_max_s = max(self.handle_time_max_s, took)
        t = max(arrived, self._line_free) + self._wire(len(packet.raw))
        due: list[tuple[float, bytes]] = []
        for r in replies:
            t += r.delay_s + self._wire(len(r.packet))
            if not r.dropped:
                due.append((t, r.packet))
        self._line_free = t
        self._send(due)

    def _send(self, due: list[tuple[float, bytes]]) -> None:
        """Write the packets when they would have finished arriving.

        Packets that follow each other closely (less than ``BATCH_GAP_S`` apart, e.g. the replies of a sync
        read) go out together when the last of them is due: every sleep is a chance for a loaded host to
        wake the emulator late, and the client waits for all of them anyway. A packet an injected fault
        delays starts a batch of its own.
        """
        k = 0
        while k < len(due):
            end = k + 1
            while end < len(due) and due[end][0] - due[end - 1][0] < BATCH_GAP_S:
                end += 1
            self._wait_until(due[end - 1][0])
            self._write(b"".join(p for _, p in due[k:end]))
            k = end

    def _wait_until(self, t: float) -> None:
        """Sleep until ``SPIN_S`` before ``t``, then spin: a reply due within a millisecond would otherwise be
        as late as the sleep's overshoot (50-100 us on an idle host, more on a busy one)."""
        wait = t - self._clock()
        if wait > SPIN_S:
            self._sleep(wait - SPIN_S)
        while self._clock() < t - WRITE_EARLY_S:
            pass

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._master, view)
            except BlockingIOError:
                # Nobody reads the slave and its buffer is full: the bytes are lost, as on an open line.
                self.chain.stats["output_overflow_bytes"] += len(view)
                return
            view = view[n:]
