"""Serving a servo chain on a pseudo-terminal, with the bus timing of a real RS-485 line.

The server owns the master side of a pty in raw mode; a client (dynamixel-sdk's PortHandler) opens the
slave path ``/dev/pts/N`` like a serial port. One thread does everything: it waits for bytes (waking when the
next physics step falls due, to keep the physics on the wall clock), decodes packets, lets the chain act on
them, and writes each status packet when it would have finished arriving on a real line: after the
instruction's own bytes, the servo's Return Delay Time and any injected delay, at 10 bits per byte at the
config's baud.

A robot with an ``imu`` section gets its IMU on a second pty (:class:`~robot.emulator.imu.EmulatedImu`), served by
the same thread from the same physics: the loop also wakes when the next IMU frame falls due. A robot whose
``tracker`` is motion capture gets its poses as UDP datagrams to ``127.0.0.1:<tracker.port>``
(:class:`~robot.emulator.tracker.EmulatedTracker`), served the same way. A robot whose config has a ``camera``
section gets the task camera's rendering as an MJPEG stream over HTTP on loopback
(:class:`~robot.emulator.camera.EmulatedCamera`), rendered by the same thread at ``camera.fps``. A render holds that
thread for milliseconds (PyBullet's TinyRenderer about 5 ms at 84x84, MuJoCo about 2 ms): in real time on PyBullet the
servos' replies then miss their timeouts (lock-step is unaffected: a frame is rendered between two requests).

The owner's control connection (see ``process``) takes ``("stats",)``, ``("stop",)`` and ``("place", joint_pos,
passive_pos, base_pose)``: a scene reset (:meth:`ServoChain.place`), answered ``("placed", None)`` or
``("error", message)``. Only the emulator driver's scene placement sends it: on the real robot a person puts the
robot down. ``("truth",)`` is answered ``("truth", state)``: the physics' :class:`~sim.state.RobotState` now, the
ground truth a measurement compares the robot's own sensing with (no real robot can answer it).

**Lock-step** (:meth:`ChainServer.serve_lockstep`, PX4 SITL's lockstep): time is simulated and only the client moves
it. The server's clock is a :class:`SimTime` that the loop sets; nothing happens between two requests. The client
writes instruction packets to the pty as usual, then asks for time with ``("advance", t_target, bytes_written,
until_reply)`` on the control connection: the server first reads exactly ``bytes_written`` (the client's running total
of bytes written to the pty) and acts on those packets at the present simulated time, scheduling each status packet
when it would have finished arriving (the same wire time, return delay and injected delay as in real time); then it
walks simulated time forward event by event (every physics step, every IMU frame, every reply due), writing what falls
due, until ``t_target``, or until the first reply is written when ``until_reply`` is true (a client waiting for one).
It answers ``("at", t, servo_bytes, imu_bytes, tracker_datagrams)``: the simulated time reached, the running totals of
bytes written to the servo and IMU ptys and of pose datagrams sent, so the client knows how many bytes to wait for (a
pty hands bytes over asynchronously, so "nothing readable yet" does not mean "nothing sent"). A client that finds no
reply and nothing unread knows none is coming before ``t_target`` and times out there, in simulated time. A camera
renders only on request in lock-step: ``("frame",)`` renders the present state's frame onto the stream and answers
``("frames", n)``, the frames queued in all for the newest stream client, which that client reads up to.
"""

from __future__ import annotations

import os
import select
import sys
import time
import tty
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from robot.config import RobotConfig
from robot.dynamixel.protocol import Packet, PacketDecoder
from robot.dynamixel.units import wire_time_s
from robot.emulator.chain import ServoChain
from robot.emulator.faults import FaultSpec
from robot.emulator.imu import EmulatedImu
from robot.emulator.physics import RealTimePhysics
from robot.emulator.reality import RealityConfig
from robot.emulator.tracker import EmulatedTracker
from robot.simtime import SimTime
from s2r.core.errors import UserError
from s2r.core.extras import MissingExtra
from sim import resolve_env_id
from sim.engines import UnsupportedParameter
from sim.tasks import make_task
from sim.tasks.base import start_base_pose

if TYPE_CHECKING:
    from robot.emulator.camera import EmulatedCamera

SESSION_QUIET_S = 0.05
"""Between two lock-step clients, the pty must be quiet this long (wall time) before the next one is served: bytes a
killed client wrote may still be in flight."""
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
CONSUME_TIMEOUT_S = 10.0
"""Lock-step: longest wait for bytes the client says it wrote to reach the pty (s of wall time)."""


class LockstepProtocolError(UserError):
    """A lock-step client broke the protocol (e.g. announced bytes it never wrote)."""


