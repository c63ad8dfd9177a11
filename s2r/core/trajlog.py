"""Crash-safe trajectory logs: one directory per run, one file per finished episode.

Layout of a log directory::

    run.json              what produced the episodes (format, task, robot, joints, control period, ...)
    episode_000000.npz    one finished episode (arrays below), written to a temporary name and renamed
    episode_000001.npz
    ...
    unstarted_000000.json an episode that ended before its first step (its reset failed, or a stop came first): its meta

A killed process loses at most the episode in progress: every earlier episode file was complete
before it got its final name. No episode is ever overwritten: a writer numbers its next episode one
above the highest index in the directory (not the file count, so a gap left by a deleted file is not
refilled), and it gives a finished file its final name with a hard link, which fails if that name
exists. A writer that appends to a directory must match its ``run.json``: task, robot, joints,
control period, source and, where both know it, the configuration hash (:func:`config_hash`); and
each episode's ``meta`` records its own ``control_period``, ``source`` and ``config_hash``, which
readers prefer to ``run.json``'s. Temporary files a killed writer left behind
(``.episode_NNNNNN.npz.PID.*.tmp``, ``.unstarted_NNNNNN.json.PID.*.tmp``, ``.run.json.PID.*.tmp``) are removed
when the next writer opens the directory, unless their process is still alive; readers ignore them and report
them.

Readers (:func:`read_episodes`) either fail on the first damaged episode file (``strict``) or skip
it and report it (:class:`SkippedFile`), so one bad file does not cost the good ones; a directory
whose every episode file is damaged is an error either way.

Arrays in an episode file (T = control steps in the episode, J joints, P passive joints, O observation
size):

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
goal               (T+1, G)    SI     the goal's named values at each reading (names: meta ``goal_names``);
                                      optional: older logs lack it, their goal is meta ``goal`` alone
action             (T, J)      -      the policy's normalized action
command            (T, J)      rad    joint targets actually sent after the safety filter
reward             (T,)        -      reward from the task's terms
reward_terms       (T, K)      -      the K named terms (names in ``meta``)
comm_errors        (T,)        -      communication errors counted during each cycle
cycle_time         (T,)        s      duration of each control cycle's work
period_error       (T,)        s      actual minus nominal period of each cycle
meta               ()          json   goal, success, stop_reason, reward term names, episode index,
                                      control_period (s), source, config_hash (added by the writer)
=================  ==========  =====  ======================================================

A robot with a torso IMU (a legged robot) adds, per reading:

=================  ==========  =====  ======================================================
base_quat          (T+1, 4)    -      torso orientation from the IMU (w, x, y, z; NaN before its first frame)
base_angvel        (T+1, 3)    rad/s  torso angular velocity in the torso frame (IMU gyroscope)
imu_age            (T+1,)      s      reading time minus the receive time of the IMU sample used
=================  ==========  =====  ======================================================

A robot with a position source (the hardware config's ``tracker``) adds, per reading:

=================  ==========  =====  ======================================================
base_pos           (T+1, 3)    m      torso position in the world (NaN before the source's first pose)
base_linvel        (T+1, 3)    m/s    torso velocity in the world frame
pose_age           (T+1,)      s      reading time minus the receive time of the pose used
=================  ==========  =====  ======================================================

Logs without them (the claw's, older ones) read as before; readers look for them with ``name in episode.arrays``.

A deployment that observes a passive joint through a camera (``s2r deploy --perception``) adds ``camera_NAME``
(T+1, H, W, 3) uint8, the RGB frame of each reading (the episode file is compressed, frames included),
``passive_estimate`` (T+1, P; rad, the estimator's angle the policy observed: NaN before the first frame) and
``frame_age`` (T+1; s, reading time minus the frame's receive time); ``passive_pos`` stays the encoder's. The datasets
(``policies.dataset``) carry the frames as images.

Writers may add arrays and meta keys. The robot controller (``robot.runner``) adds
``command_filtered`` (T, J; rad, the safety filter's command before tick rounding), ``hold`` (T; 0 none,
1 stale reading, 2 NaN/inf action) and ``overrun`` (T; 1 where the cycle missed its deadline), and the
meta keys ``goal_names`` (the columns of ``goal``), ``complete`` (False when a stop cut the episode short),
``return``, ``steps``, ``episode_steps``, ``start_command``, ``stale_readings``, ``held_actions`` and ``reset_*``
(how the scripted reset went).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from s2r.core.errors import UserError

FORMAT = "s2r-trajlog/1"
RUN_FILE = "run.json"
EPISODE_GLOB = "episode_*.npz"
EPISODE_NAME = re.compile(r"episode_(\d{6,})\.npz")
"""Name of a finished episode file; the number is its index."""
UNSTARTED_NAME = re.compile(r"unstarted_(\d{6,})\.json")
"""Name of the meta of an episode that never started; the number counts those files, apart from the episodes'."""
TEMP_NAME = re.compile(r"\.(?:episode_\d+\.npz|unstarted_\d+\.json|run\.json)\.(?P<tag>.+)\.tmp")
"""Name of a writer's temporary file; ``tag`` starts with the writer's process id."""
STEP_ARRAYS = ("action", "command", "reward", "reward_terms", "comm_errors", "cycle_time", "period_error")
READING_ARRAYS = ("time", "joint_pos", "joint_vel", "joint_effort", "passive_pos", "passive_vel", "stale", "obs")
BASE_ARRAYS: dict[str, tuple[int, ...]] = {"base_quat": (4,), "base_angvel": (3,), "imu_age": (),
                                           "base_pos": (3,), "base_linvel": (3,), "pose_age": ()}
