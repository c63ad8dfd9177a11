"""The client end of lock-step: the controller's clock, its serial port and its IMU line on the emulator's time.

In lock-step (``ChainServer.serve_lockstep``, after PX4 SITL's lockstep) the emulator's simulated time is the only
time. :class:`LockstepClock` is that clock on the client's side: :meth:`~LockstepClock.now` is the simulated time
the emulator last reported, and :meth:`~LockstepClock.sleep` asks it to advance. Bytes still cross the ptys, through
dynamixel-sdk (:class:`LockstepPortHandler`, a :class:`~robot.dynamixel.bus.TunedPortHandler` whose times are the
simulated ones) and the IMU's decoder (:class:`LockstepByteSource`), so protocol, faults, CRCs and retries are
those of real time. What differs is waiting: a port that finds no reply, and nothing sent but unread, asks the
emulator to advance until a reply is written or until the packet's deadline; a reply that never comes (dropped, a
silent servo) times out at that deadline in simulated time, at no cost in wall time. Every count of bytes is
exact (the emulator reports its running totals), so what a read returns never depends on the host's speed: the
same seed gives the same run, on an idle or a loaded machine.

Every advance carries the client's running total of bytes written to the servo pty: the emulator acts on them at
the present time before it moves on, so a goal written before a sleep takes effect before the sleep, as it would
on the wire.
"""

from __future__ import annotations

import os
import select
import socket
from multiprocessing.connection import Connection
from typing import Any

from robot.bus import PortLost
from robot.dynamixel.bus import MS_PER_S, TunedPortHandler
from robot.imu.reader import SerialByteSource
from s2r.core.errors import UserError

ADVANCE_TIMEOUT_S = 60.0
"""Longest wall-clock wait for the emulator to acknowledge an advance (s): it steps physics, so a long sleep on a
slow host takes a while, but an emulator that never answers must not hang the controller."""
ARRIVAL_TIMEOUT_S = 10.0
"""Longest wall-clock wait for bytes the emulator reported written to become readable (s)."""
TIMEOUT_MARGIN_S = 1e-6
"""An advance to a packet deadline goes this far past it (s): dynamixel-sdk times out only once the elapsed time
exceeds the timeout."""


class LockstepError(PortLost):
    """The lock-step emulator is gone or stopped answering: to the controller, a line that went away (``port_lost``)."""


class LockstepClock:
    """Simulated time on the client's side of a lock-step emulator's control connection (see the module docstring).

    ``now`` and ``sleep`` are what the controller, the bus and the IMU reader take as ``clock`` and ``sleep``. One
    thread only: the connection carries one request at a time.
    """

    def __init__(self, conn: Connection | Any, t: float = 0.0) -> None:
        self._conn = conn
        self._t = t
        self.written = 0
        """Bytes written to the servo pty so far (what each advance announces)."""
        self.servo_bytes = 0
        """Bytes the emulator has written to the servo pty so far (as of the last advance)."""
        self.imu_bytes = 0
        """Bytes the emulator has written to the IMU pty so far (as of the last advance)."""
        self.tracker_datagrams = 0
        """Pose datagrams the emulator has sent so far (as of the last advance; ``robot.emulator.tracker``)."""
        self.advances = 0
        """Advance requests sent."""
        self.lost: LockstepError | None = None
        """Why the emulator is unreachable, once it is; every later advance raises it again."""

    def now(self) -> float:
        """Simulated time (s)."""
        return self._t

    def sleep(self, duration_s: float) -> None:
        """Let ``duration_s`` of simulated time pass (replies falling due meanwhile wait in the port's buffer). With
        the emulator gone, time passes here alone: the bus's next use reports the loss, as after a pulled cable."""
        target = self._t + max(0.0, duration_s)
        try:
            self.advance(target, until_reply=False)
        except LockstepError:
            self._t = target

    def sync(self) -> None:
        """Have the emulator act on every byte written so far, without letting time pass."""
        self.advance(self._t, until_reply=False)

    def advance(self, target_s: float, until_reply: bool) -> None:
        """Advance to ``target_s`` (s), or only until the emulator writes a reply when ``until_reply``. Raises
        :class:`LockstepError` (a :class:`~robot.bus.PortLost`) once the emulator is gone or stops answering."""
        if self.lost is not None:
            raise self.lost
        self.advances += 1
        try:
            self._conn.send(("advance", max(target_s, self._t), self.written, until_reply))
            if not self._conn.poll(ADVANCE_TIMEOUT_S):
                raise TimeoutError(f"no answer to an advance within {ADVANCE_TIMEOUT_S:g} s")
            status, t, servo_bytes, imu_bytes, poses = self._conn.recv()
            if status != "at":
                raise ValueError(f"it answered {status!r} to an advance")
        except (EOFError, OSError, ValueError) as exc:
            self.lost = LockstepError(f"the lock-step emulator is lost: {type(exc).__name__}: {exc}")
            raise self.lost from exc
        self._t, self.servo_bytes, self.imu_bytes = float(t), int(servo_bytes), int(imu_bytes)
        self.tracker_datagrams = int(poses)

    def camera_frame(self) -> int:
        """Have the emulator render its camera's frame of the present simulated time onto its stream; the frames its
        stream has queued in all for the newest client (``robot.emulator.camera``)."""
        if self.lost is not None:
            raise self.lost
        try:
            self._conn.send(("frame",))
            if not self._conn.poll(ADVANCE_TIMEOUT_S):
                raise TimeoutError(f"no answer to a frame request within {ADVANCE_TIMEOUT_S:g} s")
            status, frames = self._conn.recv()
            if status != "frames":
                raise ValueError(f"it answered {status!r} to a frame request")
        except (EOFError, OSError, ValueError) as exc:
            self.lost = LockstepError(f"the lock-step emulator is lost: {type(exc).__name__}: {exc}")
            raise self.lost from exc
        return int(frames)

    def stats(self) -> dict[str, float]:
        """The emulator's counters (``Emulator.stats``), asked on the time channel."""
        if self.lost is not None:
            raise self.lost
        self._conn.send(("stats",))
        if not self._conn.poll(ADVANCE_TIMEOUT_S):
            raise LockstepError("the lock-step emulator did not answer a stats request")
        stats: dict[str, float] = self._conn.recv()
        return stats

    def close(self) -> None:
        """Hang up (an emulator of ``s2r emulate --lockstep`` then waits for its next client)."""
        self._conn.close()


