"""Crash-safe trajectory logs: one directory per run, one file per finished episode.

Layout of a log directory::

    run.json              what produced the episodes (format, task, robot, joints, control period, ...)
    episode_000000.npz    one finished episode (arrays below), written to a temporary name and renamed
    episode_000001.npz
    ...

A killed process loses at most the episode in progress: every earlier episode file was complete
before its rename. Arrays in an episode file (T = control steps in the episode, J joints, P passive
joints, O observation size):

=================  ==========  =====  ======================================================
name               shape       unit   meaning
=================  ==========  =====  ======================================================
time               (T+1,)      s      monotonic time of each reading
joint_pos          (T+1, J)    rad    joint positions as read (index 0 = after reset)
joint_vel          (T+1, J)    rad/s  joint velocities as read
joint_effort       (T+1, J)    N m    actuator torque as read (zeros where not reported)
passive_pos        (T+1, P)    rad    passive joints (the valve) as read
passive_vel        (T+1, P)    rad/s  passive joint velocities as read
stale              (T+1,)      -      1 where the reading was stale (a failed read)
obs                (T+1, O)    -      observation given to the policy
action             (T, J)      -      the policy's normalized action
command            (T, J)      rad    joint targets actually sent after the safety filter
reward             (T,)        -      reward from the task's terms
reward_terms       (T, K)      -      the K named terms (names in ``meta``)
comm_errors        (T,)        -      communication errors counted during each cycle
cycle_time         (T,)        s      duration of each control cycle's work
period_error       (T,)        s      actual minus nominal period of each cycle
meta               ()          json   goal, success, stop_reason, reward term names, episode index
=================  ==========  =====  ======================================================

A robot with a torso IMU (a legged robot) adds, per reading:

=================  ==========  =====  ======================================================
base_quat          (T+1, 4)    -      torso orientation from the IMU (w, x, y, z; NaN before its first frame)
base_angvel        (T+1, 3)    rad/s  torso angular velocity in the torso frame (IMU gyroscope)
imu_age            (T+1,)      s      reading time minus the receive time of the IMU sample used
=================  ==========  =====  ======================================================

Logs without them (the claw's, older ones) read as before; readers look for them with ``name in episode.arrays``.

Writers may add arrays and meta keys. The robot controller (``robot.runner``) adds
``command_filtered`` (T, J; rad, the safety filter's command before tick rounding), ``hold`` (T; 0 none,
1 stale reading, 2 NaN/inf action) and ``overrun`` (T; 1 where the cycle missed its deadline), and the
meta keys ``complete`` (False when a stop cut the episode short), ``return``, ``steps``,
``episode_steps``, ``start_command``, ``stale_readings``, ``held_actions`` and ``reset_*`` (how the
scripted reset went).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from s2r.errors import UserError

FORMAT = "s2r-trajlog/1"
RUN_FILE = "run.json"
EPISODE_GLOB = "episode_*.npz"
STEP_ARRAYS = ("action", "command", "reward", "reward_terms", "comm_errors", "cycle_time", "period_error")
READING_ARRAYS = ("time", "joint_pos", "joint_vel", "joint_effort", "passive_pos", "passive_vel", "stale", "obs")
BASE_ARRAYS: dict[str, tuple[int, ...]] = {"base_quat": (4,), "base_angvel": (3,), "imu_age": ()}
"""Optional per-reading arrays of a robot with an IMU, with their shape per row."""


@dataclass(frozen=True)
class RunInfo:
    """What produced a log directory; checked before its episodes are used."""

    task: str
    """Task name (e.g. ``"dclaw-turn"``)."""
    robot: str
    """Robot name (e.g. ``"dclaw"``)."""
    joint_names: tuple[str, ...]
    """Actuated joints, in the column order of the joint arrays."""
    passive_joints: tuple[str, ...]
    """Passive joints, in the column order of the passive arrays."""
    control_period: float
    """Nominal control period (s)."""
    source: str
    """What produced the data: ``"dynamixel"``, ``"emulator"``, ``"mock"`` or ``"sim"``."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Anything else worth keeping (policy file, reality file, engine, seeds)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "task": self.task,
            "robot": self.robot,
            "joint_names": list(self.joint_names),
            "passive_joints": list(self.passive_joints),
            "control_period": self.control_period,
            "source": self.source,
            "extra": dict(self.extra),
        }

    @staticmethod
    def from_json(data: Mapping[str, Any], where: str) -> RunInfo:
        if data.get("format") != FORMAT:
            raise UserError(f"{where}: format is {data.get('format')!r}, expected {FORMAT!r}")
        try:
            return RunInfo(
                task=str(data["task"]),
                robot=str(data["robot"]),
                joint_names=tuple(data["joint_names"]),
                passive_joints=tuple(data["passive_joints"]),
                control_period=float(data["control_period"]),
                source=str(data["source"]),
                extra=dict(data.get("extra", {})),
            )
        except KeyError as exc:
            raise UserError(f"{where}: missing field {exc.args[0]!r}") from None