"""Optional per-reading arrays of a robot with an IMU (and a position source), with their shape per row."""
GOAL_ARRAY = "goal"
"""Optional per-reading array of the goal's named values (T+1, G); the names are the episode meta's ``goal_names``."""

log = logging.getLogger(__name__)


def config_hash(config: Any) -> str:
    """sha256 (hex) of a configuration's contents written as canonical JSON (sorted keys, no spaces).

    Callers pass what shapes the data: ``robot.runner.run_info`` the hardware config's fields (calibration,
    limits, timing; not the path it was loaded from), ``randomization.simlogs`` the engine, parameter values
    and sensor noise. Equal contents give equal hashes whatever the file's comments or key order.
    """
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _positive_period(value: Any) -> float | None:
    """``value`` as a control period (s) if it is a finite number above 0, else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    period = float(value)
    return period if math.isfinite(period) and period > 0 else None


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
    config_hash: str | None = None
    """:func:`config_hash` of the configuration that shaped the data; ``None`` when unknown (older logs)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "task": self.task,
            "robot": self.robot,
            "joint_names": list(self.joint_names),
            "passive_joints": list(self.passive_joints),
            "control_period": self.control_period,
            "source": self.source,
            "config_hash": self.config_hash,
            "extra": dict(self.extra),
        }

    @staticmethod
    def from_json(data: Any, where: str) -> RunInfo:
        """The run info in ``data`` (parsed ``run.json``); anything malformed is a ``UserError`` naming the field."""
        if not isinstance(data, dict):
            raise UserError(f"{where}: expected a JSON object, got {type(data).__name__}")
        if data.get("format") != FORMAT:
            raise UserError(f"{where}: format is {data.get('format')!r}, expected {FORMAT!r}")
        missing = [k for k in ("task", "robot", "joint_names", "passive_joints", "control_period", "source")
                   if k not in data]
        if missing:
            raise UserError(f"{where}: missing field {missing[0]!r}")

        def bad(name: str, expected: str) -> UserError:
            return UserError(f"{where}: field {name} must be {expected}; got {data[name]!r}")

        for name in ("task", "robot", "source"):
            if not isinstance(data[name], str) or not data[name]:
                raise bad(name, "a non-empty string")
        for name in ("joint_names", "passive_joints"):
            if not isinstance(data[name], list) or not all(isinstance(n, str) and n for n in data[name]):
                raise bad(name, "a list of joint names (strings)")
        period = _positive_period(data["control_period"])
        if period is None:
            raise bad("control_period", "a finite number of seconds above 0")
        if not isinstance(data.get("extra", {}), dict):
            raise bad("extra", "a JSON object")
        if not isinstance(data.get("config_hash"), (str, type(None))):
            raise bad("config_hash", "a string or null")
        return RunInfo(
            task=data["task"],
            robot=data["robot"],
            joint_names=tuple(data["joint_names"]),
            passive_joints=tuple(data["passive_joints"]),
            control_period=period,
            source=data["source"],
            extra=dict(data.get("extra", {})),
            config_hash=data.get("config_hash"),
        )


