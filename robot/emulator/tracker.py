"""The emulated robot's motion capture: ``robot.tracker.protocol`` pose datagrams over UDP from its physics.

It runs in the emulator's one serving thread next to the servo chain and the IMU, and shares their physics: every
``1 / tracker.rate_hz`` s the serving loop takes the simulated torso's pose (at most one physics step old), adds the
reality's noise (``tracker_position_noise_std_m`` on each axis, a random rotation of
``tracker_orientation_noise_std_rad`` per component) and sends it ``tracker_latency_s`` later to
``127.0.0.1:<tracker.port>``, stamped with the time it was taken. A dropout (``tracker_dropout_prob`` per pose) is
the system losing the body for ``tracker_dropout_duration_s`` (at least that one pose): it sends untracked datagrams
meanwhile, as a bridge reports occluded markers. A loop that wakes late takes one pose for the missed due times
(``tracker_poses_merged``).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable

import numpy as np

from robot.config import TrackerConfig
from robot.emulator.reality import RealityConfig
from robot.emulator.schedule import FrameSchedule
from robot.tracker.udp import PoseSender
from sim.rotations import quat_from_rotvec, quat_mul
from sim.state import RobotState
from sim.tasks.spec import FloatArray


class EmulatedTracker:
    """Pose datagrams of the simulated torso; :meth:`serve` is called by the serving loop whenever it wakes."""

    def __init__(self, config: TrackerConfig, state: Callable[[], RobotState], reality: RealityConfig, *,
                 t_start: float, port: int | None = None) -> None:
        self.config = config
        self._state = state
        self._reality = reality
        self._rng = np.random.default_rng([reality.seed, 2])  # apart from the servos' and the IMU's noise streams
        self._schedule = FrameSchedule(config.period_s, t_start)
        self._lost_until = -np.inf
        self._queue: deque[tuple[float, float, FloatArray, FloatArray, bool]] = deque()
        """Poses taken, waiting out the latency: (send time, capture time, position, quaternion, tracked)."""
        self.sender = PoseSender(config.port if port is None else port)
        self.stats: Counter[str] = Counter()
        """``tracker_poses`` sent (untracked included), ``tracker_untracked``, ``tracker_poses_merged``,
        ``tracker_send_errors``."""

    @property
    def sent(self) -> int:
        """Datagrams handed to the OS (a lock-step client waits for this many)."""
        return self.sender.sent

    def next_due(self) -> float:
        """When the next pose is taken or a taken one sent, whichever is first (s, the serving loop's clock)."""
        due = self._schedule.next_due
        return min(due, self._queue[0][0]) if self._queue else due

    def serve(self, now: float) -> None:
        """Take the pose that fell due, if one did, and send those whose latency has passed."""
        missed = self._schedule.due(now)
        if missed is not None:
            self.stats["tracker_poses_merged"] += missed
            self._take(now)
        while self._queue and self._queue[0][0] <= now:
            _, taken, position, quat, tracked = self._queue.popleft()
            if self.sender.send(taken, position, quat, tracked=tracked):
                self.stats["tracker_poses"] += 1
                self.stats["tracker_untracked"] += not tracked
            else:
                self.stats["tracker_send_errors"] += 1

    def _take(self, now: float) -> None:
        r = self._reality
        if r.tracker_dropout_prob and self._rng.random() < r.tracker_dropout_prob:
            self._lost_until = max(self._lost_until, now + r.tracker_dropout_duration_s)
            tracked = False
        else:
            tracked = now > self._lost_until
        st = self._state()
        position = np.asarray(st.base_pos, dtype=np.float64).copy()
        quat = np.asarray(st.base_quat, dtype=np.float64)
        if r.tracker_position_noise_std_m:
            position += self._rng.normal(0.0, r.tracker_position_noise_std_m, 3)
        if r.tracker_orientation_noise_std_rad:
            quat = quat_mul(quat, quat_from_rotvec(self._rng.normal(0.0, r.tracker_orientation_noise_std_rad, 3)))
        self._queue.append((now + r.tracker_latency_s, now, position, quat, tracked))

    def close(self) -> None:
        self.sender.close()
