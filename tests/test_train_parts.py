"""The parts the training loop calls: observation normalization, the collector, metrics and the agent on its own."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from policies.agent import Agent, Spaces
from policies.checkpoint import load_checkpoint, save_checkpoint
from policies.collector import Collector, Episode
from policies.config import config_from_mapping
from policies.envs import make_env
from policies.finetune import Finetuner, build_agent
from policies.finetune_config import FinetuneConfig
from policies.metrics import Metrics
from policies.networks import Actor
from policies.normalizer import DEFAULT_NORM_CLIP, DEFAULT_NORM_EPS, RunningMeanStd, normalize
from policies.observations import NORM_BATCH, ObservationNormalization
from policies.replay import Batch, ReplayBuffer
from policies.train import Trainer, train
from s2r.core.errors import UserError

CPU = torch.device("cpu")


def test_observations_are_folded_in_batches_and_normalize_as_the_deployed_normalizer() -> None:
    obs = np.random.default_rng(0).normal(3.0, 2.0, size=(NORM_BATCH * 2 + 5, 4))
    norm = ObservationNormalization(4, enabled=True, clip=DEFAULT_NORM_CLIP, device=CPU)
    for o in obs:
        norm.observe(o)
    assert norm.stats.count == NORM_BATCH * 2  # the last few wait for the next batch, or a flush
    norm.flush()
    whole = RunningMeanStd.zeros(4)
    whole.update(obs)
    np.testing.assert_allclose(norm.stats.mean, whole.mean)
    np.testing.assert_allclose(norm.stats.var, whole.var)
    x = obs[:3]
    want = normalize(x, norm.stats.mean, norm.stats.var, DEFAULT_NORM_CLIP, DEFAULT_NORM_EPS)
    np.testing.assert_allclose(norm.normalize(x), want, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        deployed = norm.policy_module(Actor(4, 1, (8,), "relu", stochastic=True)).normalizer
        np.testing.assert_allclose(deployed(torch.tensor(x, dtype=torch.float32)).numpy(), want, rtol=1e-5,
                                   atol=1e-5)


def test_disabled_normalization_is_the_identity_but_keeps_statistics() -> None:
    norm = ObservationNormalization(2, enabled=False, clip=DEFAULT_NORM_CLIP, device=CPU)
    x = np.array([100.0, -50.0])
    norm.observe(x)
    norm.flush()
    np.testing.assert_array_equal(norm.normalize(x), x.astype(np.float32))
    assert norm.stats.count == 0


@pytest.mark.parametrize("threaded", [False, True])
def test_the_collector_stores_every_transition_and_reports_episodes(threaded: bool) -> None:
    env = make_env("Pendulum-v1", "mujoco", {})
    norm = ObservationNormalization(3, enabled=True, clip=DEFAULT_NORM_CLIP, device=CPU)
    collector = Collector(env, threaded, norm, nstep=None)
    buffer = ReplayBuffer(500, 3, 1, CPU, seed=0)
    rng = np.random.default_rng(0)
    episodes: list[Episode] = []
    try:
        obs = collector.start(seed=0)
        for _ in range(450):
            collector.submit(rng.uniform(-1, 1, 1).astype(np.float32))
            next_obs, episode = collector.finish(buffer)
            assert next_obs is collector.obs and next_obs is not obs
            obs = next_obs
            if episode is not None:
                episodes.append(episode)
    finally:
        collector.close()
    assert len(buffer) == 450
    assert [e.length for e in episodes] == [200, 200]  # Pendulum's time limit
    assert all(e.success is None for e in episodes)


def test_update_statistics_are_averaged_per_key_and_rows_go_to_the_file(tmp_path: Path) -> None:
    metrics = Metrics(tmp_path / "metrics.jsonl")
    metrics.updates({"critic_loss": 1.0, "actor_loss": 4.0})
    metrics.updates({"critic_loss": 3.0})
    metrics.episode(Episode(10.0, 5, {"a": 1.0}, True))
    metrics.episode(Episode(20.0, 7, {"a": 3.0, "b": 2.0}, False))
    row = metrics.train_row(12, {"episodes": 2})
    assert row["critic_loss"] == 2.0 and row["actor_loss"] == 4.0
    assert row["return_mean"] == 15.0 and row["episode_length"] == 6.0 and row["success_rate"] == 0.5
    assert row["reward_terms/a"] == 2.0 and row["reward_terms/b"] == 2.0
    metrics.write(row)
    assert metrics.train_row(20, {})["steps_per_s"] is not None  # a new interval, without the old statistics
    assert [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [row]
    assert metrics.progress_fields() == {"return": "15.0", "success": "0.50"}


def test_an_agent_learns_and_checkpoints_without_a_trainer() -> None:
    """What fine-tuning uses: an agent, a replay buffer of its own and the agent's normalized batches."""
    cfg = config_from_mapping({"task": "Pendulum-v1", "algo": "sac", "hidden": [16], "batch_size": 8,
                               "policy_average": 0.0}).resolved("Pendulum-v1")
    env = make_env("Pendulum-v1", "mujoco", {})
    agent = Agent(cfg, Spaces.of("Pendulum-v1", env), CPU)
    env.close()
    buffer = ReplayBuffer(64, 3, 1, CPU, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(32):
        obs = rng.normal(size=3)
        agent.obs.observe(obs)
        buffer.add(obs, agent.explore(obs), 0.0, rng.normal(size=3), False)
    before = {k: v.clone() for k, v in agent.policy_actor.state_dict().items()}
    stats = agent.update(agent.obs.sample(buffer, 8))
    assert "critic_loss" in stats
    ckpt = agent.checkpoint(step=0, evaluation=None, loop={"updates": 1})
    assert ckpt.training is not None and ckpt.training["loop"] == {"updates": 1}
    assert any(not torch.equal(v, before[k]) for k, v in ckpt.actor_state.items())
    again = Agent(cfg, agent.spaces, CPU)
    assert again.load_training(ckpt, "memory") == {"updates": 1}
    assert all(torch.equal(v, again.policy_actor.state_dict()[k]) for k, v in ckpt.actor_state.items())
    np.testing.assert_array_equal(again.obs.stats.mean, agent.obs.stats.mean)


def _tree_equal(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_tree_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(_tree_equal, a, b))
    return a == b


def test_fine_tuning_starts_from_the_checkpoint_named_when_that_is_the_one_deployed(tmp_path: Path) -> None:
    cfg = config_from_mapping({"task": "Pendulum-v1", "steps": 300, "warmup_steps": 100, "hidden": [16],
                               "batch_size": 16, "eval_interval": 100, "eval_episodes": 1, "overlap_env": False})
    run = tmp_path / "run"
    train(cfg, run, progress=False)
    best, last = load_checkpoint(run / "best.pt"), load_checkpoint(run / "last.pt")
    assert last.step == 300
    for named, want in ((run, run / "best.pt"), (run / "last.pt", run / "last.pt")):
        fine = FinetuneConfig(run_dir=named, robot=tmp_path / "unused.yaml")
        assert fine.run_root == run and fine.out_dir == run / "finetune"
        learning, start = build_agent(fine)
        assert start["checkpoint"] == start["training_state_from"] == str(want)
        assert learning.loop.step == (best if want.name == "best.pt" else last).step
    with pytest.raises(UserError, match=r"run directory or checkpoint .*nope\.pt' does not exist"):
        build_agent(FinetuneConfig(run_dir=run / "nope.pt", robot=tmp_path / "unused.yaml"))


@pytest.mark.parametrize("algo", ["sac", "ddpg"])
def test_fine_tuning_continues_the_simulation_learner_as_a_resumed_trainer_would(tmp_path: Path, algo: str) -> None:
    """The Finetuner (an agent built from the deployed checkpoint, no environment, no Trainer) takes the gradient
    steps, bit for bit, that a Trainer resumed from that checkpoint takes on the same mixed batches: its
    checkpoints are the trainer's, with fine-tuning's counters added (DDPG's: its noise process's state too)."""
    cfg = config_from_mapping({"task": "Pendulum-v1", "algo": algo, "steps": 300, "warmup_steps": 100,
                               "hidden": [16], "batch_size": 16, "eval_interval": 300, "eval_episodes": 1,
                               "overlap_env": False})
    run = tmp_path / "run"
    train(cfg, run, progress=False)
    rng = np.random.default_rng(5)
    n = 40
    data = {"observations": rng.normal(size=(n, 3)), "actions": rng.uniform(-1, 1, (n, 1)),
            "rewards": rng.normal(size=n), "next_observations": rng.normal(size=(n, 3)),
            "terminals": np.zeros(n, dtype=bool)}
    fine = FinetuneConfig(run_dir=run, robot=tmp_path / "unused.yaml", sim_fraction=0.5, critic_warmup=1,
                          updates_per_step=1.0, seed=0)

    learning, start = build_agent(fine)
    assert start["training_state_from"] == str(run / "best.pt")
    tuner = Finetuner(fine, learning, real_capacity=64)
    tuner.add_dataset(data)
    assert tuner.update(2)[0] == 3  # the critic-only warm-up's step, then 2 with the actor
    tuner.save(tmp_path / "tuned.pt", episodes_done=1)
    tuner.freeze(tmp_path / "frozen.pt")

    # A Trainer resumed from the same checkpoint (and replay), stepped on the same batches through its agent.
    source = load_checkpoint(run / "best.pt")
    trainer = Trainer(config_from_mapping({**source.config, "policy_average": 0.0}))
    try:
        trainer.load_training(run / "best.pt", run / "replay.pt")
        agent = trainer.agent
        real = ReplayBuffer(64, 3, 1, agent.device, seed=fine.seed + 11)
        for i in range(n):
            real.add(data["observations"][i], data["actions"][i], float(data["rewards"][i]),
                     data["next_observations"][i], bool(data["terminals"][i]))
        for update_actor in (False, True, True):
            agent.update(Batch.concat([agent.obs.sample(real, 8), agent.obs.sample(trainer.buffer, 8)]), update_actor)
            trainer.state.updates += 1
        want = trainer.checkpoint(training=True)
        assert want.training is not None
        want.training["finetune"] = {"episodes_done": 1, "updates": 3, "critic_warmed": True}
        save_checkpoint(tmp_path / "want.pt", want)
        save_checkpoint(tmp_path / "want_frozen.pt", trainer.checkpoint(training=False))
    finally:
        trainer.close()

    for got, expected in (("tuned.pt", "want.pt"), ("frozen.pt", "want_frozen.pt")):
        assert _tree_equal(load_checkpoint(tmp_path / got).to_dict(), load_checkpoint(tmp_path / expected).to_dict())