@dataclass(frozen=True)
class Episode:
    """One logged episode: the arrays of the module docstring and its ``meta`` dict."""

    index: int
    """Position of the episode in the run (the number in its file name)."""
    arrays: Mapping[str, np.ndarray]
    """The arrays by name."""
    meta: Mapping[str, Any]
    """Goal, success, stop reason, reward term names."""
    control_period: float = math.nan
    """Nominal control period the episode ran at (s): its meta's, else the run's."""
    source: str = ""
    """What produced the episode (see :attr:`RunInfo.source`): its meta's, else the run's."""

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    @property
    def steps(self) -> int:
        """Number of control steps T."""
        return int(self.arrays["action"].shape[0])


@dataclass(frozen=True)
class SkippedFile:
    """A file of a log directory that a reader left out, and why."""

    path: Path
    """The file."""
    problem: str
    """What is wrong with it, in words."""

    def __str__(self) -> str:
        return f"skipped {self.path}: {self.problem}"


class SkippedFileWarning(UserWarning):
    """A reader left a damaged episode or a leftover temporary file out (when no ``on_skip`` is given)."""


OnSkip = Callable[[SkippedFile], None]
"""Told about each file a reader leaves out."""


@dataclass
class SkipLog:
    """An ``on_skip`` for a command line: keeps every skipped file and prints each to stderr as a warning of
    ``prog``, for the command's summary (:meth:`to_json`)."""

    prog: str
    """The command, e.g. ``"s2r adapt"``."""
    files: list[SkippedFile] = field(default_factory=list)
    """The files skipped so far."""

    def __call__(self, skipped: SkippedFile) -> None:
        self.files.append(skipped)
        print(f"{self.prog}: warning: {skipped}", file=sys.stderr)

    def to_json(self) -> list[dict[str, str]]:
        return [{"path": str(f.path), "problem": f.problem} for f in self.files]


def _warn_skipped(skipped: SkippedFile) -> None:
    warnings.warn(str(skipped), SkippedFileWarning, stacklevel=3)


