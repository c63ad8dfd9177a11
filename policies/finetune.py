"""Fine-tuning's learning from real data: the learner built from the deployed run, its replay of the robot's
transitions, mixed batches, updates, checkpoints, and the gate replayed from the logs.

It uses the parts simulation training's loop calls, without the loop: the :class:`~policies.agent.Agent` (learner,
policy, observation normalization, checkpoints) on the deployed checkpoint's spaces (no environment steps), the
loop counters (:class:`~policies.train.LoopState`) and the simulation replay (:func:`policies.rundir.load_replay`).

A goal-conditioned run (``s2r/DClawTurnGoal-v0``) fine-tunes as it trained (:class:`GoalSetup`): its robot episodes,
whose logged observations are ``concat(observation, desired_goal)``, go whole into a :class:`~policies.her.
HerReplayBuffer` with the run's strategy and ``her_k``, each transition's achieved goal read from the logged state
(``task.achieved_goal``) and every reward the environment's ``compute_reward`` (the robot's own reward is the flat
task's shaped one); batches are relabelled at sampling time, and the simulation replay is the run's HER replay.
The statistics stay the deployed policy's, whose goal half the trainer fitted to achieved goals, so a hindsight
goal is normalized as in training. A goal run trained with ``her_strategy=none`` replays its commanded goals only
(a flat replay), its rewards recomputed all the same.

The robot side (episodes, exports, the incumbent's files, ``s2r finetune``) is :mod:`s2r.finetune`, whose
docstring says how the two work together.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from policies.agent import Agent, Spaces, allocate
from policies.checkpoint import LAST_NAME as RUN_LAST
from policies.checkpoint import REPLAY_NAME, load_checkpoint, resolve_checkpoint_path, save_checkpoint
from policies.config import TrainConfig, config_from_mapping
from policies.dataset import trajlog_to_dataset, usable_transitions
from policies.envs import ComputeReward, GoalLayout, find_goal_env, make_env, resolve_task
from policies.finetune_config import FinetuneConfig
from policies.gate import Gate
from policies.her import HerReplayBuffer, HerStrategy
from policies.metrics import Metrics
from policies.replay import Batch, Replay, ReplayBuffer
from policies.rundir import load_replay
from policies.train import LoopState, setup_torch
from s2r.core.errors import ParameterError, UserError
from s2r.core.trajlog import Episode, episode_files, read_episodes
from sim.goal_env import GoalTask, is_goal_task
from sim.state import RobotState
from sim.tasks import GOAL_IDS
from sim.tasks.actions import clip_action

META_KEY = "finetune"
"""Key of an episode log's meta holding its kind, round and whether the gate counts it."""


_NOT_A_RUN = {
    ".zip": "a Stable-Baselines3 model (deploy it with `s2r export --from-sb3 MODEL.zip`, then `s2r deploy`)",
    ".onnx": "an exported policy (fine-tune the RUN_DIR it was exported from)",
}


def deployed_checkpoint(run_dir: Path) -> Path:
    """The checkpoint ``s2r export RUN_DIR`` and ``s2r deploy RUN_DIR`` use: the run's best.pt, else last.pt; or
    ``run_dir`` itself when it names a checkpoint in its run directory."""
    if run_dir.is_file() and run_dir.suffix in _NOT_A_RUN:
        # A policy without its learner: fine-tuning continues a run's critics, temperature and replay.
        raise UserError(f"{str(run_dir)!r} is {_NOT_A_RUN[run_dir.suffix]}, not an s2r training run: fine-tuning "
                        "continues a run's learner (its critics and replay), which the file does not hold")
    if not run_dir.exists():
        raise UserError(f"run directory or checkpoint {str(run_dir)!r} does not exist")
    return resolve_checkpoint_path(run_dir)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class GoalSetup:
    """How a goal-conditioned run's robot transitions are replayed: as the trainer replayed its simulated ones."""

    layout: GoalLayout
    """Where ``desired_goal`` lies in the flat observation the policy acts on (and the robot logs)."""
    compute_reward: ComputeReward
    """The run's environment's vectorized reward of (achieved, desired) goal rows (its ``reward_type``)."""
    task: GoalTask
    """The task that says which goal a logged state achieves."""
    strategy: HerStrategy | None
    """The run's HER strategy; ``None`` for a run trained with ``her_strategy=none`` (no relabelling)."""
    k: int
    """Hindsight goals per original goal (the run's ``her_k``)."""

    def replay(self, capacity: int, act_dim: int, device: torch.device, seed: int) -> Replay:
        """An empty replay for this run's goal transitions: a HER replay, or a flat one without a strategy."""
        if self.strategy is None:
            return ReplayBuffer(capacity, self.layout.size, act_dim, device, seed)
        return HerReplayBuffer(capacity, self.layout, act_dim, device, seed, self.strategy, self.k,
                               self.compute_reward)


