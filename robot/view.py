"""What the controller shows as it runs: one :class:`StepRecord` per policy step to a :class:`StepView`.

The controller calls its view once per policy step, after that step's write (off the read-to-write path), and once
at the end of each episode. The default, :data:`NO_VIEW`, does nothing. :func:`open_view` opens the live view of
``s2r deploy --view`` and ``s2r finetune --view``: Rerun (the optional ``view`` extra, ``robot.rerun_view``),
streaming to a viewer it spawns or recording to an ``.rrd`` file.

A view must be cheap (it runs inside the control period) and must never stop the robot: the controller detaches a
view that raises and runs on without it. The Rerun view therefore runs in a process of its own
(:class:`ProcessView`): the loop's share is one non-blocking write of a few hundred bytes to a pipe per step
(``benchmarks/view_cost.py``); encoding and sending, tens of microseconds per entity in Rerun's SDK, happen there.
When that process falls behind and the pipe is full, steps are dropped from the view (counted, and reported when it
closes), never waited for.
"""

from __future__ import annotations

import fcntl
import json
import logging
import multiprocessing
import os
import select
import struct
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from robot.bus import Reading
from robot.config import RobotConfig
from s2r.core.atomicio import atomic_path
from s2r.core.errors import ParameterError, UserError
from s2r.core.extras import require
from sim.tasks.spec import FloatArray

RRD_SUFFIX = ".rrd"
"""A Rerun recording file's suffix."""
VIEW_EXTRA = "view"
"""The optional extra that installs Rerun."""


@dataclass(frozen=True)
class StepRecord:
    """One policy step as the controller ran it; the same numbers as the step's row of the trajectory log."""

    episode: int
    """The episode's index among those this controller ran (0 first)."""
    step: int
    """The step's index in its episode (row k of the log's step arrays)."""
    reading: Reading
    """The reading the step acted on (row k of ``joint_pos``, ``passive_pos``, ``base_quat``, ...; NaN when stale)."""
    action: FloatArray
    """The policy's normalized action (-); NaN when the cycle held without running the policy."""
    command: FloatArray
    """The joint targets sent after the safety filter, tick-quantized (rad): the log's ``command`` row."""
    hold: int
    """Why the command was held (``robot.safety.Hold``: 0 none, 1 stale reading, 2 NaN/inf action)."""
    period_error_s: float
    """Actual minus nominal period of the step's cycle (s); NaN for the first cycle after a restart of the timer."""
    cycle_time_s: float
    """The cycle's work time, from its start to the end of its write (s)."""
    overrun: bool
    """Whether the cycle started past its deadline."""
    comm_errors: int
    """Communication errors the bus counted since this controller started (a running total)."""


class StepView(Protocol):
    """Where the controller shows each step (see the module docstring)."""

    def step(self, record: StepRecord) -> None:
        """One policy step, just after its write."""
        ...

    def episode_end(self, episode: int, meta: Mapping[str, Any]) -> None:
        """Episode ``episode`` ended; ``meta`` is its log's meta (success, return, stop_reason, steps, ...)."""
        ...


class NoView:
    """The view that shows nothing: the controller's default."""

    def step(self, record: StepRecord) -> None:
        pass

    def episode_end(self, episode: int, meta: Mapping[str, Any]) -> None:
        pass


NO_VIEW = NoView()

SPAWN = "spawn"
"""``open_view``'s target for a viewer of its own (``--view`` without a file)."""
HEADER = ("episode", "step", "time", "period_error", "cycle_time", "overrun", "comm_errors", "imu_time")
"""The scalar fields at the start of a step's row (:meth:`ViewLayout.row`), in order."""
STEP_MESSAGE = 0
EPISODE_MESSAGE = 1
FRAME = struct.Struct("<BI")
"""A message on the view's pipe: its kind and its payload's length (bytes), then the payload."""
PIPE_BYTES = 1 << 20
"""The pipe's buffer asked for (bytes; Linux's default ceiling): about 3000 steps of a 9-joint robot queue in it."""
MAX_REASON_CHARS = 500
"""A stop reason shown at an episode's end is cut to this length, so its message (JSON, at most 6 bytes a
character) fits one atomic pipe write."""
START_TIMEOUT_S = 60.0
"""Longest wait for the view's process to start (import Rerun, open its file or viewer) (s)."""
CLOSE_TIMEOUT_S = 60.0
"""Longest wait for the view's process to send what is queued and close its recording (s)."""


