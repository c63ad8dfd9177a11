"""Trajectory logs (``s2r.core.trajlog``) as an offline-RL dataset with D4RL's key names.

One row per transition of every logged episode (complete ones; stopped ones on request)::

    observations       (N, O) float32   observation the policy acted on
    actions            (N, J) float32   the action as applied: the policy's output clipped to [-1, 1]
    rewards            (N,)   float32   reward of the step (the task's terms, summed)
    next_observations  (N, O) float32   observation after the step
    terminals          (N,)   bool      True on an episode's last transition where the task ended it (meta
                                        ``terminated``: the walk past its tilt bound), as simulation does
    timeouts           (N,)   bool      True on the last transition of each episode that is not terminal (the
                                        trajectory stops there)
    episode            (N,)   int64     index of the episode file the transition came from

Transitions with a stale reading on either side, or a policy output the safety filter refused (NaN or
infinity), are left out: no value in them is a real observation or an action the robot performed.

The episode-structured formats (Minari, ``policies.minari_dataset``; LeRobot, ``policies.lerobot_dataset``) take
the same transitions as :class:`Segment` s: each run of consecutive usable transitions of a logged episode is one
episode there, so every observation is followed by the one its action led to. :func:`dataset_metadata` is what
both keep about the run (task and env id, robot, joints, control period, observation layout, cameras).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from s2r.core.atomicio import atomic_path
from s2r.core.errors import ParameterError, UserError
from s2r.core.trajlog import OnSkip, RunInfo, read_episodes, read_run
from sim import TASK_IDS, resolve_env_id
from sim.tasks import make_task
from sim.tasks.actions import clip_action

DATASET_KEYS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts", "episode")


CAMERA_PREFIX = "camera_"
"""An episode array named ``camera_NAME``, shape (T+1, H, W, 3) uint8, holds camera NAME's RGB frame of each reading
(none of the shipped robots has a camera yet); the dataset formats carry it as images."""


def usable_transitions(obs: np.ndarray, action: np.ndarray, reward: np.ndarray) -> np.ndarray:
    """(T,) bool: transitions whose observations on both sides, action and reward are all finite."""
    return (np.all(np.isfinite(obs[:-1]), axis=1) & np.all(np.isfinite(obs[1:]), axis=1)
            & np.all(np.isfinite(action), axis=1) & np.isfinite(reward))


def ends_terminated(meta: Mapping[str, Any], stop: int, steps: int) -> bool:
    """Whether transitions that run up to step ``stop`` of an episode of ``steps`` end in its terminal state: the
    episode's meta says the task ended it (``terminated``) and they reach its last reading."""
    return stop == steps and meta.get("terminated") is True


def trajlog_to_dataset(directory: str | os.PathLike[str], include_partial: bool = False, *, strict: bool = False,
                       on_skip: OnSkip | None = None) -> dict[str, np.ndarray]:
    """Every usable transition of a log directory (see the module docstring).

    A damaged episode file is skipped and reported to ``on_skip``, or with ``strict`` is an error
    (:func:`s2r.core.trajlog.read_episodes`).
    """
    parts: dict[str, list[np.ndarray]] = {k: [] for k in DATASET_KEYS}
    for ep in read_episodes(directory, strict=strict, on_skip=on_skip):
        if not include_partial and ep.meta.get("complete") is False:
            continue
        t = ep.steps
        if t == 0:
            continue
        obs = np.asarray(ep["obs"], dtype=np.float64)
        action = np.asarray(ep["action"], dtype=np.float64)
        reward = np.asarray(ep["reward"], dtype=np.float64)
        idx = np.flatnonzero(usable_transitions(obs, action, reward))
        if idx.size == 0:
            continue
        terminals = np.zeros(idx.size, dtype=bool)
        terminals[-1] = ends_terminated(ep.meta, int(idx[-1]) + 1, t)
        timeouts = np.zeros(idx.size, dtype=bool)
        timeouts[-1] = not terminals[-1]
        parts["observations"].append(obs[idx].astype(np.float32))
        parts["actions"].append(clip_action(action[idx]).astype(np.float32))
        parts["rewards"].append(reward[idx].astype(np.float32))
        parts["next_observations"].append(obs[idx + 1].astype(np.float32))
        parts["terminals"].append(terminals)
        parts["timeouts"].append(timeouts)
        parts["episode"].append(np.full(idx.size, ep.index, dtype=np.int64))
    if not parts["rewards"]:
        raise _no_transitions(directory, include_partial)
    return {k: np.concatenate(v) for k, v in parts.items()}


