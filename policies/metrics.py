"""What a training run reports: per-interval statistics of the training episodes and the updates, the rows of
``metrics.jsonl`` (the same rows go to TensorBoard) and the progress bar's fields."""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from policies.collector import Episode
from policies.rundir import Row
from s2r.core.errors import UserError

RECENT_EPISODES = 20
"""Training episodes averaged for the progress bar."""


class ScalarWriter(Protocol):
    """The part of TensorBoard's ``SummaryWriter`` the metrics use."""

    def add_scalar(self, tag: str, scalar_value: float, global_step: int) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


def summary_writer(log_dir: Path, purge_step: int | None) -> ScalarWriter:
    """A TensorBoard writer (``purge_step``: events from there on, left by an interrupted run, are dropped)."""
    try:
        # tensorboard is optional and slow to import: only runs that write a run directory load it.
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise UserError(
            "TensorBoard logging needs the Python package 'tensorboard', which is not installed; "
            "install it with: pip install tensorboard"
        ) from exc
    writer: ScalarWriter = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)
    return writer


@dataclass
class Interval:
    """What happened since the last training row."""

    step0: int
    """Environment steps at the interval's start."""
    t0: float = field(default_factory=time.perf_counter)
    eval_time_s: float = 0.0
    """Seconds spent evaluating (not counted in ``steps_per_s``)."""
    episodes: list[Episode] = field(default_factory=list)
    update_sums: dict[str, float] = field(default_factory=dict)
    update_counts: dict[str, int] = field(default_factory=dict)


SB3_TAGS: dict[tuple[str, str], str] = {
    ("train", "return_mean"): "rollout/ep_rew_mean",
    ("train", "episode_length"): "rollout/ep_len_mean",
    ("train", "success_rate"): "rollout/success_rate",
    ("train", "steps_per_s"): "time/fps",
    ("train", "episodes"): "time/episodes",
    ("train", "alpha"): "train/ent_coef",
    ("train", "alpha_loss"): "train/ent_coef_loss",
    ("eval", "return_mean"): "eval/mean_reward",
    ("finetune", "return"): "rollout/ep_rew_mean",
    ("finetune", "length"): "rollout/ep_len_mean",
    ("finetune", "success"): "rollout/success_rate",
    ("finetune", "critic_loss"): "train/critic_loss",
    ("finetune", "actor_loss"): "train/actor_loss",
    ("finetune", "alpha"): "train/ent_coef",
    ("finetune", "alpha_loss"): "train/ent_coef_loss",
}
"""Stable-Baselines3's names for the same scalars, written beside s2r's (``kind/key``) so that an SB3 user's
TensorBoard layouts and habits find them. The other keys already read as SB3's (``train/critic_loss``,
``train/actor_loss``, ``eval/success_rate``). Fine-tuning's rows (one per robot episode) get the same names."""


def tensorboard_scalars(row: Row) -> dict[str, float]:
    """A metrics row as TensorBoard scalars: ``kind/key`` for every number, plus its :data:`SB3_TAGS` alias."""
    kind = row["kind"]
    out: dict[str, float] = {}
    for k, v in row.items():
        if k not in ("kind", "step") and isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{kind}/{k}"] = v
            alias = SB3_TAGS.get((kind, k))
            if alias is not None:
                out[alias] = v
    return out


class Metrics:
    """Interval statistics and the rows written so far; with ``metrics_file``, every row is appended to it (and
    to TensorBoard once :meth:`open_tensorboard` ran)."""

    def __init__(self, metrics_file: Path | None, step: int = 0) -> None:
        self.metrics_file = metrics_file
        self.rows: list[Row] = []
        self.recent: deque[Episode] = deque(maxlen=RECENT_EPISODES)
        self.interval = Interval(step)
        self._writer: ScalarWriter | None = None

    def open_tensorboard(self, log_dir: Path, step: int) -> None:
        self._writer = summary_writer(log_dir, purge_step=step or None)

    def reset_interval(self, step: int) -> None:
        self.interval = Interval(step)

    def episode(self, ep: Episode) -> None:
        self.recent.append(ep)
        self.interval.episodes.append(ep)

    def updates(self, stats: dict[str, float]) -> None:
        """One update's statistics, averaged per key: the actor's and temperature's come from every
        ``policy_delay``-th update only, and averaging them over all updates understated them that many times."""
        acc, counts = self.interval.update_sums, self.interval.update_counts
        for k, v in stats.items():
            acc[k] = acc.get(k, 0.0) + v
            counts[k] = counts.get(k, 0) + 1

    def train_row(self, step: int, head: Row) -> Row:
        """The interval's training row at ``step`` (``head``: the counters it starts with); starts a new
        interval."""
        iv = self.interval
        elapsed = time.perf_counter() - iv.t0 - iv.eval_time_s
        row: Row = {"kind": "train", "step": step, **head,
                    "steps_per_s": (step - iv.step0) / elapsed if elapsed > 0 else None}
        if iv.episodes:
            row["return_mean"] = float(np.mean([e.episode_return for e in iv.episodes]))
            row["episode_length"] = float(np.mean([e.length for e in iv.episodes]))
            succ = [e.success for e in iv.episodes if e.success is not None]
            row["success_rate"] = float(np.mean(succ)) if succ else None
            terms: dict[str, list[float]] = {}
            for e in iv.episodes:
                for k, v in e.terms.items():
                    terms.setdefault(k, []).append(v)
            for k, values in terms.items():
                row[f"reward_terms/{k}"] = float(np.mean(values))
        row.update(self.update_means())
        self.reset_interval(step)
        return row

    def update_means(self) -> dict[str, float]:
        """Each update statistic's mean over the updates since the last call (or the interval's start)."""
        iv = self.interval
        means = {k: v / iv.update_counts[k] for k, v in iv.update_sums.items()}
        iv.update_sums, iv.update_counts = {}, {}
        return means

    def write(self, row: Row) -> None:
        self.rows.append(row)
        if self.metrics_file is None:
            return
        with self.metrics_file.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self._writer is not None:
            for tag, v in tensorboard_scalars(row).items():
                self._writer.add_scalar(tag, v, row["step"])
            self._writer.flush()

    def progress_fields(self) -> dict[str, str]:
        """Mean return and success of the recent training episodes, for the progress bar."""
        fields: dict[str, str] = {}
        if self.recent:
            fields["return"] = f"{np.mean([e.episode_return for e in self.recent]):.1f}"
            succ = [e.success for e in self.recent if e.success is not None]
            if succ:
                fields["success"] = f"{np.mean(succ):.2f}"
        return fields

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
