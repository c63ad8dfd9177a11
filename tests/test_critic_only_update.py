"""``Learner.update(batch, update_actor=False)``: the critics learn, the actor and the temperature keep every bit
(Adam's momentum would move them with a zero gradient, so their step is skipped, not zeroed)."""

from __future__ import annotations

import torch

from policies.config import TrainConfig
from policies.offpolicy import Learner
from policies.replay import Batch
from policies.train import build_learner


def _batch(seed: int, n: int = 32, obs_dim: int = 5, act_dim: int = 2) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(n, obs_dim, generator=g), torch.rand(n, act_dim, generator=g) * 2 - 1,
                 torch.randn(n, 1, generator=g), torch.randn(n, obs_dim, generator=g), torch.zeros(n, 1))


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def _learner(algo: str) -> Learner:
    cfg = TrainConfig(task="Pendulum-v1", algo=algo, hidden=(16, 16), seed=3)
    return build_learner(cfg, 5, 2, torch.device("cpu"))


def _frozen_parts(learner: Learner) -> dict[str, dict[str, torch.Tensor]]:
    """What must not move: the actor, and SAC's log_alpha / TD3's target actor and actor optimizer."""
    model = learner.model  # type: ignore[attr-defined]
    parts = {"actor": _state(learner.actor)}
    if learner.algo == "sac":
        parts["log_alpha"] = {"log_alpha": model.log_alpha.detach().clone()}
        n_actor = sum(1 for _ in learner.actor.parameters())
        opt = model.opt.state_dict()
        parts["actor_moments"] = {f"m{i}": opt["exp_avgs"][i] for i in range(n_actor)} | {
            f"v{i}": opt["exp_avg_sqs"][i] for i in range(n_actor)} | {"alpha_m": opt["exp_avgs"][-1]}
    else:
        parts["actor_target"] = _state(model.actor_target)
        opt = model.actor_opt.state_dict()
        parts["actor_moments"] = {f"m{i}": m for i, m in enumerate(opt["exp_avgs"])} | {
            "step": torch.tensor(opt["step"])}
    return parts


def test_critic_only_updates_move_the_critics_and_nothing_of_the_actor() -> None:
    for algo in ("sac", "td3", "ddpg"):
        learner = _learner(algo)
        for i in range(4):  # real momentum in every moment buffer first
            learner.update(_batch(i))
        frozen = _frozen_parts(learner)
        model = learner.model  # type: ignore[attr-defined]
        critic, target = _state(model.critic), _state(model.critic_target)
        for i in range(6):
            stats = learner.update(_batch(10 + i), update_actor=False)
            assert stats["critic_loss"] >= 0.0
        after = _frozen_parts(learner)
        for name, values in frozen.items():
            assert _same(values, after[name]), f"{algo}: {name} moved in a critic-only update"
        assert not _same(critic, _state(model.critic)), f"{algo}: the critic did not learn"
        assert not _same(target, _state(model.critic_target)), f"{algo}: the target critic did not follow"
        learner.update(_batch(99))  # and a full update moves the actor again
        assert not _same(frozen["actor"], _state(learner.actor)), f"{algo}: the actor no longer learns"