def build_chain(config: RobotConfig, reality: RealityConfig, faults: FaultSpec,
                clock: Callable[[], float] = time.monotonic) -> ServoChain:
    """The servo chain of ``config`` on a freshly loaded physics scene of its task."""
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
    """The server of ``config``'s robot: its servo chain, its IMU when the config has one, and its motion capture
    when the config's tracker is ``mocap`` (sent to ``tracker.port``)."""
    if faults.any_imu and config.imu is None:
        raise UserError(f"IMU faults ({faults.describe()}) need an IMU: {config.source} has no imu section")
    chain = build_chain(config, reality, faults, clock)
    imu = None
    if config.imu is not None:
        imu = EmulatedImu(config.imu, chain.physics.state, reality, faults, t_start=chain.t_start,
                          cycle=lambda: chain.cycle)
    tracker = None
    if config.tracker is not None and config.tracker.kind == "mocap":
        tracker = EmulatedTracker(config.tracker, chain.physics.state, reality, t_start=chain.t_start)
    camera = None
    if config.camera is not None:
        # The camera extra (OpenCV) is loaded only for a robot whose emulator serves a camera.
        from robot.emulator.camera import EmulatedCamera

        camera = EmulatedCamera(config.camera, chain.physics.engine.render_camera, reality.image_effects, reality.seed,
                                t_start=chain.t_start)
    return ChainServer(chain, imu=imu, tracker=tracker, camera=camera, clock=clock)


