"""The off-policy training loop behind ``s2r train``.

The loop, as CleanRL writes it: per environment step pick an action (uniform during warm-up, then the learner's
exploration) and hand it to the environment — on a background thread when ``overlap_env`` is set: MuJoCo releases
the GIL while it simulates, so that part runs on the other core during the update (the environment's Python code
still takes turns with the update's) — then run ``updates_per_step`` updates on replay batches, store the
transition (the update therefore samples from every transition but the one in flight), and periodically log,
evaluate and checkpoint. The parts it calls: :mod:`policies.agent` (learner, policy, normalization, checkpoints),
:mod:`policies.collector` (environments, stepping, evaluation), :mod:`policies.metrics` (rows, TensorBoard) and
:mod:`policies.rundir` (the run directory's files).
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import numpy as np
import torch
from tqdm import tqdm

from policies.agent import Agent, Spaces, allocate, build_learner
from policies.checkpoint import LAST_NAME, REPLAY_NAME, Checkpoint, load_checkpoint
from policies.collector import EVAL_SEED_OFFSET, Collector, EnvFactory, EnvStepper, Evaluator, StepResult
from policies.config import TrainConfig
from policies.envs import FlatGoalEnv, find_goal_env, resolve_task
from policies.her import HerReplayBuffer
from policies.metrics import Metrics
from policies.networks import Actor, PolicyModule
from policies.offpolicy import Learner
from policies.replay import NStepReturns, Replay, ReplayBuffer
from policies.rundir import CONFIG_NAME, Row, RunFiles, load_replay
from s2r.core.errors import ParameterError, UserError

__all__ = ["CONFIG_NAME", "EVAL_SEED_OFFSET", "REPLAY_NAME", "EnvStepper", "LoopState", "RunFiles", "StepResult",
           "Trainer", "build_learner", "resolve_device", "setup_torch", "train"]

PROGRESS_EVERY_STEPS = 50
"""Environment steps between progress-bar refreshes."""
MAX_THREADS_PER_CPU = 4
"""Most torch threads per CPU a config may ask for (-): beyond a few per core they only contend."""


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; anything else as given (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UserError(f"unknown device {name!r}: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but CUDA is not available")
    return device


@dataclass
class LoopState:
    """Counters of the loop that a resumed run continues from."""

    step: int = 0
    """Environment steps taken."""
    episodes: int = 0
    """Training episodes finished."""
    updates: int = 0
    """Gradient steps taken."""
    best_success: float = -math.inf
    """Success rate of the best evaluation (-inf before any, or when the env reports no success)."""
    best_return: float = -math.inf
    """Mean return of the best evaluation."""
    train_time_s: float = 0.0
    """Wall-clock seconds spent in the loop so far (across resumes)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, loop: dict[str, Any]) -> LoopState:
        """The counters of a checkpoint's ``training["loop"]`` (``KeyError`` when one is missing)."""
        return cls(**{f.name: loop[f.name] for f in dataclasses.fields(cls)})


def check_her(cfg: TrainConfig, env_id: str, goal_env: FlatGoalEnv | None) -> None:
    """A resolved config's ``her_strategy`` must fit the environment: none on a flat one, and one-step returns."""
    if cfg.her_strategy in (None, "none"):
        return
    if goal_env is None:
        raise UserError(f"config field 'her_strategy' is {cfg.her_strategy!r}, but {env_id} is not goal-conditioned: "
                        "Hindsight Experience Replay needs a dict observation of observation, achieved_goal and "
                        "desired_goal with a compute_reward (such as s2r/DClawTurnGoal-v0); set her_strategy=none "
                        "or pick a goal-conditioned task")
    if cfg.n_step > 1:
        raise UserError(f"config fields 'her_strategy' ({cfg.her_strategy}) and 'n_step' ({cfg.n_step}) do not go "
                        "together: a hindsight goal changes every reward of an n-step return; set n_step=1")


def setup_torch(cfg: TrainConfig) -> torch.device:
    """Torch's thread count as the config says (checked), and its device."""
    assert cfg.threads is not None, "the config must be resolved"
    cpus = os.cpu_count() or 1
    if cfg.threads > MAX_THREADS_PER_CPU * cpus:
        # torch crashed the process (SIGSEGV) at 100000 threads; no run gains from far more threads than cores.
        raise UserError(f"config field 'threads' must be at most {MAX_THREADS_PER_CPU * cpus} "
                        f"({MAX_THREADS_PER_CPU} per CPU of this machine's {cpus}), got {cfg.threads}")
    torch.set_num_threads(cfg.threads)
    return resolve_device(cfg.device)


