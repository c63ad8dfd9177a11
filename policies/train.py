"""The off-policy training loop behind ``s2r train``, and the run directory it writes.

Run directory: ``config.yaml`` (resolved config), ``metrics.jsonl`` (one JSON object per log or
eval interval), ``tensorboard/`` (event files), ``last.pt`` and ``best.pt`` (checkpoints, see
:mod:`policies.checkpoint`), ``replay.pt`` (replay buffer, for ``--resume``) and
``learning_curve.png``.

Per environment step the loop picks an action (uniform during warm-up, then the learner's
exploration), hands it to the environment — on a background thread when ``overlap_env`` is set:
MuJoCo releases the GIL while it simulates, so that part runs on the other core during the update
(the environment's Python code still takes turns with the update's) — then runs
``updates_per_step`` updates on replay batches, and finally stores the transition. The update
therefore samples from every transition but the one in flight.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import queue
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import gymnasium as gym
import numpy as np
import torch

from policies.checkpoint import (
    BEST_NAME,
    LAST_NAME,
    REPLAY_NAME,
    Checkpoint,
    load_checkpoint,
    save_atomic,
    save_checkpoint,
)
from policies.config import TrainConfig, dump_config
from policies.crossq import CROSSQ_BETA1, CrossQLearner, CrossQParams, make_crossq_model
from policies.envs import make_env, resolve_task
from policies.evaluate import evaluate_env
from policies.networks import ObsNormalizer, PolicyModule
from policies.normalizer import DEFAULT_NORM_EPS, RunningMeanStd
from policies.offpolicy import Learner, load_module_state
from policies.replay import Batch, NStepReturns, ReplayBuffer
from policies.sac import SACLearner, SACParams, make_sac_model
from policies.td3 import TD3Learner, TD3Params, make_td3_model
from randomization.distributions import parse_distribution
from randomization.epopt import EpoptConfig, EpoptEnv
from randomization.wrapper import RandomizedEnv
from s2r.core.atomicio import write_text_atomic
from s2r.core.errors import ParameterError, UserError
from s2r.core.yamlfile import load_yaml, read_yaml_file
from sim.rollout import to_env_action

CONFIG_NAME = "config.yaml"
METRICS_NAME = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
CURVE_NAME = "learning_curve.png"
EVAL_SEED_OFFSET = 1_000_000
"""Evaluation episodes during training are seeded ``seed + EVAL_SEED_OFFSET + i`` (the same every time)."""
EVALUATION_FIELDS = ("task", "engine", "env_kwargs", "randomize", "eval_episodes", "seed")
"""Config fields that decide what an evaluation measures: best.pt is only compared across evaluations that share
them."""
PROGRESS_EVERY_STEPS = 50
"""Environment steps between progress-bar refreshes."""
RECENT_EPISODES = 20
"""Training episodes averaged for the progress bar."""
NORM_BATCH = 32
"""Observations folded into the running statistics at a time (per-step numpy calls cost more)."""
MAX_THREADS_PER_CPU = 4
"""Most torch threads per CPU a config may ask for (-): beyond a few per core they only contend."""


def _out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation that failed (torch's CPU allocator raises a plain ``RuntimeError``)."""
    return isinstance(exc, MemoryError | torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc))


_T = TypeVar("_T")


def _allocate(build: Callable[[], _T], field: str, too_big: str) -> _T:
    """``build()``, with an allocation that fails a ``UserError`` naming the config ``field`` (``too_big`` says
    what did not fit)."""
    try:
        return build()
    except (MemoryError, RuntimeError) as exc:
        if not _out_of_memory(exc):
            raise
        raise UserError(f"config field {field!r}: {too_big} in memory ({exc})") from None


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