def _no_transitions(directory: str | os.PathLike[str], include_partial: bool) -> ParameterError:
    return ParameterError("directory", f"{str(directory)!r} holds no usable transitions (no "
                          f"{'' if include_partial else 'complete '}episode with good readings"
                          f"{'' if include_partial else '; {include_partial} also uses stopped ones'})")


@dataclass(frozen=True)
class Segment:
    """Consecutive usable transitions of one logged episode: one episode of a Minari or LeRobot dataset."""

    episode: int
    """Index of the logged episode (its file name's number)."""
    start: int
    """Control step of that episode the segment's first transition is."""
    observations: np.ndarray
    """(n+1, O) float32: the observation before each action, then the one after the last."""
    actions: np.ndarray
    """(n, J) float32: the normalized action as applied (clipped to [-1, 1])."""
    rewards: np.ndarray
    """(n,) float32: reward of each step."""
    frames: Mapping[str, np.ndarray] = field(default_factory=dict)
    """Camera name -> (n+1, H, W, 3) uint8 frames, aligned with ``observations``."""
    terminated: bool = False
    """The last transition ends the episode in a state where the task ended it (:func:`ends_terminated`)."""

    @property
    def steps(self) -> int:
        """Number of transitions n."""
        return int(self.rewards.shape[0])

    @property
    def terminations(self) -> np.ndarray:
        """(n,) bool, True on the last transition of a segment that ends ``terminated``."""
        out = np.zeros(self.steps, dtype=bool)
        out[-1] = self.terminated
        return out

    @property
    def truncations(self) -> np.ndarray:
        """(n,) bool, True on the last transition unless it is terminal: the trajectory stops there (time limit, stop
        or left-out step)."""
        out = np.zeros(self.steps, dtype=bool)
        out[-1] = not self.terminated
        return out


def _frames(arrays: Mapping[str, np.ndarray], rows: int, where: str) -> dict[str, np.ndarray]:
    frames = {}
    for name, value in arrays.items():
        if not name.startswith(CAMERA_PREFIX):
            continue
        if value.dtype != np.uint8 or value.ndim != 4 or value.shape[0] != rows or value.shape[3] != 3:
            raise UserError(f"{where}: {name} must be RGB frames of shape ({rows}, H, W, 3) and dtype uint8; "
                            f"got {value.shape} {value.dtype}")
        frames[name.removeprefix(CAMERA_PREFIX)] = value
    return frames


def trajlog_segments(directory: str | os.PathLike[str], include_partial: bool = False, *, strict: bool = False,
                     on_skip: OnSkip | None = None) -> list[Segment]:
    """The usable transitions of a log directory (the same ones as :func:`trajlog_to_dataset`), as segments."""
    segments = []
    for ep in read_episodes(directory, strict=strict, on_skip=on_skip):
        if (not include_partial and ep.meta.get("complete") is False) or ep.steps == 0:
            continue
        obs = np.asarray(ep["obs"], dtype=np.float64)
        action = np.asarray(ep["action"], dtype=np.float64)
        reward = np.asarray(ep["reward"], dtype=np.float64)
        frames = _frames(ep.arrays, ep.steps + 1, f"episode {ep.index} of {directory}")
        ok = usable_transitions(obs, action, reward)
        # Runs of True in ok: [start, stop) pairs from the edges of the 0/1 sequence.
        edges = np.flatnonzero(np.diff(np.concatenate(([0], ok.astype(np.int8), [0]))))
        for start, stop in zip(edges[::2], edges[1::2], strict=True):
            segments.append(Segment(
                episode=ep.index, start=int(start),
                observations=obs[start:stop + 1].astype(np.float32),
                actions=clip_action(action[start:stop]).astype(np.float32),
                rewards=reward[start:stop].astype(np.float32),
                frames={k: v[start:stop + 1] for k, v in frames.items()},
                terminated=ends_terminated(ep.meta, int(stop), ep.steps),
            ))
    if not segments:
        raise _no_transitions(directory, include_partial)
    return segments


