"""Hindsight Experience Replay (:mod:`policies.her`): relabelling at sampling time with each strategy, rewards
recomputed by the environment, episodes stored once, the trainer on the goal-conditioned claw with every learner
(and its resume), observation statistics fed achieved goals, the refusals (HER on a flat task) and a goal policy's
verified export with its goal layout (fine-tuning a goal policy on the robot: ``test_finetune_goal.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from export.config import MIN_VERIFY_SAMPLES, ExportConfig
from export.onnx_export import export_policy
from export.onnx_policy import OnnxPolicy
from policies.checkpoint import load_checkpoint
from policies.collector import Collector
from policies.config import config_from_mapping
from policies.envs import FlatGoalEnv, GoalLayout, find_goal_env, make_env
from policies.her import HER_STRATEGIES, HerReplayBuffer, HerStrategy
from policies.observations import ObservationNormalization
from policies.train import Trainer, train
from randomization.wrapper import sim_env_of
from s2r.core.errors import UserError
from sim.env import SimEnv

CPU = torch.device("cpu")
GOAL_ID = "s2r/DClawTurnGoal-v0"
LAYOUT = GoalLayout(obs_size=3, goal_size=2)
"""The synthetic episodes' layout: an achieved goal is (episode, step), so a goal says where it came from."""
EPISODE_LENGTHS = (5, 7, 4, 6)
COMMANDED = 100.0
"""Commanded goals are (100 + episode, -1): never an achieved one."""


def _reward(achieved: np.ndarray, desired: np.ndarray, info: Any) -> np.ndarray:
    """0 where the goals agree, else minus the distance (a reward that tells goals apart)."""
    return -np.linalg.norm(np.asarray(achieved) - np.asarray(desired), axis=-1).astype(np.float32)


def _filled(strategy: HerStrategy, k: int = 4, capacity: int = 100,
            lengths: tuple[int, ...] = EPISODE_LENGTHS, last_open: int = 0) -> HerReplayBuffer:
    """A HER replay holding episodes of ``lengths`` (and ``last_open`` steps of one more, unfinished)."""
    buf = HerReplayBuffer(capacity, LAYOUT, 1, CPU, seed=0, strategy=strategy, k=k, compute_reward=_reward)
    for ep, length in enumerate((*lengths, last_open)):
        desired = np.array([COMMANDED + ep, -1.0])
        for t in range(length):
            obs = LAYOUT.flatten(np.array([ep, t, 0.0]), desired)
            nxt = LAYOUT.flatten(np.array([ep, t + 1, 0.0]), desired)
            achieved = np.array([ep, t], np.float32)  # what step t's next state reached
            buf.add(obs, np.array([0.5]), float(_reward(achieved, desired, None)), nxt, achieved, False,
                    episode_end=t == length - 1 and ep < len(lengths))
    return buf


@pytest.mark.parametrize("strategy", HER_STRATEGIES)
def test_each_strategy_takes_its_hindsight_goals_where_the_paper_says(strategy: HerStrategy) -> None:
    buf = _filled(strategy, last_open=3)
    raw = buf.sample_raw(4000)
    ep, t = raw["obs"][:, 0].astype(int), raw["obs"][:, 1].astype(int)
    goal = raw["goal"]
    assert (ep < len(EPISODE_LENGTHS)).all()  # the unfinished episode is never sampled
    re = raw["relabelled"]
    # the original goals: the commanded one, its reward the stored one
    np.testing.assert_array_equal(goal[~re], np.stack([COMMANDED + ep[~re], -np.ones((~re).sum())], axis=1))
    goal_ep, goal_step = goal[re, 0].astype(int), goal[re, 1].astype(int)
    own_ep, own_t = ep[re], t[re]
    length = np.array(EPISODE_LENGTHS)[own_ep]
    if strategy == "final":
        assert (goal_ep == own_ep).all() and (goal_step == length - 1).all()
    elif strategy == "future":
        assert (goal_ep == own_ep).all() and (goal_step >= own_t).all() and (goal_step < length).all()
        assert (goal_step > own_t).any() and (goal_step == own_t).any()
        # every step from t on is drawn: the first step of the longest episode reaches each later one
        assert set(goal_step[(own_ep == 1) & (own_t == 0)]) == set(range(7))
    elif strategy == "episode":
        assert (goal_ep == own_ep).all() and (goal_step < length).all()
        assert (goal_step < own_t).any()  # earlier steps too
        assert set(goal_step[own_ep == 1]) == set(range(7))
    else:
        stored = {(e, s) for e, n in enumerate(EPISODE_LENGTHS) for s in range(n)}
        assert set(zip(goal_ep.tolist(), goal_step.tolist(), strict=True)) == stored  # any stored, finished one
    # rewards: the environment's for the goal each row ends up with
    np.testing.assert_allclose(raw["rewards"], _reward(np.stack([ep, t], axis=1), goal, None), rtol=0, atol=1e-6)


