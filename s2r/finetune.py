"""Fine-tuning on the robot: the run's learner (CrossQ, SAC, TD3 or DDPG) continues from the deployed policy, and
never hands out a worse one.

``s2r finetune RUN_DIR --robot hardware_configs/dclaw.yaml --driver emulator --episodes N`` runs episodes on the
robot through the same :class:`~robot.controller.Controller` as ``s2r deploy``: scripted reset, fixed-rate loop,
safety filter and watchdog all active. Choices, and why:

* **It starts from the deployed policy.** The checkpoint is the one ``s2r export RUN_DIR`` and ``s2r deploy
  RUN_DIR`` take (:func:`policies.checkpoint.resolve_checkpoint_path`: ``best.pt``, else ``last.pt``), with the
  training state saved beside its actor (critics, temperature, optimizers). A ``best.pt`` of a run from before
  ``best.pt`` carried that state gets the critics of the run's ``last.pt`` under its own actor and normalizer.
  ``finetune.json`` records the file and its sha256.
* **The incumbent and the gate** (:mod:`policies.gate`). The incumbent is the deployed policy, exported and
  measured on ``incumbent_episodes`` deterministic robot episodes first. Then rounds: exploration episodes with
  the learner's exploring actor (learning between them), then the candidate, the learner's deterministic actor
  frozen and exported, on ``gate_episodes`` robot episodes. The candidate replaces the incumbent only when
  Fisher's exact test, one-sided, says it succeeds more often at the configured confidence (0.95 by default).
  ``OUT/policy.onnx`` is the incumbent at every moment, so a worse candidate never reaches it.
* **Real data is used well** (after RLPD, Ball et al. 2023). Each batch draws ``sim_fraction`` (one half) of its
  transitions from the simulation run's ``replay.pt`` and the rest from the robot; before the actor first moves,
  ``critic_warmup`` critic-only updates fit the critics to the robot's transitions of the deployed policy; then
  ``updates_per_step`` updates per exploration transition (several: they run between episodes, where they cost
  no control cycle; each episode reports its update time).
* **Learning between episodes.** Gradient steps run after an episode ends and before the next reset, while the
  servos hold their last command: inside the loop they would land in the middle of a control cycle, in another
  process they would compete for the cores the loop needs. Nothing learns while a candidate is measured.
* **Replay.** Real transitions live in their own buffer, rebuilt from the trajectory logs at start
  (:func:`policies.dataset.trajlog_to_dataset`); every episode's transitions go in, evaluation episodes' too.
* **Observation normalization** stays at the deployed policy's statistics: every exported policy keeps one
  input scale.
* **Goals.** Each episode's goal is the task's draw, or the commanded one (``goal``, or entry ``k`` of
  ``goal_schedule`` for episode ``k``: the goals of ``s2r deploy --goal``/``--goal-schedule``,
  :mod:`robot.goals`), logged with every reading. A goal-conditioned run's policy runs on the task's
  :class:`~sim.goal_env.GoalView`, and its episodes are replayed with hindsight goals as in training
  (:class:`policies.finetune.GoalSetup`: the run's strategy, the environment's ``compute_reward``).
* **Reports.** ``finetune.json`` after every episode (the incumbent's measured success included); ``metrics.jsonl``
  and ``tensorboard/``, one row per robot episode (step = episodes done): return, length, success, the
  incumbent's success rate and the updates' losses, also under Stable-Baselines3's tag names.
* **Resume** counts the episode files in ``OUT/logs``: those episodes are done, and their logged outcomes
  replay the gate's decisions (each log's meta says what kind of episode it was). The learner continues from
  ``OUT/last.pt``.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Protocol

import numpy as np
import torch
from tqdm import tqdm

from export.onnx_export import ExportConfig, export_policy
from export.onnx_policy import OnnxPolicy
from policies.checkpoint import load_checkpoint
from policies.finetune import (
    META_KEY,
    Finetuner,
    build_agent,
    deployed_checkpoint,
    gate_settings,
    replay_gate,
)
from policies.finetune_config import FinetuneConfig
from policies.gate import EVAL_INCUMBENT, EXPLORE, Gate
from policies.metrics import Metrics
from policies.rundir import METRICS_NAME, TENSORBOARD_DIR, read_rows, write_rows_atomic
from robot.bus import BusError
from robot.config import RobotConfig, load_config
from robot.controller import COMPLETED, Controller, ControllerSettings, EpisodeResult, Policy, Stop
from robot.emulator.reality import load_reality
from robot.goals import Goal, episode_goals
from robot.hardware import OpenOptions, open_robot
from robot.runner import run_info
from robot.view import NO_VIEW, StepView
from s2r.api import deploy_task
from s2r.core.atomicio import atomic_path, write_text_atomic
from s2r.core.errors import ParameterError, UserError
from s2r.core.trajlog import TrajectoryWriter, episode_files, read_run
from sim.goal_env import GoalView, is_goal_task
from sim.tasks.base import Task

LOG_DIR = "logs"
ONNX_DIR = "onnx"
CANDIDATE_DIR = "candidates"
LAST_NAME = "last.pt"
POLICY_NAME = "policy.onnx"
SUMMARY_NAME = "finetune.json"
DEPLOYED_ONNX = "deployed.onnx"
"""The deployed policy's export in ``OUT/onnx`` (the first incumbent)."""
EXPORT_SAMPLES = 1000
"""Observations each ONNX export is verified on (the exporter's minimum)."""


