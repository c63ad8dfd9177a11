"""Trajectory logs (``s2r.core.trajlog``) as an offline-RL dataset with D4RL's key names.

One row per transition of every logged episode (complete ones; stopped ones on request)::

    observations       (N, O) float32   observation the policy acted on
    actions            (N, J) float32   the action as applied: the policy's output clipped to [-1, 1]
    rewards            (N,)   float32   reward of the step (the task's terms, summed)
    next_observations  (N, O) float32   observation after the step
    terminals          (N,)   bool      always False: the tasks end by time limit only
    timeouts           (N,)   bool      True on the last transition of each episode (the trajectory ends)
    episode            (N,)   int64     index of the episode file the transition came from

Transitions with a stale reading on either side, or a policy output the safety filter refused (NaN or
infinity), are left out: no value in them is a real observation or an action the robot performed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from s2r.core.atomicio import atomic_path
from s2r.core.errors import ParameterError, UserError
from s2r.core.trajlog import OnSkip, read_episodes
from sim.tasks.actions import clip_action

DATASET_KEYS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts", "episode")


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
        ok = (np.all(np.isfinite(obs[:-1]), axis=1) & np.all(np.isfinite(obs[1:]), axis=1)
              & np.all(np.isfinite(action), axis=1) & np.isfinite(reward))
        idx = np.flatnonzero(ok)
        if idx.size == 0:
            continue
        timeouts = np.zeros(idx.size, dtype=bool)
        timeouts[-1] = True
        parts["observations"].append(obs[idx].astype(np.float32))
        parts["actions"].append(clip_action(action[idx]).astype(np.float32))
        parts["rewards"].append(reward[idx].astype(np.float32))
        parts["next_observations"].append(obs[idx + 1].astype(np.float32))
        parts["terminals"].append(np.zeros(idx.size, dtype=bool))
        parts["timeouts"].append(timeouts)
        parts["episode"].append(np.full(idx.size, ep.index, dtype=np.int64))
    if not parts["rewards"]:
        raise ParameterError("directory", f"{str(directory)!r} holds no usable transitions (no "
                             f"{'' if include_partial else 'complete '}episode with good readings"
                             f"{'' if include_partial else '; {include_partial} also uses stopped ones'})")
    return {k: np.concatenate(v) for k, v in parts.items()}


def save_dataset(data: dict[str, np.ndarray], path: str | os.PathLike[str]) -> Path:
    """Write a dataset as an uncompressed ``.npz`` (temporary name, then rename); returns the path."""
    p = Path(path)
    if p.suffix != ".npz":
        raise UserError(f"dataset file {str(p)!r} must end in .npz")
    with atomic_path(p) as tmp, tmp.open("wb") as fh:
        np.savez(fh, **data)  # type: ignore[arg-type]
    return p