@dataclass(frozen=True)
class ViewLayout:
    """What a view shows of a robot, and how a step travels to the view's process as one row of float64."""

    joint_names: tuple[str, ...]
    """The actuated joints, in the task spec's order."""
    passive_names: tuple[str, ...]
    """The passive joints (the claw's valve)."""
    period_s: float
    """The nominal control period (s)."""
    imu: bool
    """Whether the robot has a torso IMU."""

    @staticmethod
    def of(config: RobotConfig) -> ViewLayout:
        spec = config.task_spec()
        return ViewLayout(spec.joint_names, spec.passive_joints, config.control_period_s, config.imu is not None)

    @property
    def width(self) -> int:
        """Values in a step's row."""
        return len(HEADER) + 2 * len(self.joint_names) + len(self.passive_names) + (7 if self.imu else 0)

    def row(self, r: StepRecord) -> FloatArray:
        """``r`` as a row: :data:`HEADER`, then the command, joint positions, passive positions and (with an IMU) the
        torso quaternion (w, x, y, z) and angular velocity."""
        reading = r.reading
        return np.concatenate((
            (r.episode, r.step, reading.time, r.period_error_s, r.cycle_time_s, float(r.overrun), r.comm_errors,
             reading.imu_time),
            r.command, reading.joint_pos, reading.passive_pos,
            *((reading.base_quat, reading.base_angvel) if self.imu else ()),
        ), dtype=np.float64)

    def columns(self, rows: FloatArray) -> dict[str, FloatArray]:
        """Rows (n, width) by field: the :data:`HEADER` names (n,), ``command`` and ``joint_pos`` (n, J),
        ``passive_pos`` (n, P) and, with an IMU, ``base_quat`` (n, 4) and ``base_angvel`` (n, 3)."""
        out = {name: rows[:, i] for i, name in enumerate(HEADER)}
        at = len(HEADER)
        widths = {"command": len(self.joint_names), "joint_pos": len(self.joint_names),
                  "passive_pos": len(self.passive_names), **({"base_quat": 4, "base_angvel": 3} if self.imu else {})}
        for name, width in widths.items():
            out[name] = rows[:, at : at + width]
            at += width
        return out


class ProcessView:
    """A :class:`StepView` whose work runs in a process of its own (see the module docstring): the process runs
    :func:`robot.rerun_view.serve` on the layout, reading the steps this side writes to a pipe."""

    def __init__(self, layout: ViewLayout, target: str | Path, name: str,
                 log: logging.Logger | None = None) -> None:
        if FRAME.size + 8 * layout.width > select.PIPE_BUF:
            raise ValueError(f"a step of {layout.width} values does not fit one atomic pipe write")
        self.layout = layout
        self.log = log or logging.getLogger("robot.view")
        self.dropped = 0
        """Messages (steps, episode ends) left out because the view's process had fallen behind."""
        self.sent = 0
        """Messages written to the view's process."""
        ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold a robot's threads
        reader, self._pipe = ctx.Pipe(duplex=False)
        status_reader, status_writer = ctx.Pipe(duplex=False)
        self._process = ctx.Process(target=_serve, args=(reader, status_writer, layout, str(target), name),
                                    name="s2r view", daemon=True)
        self._process.start()
        reader.close()
        status_writer.close()
        fd = self._pipe.fileno()
        try:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        except (OSError, AttributeError):  # not Linux, or a lower ceiling: the default buffer still works
            pass
        os.set_blocking(fd, False)
        try:
            ready = status_reader.poll(START_TIMEOUT_S)
            status = status_reader.recv() if ready else ("error", f"no answer in {START_TIMEOUT_S:g} s")
        except EOFError:
            status = ("error", f"it exited with status {self._process.exitcode}")
        finally:
            status_reader.close()
        if status[0] != "ready":
            self._stop()
            raise UserError(f"the live view could not start: {status[1]}")

    @property
    def pid(self) -> int | None:
        """The view's process's id."""
        return self._process.pid

    def step(self, record: StepRecord) -> None:
        self._write(STEP_MESSAGE, self.layout.row(record).tobytes())

    def episode_end(self, episode: int, meta: Mapping[str, Any]) -> None:
        ret = meta.get("return")
        self._write(EPISODE_MESSAGE, json.dumps({
            "episode": episode, "success": bool(meta.get("success")), "steps": meta.get("steps"),
            "return": ret if isinstance(ret, (int, float)) else None,
            "stop_reason": str(meta.get("stop_reason", ""))[:MAX_REASON_CHARS]}).encode())

    def _write(self, kind: int, payload: bytes) -> None:
        # At most PIPE_BUF bytes (checked at the start), so the write is atomic: whole or, on a full pipe, not at all.
        message = FRAME.pack(kind, len(payload)) + payload
        try:
            os.write(self._pipe.fileno(), message)
        except BlockingIOError:
            self.dropped += 1
            return
        self.sent += 1

    def close(self) -> bool:
        """Let the process send what is queued and close its recording; whether it did (a failure is logged: the
        run itself went on without the view)."""
        self._pipe.close()
        self._process.join(CLOSE_TIMEOUT_S)
        code = self._process.exitcode
        self._stop()
        if self.dropped:
            self.log.warning("the live view fell behind: %d of %d steps and episode ends were not shown",
                             self.dropped, self.dropped + self.sent)
        if code != 0:
            what = "did not finish in time" if code is None else f"failed (exit status {code})"
            self.log.error("the live view's process %s; the view is incomplete", what)
        return code == 0

    def _stop(self) -> None:
        if not self._pipe.closed:
            self._pipe.close()
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(CLOSE_TIMEOUT_S)