@dataclass
class EpisodeReport:
    """One fine-tuning episode of this invocation."""

    episode: int
    kind: str
    """``eval-incumbent``, ``explore`` or ``eval-candidate``."""
    round: int
    success: bool
    episode_return: float
    steps: int
    real_transitions: int
    updates: int
    """Gradient steps after the episode (critic-only warm-up ones included)."""
    update_time_s: float
    export_time_s: float
    """Time to freeze and export the candidate before the episode (0 when none)."""
    onnx: str | None
    """The candidate's ONNX file when the episode measured one."""


@dataclass
class FinetuneSummary:
    """What ``s2r finetune`` reports (``--json`` prints it; ``finetune.json`` holds it)."""

    out_dir: str
    episodes_done: int
    resumed_from_episode: int
    start: dict[str, Any] = field(default_factory=dict)
    """The deployed checkpoint fine-tuning started from (``checkpoint``, ``sha256``) and where the critics and
    optimizer state came from (``training_state_from``)."""
    episodes: list[EpisodeReport] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    """Every episode since the start (across resumes): index, kind, round, success, and the incumbent's measured
    success rate and episode count after it."""
    gate: dict[str, Any] = field(default_factory=dict)
    """The test, its confidence, the schedule and every decision (:meth:`policies.gate.Gate.summary`)."""
    success_rate: float | None = None
    """The incumbent's (``policy.onnx``'s) measured success rate on the robot."""
    return_mean: float | None = None
    """Mean return of this invocation's episodes (every kind)."""
    loop: dict[str, Any] = field(default_factory=dict)
    update_time_s_max: float = 0.0
    update_time_s_per_update: float | None = None
    """Mean seconds per gradient step this invocation (batch of ``batch_size``)."""
    stop_kind: str = "completed"
    stop_reason: str = ""
    torque_off: bool = True
    """Whether the servos confirmed the torque off at the end (``s2r finetune`` exits non-zero when not, as
    ``s2r deploy`` does)."""
    policy: str | None = None
    """``OUT/policy.onnx``: the incumbent."""
    goals: dict[str, Any] = field(default_factory=dict)
    """A goal-conditioned run's goals and their replay: ``commanded`` (the goal of every episode, or the schedule
    file, or ``None``: the task's draws), ``her_strategy`` (``none``: no relabelling) and ``her_k``; empty for a
    flat run."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def export_onnx(ckpt: Path, out: Path, seed: int) -> Path:
    """A verified ONNX export of the checkpoint file ``ckpt`` (the exporter writes nothing when it fails)."""
    export_policy(ckpt, out, ExportConfig(samples=EXPORT_SAMPLES, seed=seed))
    return out


class _PolicySwitch:
    """The controller's policy: whichever policy the current episode runs."""

    def __init__(self, policy: Policy) -> None:
        self.current = policy

    def __call__(self, obs: np.ndarray) -> Any:
        return self.current(obs)


