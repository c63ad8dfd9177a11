"""CrossQ: batch renormalization, the update's invariants, save/load, and the ONNX contract of a CrossQ run."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from policies.checkpoint import load_checkpoint, save_checkpoint
from policies.config import config_from_mapping
from policies.crossq import (
    BRN_EPS,
    BRN_WARMUP,
    BatchRenorm,
    CrossQLearner,
    CrossQParams,
    RenormTwinCritic,
    batch_renorm_reference,
    crossq_update,
    make_crossq_model,
)
from policies.replay import Batch
from policies.train import Trainer, train

OBS, ACT, N = 5, 2, 64


def _model(seed: int = 0):
    return make_crossq_model(OBS, ACT, (32, 32), (48, 48), "relu", 1e-3, 0.5, 1.0, torch.device("cpu"), seed)


def _batch(seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(N, OBS, generator=g), torch.rand(N, ACT, generator=g) * 2 - 1,
                 torch.randn(N, 1, generator=g), torch.randn(N, OBS, generator=g), torch.zeros(N, 1))


def test_training_mode_normalizes_each_member_by_its_batch_and_inference_uses_running_statistics() -> None:
    critic = RenormTwinCritic(OBS, ACT, (16,), "relu")
    norm = critic.norms[0]
    x = torch.randn(2, N, OBS + ACT) * 3.0 + 7.0
    out = norm(x)
    assert torch.allclose(out.mean(1), torch.zeros(2, OBS + ACT), atol=1e-5)
    assert torch.allclose(out.var(1, unbiased=False), torch.ones(2, OBS + ACT), atol=1e-3)
    # The running statistics moved 1 % of the way towards the batch's (unbiased variance).
    assert torch.allclose(norm.running_mean, 0.01 * x.mean(1, keepdim=True), atol=1e-6)
    assert torch.allclose(norm.running_var, 0.99 + 0.01 * x.var(1, keepdim=True), atol=1e-5)
    norm.eval()
    y = torch.randn(2, 3, OBS + ACT)
    expected = (y - norm.running_mean) / torch.sqrt(norm.running_var + BRN_EPS)
    assert torch.allclose(norm(y), expected, atol=1e-6)
    before = norm.running_mean.clone()
    norm(y)
    assert torch.equal(norm.running_mean, before)  # inference never changes the statistics


@pytest.mark.parametrize("renorm", [False, True])
def test_the_fused_batch_renorm_backward_matches_autograd(renorm: bool) -> None:
    g = torch.Generator().manual_seed(3)
    norm = BatchRenorm(2, 6).double()
    with torch.no_grad():
        norm.weight.copy_(torch.rand(2, 1, 6, generator=g, dtype=torch.float64) + 0.5)
        norm.bias.copy_(torch.randn(2, 1, 6, generator=g, dtype=torch.float64))
        # Running statistics far enough from the batch's that r and d are clipped in some features.
        norm.running_mean.copy_(torch.randn(2, 1, 6, generator=g, dtype=torch.float64) * 3)
        norm.running_var.copy_(torch.rand(2, 1, 6, generator=g, dtype=torch.float64) * 4 + 0.05)
        norm.steps.fill_(BRN_WARMUP if renorm else 0)
    x = (torch.randn(2, 9, 6, generator=g, dtype=torch.float64) * 2 + 1).requires_grad_(True)
    upstream = torch.randn(2, 9, 6, generator=g, dtype=torch.float64)
    expected = batch_renorm_reference(norm, x, renorm)
    want = torch.autograd.grad((expected * upstream).sum(), [x, norm.weight, norm.bias])
    out = norm(x)
    got = torch.autograd.grad((out * upstream).sum(), [x, norm.weight, norm.bias])
    assert torch.allclose(out, expected, atol=1e-12)
    for a, b in zip(got, want, strict=True):
        assert torch.allclose(a, b, atol=1e-10), (a - b).abs().max()


def test_critic_only_updates_leave_actor_and_temperature_bitwise_unchanged() -> None:
    model = _model()
    learner = CrossQLearner(model, CrossQParams(policy_delay=1))
    actor_before = {k: v.clone() for k, v in model.actor.state_dict().items()}
    alpha_before = model.log_alpha.detach().clone()
    critic_before = [p.detach().clone() for p in model.critic.parameters()]
    for i in range(5):
        learner.update(_batch(i), update_actor=False)
    assert all(torch.equal(v, model.actor.state_dict()[k]) for k, v in actor_before.items())
    assert torch.equal(alpha_before, model.log_alpha.detach())
    assert any(not torch.equal(a, b) for a, b in zip(critic_before, model.critic.parameters(), strict=True))


def test_the_actor_moves_every_policy_delay_updates() -> None:
    model = _model()
    params = CrossQParams(policy_delay=3)
    w = model.actor.w0
    moved = []
    for i in range(6):
        before = w.detach().clone()
        stats = crossq_update(model, _batch(i), params)
        moved.append(not torch.equal(before, w.detach()))
        assert ("actor_loss" in stats) == moved[-1]
    assert moved == [False, False, True, False, False, True]


def test_repeated_updates_fit_a_fixed_target() -> None:
    """With gamma 0 the critic regresses the rewards: its loss on one batch falls by far."""
    model = _model()
    params = CrossQParams(gamma=0.0, policy_delay=1000)
    batch = _batch()
    first = crossq_update(model, batch, params)["critic_loss"]
    for _ in range(300):
        last = crossq_update(model, batch, params)["critic_loss"]
    assert last < 0.1 * first, (first, last)


def test_training_state_round_trip_continues_identically() -> None:
    a, b = _model(0), _model(1)
    la, lb = CrossQLearner(a, CrossQParams()), CrossQLearner(b, CrossQParams())
    for i in range(4):
        la.update(_batch(i))
    lb.load_training_state(la.training_state())
    b.actor.load_state_dict(a.actor.state_dict())
    sa, sb = la.update(_batch(9)), lb.update(_batch(9))
    assert sa == sb
    for pa, pb in zip(a.critic.state_dict().values(), b.critic.state_dict().values(), strict=True):
        assert torch.equal(pa, pb)


def test_crossq_is_the_default_learner_and_fills_its_auto_fields() -> None:
    cfg = config_from_mapping({}).resolved()
    assert cfg.algo == "crossq"
    assert cfg.lr == 1e-3 and cfg.policy_delay == 3 and cfg.critic_hidden == cfg.hidden
    assert cfg.policy_average == 0.001
    sac = config_from_mapping({"algo": "sac", "hidden": [64, 64]}).resolved()
    assert sac.lr == 3e-4 and sac.critic_hidden == (64, 64) and sac.policy_average == 0.0


def test_a_crossq_run_exports_to_the_same_onnx_contract(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from export.onnx_export import ExportConfig, export_policy
    from export.onnx_policy import OnnxPolicy

    cfg = config_from_mapping({"task": "dclaw-turn", "algo": "crossq", "steps": 300, "warmup_steps": 100,
                               "hidden": [32, 32], "critic_hidden": [64, 64], "batch_size": 32,
                               "eval_interval": 300, "eval_episodes": 1, "overlap_env": False})
    train(cfg, tmp_path / "run", progress=False)
    assert load_checkpoint(tmp_path / "run" / "last.pt").algo == "crossq"
    ckpt = load_checkpoint(tmp_path / "run" / "best.pt")  # what export resolves first
    out = export_policy(tmp_path / "run", tmp_path / "policy.onnx", ExportConfig(samples=1000, seed=0))
    policy = OnnxPolicy(out.path)
    module = ckpt.policy_module()
    obs = np.random.default_rng(0).normal(size=(8, ckpt.obs_dim)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(obs)).numpy()
    assert np.allclose(policy.to_normalized(policy.act(obs)), expected, atol=1e-5)


def test_a_resumed_crossq_trainer_restores_its_critic(tmp_path: Path) -> None:
    cfg = config_from_mapping({"task": "Pendulum-v1", "algo": "crossq", "steps": 200, "warmup_steps": 64,
                               "hidden": [16], "critic_hidden": [16], "batch_size": 16, "eval_interval": 200,
                               "eval_episodes": 1, "overlap_env": False})
    train(cfg, tmp_path / "run", progress=False)
    trainer = Trainer(cfg)
    try:
        trainer.load_training(tmp_path / "run" / "last.pt")
        saved = load_checkpoint(tmp_path / "run" / "last.pt").training
        assert saved is not None
        for k, v in saved["learner"]["critic"].items():
            assert torch.equal(trainer.learner.model.critic.state_dict()[k], v)  # type: ignore[attr-defined]
    finally:
        trainer.close()


class RecordingLearner:
    """Passes every call to the learner and keeps the statistics each update returned."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.stats: list[dict[str, float]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def update(self, batch: Batch, update_actor: bool = True) -> dict[str, float]:
        out: dict[str, float] = self.inner.update(batch, update_actor)
        self.stats.append(out)
        return out