def goal_setup(train_cfg: TrainConfig, env_id: str) -> GoalSetup:
    """The goal replay of the resolved config of a run on the goal-conditioned ``env_id``: its environment (built,
    not stepped) gives the layout, ``compute_reward`` and the task."""
    env = make_env(env_id, train_cfg.engine, train_cfg.env_kwargs)
    try:
        goal_env = find_goal_env(env)
        task = getattr(env.unwrapped, "task", None)
        if goal_env is None or not is_goal_task(task):
            raise UserError(f"{env_id} is not a goal-conditioned task with a goal view; fine-tuning "
                            "cannot relabel its robot episodes")
        strategy = train_cfg.her_strategy
        return GoalSetup(goal_env.layout, goal_env.compute_reward, cast(GoalTask, task),
                         None if strategy in (None, "none") else cast(HerStrategy, strategy), train_cfg.her_k)
    finally:
        env.close()


@dataclass
class Learning:
    """What fine-tuning continues from: the simulation run's agent, its replay (when the batches draw from it),
    its loop counters and its last evaluation (carried into every checkpoint fine-tuning writes)."""

    agent: Agent
    sim: Replay | None
    """The simulation run's ``replay.pt`` (``None`` with ``sim_fraction`` 0: the batches never draw from it)."""
    loop: LoopState
    last_eval: dict[str, Any] | None
    goal: GoalSetup | None = None
    """How a goal-conditioned run replays its transitions (``None`` for a flat run)."""


def build_agent(cfg: FinetuneConfig, resume_state: Path | None = None) -> tuple[Learning, dict[str, str]]:
    """The agent of the run's config holding the deployed policy with its training state (or, with
    ``resume_state``, the learner of that fine-tuning checkpoint), and its simulation replay when the batches use
    it; and where it started from (``checkpoint``, ``sha256``, ``training_state_from``). No environment steps: the
    robot is where fine-tuning acts (a goal run's environment is built for its goal replay only, :func:`goal_setup`)."""
    deployed = deployed_checkpoint(cfg.run_dir)
    source = load_checkpoint(deployed)
    goal_conditioned = source.env_id in GOAL_IDS
    # The robot is the only world now: no simulated randomization or model mining. No weight averaging either: the
    # deployed policy (an average, if the run averaged) is where the actor starts, and a round's few hundred
    # updates are the candidate itself.
    train_cfg = config_from_mapping({**{k: v for k, v in source.config.items() if k not in ("randomize", "epopt_eps")},
                                     "policy_average": 0.0})
    train_cfg = train_cfg.resolved(resolve_task(train_cfg.task), goal_conditioned=goal_conditioned)
    goal = goal_setup(train_cfg, source.env_id) if goal_conditioned else None
    agent = Agent(train_cfg, Spaces.of_checkpoint(source), setup_torch(train_cfg))
    start = {"checkpoint": str(deployed), "sha256": sha256_of(deployed), "training_state_from": str(deployed)}
    fallback = False
    if resume_state is not None:
        path = resume_state
        start["resumed_from"] = str(resume_state)
    elif source.training is not None:
        path = deployed
    else:
        path = cfg.run_root / RUN_LAST
        if path == deployed or not path.is_file():
            raise UserError(f"{str(deployed)!r} holds no training state (critics, optimizers) and there is no "
                            f"{RUN_LAST} beside it to take them from")
        start["training_state_from"] = str(path)
        fallback = True
    ckpt = load_checkpoint(path)
    try:
        loop = LoopState.from_dict(agent.load_training(ckpt, str(path)))
    except (KeyError, ValueError, TypeError) as exc:
        raise UserError(f"cannot resume from {str(path)!r}: {exc}") from exc
    if fallback:
        agent.load_policy(source)  # the deployed actor and statistics over the critics of the run's last.pt
    sim = None
    if cfg.sim_fraction > 0:
        sp = agent.spaces
        sim = allocate(lambda: (ReplayBuffer(train_cfg.buffer_size, sp.obs_dim, sp.act_dim, agent.device,
                                             train_cfg.seed + 2) if goal is None else
                                goal.replay(train_cfg.buffer_size, sp.act_dim, agent.device, train_cfg.seed + 2)),
                       "buffer_size", f"a replay buffer of {train_cfg.buffer_size} transitions does not fit")
        load_replay(sim, cfg.run_root / REPLAY_NAME)
    return Learning(agent, sim, loop, ckpt.eval, goal), start