def _serve(steps: Connection, status: Connection, layout: ViewLayout, target: str, name: str) -> None:
    """The view's process: Rerun shows what arrives on ``steps`` (see :func:`robot.rerun_view.serve`)."""
    from robot import rerun_view  # the optional `view` extra, in the view's process only

    rerun_view.serve(steps, status, layout, target, name)


def check_view_target(target: str | None) -> None:
    """``None`` (no view), :data:`SPAWN` or a path ending in ``.rrd``; anything else is a :class:`ParameterError` of
    the parameter ``view``.

    An argument like ``--view policy.onnx`` is most likely a policy swallowed by ``--view``'s optional value."""
    if target is None or target == SPAWN:
        return
    if Path(target).suffix != RRD_SUFFIX or Path(target).name == RRD_SUFFIX:
        raise ParameterError("view", f"must be a Rerun recording file ending in {RRD_SUFFIX} (or nothing, for a "
                             f"viewer of its own); got {target!r}")
    if Path(target).is_dir():
        raise ParameterError("view", f"must be a file ending in {RRD_SUFFIX}; {target!r} is a directory")


def require_view() -> None:
    """Raise :class:`s2r.core.extras.MissingExtra` naming the ``view`` extra unless Rerun is installed."""
    require("rerun", extra=VIEW_EXTRA, purpose="the live view (--view)")


class _ViewFailed(Exception):
    """The view's process failed (``ProcessView.close`` logged why): its recording file is not written."""


@contextmanager
def _stopped_on_error(view: ProcessView) -> Iterator[ProcessView]:
    """``view`` for the run; a run that ends in an exception stops the view's process at once (no file kept)."""
    try:
        yield view
    except BaseException:
        view._stop()
        raise


@contextmanager
def open_view(target: str | None, config: RobotConfig, *, name: str = "s2r",
              log: logging.Logger | None = None) -> Iterator[StepView]:
    """The view of a run on ``config``'s robot: :data:`NO_VIEW` for ``None``; a Rerun viewer spawned for
    :data:`SPAWN`; else the Rerun recording file ``target`` (``.rrd``), given its name once the view closed
    (a temporary file until then, removed when the run fails with an exception or the view's process failed).
    ``name`` is the recording's application id (what the viewer shows it as); ``log`` gets the view's warnings.
    Returns once the view's process runs (a :class:`UserError` when it cannot start)."""
    check_view_target(target)
    if target is None:
        yield NO_VIEW
        return
    require_view()
    layout = ViewLayout.of(config)
    if target == SPAWN:
        with _stopped_on_error(ProcessView(layout, SPAWN, name, log)) as view:
            yield view
        view.close()
        return
    try:
        with atomic_path(target) as tmp:
            with _stopped_on_error(ProcessView(layout, tmp, name, log)) as view:
                yield view
            if not view.close():
                raise _ViewFailed
    except _ViewFailed:
        pass  # the run's own outcome stands: a view never changes it
