"""Replay buffer, running observation statistics, config parsing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from policies.config import TrainConfig, config_from_mapping, dump_config, load_config_file, parse_overrides
from policies.normalizer import RunningMeanStd, normalize
from policies.offpolicy import FusedAdam
from policies.replay import ReplayBuffer
from s2r.core.errors import UserError
from sim.rollout import to_env_action


def test_running_statistics_match_numpy_over_uneven_batches() -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(1000, 4)) * np.array([1.0, 10.0, 0.1, 5.0])
    stats = RunningMeanStd.zeros(4)
    i = 0
    for n in (1, 7, 100, 1, 391, 500):
        stats.update(data[i : i + n])
        i += n
    assert stats.count == 1000
    np.testing.assert_allclose(stats.mean, data.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(stats.var, data.var(axis=0), rtol=1e-10)


def test_normalize_is_clipped_float32() -> None:
    out = normalize(np.array([0.0, 100.0, -100.0]), np.zeros(3), np.ones(3), clip=5.0, eps=0.0)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [0.0, 5.0, -5.0])


def test_replay_wraps_and_samples_normalized_rows() -> None:
    buf = ReplayBuffer(capacity=5, obs_dim=2, act_dim=1, device=torch.device("cpu"), seed=0)
    for i in range(7):  # wraps: rows hold transitions 5, 6, 2, 3, 4
        buf.add(np.array([i, -i]), np.array([i / 10]), float(i), np.array([i + 0.5, 0.0]), terminated=i == 6)
    assert len(buf) == 5
    mean = torch.tensor([1.0, 0.0])
    inv_std = torch.tensor([0.5, 1.0])
    batch = buf.sample(64, mean, inv_std, clip=100.0)
    ids = ((batch.obs[:, 0] / 0.5) + 1.0).round().long()  # undo the normalization: the transition index
    assert set(ids.tolist()) <= {2, 3, 4, 5, 6}
    for row, i in enumerate(ids.tolist()):
        assert batch.actions[row, 0] == pytest.approx(i / 10)
        assert batch.rewards[row, 0] == i
        assert batch.next_obs[row, 0] == pytest.approx((i + 0.5 - 1.0) * 0.5)
        assert batch.terminated[row, 0] == (1.0 if i == 6 else 0.0)
    clipped = buf.sample(8, mean, inv_std, clip=0.25)
    assert float(clipped.obs.abs().max()) <= 0.25


def test_replay_state_round_trip() -> None:
    a = ReplayBuffer(10, 3, 2, torch.device("cpu"), seed=1)
    for i in range(4):
        a.add(np.full(3, i), np.full(2, 0.1 * i), float(i), np.full(3, i + 1), terminated=False)
    b = ReplayBuffer(10, 3, 2, torch.device("cpu"), seed=99)
    b.load_state_dict(a.state_dict())
    assert (b.size, b.pos) == (4, 4)
    m, s = torch.zeros(3), torch.ones(3)
    x, y = a.sample(16, m, s, 10.0), b.sample(16, m, s, 10.0)
    assert torch.equal(x.obs, y.obs) and torch.equal(x.rewards, y.rewards)
    with pytest.raises(ValueError, match="does not fit"):
        ReplayBuffer(10, 4, 2, torch.device("cpu"), seed=0).load_state_dict(a.state_dict())


def test_env_action_mapping() -> None:
    low, high = np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32)
    np.testing.assert_allclose(to_env_action(np.array([-1.0, 1.0]), low, high), [-2.0, 1.0])
    np.testing.assert_allclose(to_env_action(np.array([0.0, 0.0]), low, high), [0.0, 0.5])
    np.testing.assert_allclose(to_env_action(np.array([5.0, -5.0]), low, high), [2.0, 0.0])


def test_overrides_are_parsed_and_typed() -> None:
    items = [
        "batch_size=64",
        "hidden=[32, 16]",
        "gamma=0.95",
        "obs_norm=false",
        "task=Pendulum-v1",
        "warmup_steps=null",
    ]
    cfg = config_from_mapping(parse_overrides(items))
    assert cfg.batch_size == 64 and cfg.hidden == (32, 16) and cfg.gamma == 0.95
    assert cfg.obs_norm is False and cfg.task == "Pendulum-v1" and cfg.warmup_steps is None
    assert config_from_mapping({"lr": 1}).lr == 1.0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"batchsize": 3}, "unknown config field"),
        ({"batch_size": "big"}, "'batch_size': expected int"),
        ({"batch_size": 0}, "'batch_size' must be at least 1"),
        ({"algo": "ppo"}, "expected one of"),
        ({"hidden": [64, "x"]}, "hidden"),
        ({"gamma": 1.5}, "'gamma' must be in"),
        ({"stop_success": 0}, "'stop_success' must be a success rate in \\(0, 1\\], got 0"),
        ({"obs_norm": "yes"}, "'obs_norm': expected bool"),
    ],
)
def test_bad_config_values_are_user_errors(data: dict[str, object], message: str) -> None:
    with pytest.raises(UserError, match=message):
        config_from_mapping(data)


def test_bad_override_syntax_is_a_user_error() -> None:
    with pytest.raises(UserError, match="key=value"):
        parse_overrides(["batch_size"])


def test_config_file_round_trip_and_errors(tmp_path: Path) -> None:
    cfg = config_from_mapping({"steps": 5000, "hidden": [64, 64]}).resolved()
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(cfg))
    assert load_config_file(path) == cfg
    assert cfg.warmup_steps == 500 and cfg.eval_interval == 1000
    assert TrainConfig(steps=150_000, algo="sac").resolved().warmup_steps == 5000
    assert TrainConfig(steps=150_000).resolved().warmup_steps == 1000  # CrossQ: CROSSQ_WARMUP_STEPS
    assert TrainConfig(steps=3000, batch_size=512).resolved().warmup_steps == 512
    assert TrainConfig().resolved("s2r/DClawTurnFixed-v0").eval_episodes == 50
    assert TrainConfig(task="Pendulum-v1").resolved("Pendulum-v1").eval_episodes == 10
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="must hold a mapping"):
        load_config_file(tmp_path / "list.yaml")
    (tmp_path / "bad.yaml").write_text("steps: [1,\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config_file(tmp_path / "bad.yaml")
    with pytest.raises(UserError, match="cannot read config file"):
        load_config_file(tmp_path / "missing.yaml")


@pytest.mark.parametrize("fused", [True, False])
def test_fused_adam_matches_torch_adam(fused: bool) -> None:
    g = torch.Generator().manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(5, 3, generator=g)), torch.nn.Parameter(torch.randn(4, generator=g))]
    ref = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    opt = FusedAdam(ours, lr=1e-2, fused=fused)
    ref_opt = torch.optim.Adam(ref, lr=1e-2)
    for _ in range(5):
        for p, q in zip(ours, ref, strict=True):
            grad = torch.randn(p.shape, generator=g)
            assert p.grad is not None
            p.grad.copy_(grad)
            q.grad = grad.clone()
        opt.step()
        ref_opt.step()
    for p, q in zip(ours, ref, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    restored = FusedAdam([torch.nn.Parameter(p.detach().clone()) for p in ours], lr=1e-2, fused=fused)
    restored.load_state_dict(opt.state_dict())
    for o in (opt, restored):
        for t in o.params:
            assert t.grad is not None
            t.grad.fill_(0.5)
        o.step()
    for a, b in zip(opt.params, restored.params, strict=True):
        torch.testing.assert_close(a, b)