def test_the_logged_actor_statistics_average_the_updates_that_moved_the_actor() -> None:
    """With policy_delay 3 only every third update reports the actor's loss and entropy; the training row's
    average is over those, not over every update (which understated them threefold)."""
    cfg = config_from_mapping({"task": "Pendulum-v1", "algo": "crossq", "steps": 200, "warmup_steps": 64,
                               "hidden": [16], "critic_hidden": [16], "batch_size": 16, "policy_delay": 3,
                               "overlap_env": False})
    trainer = Trainer(cfg)
    try:
        recorder = RecordingLearner(trainer.learner)
        trainer.agent.learner = recorder
        trainer.run_until(200)
        trainer.log_train_row()
    finally:
        trainer.close()
    row = trainer.rows[-1]
    for key in ("critic_loss", "entropy", "actor_loss"):
        values = [s[key] for s in recorder.stats if key in s]
        assert values and row[key] == pytest.approx(np.mean(values), rel=1e-9)
    assert len([s for s in recorder.stats if "entropy" in s]) < len(recorder.stats) / 2  # the check above can fail


def _actor_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_the_averaged_policy_follows_the_actor_without_changing_its_learning_and_survives_a_resume(
        tmp_path: Path) -> None:
    base = {"task": "Pendulum-v1", "algo": "crossq", "steps": 200, "warmup_steps": 64, "hidden": [16],
            "critic_hidden": [16], "batch_size": 16, "overlap_env": False}
    plain = Trainer(config_from_mapping({**base, "policy_average": 0.0}))
    averaged = Trainer(config_from_mapping({**base, "policy_average": 0.05}))
    try:
        assert plain.policy_actor is plain.learner.actor
        start = copy.deepcopy(averaged.policy_actor)
        for trainer in (plain, averaged):
            trainer.run_until(200)
        # The average never feeds back: the online actors learned bit for bit the same.
        assert _actor_equal(plain.learner.actor, averaged.learner.actor)
        policy, online = averaged.policy_actor, averaged.learner.actor
        assert not _actor_equal(policy, online) and not _actor_equal(policy, start)
        # What is evaluated and checkpointed is the average; a resume restores both.
        ckpt = averaged.checkpoint(training=True)
        assert all(torch.equal(v, policy.state_dict()[k]) for k, v in ckpt.actor_state.items())
        save_checkpoint(tmp_path / "last.pt", ckpt)
        resumed = Trainer(config_from_mapping({**base, "policy_average": 0.05}))
        try:
            resumed.load_training(tmp_path / "last.pt")
            assert _actor_equal(resumed.policy_actor, policy) and _actor_equal(resumed.learner.actor, online)
        finally:
            resumed.close()
    finally:
        plain.close()
        averaged.close()