class ChainServer:
    """A :class:`ServoChain` behind a pseudo-terminal, and the robot's IMU behind another when it has one."""

    def __init__(self, chain: ServoChain, *, imu: EmulatedImu | None = None, tracker: EmulatedTracker | None = None,
                 camera: EmulatedCamera | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.chain = chain
        self.imu = imu
        self.tracker = tracker
        self.camera = camera
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
        self.bytes_read = 0
        """Bytes read from the client (lock-step: what its ``bytes_written`` totals count)."""
        self.bytes_written = 0
        """Bytes written to the client."""
        self._queue: deque[tuple[float, bytes]] = deque()
        """Lock-step: reply batches not yet due, (due time, bytes)."""
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
        if self.camera is not None:
            self.camera.open()
        return self.path

    @property
    def camera_url(self) -> str | None:
        """The camera's MJPEG stream; ``None`` for a robot without a camera."""
        return self.camera.url if self.camera is not None else None

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
        if self.tracker is not None:
            self.tracker.close()
        if self.camera is not None:
            self.camera.close()
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
        if self.tracker is not None:
            out.update({k: float(v) for k, v in self.tracker.stats.items()})
        if self.camera is not None:
            out.update({k: float(v) for k, v in self.camera.stats.items()})
            out["camera_frames_dropped"] = float(self.camera.server.dropped)
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
            if self.tracker is not None:
                wait = min(wait, max(0.0, self.tracker.next_due() - now))
            if self.camera is not None:
                wait = min(wait, max(0.0, self.camera.next_due() - now))
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
                    self.bytes_read += len(data)
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
            if self.tracker is not None:
                self.tracker.serve(t)
            if self.camera is not None:
                self.camera.serve(t)

    def serve_lockstep(self, time_: SimTime, control: Any, should_stop: Callable[[], bool] = lambda: False,
                       poll_s: float = 0.1) -> None:
        """Serve in lock-step (see the module docstring) until ``("stop",)``, the client going away or
        ``should_stop()`` (checked every ``poll_s`` of wall time while no request comes). ``time_`` must be the
        clock this server, its chain and its physics were built with."""
        if self._clock is not time_:
            raise ValueError("a lock-step server must run on the SimTime it serves")
        # Byte totals count from this client's start: an earlier client's bytes are not its business.
        read0, written0 = self.bytes_read, self.bytes_written
        imu0 = self.imu.bytes_written if self.imu is not None else 0
        poses0 = self.tracker.sent if self.tracker is not None else 0
        try:
            self._serve_client(time_, control, should_stop, poll_s, read0, written0, imu0, poses0)
        except (LockstepProtocolError, ValueError, TypeError) as exc:
            # A client that breaks the protocol ends its own session, not the emulator another client may use next.
            self.chain.stats["lockstep_protocol_errors"] += 1
            print(f"s2r emulate: lock-step session ended: {exc}", file=sys.stderr, flush=True)
        finally:
            # Nothing of this session reaches the next: replies still scheduled, the line's occupancy, and the bytes a
            # client killed between a write and its announcement left behind (some may still be on their way).
            self._queue.clear()
            self._line_free = time_.t
            self._discard_input(quiet_s=SESSION_QUIET_S)

    def _serve_client(self, time_: SimTime, control: Any, should_stop: Callable[[], bool], poll_s: float,
                      read0: int, written0: int, imu0: int, poses0: int) -> None:
        while not should_stop():
            if not control.poll(poll_s):
                continue
            try:
                message = control.recv()
            except (EOFError, OSError):
                return  # the client is gone
            if isinstance(message, tuple) and len(message) == 4 and message[0] == "advance":
                _, target, written, until_reply = message
                self._consume(read0 + int(written), time_.t)
                self._advance(time_, float(target), bool(until_reply))
                imu_bytes = self.imu.bytes_written - imu0 if self.imu is not None else 0
                poses = self.tracker.sent - poses0 if self.tracker is not None else 0
                try:
                    control.send(("at", time_.t, self.bytes_written - written0, imu_bytes, poses))
                except OSError:
                    return  # the client is gone (killed while it waited)
            else:
                try:
                    if self._act(control, message):
                        return
                except OSError:
                    return

    def _discard_input(self, quiet_s: float = 0.0) -> None:
        """Drop the pty's unread input until it has been quiet for ``quiet_s`` (wall time)."""
        while select.select([self._master], [], [], quiet_s)[0]:
            try:
                data = os.read(self._master, READ_CHUNK_BYTES)
            except (BlockingIOError, InterruptedError):
                break
            if not data:
                break
            self.bytes_read += len(data)
        self._decoder.clear()

    def _consume(self, written: int, now: float) -> None:
        """Read the client's bytes up to its running total ``written`` and act on the packets, all at ``now``."""
        while self.bytes_read < written:
            ready, _, _ = select.select([self._master], [], [], CONSUME_TIMEOUT_S)
            if not ready:
                raise LockstepProtocolError(f"a lock-step client announced {written} bytes written; "
                                            f"{self.bytes_read} arrived within {CONSUME_TIMEOUT_S:g} s")
            try:
                data = os.read(self._master, written - self.bytes_read)
            except (BlockingIOError, InterruptedError):
                continue
            self.bytes_read += len(data)
            self._last_rx = now
            for packet in self._decoder.feed(data):
                self._queue.extend(self._schedule(packet, now, now))

    def _advance(self, time_: SimTime, target: float, until_reply: bool) -> None:
        """Walk simulated time to ``target`` (or to the first reply written, with ``until_reply``) event by event:
        each physics step (what the real-time loop wakes for: time-triggered faults and the servos' Bus Watchdog are
        checked at its rate; the present registers are sampled from the latest step when read), each IMU frame, each
        reply batch."""
        physics, queue = self.chain.physics, self._queue
        while True:
            t = time_.t
            nxt = min(target, physics.next_step_due())
            if self.imu is not None:
                nxt = min(nxt, self.imu.next_due())
            if self.tracker is not None:
                nxt = min(nxt, self.tracker.next_due())
            if queue:
                nxt = min(nxt, queue[0][0])
            time_.t = t = max(t, nxt)
            self.chain.idle(t, sample=False)
            if self.imu is not None:
                self.imu.serve(t)
            if self.tracker is not None:
                self.tracker.serve(t)
            if self._decoder.pending and t - self._last_rx > PARTIAL_PACKET_TIMEOUT_S:
                self._decoder.clear()
                self.chain.stats["partial_packets_dropped"] += 1
            wrote = False
            while queue and queue[0][0] <= t:
                self._write(queue.popleft()[1])
                wrote = True
            if t >= target or (until_reply and wrote):
                return

    def _control(self, control: Any) -> bool:
        try:
            message = control.recv()
        except (EOFError, OSError):
            return True  # the owner is gone
        return self._act(control, message)

    def _act(self, control: Any, message: Any) -> bool:
        """Act on one control message; whether it was ``("stop",)``."""
        if message == ("stats",):
            control.send(self.stats())
            return False
        if message == ("truth",):
            control.send(("truth", self.chain.physics.state()))
            return False
        if message == ("frame",):
            control.send(("frames", self.camera.frame() if self.camera is not None else 0))
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
        for due, data in self._schedule(packet, arrived, self._clock()):
            self._wait_until(due)
            self._write(data)

    def _schedule(self, packet: Packet, arrived: float, now: float) -> list[tuple[float, bytes]]:
        """Act on ``packet`` (at ``now``; it arrived at ``arrived``) and return its status packets in write batches:
        (when the batch has finished arriving, its bytes).

        The line carries the instruction, then each reply after its servo's delay; packets that follow each other
        closely (less than ``BATCH_GAP_S`` apart, e.g. the replies of a sync read) go out together when the last of
        them is due: every sleep is a chance for a loaded host to wake the emulator late, and the client waits for
        all of them anyway. A packet an injected fault delays starts a batch of its own.
        """
        start = time.perf_counter()
        replies = self.chain.handle(packet, now)
        took = time.perf_counter() - start
        self.handle_time_total_s += took
        self.handle_time_max_s = max(self.handle_time_max_s, took)
        t = max(arrived, self._line_free) + self._wire(len(packet.raw))
        due: list[tuple[float, bytes]] = []
        for r in replies:
            t += r.delay_s + self._wire(len(r.packet))
            if not r.dropped:
                due.append((t, r.packet))
        self._line_free = t
        batches: list[tuple[float, bytes]] = []
        k = 0
        while k < len(due):
            end = k + 1
            while end < len(due) and due[end][0] - due[end - 1][0] < BATCH_GAP_S:
                end += 1
            batches.append((due[end - 1][0], b"".join(p for _, p in due[k:end])))
            k = end
        return batches

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
            self.bytes_written += n
            view = view[n:]