def transitions_from_logs(log_dir: Path) -> dict[str, np.ndarray] | None:
    """Every usable transition logged so far (``None`` when there is none)."""
    if not episode_files(log_dir):
        return None
    try:
        return trajlog_to_dataset(log_dir, include_partial=True)
    except UserError:
        return None  # episodes without a single good transition


@dataclass(frozen=True)
class GoalSegment:
    """Consecutive usable transitions of one logged episode of a goal policy: one episode of the HER replay."""

    episode: int
    """Index of the logged episode (its file name's number)."""
    observations: np.ndarray
    """(n+1, O) float32: ``concat(observation, desired_goal)`` before each action, then after the last."""
    actions: np.ndarray
    """(n, J) float32: the normalized action as applied (clipped to [-1, 1])."""
    next_achieved_goals: np.ndarray
    """(n, G) float32: the goal each action's next state achieved."""
    rewards: np.ndarray
    """(n,) float32: the environment's ``compute_reward`` of the next achieved goal and the commanded one."""


def logged_state(ep: Episode, row: int) -> RobotState:
    """Reading ``row`` of a logged episode as the task's state (the fields a goal is read from)."""
    def get(name: str) -> np.ndarray:
        return np.asarray(ep.arrays[name][row], dtype=np.float64) if name in ep.arrays else np.zeros(0)

    return RobotState(float(ep["time"][row]), get("joint_pos"), get("joint_vel"), get("passive_pos"),
                      get("passive_vel"), base_quat=get("base_quat"), base_angvel=get("base_angvel"),
                      base_pos=get("base_pos"), base_linvel=get("base_linvel"))


def goal_segments_from_logs(log_dir: Path, goal: GoalSetup, first_episode: int = 0) -> list[GoalSegment]:
    """The usable transitions of the logged episodes from index ``first_episode`` on (the same ones
    :func:`policies.dataset.trajlog_to_dataset` takes, stopped episodes too), as runs of consecutive transitions,
    with their achieved goals and rewards recomputed (:class:`GoalSegment`)."""
    if not log_dir.is_dir() or not episode_files(log_dir):
        return []
    segments = []
    for ep in read_episodes(log_dir):
        if ep.index < first_episode or ep.steps == 0:
            continue
        obs = np.asarray(ep["obs"], dtype=np.float64)
        action = np.asarray(ep["action"], dtype=np.float64)
        reward = np.asarray(ep["reward"], dtype=np.float64)
        if obs.shape[1] != goal.layout.size:
            raise UserError(f"episode {ep.index} in {str(log_dir)!r} logged observations of {obs.shape[1]} values; "
                            f"the goal policy takes {goal.layout.size}")
        ok = usable_transitions(obs, action, reward)
        achieved = np.stack([goal.task.achieved_goal(logged_state(ep, r)) for r in range(ep.steps + 1)])
        edges = np.flatnonzero(np.diff(np.concatenate(([0], ok.astype(np.int8), [0]))))
        for start, stop in zip(edges[::2], edges[1::2], strict=True):
            next_achieved = achieved[start + 1:stop + 1].astype(np.float32)
            desired = goal.layout.goal(obs[start:stop]).astype(np.float32)
            rewards = np.asarray(goal.compute_reward(next_achieved, desired, [{}] * len(desired)),
                                 dtype=np.float32).reshape(len(desired))
            segments.append(GoalSegment(ep.index, obs[start:stop + 1].astype(np.float32),
                                        clip_action(action[start:stop]).astype(np.float32), next_achieved, rewards))
    return segments


