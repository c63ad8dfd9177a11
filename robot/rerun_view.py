"""The live view in Rerun (https://rerun.io, the optional ``view`` extra): :func:`serve`, the view's process
(:class:`robot.view.ProcessView`), shows every policy step in a Rerun viewer it spawns or records it to an ``.rrd``
file, with :class:`RerunView`.

Only the view's process imports this module (``robot.view._serve``), after ``open_view`` checked that the extra is
installed.

Entities (every value in SI units; a stale reading's values are NaN, which plots as a gap):

===========================  ===================================================================================
``joints/<joint>``           the commanded (sent, rad) and the measured (read, rad) position, one plot per joint
``passive/<joint>``          a passive joint's angle as read (rad): the claw's valve
``timing/period``            the cycle's actual period (s): nominal plus ``timing/jitter``
``timing/jitter``            actual minus nominal period (s)
``timing/cycle_time``        the cycle's work time, read to write (s)
``timing/overrun``           1 where the cycle started past its deadline
``bus/comm_errors``          communication errors counted since the start (a running total)
``imu/tilt``                 a robot with an IMU: the torso's tilt from upright (rad)
``imu/angvel``               its angular velocity in the torso frame (x, y, z; rad/s)
``imu/age``                  reading time minus the receive time of the IMU sample used (s)
``torso``                    the torso's orientation from the IMU (a 3D frame)
``episodes``                 a line of text at the end of each episode: outcome, return, steps, stop reason
===========================  ===================================================================================

Timelines: ``time`` (the controller's clock since the first step, s; simulated time in lock-step) and ``step``
(policy steps since the start, over every episode). There is no camera stream: no robot config has a camera.

The steps that arrived within :data:`SEND_INTERVAL_S` go out together: one step at a time as ``log`` calls at the
shipped 10 Hz, several as columns at faster rates (one call per entity costs about the same for one row as for
hundreds), so the process's share of a core stays small whatever the rate.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import rerun as rr
import rerun.blueprint as rrb

from robot.view import EPISODE_MESSAGE, FRAME, SPAWN, STEP_MESSAGE, ViewLayout
from sim.rotations import tilt
from sim.tasks.spec import FloatArray

COMMANDED_MEASURED = ["commanded", "measured"]
TORSO_AXIS_LENGTH_M = 0.1
"""Length of the torso frame's drawn axes (m)."""
READ_BYTES = 1 << 20
"""Most bytes taken from the pipe at once (bytes)."""
SEND_INTERVAL_S = 0.1
"""Shortest time between two sends to Rerun (s)."""


