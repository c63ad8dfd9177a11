"""Pose datagrams over UDP on loopback: the sender a motion-capture bridge (and the emulator) uses, and the receiver
the controller polls.

:class:`PoseReceiver` binds ``127.0.0.1:<tracker.port>`` (loopback only: nothing off the robot's computer can feed
it), non-blocking. The controller calls :meth:`PoseReceiver.poll` once per cycle: it drains every datagram that has
arrived, decodes each (``robot.tracker.protocol``), drops and counts the bad ones (by kind), the untracked ones and
any older than or repeating the newest taken (a sequence number not ahead of it), counts the gaps, and keeps the
newest valid pose as a :class:`~robot.tracker.source.PoseSample` with the host time of the poll. A sender that stops
(a dead bridge, lost markers, an emulator gone) shows as a pose that stops getting younger: the controller's
``tracker.max_age_s`` watchdog stops the robot safely.

A bridge, in a few lines::

    from robot.tracker.udp import PoseSender
    sender = PoseSender(port=9870)                   # the hardware config's tracker.port
    for t, pos, quat in mocap_stream():              # s, m, (w, x, y, z) torso -> world
        sender.send(t, pos, quat)                    # tracked=False when the system lost the body

In lock-step (``robot.emulator.lockstep``) the receiver takes ``expected``, the running total of datagrams the
emulator reports sent, and waits (in wall time, bounded) until that many have arrived: what a poll returns never
depends on how fast the host's network stack hands them over.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable

from robot.tracker.protocol import (
    DATAGRAM_BYTES,
    REJECT_KINDS,
    US_PER_S,
    DatagramError,
    decode_datagram,
    encode_datagram,
    sequence_delta,
)
from robot.tracker.source import PoseSample, TrackerCounters, VelocityWindow
from s2r.core.errors import UserError
from sim.rotations import yaw_of
from sim.state import RobotState
from sim.tasks.spec import FloatArray

LOOPBACK = "127.0.0.1"
MAX_DATAGRAMS_PER_POLL = 4096
"""Most datagrams one poll takes: a bound on its work should a sender flood the port."""
RECEIVE_BUFFER_BYTES = 1 << 18
"""The socket's receive buffer (bytes): about 3000 datagrams, seconds of any mocap rate, so none is lost while the
controller sleeps between polls."""
ARRIVAL_TIMEOUT_S = 10.0
"""Lock-step: longest wall-clock wait for datagrams the emulator reported sent (s)."""
ARRIVAL_POLL_S = 0.01
"""Lock-step: how long one wait for a late datagram lasts before the count is looked at again (s)."""


class PoseSender:
    """Sends pose datagrams to ``host:port`` (loopback by default), numbering them."""

    def __init__(self, port: int, host: str = LOOPBACK) -> None:
        self.address = (host, port)
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sequence = 0
        self.sent = 0
        """Datagrams handed to the OS."""
        self.send_errors = 0
        """Datagrams the OS refused (a full buffer, nobody listening on some systems): lost, as on any network."""

    def send(self, capture_time_s: float, position: FloatArray, quat: FloatArray, *, tracked: bool = True) -> bool:
        """Send one pose taken at ``capture_time_s`` (s, the sender's monotonic clock); whether the OS took it."""
        datagram = encode_datagram(self._sequence, round(capture_time_s * US_PER_S), position, quat, tracked=tracked)
        self._sequence += 1
        try:
            self._socket.sendto(datagram, self.address)
        except OSError:
            self.send_errors += 1
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        self._socket.close()


class PoseReceiver:
    """Poses arriving on ``127.0.0.1:port``; see the module docstring. ``port`` 0 takes any free port
    (:attr:`port` says which). ``velocity_window_s``: see :class:`~robot.tracker.source.VelocityWindow`."""

    def __init__(self, port: int, *, velocity_window_s: float, clock: Callable[[], float] = time.monotonic,
                 expected: Callable[[], int] | None = None) -> None:
        self._clock = clock
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
            self._socket.bind((LOOPBACK, port))
        except OSError as exc:
            self._socket.close()
            raise UserError(f"cannot receive poses on UDP port {port} of {LOOPBACK} (tracker.port): {exc}; is another "
                            "controller running, or is the port taken?") from None
        self._socket.setblocking(False)
        self.port: int = self._socket.getsockname()[1]
        """The UDP port bound (the configured one, or the one the OS chose for 0)."""
        self._expected = expected
        self._expected0 = expected() if expected is not None else 0
        self._velocity = VelocityWindow(velocity_window_s)
        self._latest: PoseSample | None = None
        self._last_sequence: int | None = None
        self.datagrams = 0
        """Datagrams received, good or bad."""
        self._poses = 0
        self._rejected = dict.fromkeys(REJECT_KINDS, 0)
        self._gaps = 0
        self._missed = 0
        self._out_of_order = 0
        self._closed = False

    def follow(self, clock: Callable[[], float], expected: Callable[[], int]) -> None:
        """Lock-step: run on ``clock`` and take, at every poll, every datagram ``expected`` counts (the running total
        the emulator reports sent, every one of them to this socket: it was bound before the emulator sent any)."""
        self._clock = clock
        self._expected = expected
        self._expected0 = 0

    @property
    def latest(self) -> PoseSample | None:
        """The newest valid pose, without polling."""
        return self._latest

    def poll(self, state: RobotState | None = None) -> PoseSample | None:
        """Take every datagram that has arrived; the newest valid pose (``state`` is not needed)."""
        if self._closed:
            raise OSError("the pose receiver is closed")
        inbox = self._drain()
        if self._expected is not None:
            # Lock-step: every datagram the emulator reported sent is taken by this poll, however late the host's
            # network stack hands it over.
            want = self._expected() - self._expected0
            deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
            while self.datagrams + len(inbox) < want:
                if time.monotonic() > deadline:
                    raise OSError(f"{want - self.datagrams - len(inbox)} pose datagrams the emulator sent did not "
                                  f"arrive within {ARRIVAL_TIMEOUT_S:g} s")
                select.select([self._socket], [], [], ARRIVAL_POLL_S)
                inbox += self._drain()
        now = self._clock()
        for data in inbox:
            self.datagrams += 1
            self._take(data, now)
        return self._latest

    def _drain(self) -> list[bytes]:
        """Every datagram waiting in the socket (at most :data:`MAX_DATAGRAMS_PER_POLL`)."""
        out: list[bytes] = []
        while len(out) < MAX_DATAGRAMS_PER_POLL:
            try:
                out.append(self._socket.recv(DATAGRAM_BYTES + 1))  # one byte more shows a datagram that is too long
            except (BlockingIOError, InterruptedError):
                break
        return out

    def _take(self, data: bytes, now: float) -> None:
        try:
            d = decode_datagram(data)
        except DatagramError as exc:
            self._rejected[exc.kind] += 1
            if exc.sequence is not None:
                self._sequenced(exc.sequence)  # it arrived, whatever it says: no gap
            return
        if not self._sequenced(d.sequence):
            return
        self._poses += 1
        t = d.timestamp_us / US_PER_S
        linvel = self._velocity.add(t, d.position)
        self._latest = PoseSample(d.position, yaw_of(d.quat), linvel, d.sequence, t, now)

    def _sequenced(self, sequence: int) -> bool:
        """Count a datagram's sequence number; whether it is ahead of the newest one taken (else it is dropped)."""
        if self._last_sequence is not None:
            ahead = sequence_delta(sequence, self._last_sequence)
            if ahead <= 0:
                self._out_of_order += 1
                return False
            if ahead > 1:
                self._gaps += 1
                self._missed += ahead - 1
        self._last_sequence = sequence
        return True

    @property
    def counters(self) -> TrackerCounters:
        return TrackerCounters(received=self._poses, rejected=dict(self._rejected), gaps=self._gaps,
                               missed=self._missed, out_of_order=self._out_of_order,
                               last_receive_time=None if self._latest is None else self._latest.receive_time)

    def start_episode(self, base_pose: FloatArray | None, state: RobotState) -> None:
        """Motion capture measures the pose: nothing to restart."""

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._socket.close()

    def __enter__(self) -> PoseReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