class Finetuner:
    """The learner side: real replay, mixed batches, updates, checkpoints and exports."""

    def __init__(self, cfg: FinetuneConfig, learning: Learning, real_capacity: int) -> None:
        self.cfg = cfg
        self.agent = agent = learning.agent
        self.sim = learning.sim
        self.loop = learning.loop
        """The simulation run's counters, ``updates`` counting fine-tuning's gradient steps on top."""
        self.last_eval = learning.last_eval
        self.batch_size = cfg.batch_size or agent.cfg.batch_size
        self.goal = learning.goal
        capacity, sp = max(real_capacity, 1), agent.spaces
        self.real: Replay = (ReplayBuffer(capacity, sp.obs_dim, sp.act_dim, agent.device, cfg.seed + 11)
                             if self.goal is None else self.goal.replay(capacity, sp.act_dim, agent.device,
                                                                        cfg.seed + 11))
        self.next_episode = 0
        """Index of the first logged episode not yet in the real replay (goal runs)."""
        self.real_transitions = 0
        """Transitions put in the real replay."""
        self.updates = 0
        self.critic_warmed = False
        """Whether the critic-only warm-up has run (it runs once, before the actor's first update)."""
        self.stats = Metrics(None)
        """The updates' statistics (critic loss, ...) since :meth:`update_stats` last took them."""

    def add_dataset(self, data: dict[str, np.ndarray]) -> int:
        """Add transitions (``policies.dataset`` keys) to a flat run's replay; returns how many."""
        if not isinstance(self.real, ReplayBuffer) or self.goal is not None:
            raise TypeError("a goal run's robot transitions go in whole episodes, with their achieved goals: "
                            "add_goal_segments")
        n = len(data["rewards"])
        for i in range(n):
            self.real.add(data["observations"][i], data["actions"][i], float(data["rewards"][i]),
                          data["next_observations"][i], bool(data["terminals"][i]))
        self.real_transitions += n
        return n

    def add_goal_segments(self, segments: list[GoalSegment]) -> int:
        """Add a goal run's logged episodes (each segment whole, ended: the HER replay samples finished episodes
        only); returns how many transitions."""
        n = 0
        for seg in segments:
            t = len(seg.rewards)
            for i in range(t):
                obs, nxt = seg.observations[i], seg.observations[i + 1]
                if isinstance(self.real, HerReplayBuffer):
                    self.real.add(obs, seg.actions[i], float(seg.rewards[i]), nxt, seg.next_achieved_goals[i],
                                  False, episode_end=i == t - 1)
                elif isinstance(self.real, ReplayBuffer):
                    self.real.add(obs, seg.actions[i], float(seg.rewards[i]), nxt, False)
            n += t
            self.next_episode = max(self.next_episode, seg.episode + 1)
        self.real_transitions += n
        return n

    def add_logs(self, log_dir: Path) -> int:
        """Add the transitions of the episodes logged in ``log_dir`` since the last call; returns how many."""
        if self.goal is not None:
            return self.add_goal_segments(goal_segments_from_logs(log_dir, self.goal, self.next_episode))
        data = transitions_from_logs(log_dir)
        added = 0 if data is None else len(data["rewards"]) - self.real_transitions
        if data is None or added <= 0:
            return 0
        return self.add_dataset({key: v[len(v) - added:] for key, v in data.items()})

    def episode_start(self) -> None:
        """An exploration episode begins: the learner's exploration starts afresh (DDPG's Ornstein-Uhlenbeck
        noise from 0)."""
        self.agent.episode_start()

    def explore(self, obs: np.ndarray) -> np.ndarray:
        """The exploring actor's action for one raw observation (the controller's policy)."""
        with torch.no_grad():
            return self.agent.explore(np.asarray(obs, dtype=np.float32))

    def act(self, obs: np.ndarray) -> np.ndarray:
        """The deterministic policy (normalizer + actor, as exported) for raw observations ``[N, obs_dim]``."""
        with torch.inference_mode():
            out: np.ndarray = self.agent.policy_module()(torch.as_tensor(np.asarray(obs, dtype=np.float32),
                                                                         device=self.agent.device)).cpu().numpy()
        return out

    def _batch(self) -> Batch:
        obs = self.agent.obs
        n_sim = round(self.cfg.sim_fraction * self.batch_size) if self.sim is not None and len(self.sim) else 0
        real = obs.sample(self.real, self.batch_size - n_sim)
        if self.sim is None or not n_sim:
            return real
        return Batch.concat([real, obs.sample(self.sim, n_sim)])

    def _step(self, n: int, update_actor: bool) -> None:
        for _ in range(n):
            self.stats.updates(self.agent.update(self._batch(), update_actor))
        self.updates += n
        self.loop.updates += n

    def warm_up_critic(self) -> tuple[int, float]:
        """``critic_warmup`` critic-only steps (once); returns (steps taken, seconds)."""
        if self.critic_warmed or len(self.real) == 0:
            return 0, 0.0
        t0 = time.perf_counter()
        self._step(self.cfg.critic_warmup, update_actor=False)
        self.critic_warmed = True
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
        self._step(n, update_actor=True)
        return warm + n, took + time.perf_counter() - t0

    def update_stats(self) -> dict[str, float]:
        """Each update statistic's mean over the updates since the last call."""
        return self.stats.update_means()

    def save(self, path: Path, episodes_done: int) -> None:
        """The learner (with training state) as a checkpoint, written atomically."""
        ckpt = self.agent.checkpoint(self.loop.step, self.last_eval, self.loop.to_dict())
        assert ckpt.training is not None
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
        save_checkpoint(ckpt, self.agent.checkpoint(self.loop.step, self.last_eval, None))
        return ckpt