def build_learner(cfg: TrainConfig, obs_dim: int, act_dim: int, device: torch.device) -> Learner:
    """A fresh learner as the config says (its auto fields resolved)."""
    cfg = cfg.resolved()
    hidden = tuple(cfg.hidden)
    assert cfg.lr is not None and cfg.policy_delay is not None and cfg.critic_hidden is not None
    assert cfg.gamma is not None and cfg.init_alpha is not None
    if cfg.algo == "crossq":
        crossq = make_crossq_model(obs_dim, act_dim, hidden, tuple(cfg.critic_hidden), cfg.activation, cfg.lr,
                                   CROSSQ_BETA1, cfg.init_alpha, device, cfg.seed)
        return CrossQLearner(crossq, CrossQParams(cfg.gamma, cfg.policy_delay, cfg.target_entropy,
                                                  cfg.autotune_alpha))
    if cfg.algo == "sac":
        model = make_sac_model(obs_dim, act_dim, hidden, cfg.activation, cfg.lr, cfg.init_alpha, device, cfg.seed)
        return SACLearner(model, SACParams(cfg.gamma, cfg.tau, cfg.target_entropy, cfg.autotune_alpha))
    td3 = make_td3_model(obs_dim, act_dim, hidden, cfg.activation, cfg.lr, device, cfg.seed)
    params = TD3Params(cfg.gamma, cfg.tau, cfg.policy_delay, cfg.target_noise, cfg.target_noise_clip)
    return TD3Learner(td3, params, cfg.exploration_noise)


@dataclass(frozen=True)
class StepResult:
    """One environment step, plus the first observation of the next episode after an episode's end."""

    obs: np.ndarray
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]
    reset_obs: np.ndarray | None


class EnvStepper:
    """Steps an environment (resetting it after an episode's end), optionally on a background thread.

    ``submit(action)`` starts a step and ``result()`` waits for it; in between the caller is free
    to do other work, which then overlaps the simulation.
    """

    def __init__(self, env: Any, threaded: bool) -> None:
        self.env = env
        self.threaded = threaded
        self._pending: np.ndarray | None = None
        self._requests: queue.SimpleQueue[np.ndarray | None] = queue.SimpleQueue()
        self._results: queue.SimpleQueue[StepResult | BaseException] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._serve, name="s2r-env-stepper", daemon=True)
            self._thread.start()

    def submit(self, action: np.ndarray) -> None:
        if self.threaded:
            self._requests.put(action)
        else:
            self._pending = action

    def result(self) -> StepResult:
        if not self.threaded:
            assert self._pending is not None, "result() without submit()"
            action, self._pending = self._pending, None
            return self._step(action)
        out = self._results.get()
        if isinstance(out, BaseException):
            raise out
        return out

    def _step(self, action: np.ndarray) -> StepResult:
        obs, reward, terminated, truncated, info = self.env.step(action)
        reset_obs = None
        if terminated or truncated:
            reset_obs, _ = self.env.reset()
        return StepResult(np.asarray(obs), float(reward), bool(terminated), bool(truncated), info, reset_obs)

    def _serve(self) -> None:
        while True:
            action = self._requests.get()
            if action is None:
                return
            try:
                self._results.put(self._step(action))
            except BaseException as exc:  # handed to the main thread, which raises it
                self._results.put(exc)

    def close(self) -> None:
        if self._thread is not None:
            self._requests.put(None)
            self._thread.join()
            self._thread = None


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