@pytest.mark.parametrize("k", [1, 4])
def test_the_relabelled_fraction_is_k_over_k_plus_one(k: int) -> None:
    buf = _filled("future", k=k)
    frac = float(np.mean([buf.sample_raw(500)["relabelled"].mean() for _ in range(8)]))
    assert abs(frac - k / (k + 1)) < 0.03
    raw = buf.sample_raw(500)
    assert buf.last_relabelled == pytest.approx(raw["relabelled"].mean())


def test_episodes_are_stored_once_whatever_k() -> None:
    small, large = _filled("future", k=1), _filled("future", k=8)
    steps = sum(EPISODE_LENGTHS)
    for buf in (small, large):
        assert buf.size == len(buf) == steps
        assert buf.state_dict()["obs"].shape == (steps, LAYOUT.obs_size)  # type: ignore[attr-defined]
    arrays = ("obs", "next_obs", "desired_goal", "next_achieved_goal", "act_rew_term")
    assert sum(getattr(small, a).nbytes for a in arrays) == sum(getattr(large, a).nbytes for a in arrays)


def test_the_ring_drops_an_overwritten_episode_whole() -> None:
    # capacity 20: episodes 0-2 (16 steps) fit; episode 3 (6 steps) overwrites episode 0's first two slots
    buf = _filled("final", capacity=20)
    assert len(buf) == sum(EPISODE_LENGTHS) - EPISODE_LENGTHS[0]
    raw = buf.sample_raw(2000)
    assert set(raw["obs"][:, 0].astype(int)) == {1, 2, 3}
    # the episode that wrapped around the ring's end is whole: its final goal is its own last step
    wrapped = raw["obs"][:, 0] == 3
    assert (raw["goal"][wrapped & raw["relabelled"]] == [3, 5]).all()
    with pytest.raises(ValueError, match="longer than the replay capacity"):
        _filled("future", capacity=4)


def test_a_batch_is_the_observation_with_one_goal_normalized_and_it_resumes(tmp_path: Path) -> None:
    buf = _filled("future")
    mean, inv_std = torch.arange(5.0), torch.full((5,), 0.5)
    state = buf.state_dict()
    batch = buf.sample(64, mean, inv_std, clip=1e6)
    raw_obs = batch.obs / inv_std + mean
    raw_next = batch.next_obs / inv_std + mean
    torch.testing.assert_close(raw_obs[:, 3:], raw_next[:, 3:])  # the same goal before and after
    torch.testing.assert_close(raw_next[:, 1], raw_obs[:, 1] + 1)
    assert batch.terminated.shape == batch.rewards.shape == (64, 1) and batch.horizon is None
    # a restored replay (its generator too) samples the same batch
    torch.save(state, tmp_path / "replay.pt")
    again = HerReplayBuffer(100, LAYOUT, 1, CPU, seed=9, strategy="future", k=4, compute_reward=_reward)
    again.load_state_dict(torch.load(tmp_path / "replay.pt", weights_only=True))
    torch.testing.assert_close(again.sample(64, mean, inv_std, clip=1e6).obs, batch.obs)
    with pytest.raises(ValueError, match="does not fit"):
        HerReplayBuffer(10, LAYOUT, 1, CPU, 0, "future", 4, _reward).load_state_dict(state)
    with pytest.raises(ValueError, match="flat replay"):
        again.load_state_dict({"size": 0})


