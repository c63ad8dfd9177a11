"""Fine-tuning on the robot: SAC continues from a simulation run, learning from real episodes.

``s2r finetune RUN_DIR --robot hardware_configs/dclaw.yaml --driver emulator --episodes N`` loads the run's
``last.pt`` (actor, critics, temperature, optimizers) and runs episodes on the robot through the same
:class:`~robot.controller.Controller` as ``s2r deploy``: scripted reset, fixed-rate loop, safety filter and
watchdog all active. Choices, and why:

* **Learning between episodes.** Gradient steps run after an episode ends and before the next reset, while
  the servos hold their last command. A step takes milliseconds; inside the loop it would land in the
  middle of a control cycle, and in another process it would compete for the same two cores the loop
  needs. Between episodes it cannot delay a cycle. Each episode's update time is reported next to the
  loop timing of the episodes, so the claim can be checked.
* **Exploration** is the stochastic SAC actor, as in simulation; the safety filter clips and rate-limits
  whatever it proposes, exactly as on ``s2r deploy``.
* **Replay.** Real transitions live in their own buffer, rebuilt from the trajectory logs at start
  (:func:`robot.dataset.trajlog_to_dataset`), so a resumed run has every completed episode's transitions,
  even one that finished after the last checkpoint. Each batch draws ``sim_fraction`` of its transitions
  from the simulation run's ``replay.pt`` (when present) and the rest from the robot.
* **Observation normalization** stays at the simulation run's statistics: the learner and every exported
  policy keep one input scale.
* **After every episode**: updates, then ``OUT/last.pt`` (atomically), then a verified ONNX file
  (``OUT/onnx/episode_NNNNNN.onnx`` and a copy as ``OUT/policy.onnx``).
* **Resume** counts the episode files in ``OUT/logs``: those episodes are done. The learner continues from
  ``OUT/last.pt`` (from the simulation run when no episode finished yet).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from s2r.errors import UserError

LOG_DIR = "logs"
ONNX_DIR = "onnx"
LAST_NAME = "last.pt"
POLICY_NAME = "policy.onnx"
SUMMARY_NAME = "finetune.json"
DEFAULT_OUT = "finetune"
"""Output directory inside the run directory unless ``--out`` says otherwise."""
EXPORT_SAMPLES = 1000
"""Observations each per-episode ONNX export is verified on (the exporter's minimum)."""


@dataclass(frozen=True)
class FinetuneConfig:
    """One fine-tuning run on a robot."""

    run_dir: Path
    """The simulation run to continue (its ``last.pt`` holds the learner's training state)."""
    robot: Path
    """Hardware config of the robot (``hardware_configs/dclaw.yaml``)."""
    driver: str = "emulator"
    """Bus driver: ``emulator``, ``dynamixel`` or ``mock``."""
    port: str | None = None
    """Serial device (or an emulator's pty) instead of the config's."""
    reality: Path | None = None
    """Reality file of an emulator this run starts itself."""
    episodes: int = 10
    """Real episodes in total, across resumes."""
    out: Path | None = None
    """Output directory; default ``RUN_DIR/finetune``."""
    updates_per_step: float = 1.0
    """Gradient steps per real transition of the episode just run."""
    sim_fraction: float = 0.5
    """Share of each batch drawn from the simulation replay (0 = real transitions only)."""
    batch_size: int | None = None
    """Transitions per gradient step; default the simulation run's."""
    seed: int = 0
    """Seed of the episodes' start states and of exploration."""
    resume: bool = False
    """Continue the run in ``out``."""
    export_every: int = 1
    """Export a verified ONNX file after every this many episodes (and after the last)."""

    def __post_init__(self) -> None:
        if self.episodes < 0:
            raise UserError(f"--episodes must be >= 0, got {self.episodes}")
        if not 0.0 <= self.sim_fraction < 1.0:
            raise UserError(f"--sim-fraction must be in [0, 1), got {self.sim_fraction}")
        if not (self.updates_per_step >= 0 and math.isfinite(self.updates_per_step)):
            raise UserError(f"--updates-per-step must be a finite number >= 0, got {self.updates_per_step}")
        if self.export_every < 1:
            raise UserError(f"export_every must be at least 1, got {self.export_every}")

    @property
    def out_dir(self) -> Path:
        return self.out if self.out is not None else self.run_dir / DEFAULT_OUT


@dataclass
class EpisodeReport:
    """One fine-tuning episode."""

    episode: int
    success: bool
    episode_return: float
    steps: int
    real_transitions: int
    updates: int
    update_time_s: float
    export_time_s: float
    onnx: str | None


@dataclass
class FinetuneSummary:
    """What ``s2r finetune`` reports (``--json`` prints it)."""

    out_dir: str
    episodes_done: int
    resumed_from_episode: int
    episodes: list[EpisodeReport] = field(default_factory=list)
    success_rate: float | None = None
    return_mean: float | None = None
    loop: dict[str, Any] = field(default_factory=dict)
    update_time_s_max: float = 0.0
    stop_kind: str = "completed"
    stop_reason: str = ""
    torque_off: bool = True
    """Whether the servos confirmed the torque off at the end (``s2r finetune`` exits non-zero when not, as
    ``s2r deploy`` does)."""
    policy: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _source_checkpoint(run_dir: Path) -> Path:
    from policies.train import LAST_NAME as RUN_LAST

    path = run_dir / RUN_LAST
    if not run_dir.is_dir():
        raise UserError(f"run directory {str(run_dir)!r} does not exist")
    if not path.is_file():
        raise UserError(f"{str(run_dir)!r} holds no {RUN_LAST} to continue from (train it with s2r train first)")
    return path


def build_trainer(cfg: FinetuneConfig, state: Path) -> Any:
    """A :class:`~policies.train.Trainer` for the run's config holding the learner of ``state``, its
    simulation replay loaded when the batches use it."""
    from policies.checkpoint import load_checkpoint
    from policies.config import config_from_mapping
    from policies.train import REPLAY_NAME, Trainer

    source = load_checkpoint(_source_checkpoint(cfg.run_dir))
    # The robot is the only world now: no simulated randomization or model mining.
    train_cfg = config_from_mapping({k: v for k, v in source.config.items() if k not in ("randomize", "epopt_eps")})
    trainer = Trainer(train_cfg)
    sim_replay = cfg.run_dir / REPLAY_NAME if cfg.sim_fraction > 0 else None
    trainer.load_training(state, sim_replay)
    return trainer


def transitions_from_logs(log_dir: Path) -> dict[str, np.ndarray] | None:
    """Every usable transition logged so far (``None`` when there is none)."""
    from robot.dataset import trajlog_to_dataset
    from robot.trajlog import episode_files

    if not episode_files(log_dir):
        return None
    try:
        return trajlog_to_dataset(log_dir, include_partial=True)
    except UserError:
        return None  # episodes without a single good transition


class Finetuner:
    """The learner side: real replay, mixed batches, updates, checkpoints and exports."""

    def __init__(self, cfg: FinetuneConfig, trainer: Any, real_capacity: int) -> None:
        from policies.replay import ReplayBuffer

        self.cfg = cfg
        self.trainer = trainer
        self.batch_size = cfg.batch_size or trainer.cfg.batch_size
        self.real = ReplayBuffer(max(real_capacity, 1), trainer.obs_dim, trainer.act_dim, trainer.device,
                                 cfg.seed + 11)
        self.updates = 0

    def add_dataset(self, data: dict[str, np.ndarray]) -> int:
        """Add transitions (``robot.dataset`` keys); returns how many."""
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

    def update(self, steps: int) -> tuple[int, float]:
        """``updates_per_step * steps`` gradient steps on mixed batches; returns (steps taken, seconds)."""
        from policies.replay import Batch

        n = round(self.cfg.updates_per_step * steps)
        if n == 0 or len(self.real) == 0:
            return 0, 0.0
        t0 = time.perf_counter()
        t = self.trainer
        n_sim = round(self.cfg.sim_fraction * self.batch_size) if len(t.buffer) else 0
        n_real = self.batch_size - n_sim
        for _ in range(n):
            real = t.sample(self.real, n_real)
            if n_sim:
                sim = t.sample(t.buffer, n_sim)
                batch = Batch(*(torch.cat([getattr(real, f), getattr(sim, f)]) for f in
                                ("obs", "actions", "rewards", "next_obs", "terminated")))
            else:
                batch = real
            t.learner.update(batch)
        self.updates += n
        t.state.updates += n
        return n, time.perf_counter() - t0

    def save(self, path: Path, episodes_done: int) -> None:
        """The learner (with training state) as a checkpoint, written atomically."""
        from policies.checkpoint import save_checkpoint

        t = self.trainer
        ckpt = t.checkpoint(training=True)
        ckpt.training["finetune"] = {"episodes_done": episodes_done, "updates": self.updates}
        save_checkpoint(path, ckpt)

    def export(self, ckpt: Path, out: Path, seed: int) -> Path:
        from export.onnx_export import ExportConfig, export_policy

        export_policy(ckpt, out, ExportConfig(samples=EXPORT_SAMPLES, seed=seed))
        return out


def finetune(cfg: FinetuneConfig, logger: logging.Logger | None = None, should_stop: Any = None,
             progress: bool = True) -> FinetuneSummary:
    """Run the fine-tuning described by ``cfg``; see the module docstring."""
    from robot.bus import BusError
    from robot.cli import deploy_task
    from robot.config import load_config
    from robot.controller import Controller, ControllerSettings
    from robot.emulator.reality import load_reality
    from robot.hardware import open_robot
    from robot.runner import run_info
    from robot.trajlog import TrajectoryWriter, episode_files, read_run

    out = cfg.out_dir
    logs = out / LOG_DIR
    last = out / LAST_NAME
    log = logger or logging.getLogger("s2r.finetune")
    source = _source_checkpoint(cfg.run_dir)
    config = load_config(cfg.robot)
    spec = config.task_spec()
    if cfg.reality is not None and cfg.driver != "emulator":
        raise UserError("--reality applies to the emulator driver only")
    reality = load_reality(cfg.reality, config) if cfg.reality is not None else None

    done = len(episode_files(logs)) if logs.is_dir() else 0
    if cfg.resume:
        if not out.is_dir():
            raise UserError(f"cannot resume: {str(out)!r} does not exist")
        if logs.is_dir() and episode_files(logs):
            info = read_run(logs)
            if info.task != spec.name or info.robot != spec.robot:
                raise UserError(f"cannot resume: {str(logs)!r} was recorded on {info.robot}/{info.task}, not "
                                f"{spec.robot}/{spec.name}")
    elif done or last.exists():
        raise UserError(f"{str(out)!r} already holds a fine-tuning run; pass --resume to continue it or pick "
                        "another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / ONNX_DIR).mkdir(exist_ok=True)

    trainer = build_trainer(cfg, last if (cfg.resume and last.is_file()) else source)
    task = deploy_task(config.task, None, trainer.env_id, spec)
    if trainer.obs_dim != spec.obs_layout.size or trainer.act_dim != spec.n_joints:
        raise UserError(f"the run's policy takes {trainer.obs_dim} observations and gives {trainer.act_dim} actions;"
                        f" the robot's task needs {spec.obs_layout.size} and {spec.n_joints}")
    steps_per_episode = spec.episode_steps
    tuner = Finetuner(cfg, trainer, max(cfg.episodes, done + 1) * (steps_per_episode + 1))
    data = transitions_from_logs(logs) if done else None
    if data is not None:
        tuner.add_dataset(data)
    summary = FinetuneSummary(out_dir=str(out), episodes_done=done, resumed_from_episode=done)
    writer = TrajectoryWriter(logs, run_info(config, cfg.driver, steps_per_episode, {
        "policy": f"finetune of {cfg.run_dir}", "task_variant": trainer.env_id, "seed": cfg.seed,
        "reality": None if cfg.reality is None else str(cfg.reality), "finetune": True}))
    if done >= cfg.episodes:
        summary.policy = str(out / POLICY_NAME) if (out / POLICY_NAME).is_file() else None
        return summary

    io = open_robot(config, cfg.driver, cfg.port, reality=reality, interrupt=should_stop)
    bus = io.bus
    bar = _bar(cfg.episodes, done, progress)
    successes: list[bool] = []
    returns: list[float] = []
    try:
        try:
            bus.connect()
        except BusError as exc:
            raise UserError(f"cannot start on the robot: {exc}") from exc
        settings = ControllerSettings(episode_steps=steps_per_episode)
        ctrl = Controller(tuner.explore, bus, task, config, settings=settings, logger=log,
                          should_stop=should_stop or (lambda: None), imu=io.imu, placer=io.placer)
        for k in range(done, cfg.episodes):
            torch.manual_seed(cfg.seed * 100_003 + k)  # exploration of episode k, whatever ran before
            result = ctrl.episode(np.random.default_rng([cfg.seed, k]))
            if result.steps > 0:
                writer.write_episode(result.arrays, result.meta)
            if result.stop is not None:
                summary.stop_kind, summary.stop_reason = result.stop.kind, result.stop.reason
                summary.torque_off = ctrl.shutdown(result.stop)
                break
            new = transitions_from_logs(logs)
            added = 0 if new is None else len(new["rewards"]) - len(tuner.real)
            if new is not None and added > 0:
                tuner.add_dataset({key: v[len(v) - added:] for key, v in new.items()})
            updates, took = tuner.update(result.steps)
            tuner.save(last, k + 1)
            onnx_path = None
            export_s = 0.0
            if (k + 1) % cfg.export_every == 0 or k + 1 == cfg.episodes:
                t0 = time.perf_counter()
                onnx_path = tuner.export(last, out / ONNX_DIR / f"episode_{k:06d}.onnx", cfg.seed)
                shutil.copyfile(onnx_path, out / f".{POLICY_NAME}.tmp")
                (out / f".{POLICY_NAME}.tmp").replace(out / POLICY_NAME)
                export_s = time.perf_counter() - t0
            summary.episodes.append(EpisodeReport(
                k, result.success, result.episode_return, result.steps, len(tuner.real), updates, took, export_s,
                None if onnx_path is None else str(onnx_path)))
            summary.episodes_done = k + 1
            successes.append(result.success)
            returns.append(result.episode_return)
            if bar is not None:
                bar.update(1)
                bar.set_postfix({"success": f"{np.mean(successes):.2f}", "return": f"{result.episode_return:.0f}"},
                                refresh=False)
        else:
            summary.torque_off = ctrl.shutdown(_completed())
        summary.loop = ctrl.stats.summary()
    finally:
        if bar is not None:
            bar.close()
        io.close()
    summary.success_rate = float(np.mean(successes)) if successes else None
    summary.return_mean = float(np.mean(returns)) if returns else None
    summary.update_time_s_max = max((e.update_time_s for e in summary.episodes), default=0.0)
    summary.policy = str(out / POLICY_NAME) if (out / POLICY_NAME).is_file() else None
    _write_json(out / SUMMARY_NAME, summary.to_json())
    return summary


def _completed() -> Any:
    from robot.controller import COMPLETED

    return COMPLETED


def _bar(total: int, done: int, progress: bool) -> Any:
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=done, desc="fine-tune", unit="ep", file=sys.stderr, dynamic_ncols=True)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
