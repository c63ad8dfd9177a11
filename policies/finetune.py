"""Fine-tuning's learning from real data: the learner built from the deployed run, its replay of the robot's
transitions, mixed batches, updates, checkpoints, and the gate replayed from the logs.

The robot side (episodes, exports, the incumbent's files, ``s2r finetune``) is :mod:`s2r.finetune`, whose
docstring says how the two work together.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from policies.checkpoint import LAST_NAME as RUN_LAST
from policies.checkpoint import load_checkpoint, resolve_checkpoint_path, save_checkpoint
from policies.config import config_from_mapping
from policies.dataset import trajlog_to_dataset
from policies.finetune_config import FinetuneConfig
from policies.gate import Gate
from policies.replay import Batch, ReplayBuffer
from policies.train import REPLAY_NAME, Trainer
from s2r.core.errors import ParameterError, UserError
from s2r.core.trajlog import episode_files, read_episodes

META_KEY = "finetune"
"""Key of an episode log's meta holding its kind, round and whether the gate counts it."""


def deployed_checkpoint(run_dir: Path) -> Path:
    """The checkpoint ``s2r export RUN_DIR`` and ``s2r deploy RUN_DIR`` use: the run's best.pt, else last.pt."""
    if not run_dir.is_dir():
        raise UserError(f"run directory {str(run_dir)!r} does not exist")
    return resolve_checkpoint_path(run_dir)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_trainer(cfg: FinetuneConfig, resume_state: Path | None = None) -> tuple[Any, dict[str, Any]]:
    """A :class:`~policies.train.Trainer` for the run's config holding the deployed policy with its training state
    (or, with ``resume_state``, the learner of that fine-tuning checkpoint), its simulation replay loaded when the
    batches use it; and where it started from (``checkpoint``, ``sha256``, ``training_state_from``)."""
    deployed = deployed_checkpoint(cfg.run_dir)
    source = load_checkpoint(deployed)
    # The robot is the only world now: no simulated randomization or model mining. No weight averaging either: the
    # deployed policy (an average, if the run averaged) is where the actor starts, and a round's few hundred
    # updates are the candidate itself.
    train_cfg = config_from_mapping({**{k: v for k, v in source.config.items() if k not in ("randomize", "epopt_eps")},
                                     "policy_average": 0.0})
    trainer = Trainer(train_cfg)
    sim_replay = cfg.run_dir / REPLAY_NAME if cfg.sim_fraction > 0 else None
    start = {"checkpoint": str(deployed), "sha256": sha256_of(deployed), "training_state_from": str(deployed)}
    if resume_state is not None:
        trainer.load_training(resume_state, sim_replay)
        start["resumed_from"] = str(resume_state)
    elif source.training is not None:
        trainer.load_training(deployed, sim_replay)
    else:
        fallback = cfg.run_dir / RUN_LAST
        if fallback == deployed or not fallback.is_file():
            raise UserError(f"{str(deployed)!r} holds no training state (critics, optimizers) and there is no "
                            f"{RUN_LAST} beside it to take them from")
        trainer.load_training(fallback, sim_replay)
        trainer.load_policy(source)
        start["training_state_from"] = str(fallback)
    return trainer, start


def transitions_from_logs(log_dir: Path) -> dict[str, np.ndarray] | None:
    """Every usable transition logged so far (``None`` when there is none)."""
    if not episode_files(log_dir):
        return None
    try:
        return trajlog_to_dataset(log_dir, include_partial=True)
    except UserError:
        return None  # episodes without a single good transition