def test_rewards_are_the_goal_claws_own_compute_reward() -> None:
    env = make_env(GOAL_ID)
    goal_env = find_goal_env(env)
    assert isinstance(goal_env, FlatGoalEnv)
    buf = HerReplayBuffer(200, goal_env.layout, 9, CPU, 0, "future", 4, goal_env.compute_reward)
    obs, _ = env.reset(seed=1)
    rewards = []
    for step in range(80):
        action = np.full(9, 0.9 if step % 20 < 10 else -0.9, np.float32)
        nxt, reward, terminated, truncated, info = env.step(action)
        buf.add(obs, action, float(reward), nxt, info["achieved_goal"], terminated, terminated or truncated)
        rewards.append(reward)
        obs = env.reset()[0] if terminated or truncated else nxt
    assert isinstance(sim_env_of(env), SimEnv)  # randomization reaches the physics under the goal env
    env.close()
    assert len(buf) == 80  # two 40-step episodes, truncated
    raw = buf.sample_raw(512)
    want = goal_env.compute_reward(buf.next_achieved_goal[raw["idx"]], raw["goal"], None)
    np.testing.assert_array_equal(raw["rewards"], want)
    assert (raw["rewards"][raw["relabelled"]] == 0).mean() > (np.array(rewards) == 0).mean()  # HER's premise
    assert not raw["terminated"].any()  # truncation only: every transition bootstraps


class _CountingGoalEnv(gym.Env[dict[str, Any], np.ndarray]):
    """Step ``t`` of an episode achieves goal ``t`` while ``COMMANDED`` is commanded; 4 steps an episode."""

    observation_space = gym.spaces.Dict({k: gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
                                         for k in ("observation", "achieved_goal", "desired_goal")})
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self) -> None:
        self.t = 0

    def _obs(self) -> dict[str, np.ndarray]:
        return {"observation": np.array([-self.t], np.float32), "achieved_goal": np.array([self.t], np.float32),
                "desired_goal": np.array([COMMANDED], np.float32)}

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        self.t = 0
        return self._obs(), {"is_success": False}

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        self.t += 1
        return self._obs(), -1.0, False, self.t == 4, {"is_success": False}

    def compute_reward(self, achieved: np.ndarray, desired: np.ndarray, info: Any) -> np.ndarray:
        return _reward(achieved, desired, info)


def test_the_statistics_see_achieved_goals_where_the_networks_see_goals() -> None:
    layout = GoalLayout(1, 1)
    env = FlatGoalEnv(_CountingGoalEnv(), layout)
    norm = ObservationNormalization(2, enabled=True, clip=10.0, device=CPU)
    buf = HerReplayBuffer(50, layout, 1, CPU, 0, "future", 4, env.compute_reward)
    collector = Collector(env, False, norm, None, her_goals=layout)
    try:
        first = collector.start(seed=0)
        np.testing.assert_array_equal(first, [0.0, COMMANDED])  # the policy sees the commanded goal
        for _ in range(8):
            collector.submit(np.zeros(1, np.float32))
            _, episode = collector.finish(buf)
    finally:
        collector.close()
    assert episode is not None and episode.success is False  # is_success stands in for success
    norm.flush()
    seen = [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0]  # each episode's states, and the third's first
    np.testing.assert_allclose(norm.stats.mean, [-np.mean(seen), np.mean(seen)])
    assert len(buf) == 8 and buf.desired_goal[:8].tolist() == [[COMMANDED]] * 8