def replay_gate(cfg: FinetuneConfig, logs: Path) -> Gate:
    """The gate after the logged episodes, from each one's outcome (checked against the schedule)."""
    gate = Gate(cfg.schedule, cfg.confidence)
    if not logs.is_dir() or not episode_files(logs):
        return gate
    settings = gate_settings(cfg)
    for k, ep in enumerate(read_episodes(logs)):
        meta = ep.meta.get(META_KEY)
        kind, round_ = gate.next_kind()
        if not isinstance(meta, dict) or "kind" not in meta:
            raise ParameterError("resume", f"cannot continue: episode {k} in {str(logs)!r} has no fine-tuning kind in "
                                 "its meta (an older s2r finetune wrote it); start a new {out}")
        recorded = meta.get("gate")
        if isinstance(recorded, dict):
            recorded = {"gate_looks": 1, **recorded}  # logs from before gate_looks took one look
        if (meta["kind"], meta.get("round")) != (kind, round_) or recorded != settings:
            raise ParameterError("resume", f"cannot continue: episode {k} was a {meta['kind']} episode of round "
                                 f"{meta.get('round')} under the gate settings {meta.get('gate')}; with these settings "
                                 f"it would be a {kind} episode of round {round_} under {settings}: resume "
                                 "with the run's {incumbent_episodes}, {explore_episodes}, {gate_episodes}, "
                                 "{reeval_episodes}, {gate_looks} and {confidence}")
        gate.record(k, bool(ep.meta.get("success", False)), bool(meta.get("counted", True)))
    return gate


def gate_settings(cfg: FinetuneConfig) -> dict[str, Any]:
    """The schedule and confidence each episode's log records, so that a resume can check them."""
    return {**asdict(cfg.schedule), "confidence": cfg.confidence}