def connect_clock(path: str) -> LockstepClock:
    """The clock of the lock-step emulator whose time socket is ``path`` (the last line ``s2r emulate --lockstep``
    prints), synchronized to its present time."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot connect to the lock-step emulator's time socket {path!r}: {exc}") from None
    clock = LockstepClock(Connection(sock.detach()))
    clock.sync()
    return clock


def read_announced(fd: int, want: int, what: str) -> bytes:
    """Up to ``want`` bytes the emulator has written (at least one): the pty may not have handed them over yet."""
    while True:
        ready, _, _ = select.select([fd], [], [], ARRIVAL_TIMEOUT_S)
        if not ready:
            raise OSError(f"{what}: {want} bytes the emulator wrote did not arrive within {ARRIVAL_TIMEOUT_S:g} s")
        try:
            data = os.read(fd, want)
        except BlockingIOError:
            continue
        if not data:
            raise OSError(f"{what}: the line hung up")
        return data


class LockstepPortHandler(TunedPortHandler):
    """dynamixel-sdk's port on a lock-step emulator: times in simulated ms, waits as advances (module docstring)."""

    def __init__(self, port_name: str, latency_timer_s: float, reply_delays_s: float, clock: LockstepClock) -> None:
        super().__init__(port_name, latency_timer_s, reply_delays_s)
        self.clock = clock
        self.received = 0
        """Bytes read from the emulator so far."""

    def setupPort(self, cflag_baud: int) -> bool:
        """Open (the SDK flushes what was waiting): bytes the emulator wrote before are not this port's to read."""
        ok = bool(super().setupPort(cflag_baud))
        self.received = self.clock.servo_bytes
        return ok

    def _advance(self, target_s: float, until_reply: bool) -> None:
        try:
            self.clock.advance(target_s, until_reply)
        except LockstepError as exc:
            if self.lost is None:
                self.lost = exc
            raise

    def getCurrentTime(self) -> float:
        return self.clock.now() * MS_PER_S  # the SDK keeps its times in ms

    def writePort(self, packet: Any) -> int:
        n = super().writePort(packet)
        self.clock.written += n
        return n

    def _take(self, length: int) -> bytes:
        """Up to ``length`` bytes of those the emulator has written and this port not yet read."""
        self._require_alive()
        try:
            data = read_announced(self.ser.fileno(), min(length, self.clock.servo_bytes - self.received),
                                  self.port_name)
        except (OSError, ValueError) as exc:
            raise self._lose("reading", exc) from exc
        self.received += len(data)
        return data

    def readPort(self, length: int) -> bytes:
        self._require_alive()
        if length <= 0:
            return b""
        if self.received >= self.clock.servo_bytes:
            deadline_s = (self.packet_start_time + self.packet_timeout) / MS_PER_S + TIMEOUT_MARGIN_S
            # a read past its deadline still has the emulator act on what was written
            self._advance(max(deadline_s, self.clock.now()), until_reply=True)
            if self.received >= self.clock.servo_bytes:
                return b""  # nothing came by the deadline: the SDK now finds the timeout
        return self._take(length)

    def _discard_unread(self) -> int:
        dropped = 0
        while self.received < self.clock.servo_bytes:
            dropped += len(self._take(self.clock.servo_bytes - self.received))
        return dropped

    def clearPort(self) -> None:
        """Discard what has arrived: every byte written so far is read first, so none arrives after the flush."""
        self._discard_unread()
        super().clearPort()

    def drain(self, quiet_s: float, longest_s: float) -> int:
        """As :meth:`TunedPortHandler.drain`, in simulated time: advance ``quiet_s`` at a time, dropping whatever
        arrives, until an advance brings nothing (or ``longest_s`` has passed)."""
        self._require_alive()
        end = self.clock.now() + longest_s
        dropped = self._discard_unread()
        while self.clock.now() < end:
            self._advance(min(self.clock.now() + quiet_s, end), until_reply=True)
            if self.received >= self.clock.servo_bytes:
                break  # quiet for quiet_s
            dropped += self._discard_unread()
        self.clearPort()
        return dropped


class LockstepByteSource(SerialByteSource):
    """An IMU line on a lock-step emulator (a :class:`~robot.imu.reader.ByteSource`): each read returns exactly the
    bytes the emulator has written since the last, however late the pty hands them over. Bytes written before it
    was opened are discarded (old samples, as :class:`~robot.imu.reader.SerialByteSource` discards them); it must be
    opened between two advances, when the emulator writes nothing."""

    def __init__(self, path: str, baud: int, clock: LockstepClock) -> None:
        super().__init__(path, baud)
        self.clock = clock
        self.received = clock.imu_bytes

    def read(self) -> bytes:
        if self._fd is None:
            raise OSError(f"the IMU port {self.path} is closed")
        chunks: list[bytes] = []
        while self.received < self.clock.imu_bytes:
            data = read_announced(self._fd, self.clock.imu_bytes - self.received, f"the IMU port {self.path}")
            self.received += len(data)
            chunks.append(data)
        return b"".join(chunks)