@dataclass(frozen=True)
class Episode:
    """One logged episode: the arrays of the module docstring and its ``meta`` dict."""

    index: int
    """Position of the episode in the run."""
    arrays: Mapping[str, np.ndarray]
    """The arrays by name."""
    meta: Mapping[str, Any]
    """Goal, success, stop reason, reward term names."""

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    @property
    def steps(self) -> int:
        """Number of control steps T."""
        return int(self.arrays["action"].shape[0])


def _atomic_write_bytes(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class TrajectoryWriter:
    """Writes ``run.json`` once and each finished episode atomically."""

    def __init__(self, directory: str | os.PathLike[str], info: RunInfo) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.info = info
        run_file = self.directory / RUN_FILE
        if run_file.exists():
            existing = RunInfo.from_json(json.loads(run_file.read_text()), str(run_file))
            if (existing.task, existing.robot, existing.joint_names) != (info.task, info.robot, info.joint_names):
                raise UserError(
                    f"{self.directory} already holds logs of task {existing.task!r} on robot {existing.robot!r}; "
                    f"refusing to add episodes of {info.task!r} on {info.robot!r}"
                )
        else:
            payload = json.dumps(info.to_json(), indent=2).encode()
            _atomic_write_bytes(run_file, lambda fh: fh.write(payload))
        self._next = len(episode_files(self.directory))

    @property
    def episodes_written(self) -> int:
        """Episodes in the directory (including those of earlier, resumed runs)."""
        return self._next

    def write_episode(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Path:
        """Validate shapes and write one finished episode; returns its path."""
        _check_shapes(arrays, self.info, f"episode {self._next}")
        path = self.directory / f"episode_{self._next:06d}.npz"
        payload = {k: np.asarray(v) for k, v in arrays.items()}
        payload["meta"] = np.array(json.dumps({**meta, "index": self._next}))
        # numpy's stub types **kwds as if they could be its allow_pickle flag; they are array names here.
        savez: Any = np.savez_compressed
        _atomic_write_bytes(path, lambda fh: savez(fh, **payload))
        self._next += 1
        return path


def _check_shapes(arrays: Mapping[str, np.ndarray], info: RunInfo, where: str) -> None:
    missing = [k for k in (*READING_ARRAYS, *STEP_ARRAYS) if k not in arrays]
    if missing:
        raise ValueError(f"{where}: missing arrays {missing}")
    steps = np.asarray(arrays["action"]).shape[0]
    for k in READING_ARRAYS:
        if np.asarray(arrays[k]).shape[0] != steps + 1:
            raise ValueError(f"{where}: {k} has {np.asarray(arrays[k]).shape[0]} rows, expected {steps + 1}")
    for k in STEP_ARRAYS:
        if np.asarray(arrays[k]).shape[0] != steps:
            raise ValueError(f"{where}: {k} has {np.asarray(arrays[k]).shape[0]} rows, expected {steps}")
    for k, row in BASE_ARRAYS.items():
        if k in arrays and np.asarray(arrays[k]).shape != (steps + 1, *row):
            raise ValueError(f"{where}: {k} has shape {np.asarray(arrays[k]).shape}, expected {(steps + 1, *row)}")
    if np.asarray(arrays["joint_pos"]).shape[1:] != (len(info.joint_names),):
        raise ValueError(f"{where}: joint_pos has shape {np.asarray(arrays['joint_pos']).shape}, "
                         f"expected (T+1, {len(info.joint_names)})")


def episode_files(directory: str | os.PathLike[str]) -> list[Path]:
    """Finished episode files in index order (temporary files of an unfinished write are ignored)."""
    return sorted(Path(directory).glob(EPISODE_GLOB))


def read_run(directory: str | os.PathLike[str]) -> RunInfo:
    """The ``run.json`` of a log directory, or a ``UserError`` saying what is wrong with it."""
    d = Path(directory)
    if not d.is_dir():
        raise UserError(f"log directory {d} does not exist")
    run_file = d / RUN_FILE
    if not run_file.exists():
        raise UserError(f"{d} is not a trajectory log directory: {RUN_FILE} is missing")
    try:
        data = json.loads(run_file.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{run_file} is not valid JSON ({exc})") from None
    return RunInfo.from_json(data, str(run_file))


def read_episodes(directory: str | os.PathLike[str]) -> Iterator[Episode]:
    """Every finished episode of a log directory; a damaged file is a ``UserError`` naming it."""
    info = read_run(directory)
    for path in episode_files(directory):
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files if k != "meta"}
                meta = json.loads(str(data["meta"]))
        except Exception as exc:  # zipfile/npz errors come in many types; all mean the same to a user
            raise UserError(f"episode file {path} is damaged or truncated ({type(exc).__name__}: {exc})") from None
        try:
            _check_shapes(arrays, info, str(path))
        except ValueError as exc:
            raise UserError(str(exc)) from None
        yield Episode(index=int(meta.get("index", -1)), arrays=arrays, meta=meta)