class RunFiles:
    """Paths inside a run directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / CONFIG_NAME
        self.metrics = root / METRICS_NAME
        self.tensorboard = root / TENSORBOARD_DIR
        self.last = root / LAST_NAME
        self.best = root / BEST_NAME
        self.replay = root / REPLAY_NAME
        self.curve = root / CURVE_NAME


def _summary_writer(log_dir: Path, purge_step: int | None) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise UserError(
            "TensorBoard logging needs the Python package 'tensorboard', which is not installed; "
            "install it with: pip install tensorboard"
        ) from exc
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)


class Trainer:
    """One training run: environment, learner, replay, normalizer, counters and (optionally) outputs.

    With ``run=None`` nothing is written and nothing is evaluated (the throughput benchmark).
    """

    def __init__(self, cfg: TrainConfig, run: RunFiles | None = None, progress: bool = False) -> None:
        self.env_id = resolve_task(cfg.task)
        self.cfg = cfg = cfg.resolved(self.env_id)
        assert cfg.warmup_steps is not None and cfg.eval_interval is not None and cfg.threads is not None
        assert cfg.policy_average is not None
        self.run = run
        self.progress = progress
        cpus = os.cpu_count() or 1
        if cfg.threads > MAX_THREADS_PER_CPU * cpus:
            # torch crashed the process (SIGSEGV) at 100000 threads; no run gains from far more threads than cores.
            raise UserError(f"config field 'threads' must be at most {MAX_THREADS_PER_CPU * cpus} "
                            f"({MAX_THREADS_PER_CPU} per CPU of this machine's {cpus}), got {cfg.threads}")
        torch.set_num_threads(cfg.threads)
        self.device = resolve_device(cfg.device)
        self.distribution = self._distribution()
        self.epopt: Any = None
        """The training env's EPOpt wrapper (:class:`randomization.epopt.EpoptEnv`) when EPOpt is on."""
        self.env = self._randomized(make_env(self.env_id, cfg.engine, cfg.env_kwargs), training=True)
        self._eval_env: Any = None
        obs_space, act_space = self.env.observation_space, self.env.action_space
        assert isinstance(obs_space, gym.spaces.Box) and isinstance(act_space, gym.spaces.Box)  # make_env checks
        self.obs_dim = int(obs_space.shape[0])
        self.act_dim = int(act_space.shape[0])
        self.action_low = np.asarray(act_space.low, dtype=np.float64)
        self.action_high = np.asarray(act_space.high, dtype=np.float64)
        self._env_low = np.asarray(act_space.low)
        self._env_high = np.asarray(act_space.high)
        self.learner = _allocate(lambda: build_learner(cfg, self.obs_dim, self.act_dim, self.device), "hidden",
                                 f"networks of widths {list(cfg.hidden)} do not fit")
        self.policy_actor = self.learner.actor
        """The policy evaluated, checkpointed and exported: the learner's actor, or with ``policy_average`` the
        Polyak average of its weights."""
        self._averaged: tuple[list[torch.Tensor], list[torch.Tensor], float] | None = None
        """(the policy's parameters, the online actor's, the rate) when averaging."""
        if cfg.policy_average > 0:
            self.policy_actor = copy.deepcopy(self.learner.actor).requires_grad_(False)
            self._averaged = (list(self.policy_actor.parameters()), list(self.learner.actor.parameters()),
                              cfg.policy_average)
        self.buffer = _allocate(
            lambda: ReplayBuffer(cfg.buffer_size, self.obs_dim, self.act_dim, self.device, cfg.seed + 2),
            "buffer_size", f"a replay buffer of {cfg.buffer_size} transitions does not fit")
        assert cfg.gamma is not None
        self._nstep = NStepReturns(cfg.n_step, cfg.gamma) if cfg.n_step > 1 else None
        """Folds steps into n-step transitions (transitions of an episode cut by a resume are not stored)."""
        self.obs_stats = RunningMeanStd.zeros(self.obs_dim)
        self._pending_obs = np.zeros((NORM_BATCH, self.obs_dim))
        self._n_pending = 0
        self.state = LoopState()
        self.rng = np.random.default_rng(cfg.seed + 3)
        self.last_eval: dict[str, Any] | None = None
        self.stop_requested = False
        self.rows: list[dict[str, Any]] = []
        self._writer: Any = None
        self._refresh_normalization()
        self._reset_interval()
        self._recent: deque[tuple[float, bool | None]] = deque(maxlen=RECENT_EPISODES)
        self._episode_return = 0.0
        self._episode_len = 0
        self._episode_terms: dict[str, float] = {}
        self._obs: np.ndarray | None = None
        self._stepper: EnvStepper | None = None
        self._bar: Any = None
        self._loop_t0 = time.perf_counter()

    # --- randomization ---------------------------------------------------------------------------
    def _distribution(self) -> Any:
        if self.cfg.randomize is None:
            return None

        return parse_distribution(self.cfg.randomize, "config field 'randomize'", task=self.cfg.task)

    def _randomized(self, env: Any, training: bool) -> Any:
        """``env`` under the run's distribution: EPOpt's schedule for training when it is on, plain
        per-episode draws otherwise (evaluation draws are seeded by the episode seed, the same every time)."""
        if self.distribution is None:
            return env

        cfg = self.cfg
        if training and cfg.epopt_eps is not None:
            self.epopt = EpoptEnv(env, self.distribution,
                                  EpoptConfig(cfg.epopt_eps, cfg.epopt_models, cfg.epopt_warmup), cfg.seed + 4)
            return self.epopt
        return RandomizedEnv(env, self.distribution, cfg.seed + 4)

    # --- normalization ---------------------------------------------------------------------------
    def _refresh_normalization(self) -> None:
        if self.cfg.obs_norm:
            inv_std = 1.0 / np.sqrt(self.obs_stats.var + DEFAULT_NORM_EPS)
            mean = self.obs_stats.mean
            self._clip = self.cfg.obs_norm_clip
        else:
            inv_std = np.ones(self.obs_dim)
            mean = np.zeros(self.obs_dim)
            self._clip = math.inf
        self._np_mean = mean.astype(np.float32)
        self._np_inv_std = inv_std.astype(np.float32)
        self._t_mean = torch.from_numpy(self._np_mean.copy()).to(self.device)
        self._t_inv_std = torch.from_numpy(self._np_inv_std.copy()).to(self.device)

    def _observe(self, obs: np.ndarray) -> None:
        """Queue an observation for the running statistics, folded in every ``NORM_BATCH`` observations."""
        if self.cfg.obs_norm:
            self._pending_obs[self._n_pending] = obs
            self._n_pending += 1
            if self._n_pending == NORM_BATCH:
                self.flush_observations()

    def flush_observations(self) -> None:
        """Fold the queued observations into the statistics now."""
        if self._n_pending:
            self.obs_stats.update(self._pending_obs[: self._n_pending])
            self._n_pending = 0
            self._refresh_normalization()

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        """The learner's view of a raw observation (float32)."""
        out = (np.asarray(obs, dtype=np.float32) - self._np_mean) * self._np_inv_std
        return np.clip(out, -self._clip, self._clip, out=out)

    def sample(self, buffer: ReplayBuffer, n: int) -> Batch:
        """``n`` transitions of ``buffer``, normalized with the current statistics."""
        return buffer.sample(n, self._t_mean, self._t_inv_std, self._clip)

    def policy_module(self) -> PolicyModule:
        """Normalizer (current statistics) + actor, the deterministic policy as deployed."""
        if self.cfg.obs_norm:
            norm = ObsNormalizer(
                torch.from_numpy(self.obs_stats.mean),
                torch.from_numpy(self.obs_stats.var),
                self.cfg.obs_norm_clip,
                DEFAULT_NORM_EPS,
            )
        else:
            norm = ObsNormalizer(torch.zeros(self.obs_dim), torch.ones(self.obs_dim), math.inf, 0.0)
        return PolicyModule(norm.to(self.device), self.policy_actor).eval()

    # --- the loop --------------------------------------------------------------------------------
    def _start_episode(self, seed: int | None) -> None:
        obs, _ = self.env.reset(seed=seed)
        self._obs = np.asarray(obs)
        self._observe(self._obs)

    def run_until(self, target_step: int) -> None:
        """Train until ``target_step`` environment steps (or until :attr:`stop_requested`)."""
        cfg = self.cfg
        assert cfg.warmup_steps is not None and cfg.eval_interval is not None
        if self._obs is None:
            self._start_episode(seed=cfg.seed + self.state.step)
        if self._stepper is None:
            self._stepper = EnvStepper(self.env, threaded=cfg.overlap_env)
        stepper = self._stepper
        learner, buffer, st = self.learner, self.buffer, self.state
        nstep = self._nstep
        batch_size, updates_per_step = cfg.batch_size, cfg.updates_per_step
        bar = self._bar
        t_start = time.perf_counter()
        try:
            while st.step < target_step and not self.stop_requested:
                obs = self._obs
                assert obs is not None
                if st.step < cfg.warmup_steps:
                    action = self.rng.uniform(-1.0, 1.0, self.act_dim).astype(np.float32)
                else:
                    x = torch.from_numpy(self.normalize(obs)[None]).to(self.device)
                    action = learner.explore(x)[0].cpu().numpy()
                stepper.submit(to_env_action(action, self._env_low, self._env_high))
                if st.step >= cfg.warmup_steps and len(buffer) >= batch_size:
                    for _ in range(updates_per_step):
                        stats = learner.update(buffer.sample(batch_size, self._t_mean, self._t_inv_std, self._clip))
                        # Per key: the actor's and temperature's statistics come from every policy_delay-th
                        # update only, and averaging them over all updates understated them that many times.
                        acc, counts = self._update_sums, self._update_counts
                        for k, v in stats.items():
                            acc[k] = acc.get(k, 0.0) + v
                            counts[k] = counts.get(k, 0) + 1
                    st.updates += updates_per_step
                    if self._averaged is not None:
                        with torch.no_grad():
                            torch._foreach_lerp_(*self._averaged)
                res = stepper.result()
                if nstep is None:
                    buffer.add(obs, action, res.reward, res.obs, res.terminated)
                else:
                    for transition in nstep.push(obs, action, res.reward, res.obs, res.terminated,
                                                 res.reset_obs is not None):
                        buffer.add(*transition)
                st.step += 1
                self._episode_return += res.reward
                self._episode_len += 1
                terms = res.info.get("reward_terms")
                if terms:
                    et = self._episode_terms
                    for k, v in terms.items():
                        et[k] = et.get(k, 0.0) + float(v)
                self._observe(res.obs)
                if res.reset_obs is not None:
                    self._end_episode(res.info.get("success"))
                    self._obs = np.asarray(res.reset_obs)
                    self._observe(self._obs)
                else:
                    self._obs = res.obs
                if self.run is not None:
                    self._periodic(bar)
        finally:
            st.train_time_s += time.perf_counter() - t_start

    def _end_episode(self, success: Any) -> None:
        s = None if success is None else bool(success)
        self._recent.append((self._episode_return, s))
        iv = self._interval
        iv["returns"].append(self._episode_return)
        iv["lengths"].append(self._episode_len)
        iv["successes"].append(s)
        for k, v in self._episode_terms.items():
            iv["terms"].setdefault(k, []).append(v)
        self.state.episodes += 1
        self._episode_return = 0.0
        self._episode_len = 0
        self._episode_terms = {}

    # --- logging, evaluation, checkpoints --------------------------------------------------------
    def _reset_interval(self) -> None:
        self._interval: dict[str, Any] = {"returns": [], "lengths": [], "successes": [], "terms": {}}
        self._update_sums: dict[str, float] = {}
        self._update_counts: dict[str, int] = {}
        self._interval_t0 = time.perf_counter()
        self._interval_step0 = self.state.step
        self._eval_time_in_interval = 0.0

    def _periodic(self, bar: Any) -> None:
        cfg = self.cfg
        step = self.state.step
        if bar is not None and step % PROGRESS_EVERY_STEPS == 0:
            bar.update(step - bar.n)
            if step % (PROGRESS_EVERY_STEPS * 10) == 0:
                bar.set_postfix(self._progress_fields(), refresh=False)
        if step % cfg.log_interval == 0:
            self.log_train_row()
        assert cfg.eval_interval is not None
        if step % cfg.eval_interval == 0:
            self.evaluate_and_checkpoint()

    def _progress_fields(self) -> dict[str, str]:
        fields: dict[str, str] = {}
        if self._recent:
            fields["return"] = f"{np.mean([r for r, _ in self._recent]):.1f}"
            succ = [s for _, s in self._recent if s is not None]
            if succ:
                fields["success"] = f"{np.mean(succ):.2f}"
        if isinstance(self.learner, SACLearner):
            fields["alpha"] = f"{float(self.learner.model.log_alpha.detach().exp()):.3g}"
        return fields

    def log_train_row(self) -> None:
        st = self.state
        iv = self._interval
        elapsed = time.perf_counter() - self._interval_t0 - self._eval_time_in_interval
        row: dict[str, Any] = {
            "kind": "train",
            "step": st.step,
            "time_s": round(st.train_time_s + (time.perf_counter() - self._loop_t0), 3),
            "episodes": st.episodes,
            "updates": st.updates,
            "steps_per_s": (st.step - self._interval_step0) / elapsed if elapsed > 0 else None,
        }
        if iv["returns"]:
            row["return_mean"] = float(np.mean(iv["returns"]))
            row["episode_length"] = float(np.mean(iv["lengths"]))
            succ = [s for s in iv["successes"] if s is not None]
            row["success_rate"] = float(np.mean(succ)) if succ else None
            for k, v in iv["terms"].items():
                row[f"reward_terms/{k}"] = float(np.mean(v))
        for k, v in self._update_sums.items():
            row[k] = v / self._update_counts[k]
        if self.epopt is not None:
            row.update({f"epopt/{k}": v for k, v in self.epopt.schedule.last.items()})
        self._write_row(row)
        self._reset_interval()

    def _write_row(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if self.run is None:
            return
        with self.run.metrics.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self._writer is not None:
            prefix = row["kind"]
            for k, v in row.items():
                if k not in ("kind", "step") and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._writer.add_scalar(f"{prefix}/{k}", v, row["step"])
            self._writer.flush()

    def eval_env(self) -> Any:
        if self._eval_env is None:
            self._eval_env = self._randomized(make_env(self.env_id, self.cfg.engine, self.cfg.env_kwargs),
                                              training=False)
        return self._eval_env

    def evaluate(self) -> dict[str, Any]:
        """Deterministic episodes with the current policy, seeded the same every time."""
        self.flush_observations()
        module = self.policy_module()

        def policy(obs: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                out = module(torch.tensor(obs, device=self.device).unsqueeze(0))
            return out[0].cpu().numpy()

        episodes = self.cfg.eval_episodes
        assert episodes is not None
        return evaluate_env(policy, self.eval_env(), episodes, self.cfg.seed + EVAL_SEED_OFFSET)

    def evaluate_and_checkpoint(self) -> None:
        t0 = time.perf_counter()
        result = self.evaluate()
        self.last_eval = result
        row = {"kind": "eval", "step": self.state.step, **result}
        self._write_row(row)
        st = self.state
        success = result["success_rate"] if result["success_rate"] is not None else -math.inf
        better = (success, result["return_mean"]) > (st.best_success, st.best_return)
        if better:
            st.best_success, st.best_return = success, result["return_mean"]
        self.save(with_best=better)
        self.plot()
        self._eval_time_in_interval += time.perf_counter() - t0

    def checkpoint(self, training: bool) -> Checkpoint:
        """The current policy (and, with ``training``, everything ``--resume`` needs)."""
        cfg = self.cfg
        self.flush_observations()
        state = None
        if training:
            loop = self.state.to_dict()
            if self.epopt is not None:
                loop["epopt_iteration"] = self.epopt.schedule.iteration
            state = {"learner": self.learner.training_state(), "loop": loop}
            if self.policy_actor is not self.learner.actor:
                state["online_actor"] = self.learner.actor.state_dict()
        return Checkpoint(
            algo=cfg.algo,
            env_id=self.env_id,
            task=cfg.task,
            engine=cfg.engine,
            step=self.state.step,
            config=cfg.to_dict(),
            obs_dim=self.obs_dim,
            act_dim=self.act_dim,
            hidden=tuple(cfg.hidden),
            activation=cfg.activation,
            stochastic=self.policy_actor.stochastic,
            actor_state=self.policy_actor.state_dict(),
            obs_norm=cfg.obs_norm,
            obs_mean=self.obs_stats.mean.copy(),
            obs_var=self.obs_stats.var.copy(),
            obs_count=self.obs_stats.count,
            obs_clip=cfg.obs_norm_clip,
            obs_eps=DEFAULT_NORM_EPS,
            action_low=self.action_low,
            action_high=self.action_high,
            eval=self.last_eval,
            training=state,
        )

    def save(self, with_best: bool = False) -> None:
        """Write ``last.pt`` (+ ``replay.pt``), and ``best.pt`` when asked.

        ``best.pt`` carries the training state too (critics, temperature, optimizers; the replay stays in
        ``replay.pt``): it is the policy ``s2r export RUN_DIR`` and ``s2r deploy`` take, so ``s2r finetune``
        continues from it, the policy that was deployed, rather than from ``last.pt``."""
        if self.run is None:
            return
        ckpt = self.checkpoint(training=True)
        save_checkpoint(self.run.last, ckpt)
        if self.cfg.save_replay:
            save_atomic(self.buffer.state_dict(), self.run.replay)
        if with_best:
            save_checkpoint(self.run.best, ckpt)

    def plot(self) -> None:
        """Write the learning curve (training and evaluation return, evaluation success)."""
        if self.run is None:
            return
        from policies.plot import plot_learning_curve

        plot_learning_curve(self.rows, self.run.curve, title=f"{self.cfg.algo.upper()} on {self.env_id}")

    # --- resume ----------------------------------------------------------------------------------
    def restore(self) -> None:
        """Continue from the run directory's ``last.pt`` (and ``replay.pt`` when present)."""
        assert self.run is not None
        if not self.run.last.is_file():
            raise UserError(f"cannot resume: {str(self.run.last)!r} does not exist")
        self.load_training(self.run.last, self.run.replay if self.cfg.save_replay else None)
        changed = self._evaluation_changes()
        if changed:
            # best.pt's score was measured on other evaluation episodes; it says nothing about this run's. Left
            # alone, a resume under an adapted distribution kept handing out the policy from before it.
            self.state.best_success = self.state.best_return = -math.inf
            print(f"s2r train: {', '.join(changed)} changed on resume: the next evaluation replaces best.pt",
                  file=sys.stderr)
        self.rows = [r for r in _read_rows(self.run.metrics) if r.get("step", 0) <= self.state.step]
        _write_rows_atomic(self.run.metrics, self.rows)
        self._reset_interval()

    def _evaluation_changes(self) -> list[str]:
        """Config fields that decide the evaluation episodes and differ from the run's saved ``config.yaml``."""
        assert self.run is not None
        if not self.run.config.is_file():
            return []
        saved = read_yaml_file(self.run.config, "the run's config") or {}
        if not isinstance(saved, dict):
            raise UserError(f"cannot resume: the run's {str(self.run.config)!r} must hold a mapping of config fields, "
                            f"got {type(saved).__name__}")
        now = load_yaml(dump_config(self.cfg)) or {}
        return [k for k in EVALUATION_FIELDS if saved.get(k) != now.get(k)]

    def load_training(self, path: Path, replay: Path | None = None) -> None:
        """Learner, counters and observation statistics from the checkpoint ``path`` (which must hold training
        state for this config's algorithm and spaces), and the replay buffer from ``replay`` when it exists."""
        ckpt = load_checkpoint(path)
        if ckpt.training is None:
            raise UserError(f"cannot resume from {str(path)!r}: it holds no training state")
        if (ckpt.algo, ckpt.env_id, ckpt.obs_dim, ckpt.act_dim) != (
            self.cfg.algo,
            self.env_id,
            self.obs_dim,
            self.act_dim,
        ):
            raise UserError(
                f"cannot resume: the checkpoint is {ckpt.algo} on {ckpt.env_id} "
                f"(obs {ckpt.obs_dim}, act {ckpt.act_dim}), "
                f"the config asks for {self.cfg.algo} on {self.env_id} (obs {self.obs_dim}, act {self.act_dim})"
            )
        try:
            load_module_state(self.policy_actor, ckpt.actor_state, "actor")
            if self.policy_actor is not self.learner.actor:
                # A checkpoint of a run without averaging holds one actor: the average starts there.
                load_module_state(self.learner.actor, ckpt.training.get("online_actor", ckpt.actor_state), "actor")
            self.learner.load_training_state(ckpt.training["learner"])
            loop = ckpt.training["loop"]
            self.state = LoopState(**{f.name: loop[f.name] for f in dataclasses.fields(LoopState)})
            if self.epopt is not None:
                # The warm-up is not repeated; the interrupted iteration's probes are drawn afresh.
                self.epopt.schedule.iteration = int(loop.get("epopt_iteration", 0))
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise UserError(f"cannot resume from {str(path)!r}: {exc}") from exc
        self.obs_stats = RunningMeanStd(ckpt.obs_mean.copy(), ckpt.obs_var.copy(), ckpt.obs_count)
        self._refresh_normalization()
        self.rng = np.random.default_rng([self.cfg.seed + 3, self.state.step])  # not a replay of the warm-up
        self.last_eval = ckpt.eval
        if replay is not None and replay.is_file():
            try:
                data = torch.load(replay, map_location="cpu", weights_only=True)
                self.buffer.load_state_dict(data)
            except Exception as exc:  # a damaged replay file only costs the replay, not the run
                print(
                    f"s2r train: warning: replay buffer not restored ({exc}); refilling from scratch", file=sys.stderr
                )

    def load_policy(self, ckpt: Checkpoint) -> None:
        """The actor and observation statistics of ``ckpt`` (a policy of this config's algorithm and spaces) in
        place of the learner's, leaving the rest of the training state as it is."""
        if (ckpt.algo, ckpt.obs_dim, ckpt.act_dim) != (self.cfg.algo, self.obs_dim, self.act_dim):
            raise UserError(f"the policy is {ckpt.algo} (obs {ckpt.obs_dim}, act {ckpt.act_dim}); the learner is "
                            f"{self.cfg.algo} (obs {self.obs_dim}, act {self.act_dim})")
        try:
            load_module_state(self.learner.actor, ckpt.actor_state, "actor")
            if self.policy_actor is not self.learner.actor:
                load_module_state(self.policy_actor, ckpt.actor_state, "actor")
        except ValueError as exc:
            raise UserError(f"cannot load the policy: {exc}") from exc
        self.obs_stats = RunningMeanStd(ckpt.obs_mean.copy(), ckpt.obs_var.copy(), ckpt.obs_count)
        self._refresh_normalization()

    # --- whole run ------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Run to ``cfg.steps`` (or until stopped), evaluate at the end, save, and summarize."""
        cfg = self.cfg
        self._loop_t0 = time.perf_counter()
        if self.run is not None:
            self._writer = _summary_writer(self.run.tensorboard, purge_step=self.state.step or None)
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.steps, initial=self.state.step, unit="step", dynamic_ncols=True, smoothing=0.1)
        self._bar = bar
        try:
            self.run_until(cfg.steps)
            interrupted = self.stop_requested
            if not interrupted and self.run is not None:
                if not self.rows or self.rows[-1].get("kind") != "eval" or self.rows[-1]["step"] != self.state.step:
                    if self.state.step % cfg.log_interval != 0:
                        self.log_train_row()
                    self.evaluate_and_checkpoint()
            elif self.run is not None:
                self.save()
                self.plot()
        finally:
            if bar is not None:
                bar.update(self.state.step - bar.n)
                bar.close()
            self.close()
        return {
            "run_dir": str(self.run.root) if self.run is not None else None,
            "steps": self.state.step,
            "episodes": self.state.episodes,
            "interrupted": interrupted,
            "train_time_s": round(self.state.train_time_s, 2),
            "eval": self.last_eval,
        }

    def close(self) -> None:
        if self._stepper is not None:
            self._stepper.close()
            self._stepper = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.env.close()
        if self._eval_env is not None:
            self._eval_env.close()
            self._eval_env = None


def _read_rows(path: Path) -> list[dict[str, Any]]:
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


def _write_rows_atomic(path: Path, rows: list[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))


class _StopOnSigint:
    """While active, the first Ctrl-C asks the trainer to stop (it then saves); a second one aborts."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self._previous: Any = None

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
        write_text_atomic(run.config, dump_config(trainer.cfg))
    except BaseException:
        trainer.close()
        raise
    with _StopOnSigint(trainer):
        return trainer.train()