class Finetuner:
    """The learner side: real replay, mixed batches, updates, checkpoints and exports."""

    def __init__(self, cfg: FinetuneConfig, trainer: Any, real_capacity: int) -> None:
        self.cfg = cfg
        self.trainer = trainer
        self.batch_size = cfg.batch_size or trainer.cfg.batch_size
        self.real = ReplayBuffer(max(real_capacity, 1), trainer.obs_dim, trainer.act_dim, trainer.device,
                                 cfg.seed + 11)
        self.updates = 0
        self.critic_warmed = False
        """Whether the critic-only warm-up has run (it runs once, before the actor's first update)."""

    def add_dataset(self, data: dict[str, np.ndarray]) -> int:
        """Add transitions (``policies.dataset`` keys); returns how many."""
        n = len(data["rewards"])
        for i in range(n):
            self.real.add(data["observations"][i], data["actions"][i], float(data["rewards"][i]),
                          data["next_observations"][i], bool(data["terminals"][i]))
        return n

    def explore(self, obs: np.ndarray) -> np.ndarray:
        """The stochastic actor's action for one raw observation (the controller's policy)."""
        t = self.trainer
        x = torch.from_numpy(t.normalize(np.asarray(obs, dtype=np.float32))[None]).to(t.device)
        with torch.no_grad():
            out: np.ndarray = t.learner.explore(x)[0].cpu().numpy()
        return out

    def act(self, obs: np.ndarray) -> np.ndarray:
        """The deterministic policy (normalizer + actor, as exported) for raw observations ``[N, obs_dim]``."""
        t = self.trainer
        with torch.inference_mode():
            out: np.ndarray = t.policy_module()(torch.as_tensor(np.asarray(obs, dtype=np.float32),
                                                                device=t.device)).cpu().numpy()
        return out

    def _batch(self) -> Any:
        t = self.trainer
        n_sim = round(self.cfg.sim_fraction * self.batch_size) if len(t.buffer) else 0
        real = t.sample(self.real, self.batch_size - n_sim)
        if not n_sim:
            return real
        sim = t.sample(t.buffer, n_sim)
        return Batch.concat([real, sim])

    def warm_up_critic(self) -> tuple[int, float]:
        """``critic_warmup`` critic-only steps (once); returns (steps taken, seconds)."""
        if self.critic_warmed or len(self.real) == 0:
            return 0, 0.0
        t0 = time.perf_counter()
        for _ in range(self.cfg.critic_warmup):
            self.trainer.learner.update(self._batch(), update_actor=False)
        self.critic_warmed = True
        self.updates += self.cfg.critic_warmup
        self.trainer.state.updates += self.cfg.critic_warmup
        return self.cfg.critic_warmup, time.perf_counter() - t0

    def update(self, steps: int) -> tuple[int, float]:
        """The critic warm-up when it has not run, then ``updates_per_step * steps`` gradient steps on mixed
        batches; returns (steps taken, seconds)."""
        n = round(self.cfg.updates_per_step * steps)
        if len(self.real) == 0:
            return 0, 0.0
        warm, took = self.warm_up_critic()
        if n == 0:
            return warm, took
        t0 = time.perf_counter()
        for _ in range(n):
            self.trainer.learner.update(self._batch())
        self.updates += n
        self.trainer.state.updates += n
        return warm + n, took + time.perf_counter() - t0

    def save(self, path: Path, episodes_done: int) -> None:
        """The learner (with training state) as a checkpoint, written atomically."""
        ckpt = self.trainer.checkpoint(training=True)
        ckpt.training["finetune"] = {"episodes_done": episodes_done, "updates": self.updates,
                                     "critic_warmed": self.critic_warmed}
        save_checkpoint(path, ckpt)

    def restore_progress(self, ckpt_training: dict[str, Any] | None) -> None:
        """Counters of a resumed run from its ``last.pt``'s ``finetune`` entry."""
        state = (ckpt_training or {}).get("finetune") or {}
        self.updates = int(state.get("updates", 0))
        self.critic_warmed = bool(state.get("critic_warmed", False))

    def freeze(self, ckpt: Path) -> Path:
        """The current deterministic policy as a checkpoint (no training state), for the caller to export; returns
        ``ckpt``."""
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(ckpt, self.trainer.checkpoint(training=False))
        return ckpt


def replay_gate(cfg: FinetuneConfig, logs: Path) -> Gate:
    """The gate after the logged episodes, from each one's outcome (checked against the schedule)."""
    gate = Gate(cfg.schedule, cfg.confidence)
    if not logs.is_dir() or not episode_files(logs):
        return gate
    for k, ep in enumerate(read_episodes(logs)):
        meta = ep.meta.get(META_KEY)
        kind, round_ = cfg.schedule.kind(k)
        if not isinstance(meta, dict) or "kind" not in meta:
            raise ParameterError("resume", f"cannot continue: episode {k} in {str(logs)!r} has no fine-tuning kind in "
                                 "its meta (an older s2r finetune wrote it); start a new {out}")
        if (meta["kind"], meta.get("round")) != (kind, round_) or meta.get("gate") != _gate_settings(cfg):
            raise ParameterError("resume", f"cannot continue: episode {k} was a {meta['kind']} episode of round "
                                 f"{meta.get('round')} under the gate settings {meta.get('gate')}; with these settings "
                                 f"it would be a {kind} episode of round {round_} under {_gate_settings(cfg)}: resume "
                                 "with the run's {incumbent_episodes}, {explore_episodes}, {gate_episodes}, "
                                 "{reeval_episodes} and {confidence}")
        gate.record(k, bool(ep.meta.get("success", False)), bool(meta.get("counted", True)))
    return gate


def _gate_settings(cfg: FinetuneConfig) -> dict[str, Any]:
    return {**asdict(cfg.schedule), "confidence": cfg.confidence}