def _cfg(algo: str, **extra: Any) -> Any:
    return config_from_mapping({"task": GOAL_ID, "algo": algo, "steps": 100, "warmup_steps": 80, "batch_size": 16,
                                "hidden": [16], "buffer_size": 500, "eval_interval": 100, "eval_episodes": 1,
                                "overlap_env": False, "log_interval": 100, "threads": 1, **extra})


@pytest.mark.parametrize("algo", ["sac", "crossq", "td3", "ddpg"])
def test_every_learner_trains_on_the_goal_claw_with_her_and_resumes(tmp_path: Path, algo: str) -> None:
    run = tmp_path / "run"
    summary = train(_cfg(algo, her_strategy="final"), run, progress=False)
    assert summary["steps"] == 100 and summary["eval"]["success_rate"] is not None
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt.obs_dim == 20 + 2 and ckpt.config["her_strategy"] == "final"  # observation, then desired goal
    assert ckpt.training is not None and ckpt.training["loop"]["updates"] == 20
    resumed = train(_cfg(algo, her_strategy="final", steps=120), run, resume=True, progress=False)
    assert resumed["steps"] == 120
    assert load_checkpoint(run / "last.pt").training["loop"]["updates"] == 40  # type: ignore[index]


def test_her_is_on_by_default_on_goal_tasks_only_and_refused_on_flat_ones() -> None:
    trainer = Trainer(_cfg("sac"))
    try:
        assert trainer.cfg.her_strategy == "future" and isinstance(trainer.buffer, HerReplayBuffer)
        assert trainer.buffer.relabel_probability == pytest.approx(0.8)
    finally:
        trainer.close()
    trainer = Trainer(_cfg("sac", task="dclaw-turn"))
    try:
        assert trainer.cfg.her_strategy == "none" and not isinstance(trainer.buffer, HerReplayBuffer)
    finally:
        trainer.close()
    with pytest.raises(UserError, match="'her_strategy' is 'future', but s2r/DClawTurnFixed-v0 is not "
                                        "goal-conditioned"):
        Trainer(_cfg("sac", task="dclaw-turn", her_strategy="future"))
    with pytest.raises(UserError, match="'n_step' \\(3\\) do not go together"):
        Trainer(_cfg("sac", n_step=3))
    with pytest.raises(UserError, match="'her_k' must be at least 1"):
        _cfg("sac", her_k=0)
    with pytest.raises(UserError, match="expected one of"):
        _cfg("sac", her_strategy="later")


@pytest.mark.slow
def test_a_goal_policy_exports_verified_with_its_goal_layout(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(_cfg("td3", steps=200, warmup_steps=100, eval_interval=200), run, progress=False)
    result = export_policy(run, tmp_path / "policy.onnx", ExportConfig(samples=MIN_VERIFY_SAMPLES))
    assert result.verification.passed and result.verification.rollout_samples > 0
    policy = OnnxPolicy(tmp_path / "policy.onnx")
    assert policy.obs_size == 22 and policy.goal is not None and policy.goal.block == "desired_goal"
    assert [(b.name, b.start, b.stop) for b in policy.info.obs_layout] == [  # type: ignore[union-attr]
        ("joint_pos", 0, 9), ("valve_cos_sin", 9, 11), ("last_action", 11, 20), ("desired_goal", 20, 22)]
    assert [(f.name, f.unit) for f in policy.goal.fields] == [("target", "rad")]
    # Parity on the goal claw's own observations: the file and the checkpoint act alike, goal by goal.
    ckpt = load_checkpoint(run / "last.pt")
    actor = ckpt.policy_module()
    env = make_env(GOAL_ID)
    try:
        obs = [env.reset(seed=s)[0] for s in range(8)]
    finally:
        env.close()
    batch = np.stack(obs).astype(np.float32)
    with torch.inference_mode():
        expected = actor(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(policy.act(batch), expected, atol=1e-5)
