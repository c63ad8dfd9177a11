"""Trajectory logs as a LeRobot dataset, format v3.0, written with pyarrow (the ``datasets`` extra).

LeRobot's own writer (the ``lerobot-dataset`` package) does not install beside this stack: 0.5.0 needs Python 3.12
and torchvision (another torch), 0.4.4 older numpy and torchvision. The format is small and documented, so it is
written here, and ``LeRobotDataset(repo_id, root=DIR)`` reads it::

    meta/info.json                            fps, robot_type, features (dtype, shape, names), file patterns;
                                              and under "s2r" :func:`policies.dataset.dataset_metadata`
    meta/tasks.parquet                        the task string (the env id) and its task_index
    meta/episodes/chunk-000/file-000.parquet  one row per episode: length, frame range, data file, logged episode
    meta/stats.json                           min, max, mean, std, count of every feature
    data/chunk-000/file-000.parquet           one row per frame

A frame is one step of a :class:`~policies.dataset.Segment`: ``observation.state`` (the policy's observation
vector, one name per entry), ``action`` (normalized, one per joint), ``next.reward``, ``next.done`` (the episode
ends after this step), ``next.terminated`` (where the task ended the episode), ``next.truncated``, ``timestamp``
(frame_index times the control period, as LeRobot expects), and each camera's frame as an image
``observation.images.NAME`` (PNG). As in LeRobot, a frame holds the observation an action was taken on: the
observation after an episode's last action is not stored.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from policies.dataset import Segment, integer_fps, observation_names
from s2r.core.atomicio import new_directory
from s2r.core.errors import UserError

CODEBASE_VERSION = "v3.0"
"""The LeRobot dataset format written (``info.json``'s ``codebase_version``)."""
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
EPISODES_PATH = "meta/episodes/" + CHUNK_FILE + ".parquet"
IMAGE_PREFIX = "observation.images."


def _vector(rows: np.ndarray, dtype: pa.DataType) -> pa.FixedSizeListArray:
    """(N, K) rows as a fixed-size list column (what LeRobot's features of shape (K,) load as)."""
    flat = pa.array(np.ascontiguousarray(rows).reshape(-1), type=dtype)
    return pa.FixedSizeListArray.from_arrays(flat, rows.shape[1])


def _png(frame: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    return buf.getvalue()


def _images(frames: np.ndarray) -> pa.StructArray:
    """Frames as the ``{bytes, path}`` struct of an image feature (Hugging Face ``datasets.Image``)."""
    return pa.array([{"bytes": _png(f), "path": None} for f in frames],
                    type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))


def _stats(values: np.ndarray) -> dict[str, Any]:
    """LeRobot's per-feature statistics over the first axis (per channel, scaled to [0, 1], for images)."""
    if values.ndim == 4:  # (N, H, W, C) uint8 -> per channel, shape (C, 1, 1) as LeRobot keeps them
        v = values.astype(np.float64).transpose(0, 3, 1, 2).reshape(-1, values.shape[3]) / 255.0
        shape: tuple[int, ...] = (values.shape[3], 1, 1)
    else:
        v = values.astype(np.float64).reshape(values.shape[0], -1)
        shape = (v.shape[1],)
    return {"min": v.min(axis=0).reshape(shape).tolist(), "max": v.max(axis=0).reshape(shape).tolist(),
            "mean": v.mean(axis=0).reshape(shape).tolist(), "std": v.std(axis=0).reshape(shape).tolist(),
            "count": [int(v.shape[0])]}


def _task_table(task: str) -> pa.Table:
    # LeRobot reads meta/tasks.parquet with pandas and looks a task up by the frame's index: the task strings must
    # come back as the DataFrame's index, which pandas takes from the "pandas" schema metadata (Arrow's spec of it).
    pandas_meta = {"index_columns": ["task"], "column_indexes": [], "columns": [
        {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
        {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
         "metadata": None}]}
    table = pa.table({"task": pa.array([task], pa.string()), "task_index": pa.array([0], pa.int64())})
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def write_lerobot(segments: list[Segment], metadata: Mapping[str, Any], out: str | os.PathLike[str]) -> Path:
    """Write the segments as a LeRobot v3.0 dataset in the new directory ``out``; returns it.

    An existing ``out`` is never replaced. The dataset is written under a temporary name beside it and renamed when
    complete, so a failed write leaves nothing behind.
    """
    final = Path(out)
    if final.exists():
        raise UserError(f"{final} exists: the LeRobot dataset goes into a new directory")
    fps = integer_fps(float(metadata["control_period_s"]))
    with new_directory(final) as tmp:
        _write(tmp, segments, metadata, fps)
    return final


def _write(root: Path, segments: list[Segment], metadata: Mapping[str, Any], fps: int) -> None:
    cameras = sorted(segments[0].frames)
    lengths = [s.steps for s in segments]
    ends = np.cumsum(lengths)
    n = int(ends[-1])
    frame_index = np.concatenate([np.arange(k, dtype=np.int64) for k in lengths])
    columns: dict[str, np.ndarray] = {
        "observation.state": np.concatenate([s.observations[:-1] for s in segments]),
        "action": np.concatenate([s.actions for s in segments]),
        "next.reward": np.concatenate([s.rewards for s in segments]),
        "next.done": np.concatenate([s.terminations | s.truncations for s in segments]),
        "next.terminated": np.concatenate([s.terminations for s in segments]),
        "next.truncated": np.concatenate([s.truncations for s in segments]),
        "timestamp": (frame_index * float(metadata["control_period_s"])).astype(np.float32),
        "frame_index": frame_index,
        "episode_index": np.repeat(np.arange(len(segments), dtype=np.int64), lengths),
        "index": np.arange(n, dtype=np.int64),
        "task_index": np.zeros(n, dtype=np.int64),
    }
    images = {IMAGE_PREFIX + c: np.concatenate([s.frames[c][:-1] for s in segments]) for c in cameras}

    names = {"observation.state": observation_names(metadata), "action": list(metadata["joint_names"])}
    features: dict[str, dict[str, Any]] = {}
    arrays: dict[str, pa.Array] = {}
    for key, values in columns.items():
        dtype = {"f": "float32", "i": "int64", "b": "bool"}[values.dtype.kind]
        if values.ndim == 2:
            arrays[key] = _vector(values, pa.from_numpy_dtype(np.dtype(dtype)))
            features[key] = {"dtype": dtype, "shape": [values.shape[1]], "names": names.get(key)}
        else:
            arrays[key] = pa.array(values.astype(dtype))
            features[key] = {"dtype": dtype, "shape": [1], "names": None}
    for key, frames in images.items():
        arrays[key] = _images(frames)
        features[key] = {"dtype": "image", "shape": list(frames.shape[1:]), "names": ["height", "width", "channels"]}

    data_file = root / DATA_PATH.format(chunk_index=0, file_index=0)
    data_file.parent.mkdir(parents=True)
    pq.write_table(pa.table(arrays), data_file)

    task = str(metadata["env_id"])
    (root / "meta").mkdir()
    pq.write_table(_task_table(task), root / "meta" / "tasks.parquet")

    episodes = pa.table({
        "episode_index": pa.array(range(len(segments)), pa.int64()),
        "tasks": pa.array([[task]] * len(segments), pa.list_(pa.string())),
        "length": pa.array(lengths, pa.int64()),
        "data/chunk_index": pa.array([0] * len(segments), pa.int64()),
        "data/file_index": pa.array([0] * len(segments), pa.int64()),
        "dataset_from_index": pa.array(ends - lengths, pa.int64()),
        "dataset_to_index": pa.array(ends, pa.int64()),
        "meta/episodes/chunk_index": pa.array([0] * len(segments), pa.int64()),
        "meta/episodes/file_index": pa.array([0] * len(segments), pa.int64()),
        # Where each episode came from: the logged episode and its control step of the first frame.
        "s2r/source_episode": pa.array([s.episode for s in segments], pa.int64()),
        "s2r/source_step": pa.array([s.start for s in segments], pa.int64()),
    })
    episodes_file = root / EPISODES_PATH.format(chunk_index=0, file_index=0)
    episodes_file.parent.mkdir(parents=True)
    pq.write_table(episodes, episodes_file)

    stats = {key: _stats(values) for key, values in {**columns, **images}.items()}
    (root / "meta" / "stats.json").write_text(json.dumps(stats, indent=2))
    info = {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": metadata["robot"],
        "total_episodes": len(segments),
        "total_frames": n,
        "total_tasks": 1,
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 200,
        "fps": fps,
        "splits": {"train": f"0:{len(segments)}"},
        "data_path": DATA_PATH,
        "video_path": None,
        "features": features,
        "s2r": dict(metadata),
    }
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=2))