def _copy_atomic(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def candidate_paths(out: Path, round_: int) -> tuple[Path, Path]:
    """Round ``round_``'s candidate: its checkpoint and its ONNX file."""
    return out / CANDIDATE_DIR / f"round_{round_:03d}.pt", out / ONNX_DIR / f"round_{round_:03d}.onnx"


def incumbent_onnx(out: Path, incumbent: str) -> Path:
    """The ONNX file of the gate's incumbent (``deployed`` or ``round N``)."""
    if incumbent == "deployed":
        return out / ONNX_DIR / DEPLOYED_ONNX
    return candidate_paths(out, int(incumbent.split()[1]))[1]


class RobotSession(Protocol):
    """What fine-tuning needs of the robot: episodes of a given policy, and a safe end. The real one is
    :class:`ControllerSession`; tests pass a fake robot."""

    def episode(self, policy: Policy, rng: np.random.Generator,
                goal: Mapping[str, float] | None = None) -> EpisodeResult:
        """One episode of ``policy`` from the start state ``rng`` draws, toward ``goal`` (``None``: the goal ``rng``
        draws with the start)."""
        ...

    def shutdown(self, stop: Stop) -> bool:
        """End the run for ``stop``; whether the torque-off was confirmed."""
        ...

    def loop_summary(self) -> dict[str, Any]:
        """Timing of the control loop so far."""
        ...

    def close(self) -> None:
        ...


OpenSession = Callable[[FinetuneConfig, RobotConfig, Task, "logging.Logger", Callable[[], str | None]], RobotSession]
"""``(cfg, robot config, task, logger, should_stop) -> session``, connected and ready for episodes."""


class ControllerSession:
    """The robot behind :func:`robot.hardware.open_robot`, run by the :class:`~robot.controller.Controller` of
    ``s2r deploy`` (safety filter, watchdog, scripted reset), one policy per episode; ``view`` shows every step
    (``s2r finetune --view``: ``functools.partial(ControllerSession, view=...)`` as ``open_session``)."""

    def __init__(self, cfg: FinetuneConfig, config: RobotConfig, task: Task, log: logging.Logger,
                 should_stop: Callable[[], str | None], view: StepView = NO_VIEW) -> None:
        reality = load_reality(cfg.reality, config) if cfg.reality is not None else None
        self.io = open_robot(config, cfg.driver, OpenOptions(port=cfg.port, reality=reality, interrupt=should_stop,
                                                             lockstep=cfg.lockstep))
        try:
            self.io.bus.connect()
        except BusError as exc:
            self.io.close()
            raise UserError(f"cannot start on the robot: {exc}") from exc
        except BaseException:
            self.io.close()
            raise
        self.switch = _PolicySwitch(lambda obs: None)
        settings = self.io.controller_settings(ControllerSettings(episode_steps=task.spec.episode_steps))
        self.ctrl = Controller(self.switch, self.io.bus, task, config, settings=settings, logger=log,
                               should_stop=should_stop, imu=self.io.imu, placer=self.io.placer, clock=self.io.clock,
                               sleep=self.io.sleep, view=view, tracker=self.io.tracker, truth=self.io.truth)

    def episode(self, policy: Policy, rng: np.random.Generator,
                goal: Mapping[str, float] | None = None) -> EpisodeResult:
        self.switch.current = policy
        return self.ctrl.episode(rng, goal)

    def shutdown(self, stop: Stop) -> bool:
        return bool(self.ctrl.shutdown(stop))

    def loop_summary(self) -> dict[str, Any]:
        return dict(self.ctrl.stats.summary())

    def close(self) -> None:
        self.io.close()


def finetune(cfg: FinetuneConfig, logger: logging.Logger | None = None,
             should_stop: Callable[[], str | None] | None = None,
             progress: bool = True, open_session: OpenSession = ControllerSession) -> FinetuneSummary:
    """Run the fine-tuning described by ``cfg`` on the robot ``open_session`` opens; see the module docstring."""
    run = _Run(cfg, logger or logging.getLogger("s2r.finetune"))
    summary = run.summary
    if run.done >= cfg.episodes:
        return run.finish()
    session = open_session(cfg, run.config, run.task, run.log, should_stop or (lambda: None))
    bar = _bar(cfg.episodes, run.done, progress)
    try:
        k = run.done
        while k < cfg.episodes:
            kind, round_ = run.gate.next_kind()
            policy, candidate, export_s = run.policy_for(k, kind, round_)
            result = session.episode(policy, np.random.default_rng([cfg.seed, k]), run.goal_of(k))
            run.record(k, kind, round_, result)
            if result.stop is not None:
                summary.stop_kind, summary.stop_reason = result.stop.kind, result.stop.reason
                summary.torque_off = session.shutdown(result.stop)
                break
            if result.steps == 0:
                # A failed reset (a fallen robot not righted): episode k did not run, so it runs again; the
                # controller stops the run after the config's max_consecutive_failures in a row.
                continue
            run.learn(k, kind, round_, result, candidate, export_s)
            k += 1
            if bar is not None:
                bar.update(1)
                rate = run.gate.incumbent_success_rate
                bar.set_postfix({"kind": kind, "incumbent": "-" if rate is None else f"{rate:.2f}"}, refresh=False)
        else:
            summary.torque_off = session.shutdown(_completed())
        summary.loop = session.loop_summary()
    finally:
        if bar is not None:
            bar.close()
        session.close()
        run.metrics.close()
    return run.finish()


class _Run:
    """One invocation's state: the checked set-up, the learner, the gate and what gets written (``OUT``)."""

    def __init__(self, cfg: FinetuneConfig, log: logging.Logger) -> None:
        self.cfg = cfg
        self.log = log
        self.out = out = cfg.out_dir
        self.logs = logs = out / LOG_DIR
        self.last = last = out / LAST_NAME
        self.deployed = deployed_checkpoint(cfg.run_dir)
        self.config = config = load_config(cfg.robot)
        spec = config.task_spec()
        if cfg.reality is not None and cfg.driver != "emulator":
            raise ParameterError("reality", "applies to the emulator driver only")
        self.done = done = _check_resume(cfg, logs, last, spec.name, spec.robot)
        self.gate = replay_gate(cfg, logs)

        resume_state = last if (cfg.resume and last.is_file()) else None
        learning, start = build_agent(cfg, resume_state)
        spaces = learning.agent.spaces
        recorded = _recorded_start(out) if cfg.resume else {}
        if recorded.get("sha256", start["sha256"]) != start["sha256"]:
            raise UserError(f"cannot resume: {str(self.deployed)!r} changed since this fine-tuning run started from it")
        if recorded:
            start = {**recorded, **({"resumed_from": start["resumed_from"]} if "resumed_from" in start else {})}
        task = deploy_task(config.task, None, spaces.env_id, spec)
        # one goal per episode, checked as s2r deploy checks them; None: the task draws them
        self.goals = episode_goals(task, cfg.goal, cfg.goal_schedule, max(cfg.episodes, 1))
        goal = learning.goal
        if goal is not None:
            if not is_goal_task(task):
                raise UserError(f"the run's policy is goal-conditioned ({spaces.env_id}), but the robot's task "
                                f"{spec.name!r} has no goal-conditioned view (desired goal) to feed it")
            task = GoalView(task)  # type: ignore[arg-type]
        self.task = task
        size = task.spec.obs_layout.size
        if spaces.obs_dim != size or spaces.act_dim != spec.n_joints:
            raise UserError(f"the run's policy takes {spaces.obs_dim} observations and gives {spaces.act_dim} "
                            f"actions; the robot's task needs {size} and {spec.n_joints}")
        # Everything is checked (the goals too) before anything is written.
        out.mkdir(parents=True, exist_ok=True)
        (out / ONNX_DIR).mkdir(exist_ok=True)
        if not (out / ONNX_DIR / DEPLOYED_ONNX).is_file():
            export_onnx(self.deployed, out / ONNX_DIR / DEPLOYED_ONNX, cfg.seed)
        # policy.onnx is the incumbent: after a crash it is put back from the gate's replayed decisions.
        _copy_atomic(incumbent_onnx(out, self.gate.incumbent), out / POLICY_NAME)

        self.tuner = Finetuner(cfg, learning, max(cfg.episodes, done + 1) * (spec.episode_steps + 1))
        if resume_state is not None:
            self.tuner.restore_progress(load_checkpoint(resume_state).training)
        if done:
            self.tuner.add_logs(logs)
        commanded = (dict(cfg.goal) if cfg.goal is not None else
                     None if cfg.goal_schedule is None else str(cfg.goal_schedule))
        goals = {} if goal is None else {"commanded": commanded, "her_strategy": goal.strategy or "none",
                                         "her_k": goal.k}
        self.summary = FinetuneSummary(out_dir=str(out), episodes_done=done, resumed_from_episode=done, start=start,
                                       history=self.gate.history, gate=self.gate.summary(),
                                       success_rate=self.gate.incumbent_success_rate, policy=str(out / POLICY_NAME),
                                       goals=goals)
        self.writer = TrajectoryWriter(logs, run_info(config, cfg.driver, spec.episode_steps, {
            "policy": f"finetune of {self.deployed}", "task_variant": spaces.env_id, "seed": cfg.seed,
            "reality": None if cfg.reality is None else str(cfg.reality), "finetune": True,
            "goal_conditioned": goal is not None, "goal": None if cfg.goal is None else dict(cfg.goal),
            "goal_schedule": None if cfg.goal_schedule is None else str(cfg.goal_schedule)}))
        self.metrics = _episode_metrics(out, done) if done < cfg.episodes else Metrics(None)
        self.returns: list[float] = []
        self._onnx: dict[Path, OnnxPolicy] = {}

    def goal_of(self, k: int) -> Goal | None:
        """Episode ``k``'s commanded goal (``None``: the task draws it)."""
        return None if self.goals is None else self.goals[k]

    def _onnx_policy(self, path: Path) -> OnnxPolicy:
        if path not in self._onnx:
            self._onnx[path] = OnnxPolicy(path)
        return self._onnx[path]

    def policy_for(self, k: int, kind: str, round_: int) -> tuple[Policy, Path | None, float]:
        """The policy of episode ``k``, of ``kind``; the candidate's ONNX file and the seconds its export took."""
        if kind == EXPLORE:
            self.tuner.episode_start()
            torch.manual_seed(self.cfg.seed * 100_003 + k)  # exploration of episode k, whatever ran before
            return self.tuner.explore, None, 0.0
        if kind == EVAL_INCUMBENT:
            return self._onnx_policy(incumbent_onnx(self.out, self.gate.incumbent)), None, 0.0
        ckpt_path, candidate = candidate_paths(self.out, round_)
        export_s = 0.0
        if not candidate.is_file():  # the round's first candidate episode: freeze the learner now
            t0 = time.perf_counter()
            export_onnx(self.tuner.freeze(ckpt_path), candidate, self.cfg.seed)
            export_s = time.perf_counter() - t0
        return self._onnx_policy(candidate), candidate, export_s

    def record(self, k: int, kind: str, round_: int, result: EpisodeResult) -> None:
        """Episode ``k``'s log, and the gate's verdict on it."""
        if result.steps == 0:
            return
        # An episode a person stopped says nothing about the policy; a safety stop and a fall count as failures.
        counted = (result.complete or "fallen" in result.meta
                   or (result.stop is not None and result.stop.kind != "requested"))
        self.writer.write_episode(result.arrays, {**result.meta, META_KEY: {
            "kind": kind, "round": round_, "counted": counted, "gate": gate_settings(self.cfg)}})
        decision = self.gate.record(k, result.success, counted)
        if decision is not None and decision.replaced:
            _copy_atomic(incumbent_onnx(self.out, self.gate.incumbent), self.out / POLICY_NAME)
            self.log.info("round %d's candidate replaces the incumbent (%d/%d against %d/%d, p = %.3g)",
                          round_, decision.candidate_successes, decision.candidate_episodes,
                          decision.incumbent_successes, decision.incumbent_episodes, decision.p_value)

    def learn(self, k: int, kind: str, round_: int, result: EpisodeResult, candidate: Path | None,
              export_s: float) -> None:
        """After episode ``k``: its transitions into the real replay, the gradient steps its kind calls for, the
        learner's checkpoint and the reports."""
        tuner, cfg = self.tuner, self.cfg
        tuner.add_logs(self.logs)
        updates, took = 0, 0.0
        if kind == EXPLORE:
            updates, took = tuner.update(result.steps)
        elif k + 1 < cfg.episodes and self.gate.next_kind()[0] == EXPLORE:
            updates, took = tuner.warm_up_critic()  # on the deployed policy's own transitions
        tuner.save(self.last, k + 1)
        report = EpisodeReport(k, kind, round_, result.success, result.episode_return, result.steps,
                               tuner.real_transitions, updates, took, export_s,
                               None if candidate is None else str(candidate))
        self.summary.episodes.append(report)
        self.summary.episodes_done = k + 1
        self.returns.append(result.episode_return)
        _fill(self.summary, self.gate, self.returns)
        _write_json(self.out / SUMMARY_NAME, self.summary.to_json())
        self.metrics.write({
            "kind": "finetune", "step": k + 1, "episode_kind": kind, "round": round_, "return": result.episode_return,
            "length": result.steps, "success": float(result.success),
            "incumbent_success_rate": self.gate.incumbent_success_rate, "real_transitions": tuner.real_transitions,
            "updates": updates, "update_time_s": took, **tuner.update_stats()})

    def finish(self) -> FinetuneSummary:
        """The final report, written to ``finetune.json``."""
        _fill(self.summary, self.gate, self.returns)
        self.summary.episodes_done = len(self.gate.history)
        _write_json(self.out / SUMMARY_NAME, self.summary.to_json())
        return self.summary


def _check_resume(cfg: FinetuneConfig, logs: Path, last: Path, task: str, robot: str) -> int:
    """Episodes already done in ``OUT`` (0 for a new run); refuses a resume that cannot be, or a new run over an
    old one."""
    done = len(episode_files(logs)) if logs.is_dir() else 0
    if cfg.resume:
        if not cfg.out_dir.is_dir():
            raise UserError(f"cannot resume: {str(cfg.out_dir)!r} does not exist")
        if done:
            info = read_run(logs)
            if info.task != task or info.robot != robot:
                raise UserError(f"cannot resume: {str(logs)!r} was recorded on {info.robot}/{info.task}, not "
                                f"{robot}/{task}")
    elif done or last.exists():
        raise ParameterError("out", f"{str(cfg.out_dir)!r} already holds a fine-tuning run; pass {{resume}} to "
                             "continue it or pick another {out}")
    return done


def _episode_metrics(out: Path, done: int) -> Metrics:
    """``OUT/metrics.jsonl`` and ``OUT/tensorboard``, one row per robot episode (step = episodes done), continuing
    after ``done`` episodes: rows and events of later episodes, left by a crash, are dropped."""
    path = out / METRICS_NAME
    if path.is_file():
        write_rows_atomic(path, [r for r in read_rows(path) if r.get("step", 0) <= done])
    metrics = Metrics(path)
    metrics.open_tensorboard(out / TENSORBOARD_DIR, done + 1 if done else 0)
    return metrics


def _fill(summary: FinetuneSummary, gate: Gate, returns: list[float]) -> None:
    summary.history = gate.history
    summary.gate = gate.summary()
    summary.success_rate = gate.incumbent_success_rate
    summary.return_mean = float(np.mean(returns)) if returns else None
    summary.update_time_s_max = max((e.update_time_s for e in summary.episodes), default=0.0)
    n_updates = sum(e.updates for e in summary.episodes)
    summary.update_time_s_per_update = (sum(e.update_time_s for e in summary.episodes) / n_updates
                                        if n_updates else None)


def _recorded_start(out: Path) -> dict[str, Any]:
    """The ``start`` entry of the run's ``finetune.json`` (empty when there is none to read)."""
    try:
        start = json.loads((out / SUMMARY_NAME).read_text()).get("start")
    except (OSError, ValueError, AttributeError):
        return {}
    return start if isinstance(start, dict) else {}


def _completed() -> Stop:
    return COMPLETED


def _bar(total: int, done: int, progress: bool) -> tqdm[NoReturn] | None:
    if not progress:
        return None
    return tqdm(total=total, initial=done, desc="fine-tune", unit="ep", file=sys.stderr, dynamic_ncols=True)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")
