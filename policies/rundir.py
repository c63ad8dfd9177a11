"""The run directory of ``s2r train`` and what is read from and written to it.

``config.yaml`` (resolved config), ``metrics.jsonl`` (one JSON object per log or eval interval), ``tensorboard/``
(event files), ``last.pt`` and ``best.pt`` (checkpoints, see :mod:`policies.checkpoint`), ``replay.pt`` (replay
buffer, for ``--resume``) and ``learning_curve.png``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from policies.checkpoint import BEST_NAME, LAST_NAME, REPLAY_NAME, Checkpoint, save_atomic, save_checkpoint
from policies.config import CONFIG_NAME, TrainConfig, dump_config
from policies.plot import plot_learning_curve
from policies.replay import Replay
from s2r.core.atomicio import write_text_atomic
from s2r.core.errors import UserError
from s2r.core.yamlfile import load_yaml, read_yaml_file

METRICS_NAME = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
CURVE_NAME = "learning_curve.png"
EVALUATION_FIELDS = ("task", "engine", "env_kwargs", "randomize", "eval_episodes", "seed")
"""Config fields that decide what an evaluation measures: best.pt is only compared across evaluations that share
them."""
Row = dict[str, Any]
"""One line of ``metrics.jsonl``: ``kind`` (``train`` or ``eval``), ``step`` and values (JSON data)."""


def read_rows(path: Path) -> list[Row]:
    """The rows of a ``metrics.jsonl`` (none when it does not exist)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a hard kill
    return rows


def write_rows_atomic(path: Path, rows: Sequence[Row]) -> None:
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))


def load_replay(buffer: Replay, path: Path) -> None:
    """``buffer`` from the replay file ``path`` when it exists; a damaged one only costs the replay (a warning)."""
    if not path.is_file():
        return
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        buffer.load_state_dict(data)
    except Exception as exc:  # a damaged replay file only costs the replay, not the run
        print(f"s2r train: warning: replay buffer not restored ({exc}); refilling from scratch", file=sys.stderr)


class RunFiles:
    """Paths inside a run directory, and its reads and writes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / CONFIG_NAME
        self.metrics = root / METRICS_NAME
        self.tensorboard = root / TENSORBOARD_DIR
        self.last = root / LAST_NAME
        self.best = root / BEST_NAME
        self.replay = root / REPLAY_NAME
        self.curve = root / CURVE_NAME

    def save(self, ckpt: Checkpoint, replay: Replay | None, with_best: bool) -> None:
        """``last.pt``, ``replay.pt`` when ``replay`` is given, and ``best.pt`` when ``with_best``."""
        save_checkpoint(self.last, ckpt)
        if replay is not None:
            save_atomic(replay.state_dict(), self.replay)
        if with_best:
            save_checkpoint(self.best, ckpt)

    def plot(self, rows: Sequence[Row], title: str) -> None:
        """The learning curve (training and evaluation return, evaluation success)."""
        plot_learning_curve(rows, self.curve, title=title)

    def rows_until(self, step: int) -> list[Row]:
        """The rows of ``metrics.jsonl`` up to ``step``, the file cut back to them (a resume continues there)."""
        rows = [r for r in read_rows(self.metrics) if r.get("step", 0) <= step]
        write_rows_atomic(self.metrics, rows)
        return rows

    def write_config(self, cfg: TrainConfig) -> None:
        write_text_atomic(self.config, dump_config(cfg))

    def evaluation_changes(self, cfg: TrainConfig) -> list[str]:
        """Config fields that decide the evaluation episodes and differ from the saved ``config.yaml``."""
        if not self.config.is_file():
            return []
        saved = read_yaml_file(self.config, "the run's config") or {}
        if not isinstance(saved, dict):
            raise UserError(f"cannot resume: the run's {str(self.config)!r} must hold a mapping of config fields, "
                            f"got {type(saved).__name__}")
        now = load_yaml(dump_config(cfg)) or {}
        return [k for k in EVALUATION_FIELDS if saved.get(k) != now.get(k)]