def serve(steps: Connection, status: Connection, layout: ViewLayout, target: str, name: str) -> None:
    """The view's process: open the recording (``target``: :data:`robot.view.SPAWN` or an ``.rrd`` path), say
    ``("ready", None)`` (or ``("error", why)``) on ``status``, then show every message that arrives on ``steps``
    until the other end closes it; then close the recording."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the deploy stops the run
    try:
        view = RerunView.spawn(layout, name) if target == SPAWN else RerunView.record(layout, name, Path(target))
    except Exception as exc:  # the deploy says why, and stops before the robot moves
        status.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    status.send(("ready", None))
    status.close()
    fd = steps.fileno()
    pending = b""
    sent = -math.inf
    try:
        # What arrives within SEND_INTERVAL_S goes out together: a few calls per entity each interval, whatever the
        # control rate (this process's share of a core), and the view at most that far behind the robot.
        while True:
            wait = sent + SEND_INTERVAL_S - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            sent = time.monotonic()
            chunk = os.read(fd, READ_BYTES)
            if not chunk:
                break
            pending += chunk
            rows: list[np.ndarray] = []
            at = 0
            while len(pending) - at >= FRAME.size:
                kind, size = FRAME.unpack_from(pending, at)
                if len(pending) - at - FRAME.size < size:
                    break
                payload = pending[at + FRAME.size : at + FRAME.size + size]
                at += FRAME.size + size
                if kind == STEP_MESSAGE:
                    rows.append(np.frombuffer(payload, dtype=np.float64))
                elif kind == EPISODE_MESSAGE:
                    view.send(np.array(rows).reshape(-1, layout.width))
                    rows = []
                    view.episode_end(json.loads(payload))
            pending = pending[at:]
            view.send(np.array(rows).reshape(-1, layout.width))
    finally:
        try:
            view.close()
        except Exception as exc:  # one line, not a traceback: ProcessView.close reports the failure in the run's log
            print(f"s2r view: could not finish: {type(exc).__name__}: {exc}", file=sys.stderr)
            raise SystemExit(1) from None


class RerunView:
    """Sends steps, as rows of :meth:`robot.view.ViewLayout.row`, to the Rerun recording ``rec`` (see the module
    docstring); :meth:`close` closes the recording."""

    def __init__(self, rec: rr.RecordingStream, layout: ViewLayout) -> None:
        self.rec = rec
        self.layout = layout
        self._sent = 0
        self._t0: float | None = None
        self._last: tuple[int, float] | None = None
        rec.set_log_time_enabled(False)  # the view's own timelines only, whichever way a batch is sent
        rec.send_blueprint(self._blueprint())
        for name in layout.joint_names:
            rec.log(f"joints/{name}", rr.SeriesLines(names=COMMANDED_MEASURED), static=True)
        if layout.imu:
            rec.log("imu/angvel", rr.SeriesLines(names=["x", "y", "z"]), static=True)
            rec.log("torso", rr.TransformAxes3D(TORSO_AXIS_LENGTH_M), static=True)

    @classmethod
    def spawn(cls, layout: ViewLayout, name: str) -> RerunView:
        """A view in a Rerun viewer of its own (started now): the ``rerun`` that pip installed beside this Python
        (an environment used without activating it has it off the PATH), else the one on the PATH."""
        rec = rr.RecordingStream(name)
        beside = Path(sys.executable).with_name("rerun")
        rr.spawn(executable_path=str(beside) if beside.is_file() else None, recording=rec)
        return cls(rec, layout)

    @classmethod
    def record(cls, layout: ViewLayout, name: str, path: Path) -> RerunView:
        """A view recorded to the file ``path`` (``.rrd``; ``rerun FILE.rrd`` opens it)."""
        rec = rr.RecordingStream(name)
        rec.save(path)
        return cls(rec, layout)

    def _blueprint(self) -> rrb.Blueprint:
        layout = self.layout
        joints = rrb.Grid(*(rrb.TimeSeriesView(origin=f"/joints/{n}", name=n) for n in layout.joint_names),
                          name="joints (rad)")
        loop = rrb.Grid(*(rrb.TimeSeriesView(origin=f"/timing/{n}", name=n)
                          for n in ("period", "jitter", "cycle_time", "overrun")),
                        rrb.TimeSeriesView(origin="/bus", name="comm errors"),
                        rrb.TextLogView(origin="/episodes", name="episodes"), name="loop")
        tabs: list[Any] = [joints]
        if layout.passive_names:
            tabs.append(rrb.TimeSeriesView(origin="/passive", name="passive joints (rad)"))
        if layout.imu:
            tabs.append(rrb.Horizontal(rrb.Spatial3DView(origin="/", contents="/torso", name="torso"),
                                       rrb.Grid(*(rrb.TimeSeriesView(origin=f"/imu/{n}", name=n)
                                                  for n in ("tilt", "angvel", "age"))), name="imu"))
        tabs.append(loop)
        return rrb.Blueprint(rrb.Tabs(*tabs), collapse_panels=True)

    def episode_end(self, end: dict[str, Any]) -> None:
        """A line of text for an episode's end (``robot.view.ProcessView.episode_end``'s message), at its last step."""
        if self._last is None:
            return  # no step yet: nothing to place the line at
        ret = end.get("return")
        self.rec.set_time("step", sequence=self._last[0])
        self.rec.set_time("time", duration=self._last[1])
        self.rec.log("episodes", rr.TextLog(
            f"episode {end.get('episode')}: {'success' if end.get('success') else 'no success'}, return "
            f"{'-' if ret is None else format(ret, '.2f')}, {end.get('steps')} steps, {end.get('stop_reason')}"))

    def close(self) -> None:
        """Close the recording: the file complete, the viewer's connection closed."""
        self.rec.flush()
        self.rec.disconnect()

    def send(self, rows: FloatArray) -> None:
        """Steps (rows (n, width)), in the order they ran."""
        n = rows.shape[0]
        if n == 0:
            return
        c = self.layout.columns(rows)
        if self._t0 is None:
            self._t0 = float(c["time"][0])
        steps = np.arange(self._sent, self._sent + n)
        times = c["time"] - self._t0
        self._sent += n
        self._last = (int(steps[-1]), float(times[-1]))
        if n == 1:
            self.rec.set_time("step", sequence=int(steps[0]))
            self.rec.set_time("time", duration=float(times[0]))
            indexes = None
        else:
            indexes = [rr.TimeColumn("step", sequence=steps), rr.TimeColumn("time", duration=times)]

        def scalars(entity: str, values: FloatArray) -> None:
            """``values`` (n, k): k series of ``entity``."""
            if indexes is None:
                self.rec.log(entity, rr.Scalars(values[0]))
            else:
                self.rec.send_columns(entity, indexes=indexes, columns=rr.Scalars.columns(scalars=values))

        for j, name in enumerate(self.layout.joint_names):
            scalars(f"joints/{name}", np.stack([c["command"][:, j], c["joint_pos"][:, j]], axis=1))
        for p, name in enumerate(self.layout.passive_names):
            scalars(f"passive/{name}", c["passive_pos"][:, p : p + 1])
        jitter = c["period_error"]
        scalars("timing/period", (self.layout.period_s + jitter)[:, None])
        scalars("timing/jitter", jitter[:, None])
        scalars("timing/cycle_time", c["cycle_time"][:, None])
        scalars("timing/overrun", c["overrun"][:, None])
        scalars("bus/comm_errors", c["comm_errors"][:, None])
        if self.layout.imu:
            self._send_imu(c, scalars, steps, times)

    def _send_imu(self, c: dict[str, FloatArray], scalars: Any, steps: np.ndarray, times: np.ndarray) -> None:
        quat = c["base_quat"]
        finite = np.all(np.isfinite(quat), axis=1)
        scalars("imu/tilt", np.array([[tilt(q) if ok else math.nan] for q, ok in zip(quat, finite, strict=True)]))
        scalars("imu/angvel", c["base_angvel"])
        scalars("imu/age", (c["time"] - c["imu_time"])[:, None])
        xyzw = quat[:, [1, 2, 3, 0]]  # Rerun's quaternions are scalar-last
        # Before the IMU's first frame there is no orientation to show: those steps are left out.
        if len(quat) == 1:
            if finite[0]:
                self.rec.log("torso", rr.Transform3D(quaternion=rr.Quaternion(xyzw=xyzw[0])))
        elif finite.any():
            indexes = [rr.TimeColumn("step", sequence=steps[finite]), rr.TimeColumn("time", duration=times[finite])]
            self.rec.send_columns("torso", indexes=indexes, columns=rr.Transform3D.columns(quaternion=xyzw[finite]))
