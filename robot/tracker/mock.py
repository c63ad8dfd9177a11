"""An in-process motion capture for unit tests and the mock driver: the datagrams a bridge would have sent by now.

:class:`MockPoseStream` is a :class:`~robot.tracker.source.PoseSource` around a real
:class:`~robot.tracker.udp.PoseReceiver`: every :meth:`~MockPoseStream.poll` first sends, over loopback UDP with a
real :class:`~robot.tracker.udp.PoseSender`, one datagram for every ``1 / rate_hz`` s of ``clock`` since the last
poll (at most :data:`MAX_BACKLOG` of them), then lets the receiver take them: the same encoding, checks and counters
as with a real bridge. The torso's pose is whatever a test sets (:meth:`~MockPoseStream.place`): the mock has no
physics. :attr:`silent` stops the datagrams (a dead bridge) and :attr:`tracked` sends untracked ones (lost markers).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from robot.config import TrackerConfig
from robot.tracker.source import PoseSample, TrackerCounters
from robot.tracker.udp import PoseReceiver, PoseSender
from sim.rotations import IDENTITY_QUAT, normalize_quat
from sim.state import RobotState
from sim.tasks.spec import FloatArray

MAX_BACKLOG = 64
"""Most datagrams one poll sends for the time since the last (a socket buffer holds many more)."""
DUE_TOLERANCE = 1e-6
"""A datagram due within this fraction of a period counts as due (-)."""


class MockPoseStream:
    """A pose stream on ``clock`` into a real receiver on a free loopback port; see the module docstring."""

    def __init__(self, config: TrackerConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self.receiver = PoseReceiver(0, velocity_window_s=config.velocity_window_s, clock=clock)
        self._sender = PoseSender(self.receiver.port)
        self._t0 = clock()
        self._sent_until = 0
        self.position: FloatArray = np.zeros(3)
        """The torso's position (m); set it with :meth:`place`."""
        self.quat: FloatArray = np.array(IDENTITY_QUAT)
        """The torso's orientation (w, x, y, z)."""
        self.silent = False
        """Whether the bridge has stopped sending."""
        self.tracked = True
        """Whether the system sees the body (``False``: untracked datagrams)."""

    def place(self, position: FloatArray, quat: FloatArray) -> None:
        """Put the torso at this position (m) and orientation (w, x, y, z)."""
        self.position = np.asarray(position, dtype=np.float64).copy()
        self.quat = normalize_quat(quat)

    def poll(self, state: RobotState | None = None) -> PoseSample | None:
        now = self._clock()
        period = self.config.period_s
        due = math.floor((now - self._t0) / period + DUE_TOLERANCE) + 1
        for k in range(max(self._sent_until, due - MAX_BACKLOG), due):
            if not self.silent:
                self._sender.send(self._t0 + k * period, self.position, self.quat, tracked=self.tracked)
        self._sent_until = max(self._sent_until, due)
        return self.receiver.poll(state)

    def start_episode(self, base_pose: FloatArray | None, state: RobotState) -> None:
        """Motion capture measures the pose: nothing to restart."""

    @property
    def counters(self) -> TrackerCounters:
        return self.receiver.counters

    def close(self) -> None:
        self._sender.close()
        self.receiver.close()