def _temp_name(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def write_new_file(path: Path, write: Callable[[Any], object],
                    link: Callable[[str, Path], None] = os.link) -> None:
    """Write ``path`` through a temporary file; a name that already exists is never replaced (``FileExistsError``).

    ``os.replace`` would overwrite an existing file, so the finished temporary file gets its final name with
    ``link`` (``os.link``), which fails atomically if the name exists, even when another writer takes it at the
    same moment. On a file system without hard links (FAT) the name is reserved with ``O_CREAT | O_EXCL`` first
    and then replaced: still never another's file, though a crash between the two leaves an empty one.
    """
    fd, tmp = tempfile.mkstemp(prefix=_temp_name(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            link(tmp, path)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    # The new name is only durable once the directory is (a power cut could otherwise lose the episode).
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def temp_files(directory: str | os.PathLike[str]) -> list[Path]:
    """Temporary files of writers in a log directory (unfinished or abandoned writes)."""
    d = Path(directory)
    return sorted(p for p in d.glob(".*.tmp") if TEMP_NAME.fullmatch(p.name))


def remove_abandoned_temp_files(directory: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files whose writer is gone (its process id in the name is not running); returns them.

    A name without a process id (older writers) counts as abandoned. A running writer's file is kept: it may be
    about to get its final name.
    """
    removed = []
    for path in temp_files(directory):
        match = TEMP_NAME.fullmatch(path.name)
        pid_text = match["tag"].split(".")[0] if match else ""
        if pid_text.isdigit() and _process_alive(int(pid_text)):
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _read_run_file(run_file: Path) -> RunInfo:
    try:
        data = json.loads(run_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{run_file} is not valid JSON ({exc})") from None
    except OSError as exc:
        raise UserError(f"cannot read {run_file}: {exc.strerror or exc}") from None
    return RunInfo.from_json(data, str(run_file))


MAX_NAME_COLLISIONS = 100
"""Episode names in a row another writer may take before a write gives up (-)."""


class TrajectoryWriter:
    """Writes ``run.json`` once and each finished episode atomically, never over an existing file."""

    def __init__(self, directory: str | os.PathLike[str], info: RunInfo) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.info = info
        if _positive_period(info.control_period) is None:
            raise ValueError(f"control period must be a finite number of seconds above 0; got {info.control_period!r}")
        self.removed_temp_files = remove_abandoned_temp_files(self.directory)
        """Temporary files of a killed writer that opening the directory removed."""
        for path in self.removed_temp_files:
            log.warning("removed %s, left behind by an unfinished write", path)
        run_file = self.directory / RUN_FILE
        payload = json.dumps(info.to_json(), indent=2).encode()
        try:
            write_new_file(run_file, lambda fh: fh.write(payload))
        except FileExistsError:
            self._check_append(_read_run_file(run_file), run_file)
        indices = [episode_index(p) for p in episode_files(self.directory)]
        self._count = len(indices)
        self._next = max(indices, default=-1) + 1

    def _check_append(self, existing: RunInfo, run_file: Path) -> None:
        info = self.info
        if (existing.task, existing.robot, existing.joint_names) != (info.task, info.robot, info.joint_names):
            raise UserError(
                f"{self.directory} already holds logs of task {existing.task!r} on robot {existing.robot!r}; "
                f"refusing to add episodes of {info.task!r} on {info.robot!r}"
            )
        mismatch = [
            (name, old, new) for name, old, new in (
                ("passive_joints", list(existing.passive_joints), list(info.passive_joints)),
                ("control_period", existing.control_period, info.control_period),
                ("source", existing.source, info.source),
            ) if old != new
        ]
        old_hash, new_hash = existing.config_hash, info.config_hash
        if old_hash is not None and new_hash is not None and old_hash != new_hash:  # unknown (older logs) passes
            mismatch.append(("config_hash", old_hash[:12], new_hash[:12]))
        if mismatch:
            what = "; ".join(f"{name} {old!r} there, {new!r} here" for name, old, new in mismatch)
            raise UserError(f"{run_file}: refusing to add episodes recorded differently ({what}); "
                            "write them to another log directory")

    @property
    def episodes_written(self) -> int:
        """Episodes in the directory (including those of earlier, resumed runs)."""
        return self._count

    @property
    def next_index(self) -> int:
        """Index of the next episode: one above the highest in the directory."""
        return self._next

    def write_episode(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Path:
        """Validate shapes and write one finished episode; returns its path.

        An existing file of the same name (another writer in the same directory) is never replaced: the episode
        takes the next free index instead, since data the robot produced must not be lost either.
        """
        _check_shapes(arrays, self.info, f"episode {self._next}")
        payload = {k: np.asarray(v) for k, v in arrays.items()}
        # numpy's stub types **kwds as if they could be its allow_pickle flag; they are array names here.
        savez: Any = np.savez_compressed
        for _ in range(MAX_NAME_COLLISIONS):
            path = self.directory / f"episode_{self._next:06d}.npz"
            payload["meta"] = np.array(json.dumps({
                **meta, "index": self._next, "control_period": self.info.control_period,
                "source": self.info.source, "config_hash": self.info.config_hash,
            }))
            try:
                write_new_file(path, lambda fh: savez(fh, **payload))
            except FileExistsError:
                log.warning("%s exists (another writer in %s?); writing the episode under the next index",
                            path, self.directory)
                self._next = max([self._next, *(episode_index(q) for q in episode_files(self.directory))]) + 1
                continue
            self._next += 1
            self._count += 1
            return path
        raise UserError(f"{self.directory}: {MAX_NAME_COLLISIONS} episode names in a row were taken by another "
                        "writer; refusing to go on")

    def write_unstarted(self, meta: Mapping[str, Any]) -> Path:
        """Write the meta of an episode that ended before its first step (its reset failed, or a stop came first)
        as ``unstarted_NNNNNN.json``; returns its path. What the reset saw (the robot's tilt, its righting attempts)
        is data the robot produced: it is kept as the episodes are, never overwritten. ``before_episode`` is the
        index the next episode file takes. Non-finite numbers (an error never measured) are written as ``null``, so
        the file is strict JSON."""
        taken = [int(m.group(1)) for p in self.directory.glob("unstarted_*.json")
                 if (m := UNSTARTED_NAME.fullmatch(p.name))]
        index = max(taken, default=-1) + 1
        payload = json.dumps(_finite_or_null({
            **meta, "before_episode": self._next, "control_period": self.info.control_period,
            "source": self.info.source, "config_hash": self.info.config_hash}), indent=2, allow_nan=False).encode()
        for _ in range(MAX_NAME_COLLISIONS):
            path = self.directory / f"unstarted_{index:06d}.json"
            try:
                write_new_file(path, lambda fh: fh.write(payload))
            except FileExistsError:
                index += 1
                continue
            return path
        raise UserError(f"{self.directory}: {MAX_NAME_COLLISIONS} names in a row were taken by another writer; "
                        "refusing to go on")


def _finite_or_null(value: Any) -> Any:
    """``value`` with every non-finite float inside it (in dicts, lists and tuples) replaced by ``None``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_null(v) for v in value]
    return value


def _check_shapes(arrays: Mapping[str, np.ndarray], info: RunInfo, where: str) -> None:
    missing = [k for k in (*READING_ARRAYS, *STEP_ARRAYS) if k not in arrays]
    if missing:
        raise ValueError(f"{where}: missing arrays {missing}")
    shapes = {k: np.shape(v) for k, v in arrays.items()}
    if len(shapes["action"]) != 2:
        raise ValueError(f"{where}: action has shape {shapes['action']}, expected (T, {len(info.joint_names)})")
    steps = shapes["action"][0]
    for k in READING_ARRAYS:
        if len(shapes[k]) == 0 or shapes[k][0] != steps + 1:
            raise ValueError(f"{where}: {k} has {shapes[k][0] if shapes[k] else 0} rows, expected {steps + 1}")
    for k in STEP_ARRAYS:
        if len(shapes[k]) == 0 or shapes[k][0] != steps:
            raise ValueError(f"{where}: {k} has {shapes[k][0] if shapes[k] else 0} rows, expected {steps}")
    for k, row in BASE_ARRAYS.items():
        if k in arrays and shapes[k] != (steps + 1, *row):
            raise ValueError(f"{where}: {k} has shape {shapes[k]}, expected {(steps + 1, *row)}")
    if GOAL_ARRAY in arrays and (len(shapes[GOAL_ARRAY]) != 2 or shapes[GOAL_ARRAY][0] != steps + 1):
        raise ValueError(f"{where}: {GOAL_ARRAY} has shape {shapes[GOAL_ARRAY]}, expected ({steps + 1}, G)")
    n_joints, n_passive = len(info.joint_names), len(info.passive_joints)
    columns = {"joint_pos": n_joints, "joint_vel": n_joints, "command": n_joints, "action": n_joints,
               "passive_pos": n_passive, "passive_vel": n_passive}
    for k, n in columns.items():
        if shapes[k][1:] != (n,):
            rows = "T+1" if k in READING_ARRAYS else "T"
            raise ValueError(f"{where}: {k} has shape {shapes[k]}, expected ({rows}, {n})")


def episode_index(path: Path) -> int:
    """The index in an episode file's name (``episode_000012.npz`` -> 12)."""
    match = EPISODE_NAME.fullmatch(path.name)
    if match is None:
        raise ValueError(f"{path.name} is not named like an episode file (episode_NNNNNN.npz)")
    return int(match[1])


def episode_files(directory: str | os.PathLike[str]) -> list[Path]:
    """Finished episode files in index order (temporary files of an unfinished write are ignored)."""
    files = [p for p in Path(directory).glob(EPISODE_GLOB) if EPISODE_NAME.fullmatch(p.name)]
    return sorted(files, key=episode_index)


def read_run(directory: str | os.PathLike[str]) -> RunInfo:
    """The ``run.json`` of a log directory, or a ``UserError`` saying what is wrong with it."""
    d = Path(directory)
    if not d.is_dir():
        raise UserError(f"log directory {d} does not exist")
    run_file = d / RUN_FILE
    if not run_file.exists():
        raise UserError(f"{d} is not a trajectory log directory: {RUN_FILE} is missing")
    return _read_run_file(run_file)


def load_episode(path: Path, info: RunInfo) -> Episode:
    """One episode file, checked against its run; anything wrong with it is a ``ValueError`` saying what."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files if k != "meta"}
            meta_text = str(data["meta"]) if "meta" in data.files else None
    except Exception as exc:  # zipfile/npz errors come in many types; all mean the same to a user
        raise ValueError(f"episode file {path} is damaged or truncated ({type(exc).__name__}: {exc})") from None
    if meta_text is None:
        raise ValueError(f"episode file {path} has no meta")
    try:
        meta = json.loads(meta_text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"episode file {path}: meta is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"episode file {path}: meta must be a JSON object; got {type(meta).__name__}")
    period = _positive_period(meta.get("control_period", info.control_period))
    if period is None:
        raise ValueError(f"episode file {path}: meta.control_period must be a finite number of seconds above 0; "
                         f"got {meta['control_period']!r}")
    source = meta.get("source", info.source)
    if not isinstance(source, str):
        raise ValueError(f"episode file {path}: meta.source must be a string; got {source!r}")
    _check_shapes(arrays, info, str(path))
    return Episode(index=episode_index(path), arrays=arrays, meta=meta, control_period=period, source=source)


def read_episodes(directory: str | os.PathLike[str], *, strict: bool = True,
                  on_skip: OnSkip | None = None) -> Iterator[Episode]:
    """Every good episode of a log directory, in index order.

    ``strict``: the first damaged episode file (truncated, wrong shapes, bad meta) is a ``UserError`` naming it.
    Otherwise it is left out and reported to ``on_skip`` (default: a :class:`SkippedFileWarning`), and only a
    directory whose every episode file is damaged is an error. Leftover temporary files are ignored and reported
    to ``on_skip`` (when given, or when not ``strict``).
    """
    info = read_run(directory)
    report = on_skip if on_skip is not None else (None if strict else _warn_skipped)
    if report is not None:
        for path in temp_files(directory):
            report(SkippedFile(path, "temporary file of an unfinished write (ignored)"))
        for path in sorted(Path(directory).glob(EPISODE_GLOB)):
            if not EPISODE_NAME.fullmatch(path.name):
                report(SkippedFile(path, "not named like an episode file, episode_NNNNNN.npz (ignored)"))
    files = episode_files(directory)
    damaged: list[str] = []
    for path in files:
        try:
            episode = load_episode(path, info)
        except ValueError as exc:
            if strict:
                raise UserError(str(exc)) from None
            damaged.append(str(exc))
            assert report is not None
            report(SkippedFile(path, str(exc)))
            continue
        yield episode
    if files and len(damaged) == len(files):
        raise UserError(f"{directory}: every episode file is damaged ({len(files)}); the first: {damaged[0]}")