def log_env_id(info: RunInfo, env_id: str | None = None) -> str:
    """The gymnasium id of the task a log directory's episodes ran: ``env_id`` when given, else what the run
    recorded (simulated logs: ``env_id``; deploy: ``task_variant``), else its task's."""
    recorded = info.extra.get("env_id") or info.extra.get("task_variant") or info.task
    name = resolve_env_id(env_id or str(recorded))
    try:
        task = make_task(name)
    except KeyError:
        raise ParameterError("env_id", f"{name!r} is not one of the s2r environments "
                             f"({', '.join(TASK_IDS.values())})") from None
    if task.spec.name != info.task:
        raise ParameterError("env_id", f"{name!r} is the task {task.spec.name!r}, but the logs are of {info.task!r}")
    return name


def dataset_metadata(directory: str | os.PathLike[str], segments: list[Segment],
                     env_id: str | None = None) -> dict[str, Any]:
    """What a dataset keeps about the logs it was made of (JSON-ready): task, env id, robot, joints, control
    period and rate, the observation layout (each block's name, unit and [start, stop) in the vector), cameras."""
    info = read_run(directory)
    name = log_env_id(info, env_id)
    spec = make_task(name).spec
    obs_size = int(segments[0].observations.shape[1])
    if obs_size != spec.obs_layout.size:
        raise UserError(f"{directory}: observations have {obs_size} entries, but {name}'s layout has "
                        f"{spec.obs_layout.size}")
    blocks, start = [], 0
    for f in spec.obs_layout.fields:
        blocks.append({"name": f.name, "size": f.size, "unit": f.unit, "start": start, "stop": start + f.size,
                       "doc": f.doc})
        start += f.size
    cameras = sorted(segments[0].frames)
    return {
        "env_id": name,
        "task": info.task,
        "robot": info.robot,
        "source": info.source,
        "joint_names": list(info.joint_names),
        "passive_joints": list(info.passive_joints),
        "control_period_s": info.control_period,
        "fps": 1.0 / info.control_period,
        "observation_layout": blocks,
        "action": "normalized joint targets in [-1, 1], one per joint in joint_names order",
        "cameras": {c: list(segments[0].frames[c].shape[1:]) for c in cameras},
        "config_hash": info.config_hash,
        "source_episodes": sorted({s.episode for s in segments}),
        "run": dict(info.extra),
    }


def observation_names(metadata: Mapping[str, Any]) -> list[str]:
    """One name per observation entry, ``block[i]`` (``block`` alone for a block of one)."""
    names = []
    for b in metadata["observation_layout"]:
        names += [b["name"]] if b["size"] == 1 else [f"{b['name']}[{i}]" for i in range(b["size"])]
    return names


def integer_fps(control_period: float) -> int:
    """The control rate as the whole frames per second LeRobot needs; a period that is no such rate is an error."""
    fps = round(1.0 / control_period)
    if fps < 1 or not math.isclose(fps * control_period, 1.0, rel_tol=1e-6):
        raise UserError(f"control period {control_period} s is not a whole number of frames per second, which the "
                        "LeRobot format needs")
    return fps


def save_dataset(data: dict[str, np.ndarray], path: str | os.PathLike[str]) -> Path:
    """Write a dataset as an uncompressed ``.npz`` (temporary name, then rename); returns the path."""
    p = Path(path)
    if p.suffix != ".npz":
        raise UserError(f"dataset file {str(p)!r} must end in .npz")
    with atomic_path(p) as tmp, tmp.open("wb") as fh:
        np.savez(fh, **data)  # type: ignore[arg-type]
    return p