class Trainer:
    """One training run: the parts below, the counters, and (optionally) the run directory.

    With ``run=None`` nothing is written and nothing is evaluated (the throughput benchmark).
    """

    def __init__(self, cfg: TrainConfig, run: RunFiles | None = None, progress: bool = False) -> None:
        self.env_id = resolve_task(cfg.task)
        self.run = run
        self.progress = progress
        # The environment decides the auto fields that depend on its observation (HER on a goal env), and none of
        # the fields it is made from is an auto one.
        envs = EnvFactory(cfg, self.env_id)
        env, self.epopt = envs.make(training=True)
        """``epopt``: the training env's EPOpt wrapper when EPOpt is on."""
        try:
            goal_env = find_goal_env(env)
            self.cfg = cfg = envs.cfg = cfg.resolved(self.env_id, goal_conditioned=goal_env is not None)
            check_her(cfg, self.env_id, goal_env)
            self.device = setup_torch(cfg)
        except BaseException:
            env.close()
            raise
        assert cfg.eval_episodes is not None and cfg.gamma is not None
        self.agent = Agent(cfg, Spaces.of(self.env_id, env), self.device)
        sp = self.agent.spaces
        self.buffer: Replay
        her_goals = None
        strategy = cfg.her_strategy
        if goal_env is not None and strategy is not None and strategy != "none":
            her_goals = goal_env.layout
            self.buffer = allocate(lambda: HerReplayBuffer(cfg.buffer_size, goal_env.layout, sp.act_dim, self.device,
                                                           cfg.seed + 2, strategy, cfg.her_k,
                                                           goal_env.compute_reward),
                                   "buffer_size", f"a HER replay of {cfg.buffer_size} transitions does not fit")
        else:
            self.buffer = allocate(lambda: ReplayBuffer(cfg.buffer_size, sp.obs_dim, sp.act_dim, self.device,
                                                        cfg.seed + 2),
                                   "buffer_size", f"a replay buffer of {cfg.buffer_size} transitions does not fit")
        nstep = NStepReturns(cfg.n_step, cfg.gamma) if cfg.n_step > 1 else None
        self.collector = Collector(env, cfg.overlap_env, self.agent.obs, nstep, her_goals)
        self.evaluator = Evaluator(envs, cfg.eval_episodes, cfg.seed, self.device)
        self.metrics = Metrics(run.metrics if run is not None else None)
        self.state = LoopState()
        self.rng = np.random.default_rng(cfg.seed + 3)
        """Warm-up actions."""
        self.last_eval: dict[str, Any] | None = None
        self.stop_requested = False
        self.reached_success = False
        """Whether an evaluation of this session reached ``cfg.stop_success`` (the loop then ends)."""
        self._warned_no_success = False
        self._bar: tqdm[NoReturn] | None = None
        self._running_since: float | None = None
        """When the :meth:`run_until` in progress started (``perf_counter``); ``None`` outside it."""

    # --- the loop --------------------------------------------------------------------------------
    def run_until(self, target_step: int) -> None:
        """Train until ``target_step`` environment steps (or until :attr:`stop_requested` or
        :attr:`reached_success`)."""
        cfg, st = self.cfg, self.state
        assert cfg.warmup_steps is not None
        first_episode = self.collector.obs is None
        obs = self.collector.start(seed=cfg.seed + st.step)
        if first_episode:  # a new run, or a resumed one (whose episode in progress starts over)
            self.agent.episode_start()
        self._running_since = t_start = time.perf_counter()
        try:
            while st.step < target_step and not (self.stop_requested or self.reached_success):
                if st.step < cfg.warmup_steps:
                    action = self.rng.uniform(-1.0, 1.0, self.agent.spaces.act_dim).astype(np.float32)
                else:
                    action = self.agent.explore(obs)
                self.collector.submit(action)  # the environment steps (on its thread) during the update
                if st.step >= cfg.warmup_steps and len(self.buffer) >= cfg.batch_size:
                    self.update()
                obs, episode = self.collector.finish(self.buffer)
                st.step += 1
                if episode is not None:
                    st.episodes += 1
                    self.metrics.episode(episode)
                    self.agent.episode_start()  # obs is the next episode's first
                if self.run is not None:
                    self.periodic()
        finally:
            st.train_time_s += time.perf_counter() - t_start
            self._running_since = None

    def update(self) -> None:
        """``updates_per_step`` gradient steps on replay batches, then the averaged policy's step."""
        for _ in range(self.cfg.updates_per_step):
            batch = self.agent.obs.sample(self.buffer, self.cfg.batch_size)
            self.metrics.updates(self.agent.update(batch))
        self.state.updates += self.cfg.updates_per_step
        self.agent.average_policy()

    def periodic(self) -> None:
        """Progress bar, training row, evaluation and checkpoint, each at its interval."""
        cfg, step, bar = self.cfg, self.state.step, self._bar
        assert cfg.eval_interval is not None
        if bar is not None and step % PROGRESS_EVERY_STEPS == 0:
            bar.update(step - bar.n)
            if step % (PROGRESS_EVERY_STEPS * 10) == 0:
                bar.set_postfix(self._progress_fields(), refresh=False)
        if step % cfg.log_interval == 0:
            self.log_train_row()
        if step % cfg.eval_interval == 0:
            self.evaluate_and_checkpoint()

    # --- logging, evaluation, checkpoints --------------------------------------------------------
    def _progress_fields(self) -> dict[str, str]:
        fields = self.metrics.progress_fields()
        alpha = self.agent.temperature()
        if alpha is not None:
            fields["alpha"] = f"{alpha:.3g}"
        return fields

    def train_time_s(self) -> float:
        """Seconds spent in the loop over the whole run (resumed sessions included), up to now."""
        running = time.perf_counter() - self._running_since if self._running_since is not None else 0.0
        return self.state.train_time_s + running

    def log_train_row(self) -> None:
        st = self.state
        row = self.metrics.train_row(st.step, {
            "time_s": round(self.train_time_s(), 3),
            "episodes": st.episodes,
            "updates": st.updates,
        })
        if self.epopt is not None:
            row.update({f"epopt/{k}": v for k, v in self.epopt.schedule.last.items()})
        self.metrics.write(row)

    def evaluate(self) -> dict[str, Any]:
        """Deterministic episodes with the current policy, seeded the same every time."""
        self.agent.obs.flush()
        return self.evaluator(self.agent.policy_module())

    def evaluate_and_checkpoint(self) -> None:
        t0 = time.perf_counter()
        result = self.evaluate()
        self.last_eval = result
        self.metrics.write({"kind": "eval", "step": self.state.step, **result})
        st = self.state
        success = result["success_rate"] if result["success_rate"] is not None else -math.inf
        better = (success, result["return_mean"]) > (st.best_success, st.best_return)
        if better:
            st.best_success, st.best_return = success, result["return_mean"]
        self.save(with_best=better)
        self.plot()
        if self.cfg.stop_success is not None:
            if result["success_rate"] is None and not self._warned_no_success:
                self._warned_no_success = True
                print(f"s2r train: warning: stop_success is set, but {self.env_id} reports no success: the run "
                      "trains all its steps", file=sys.stderr)
            if success >= self.cfg.stop_success:
                self.reached_success = True
        self.metrics.interval.eval_time_s += time.perf_counter() - t0

    def checkpoint(self, training: bool) -> Checkpoint:
        """The current policy (and, with ``training``, everything ``--resume`` needs)."""
        loop = None
        if training:
            # The loop's time so far, this session's included: a checkpoint written during the loop (every
            # evaluation's) is what a resumed run continues counting from.
            loop = {**self.state.to_dict(), "train_time_s": self.train_time_s()}
            if self.epopt is not None:
                loop["epopt_iteration"] = self.epopt.schedule.iteration
        return self.agent.checkpoint(self.state.step, self.last_eval, loop)

    def save(self, with_best: bool = False) -> None:
        """Write ``last.pt`` (+ ``replay.pt``), and ``best.pt`` when asked.

        ``best.pt`` carries the training state too (critics, temperature, optimizers; the replay stays in
        ``replay.pt``): it is the policy ``s2r export RUN_DIR`` and ``s2r deploy`` take, so ``s2r finetune``
        continues from it, the policy that was deployed, rather than from ``last.pt``."""
        if self.run is not None:
            self.run.save(self.checkpoint(training=True), self.buffer if self.cfg.save_replay else None, with_best)

    def plot(self) -> None:
        """Write the learning curve (training and evaluation return, evaluation success)."""
        if self.run is not None:
            self.run.plot(self.metrics.rows, title=f"{self.cfg.algo.upper()} on {self.env_id}")

    # --- resume ----------------------------------------------------------------------------------
    def restore(self) -> None:
        """Continue from the run directory's ``last.pt`` (and ``replay.pt`` when present)."""
        run = self.run
        assert run is not None
        if not run.last.is_file():
            raise UserError(f"cannot resume: {str(run.last)!r} does not exist")
        self.load_training(run.last, run.replay if self.cfg.save_replay else None)
        changed = run.evaluation_changes(self.cfg)
        if changed:
            # best.pt's score was measured on other evaluation episodes; it says nothing about this run's. Left
            # alone, a resume under an adapted distribution kept handing out the policy from before it.
            self.state.best_success = self.state.best_return = -math.inf
            print(f"s2r train: {', '.join(changed)} changed on resume: the next evaluation replaces best.pt",
                  file=sys.stderr)
        self.metrics.rows = run.rows_until(self.state.step)
        self.metrics.reset_interval(self.state.step)

    def load_training(self, path: Path, replay: Path | None = None) -> None:
        """Learner, counters and observation statistics from the checkpoint ``path`` (which must hold training
        state for this config's algorithm and spaces), and the replay buffer from ``replay`` when it exists."""
        ckpt = load_checkpoint(path)
        loop = self.agent.load_training(ckpt, str(path))
        try:
            self.state = LoopState.from_dict(loop)
            if self.epopt is not None:
                # The warm-up is not repeated; the interrupted iteration's probes are drawn afresh.
                self.epopt.schedule.iteration = int(loop.get("epopt_iteration", 0))
        except (KeyError, ValueError, TypeError) as exc:
            raise UserError(f"cannot resume from {str(path)!r}: {exc}") from exc
        self.rng = np.random.default_rng([self.cfg.seed + 3, self.state.step])  # not a replay of the warm-up
        self.last_eval = ckpt.eval
        if replay is not None:
            load_replay(self.buffer, replay)

    # --- whole run ------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Run to ``cfg.steps`` (or until stopped), evaluate at the end, save, and summarize."""
        cfg, run = self.cfg, self.run
        if run is not None:
            self.metrics.open_tensorboard(run.tensorboard, self.state.step)
        if self.progress:
            self._bar = tqdm(total=cfg.steps, initial=self.state.step, unit="step", dynamic_ncols=True,
                             smoothing=0.1)
        try:
            self.run_until(cfg.steps)
            interrupted = self.stop_requested
            if not interrupted and run is not None:
                if not self._evaluated_at(self.state.step):
                    if self.state.step % cfg.log_interval != 0:
                        self.log_train_row()
                    self.evaluate_and_checkpoint()
            elif run is not None:
                self.save()
                self.plot()
        finally:
            if self._bar is not None:
                self._bar.update(self.state.step - self._bar.n)
                self._bar.close()
            self.close()
        return {
            "run_dir": str(run.root) if run is not None else None,
            "steps": self.state.step,
            "episodes": self.state.episodes,
            "interrupted": interrupted,
            "reached_success": self.reached_success,
            "train_time_s": round(self.state.train_time_s, 2),
            "eval": self.last_eval,
        }

    def _evaluated_at(self, step: int) -> bool:
        """Whether the last row is an evaluation at ``step``."""
        rows = self.metrics.rows
        return bool(rows) and rows[-1].get("kind") == "eval" and rows[-1]["step"] == step

    def close(self) -> None:
        self.collector.close()
        self.metrics.close()
        self.evaluator.close()

    # --- what the benchmarks and tests read -------------------------------------------------------
    @property
    def learner(self) -> Learner:
        return self.agent.learner

    @property
    def policy_actor(self) -> Actor:
        return self.agent.policy_actor

    @property
    def rows(self) -> list[Row]:
        return self.metrics.rows

    def policy_module(self) -> PolicyModule:
        """Normalizer (current statistics) + the policy's actor, the deterministic policy as deployed."""
        return self.agent.policy_module()

    def flush_observations(self) -> None:
        """Fold the queued observations into the statistics now."""
        self.agent.obs.flush()


class _StopOnSigint:
    """While active, the first Ctrl-C asks the trainer to stop (it then saves); a second one aborts."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self._previous: Callable[[int, FrameType | None], object] | int | None = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.trainer.stop_requested:
            raise KeyboardInterrupt
        self.trainer.stop_requested = True
        print("\ns2r train: interrupted; saving a checkpoint (Ctrl-C again to abort)", file=sys.stderr)

    def __enter__(self) -> _StopOnSigint:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def train(cfg: TrainConfig, out: str | os.PathLike[str], resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train into the run directory ``out`` (new, or continued with ``resume``); returns a summary."""
    root = Path(out)
    run = RunFiles(root)
    if resume:
        if not run.last.is_file():
            raise UserError(f"cannot resume: no {LAST_NAME} in {str(root)!r}")
    elif run.last.exists() or run.metrics.exists():
        raise ParameterError("out", f"{str(root)!r} already holds a run; pass {{resume}} to continue it or pick "
                             "another {out}")
    root.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, run, progress=progress)
    try:
        if resume:
            trainer.restore()
        run.write_config(trainer.cfg)
    except BaseException:
        trainer.close()
        raise
    with _StopOnSigint(trainer):
        return trainer.train()
