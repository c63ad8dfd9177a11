"""Trajectory logs as a Minari dataset (the ``datasets`` extra), with the env spec to recover the environment.

Each :class:`~policies.dataset.Segment` is one Minari episode: ``observations`` (n+1), ``actions``, ``rewards``,
``terminations`` (True on the last step where the task ended the episode, as a walk past its tilt bound) and
``truncations`` (True on the last step otherwise), and in ``infos`` the logged episode and
step each observation came from (``source_episode``, ``source_step``). With cameras, an observation is a dict: the
vector under ``state`` and each camera's RGB frame under ``images``. The dataset's metadata keeps
:func:`policies.dataset.dataset_metadata` as JSON under ``s2r``.

Minari keeps its datasets under one root (``MINARI_DATASETS_PATH``, default ``~/.minari/datasets``), a dataset
``NAMESPACE/NAME-vN`` in ``ROOT/NAMESPACE/NAME-vN/data``. :func:`write_minari` writes into a root it is given
(the environment variable is left alone), so ``minari.load_dataset`` reads it with ``MINARI_DATASETS_PATH=ROOT``,
and ``minari.MinariDataset(ROOT/ID/data)`` without.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from minari import MinariDataset, __version__
from minari.data_collector.episode_buffer import EpisodeBuffer
from minari.dataset.minari_dataset import parse_dataset_id
from minari.dataset.minari_storage import MinariStorage

from policies.dataset import Segment
from s2r.core.atomicio import new_directory
from s2r.core.errors import ParameterError, UserError

DATA_FORMAT = "arrow"
"""Minari's storage (its other, hdf5, needs h5py besides)."""


def default_dataset_id(metadata: Mapping[str, Any]) -> str:
    """``s2r/TASK-ROBOT-SOURCE-v0``, e.g. ``s2r/dclaw-turn-dclaw-emulator-v0``."""
    return f"s2r/{metadata['task']}-{metadata['robot']}-{metadata['source']}-v0"


def _observation_space(segment: Segment) -> gym.Space:
    state = gym.spaces.Box(-np.inf, np.inf, segment.observations.shape[1:], np.float32)
    if not segment.frames:
        return state
    images: dict[str, gym.Space] = {name: gym.spaces.Box(0, 255, f.shape[1:], np.uint8)
                                    for name, f in sorted(segment.frames.items())}
    return gym.spaces.Dict({"state": state, "images": gym.spaces.Dict(images)})


def _episode(index: int, segment: Segment) -> EpisodeBuffer:
    observations: Any = segment.observations
    if segment.frames:
        observations = {"state": segment.observations, "images": dict(segment.frames)}
    rows = segment.steps + 1
    return EpisodeBuffer(
        id=index, observations=observations, actions=segment.actions, rewards=segment.rewards,
        terminations=segment.terminations, truncations=segment.truncations,
        # Lists, not 1-d arrays: Minari 0.5.4's arrow storage cannot read back a 1-d array info (empty shape).
        infos={"source_episode": [segment.episode] * rows,
               "source_step": list(range(segment.start, segment.start + rows))},
    )


def write_minari(segments: list[Segment], metadata: Mapping[str, Any], root: str | os.PathLike[str],
                 dataset_id: str | None = None) -> Path:
    """Write the segments as Minari dataset ``dataset_id`` under the datasets root ``root``; returns its directory.

    An existing dataset of that id is never replaced (Minari's rule too). The dataset is written under a temporary
    name in its parent directory and renamed when complete, so a failed write leaves nothing behind.
    """
    dataset_id = dataset_id or default_dataset_id(metadata)
    try:
        parse_dataset_id(dataset_id)
    except ValueError:
        raise ParameterError("dataset_id", f"{dataset_id!r} is not a Minari dataset id, (NAMESPACE/)NAME-vN"
                             ) from None
    final = Path(root) / dataset_id
    if final.exists():
        raise UserError(f"{final} exists: a Minari dataset is never overwritten; choose another id or root")
    env_spec = gym.spec(metadata["env_id"])
    with new_directory(final) as tmp:
        storage = MinariStorage.new(tmp / "data", observation_space=_observation_space(segments[0]),
                                    action_space=gym.spaces.Box(-1.0, 1.0, segments[0].actions.shape[1:], np.float32),
                                    env_spec=env_spec, data_format=DATA_FORMAT, jpeg_encoding=False)
        storage.update_metadata({
            "dataset_id": dataset_id,
            "minari_version": __version__,
            "algorithm_name": str(metadata["run"].get("policy", "unknown")),
            "description": f"s2r trajectory logs of {metadata['env_id']} on the {metadata['robot']} "
                           f"({metadata['source']}), {metadata['fps']:g} steps per second",
            "requirements": ["s2r"],
            "s2r": json.dumps(metadata),
        })
        storage.update_episodes(_episode(i, s) for i, s in enumerate(segments))
    return final


def load_minari(path: str | os.PathLike[str]) -> MinariDataset:
    """The Minari dataset in directory ``path`` (what :func:`write_minari` returned), whatever the datasets root."""
    return MinariDataset(Path(path) / "data")
