"""TD3 on the off-policy core: hand-written gradients against autograd, delayed updates, smoothing; DDPG, the same
update with one critic, no smoothing and no delay, against an autograd reference of DDPG's losses."""

from __future__ import annotations

import itertools

import pytest
import torch

from policies.networks import TWINS
from policies.offpolicy import FusedAdam
from policies.replay import Batch
from policies.td3 import DDPG_CRITICS, TD3Model, TD3Params, make_td3_model, td3_update

OBS, ACT, N = 4, 2, 6
DDPG = TD3Params(gamma=0.9, tau=0.1, policy_delay=1, target_noise=0.0)
"""DDPG's update (with a model of one critic), with a Polyak rate that moves the targets visibly."""


def _model(lr: float = 0.0, critics: int = TWINS) -> TD3Model:
    m = make_td3_model(OBS, ACT, (10, 8), "relu", lr, torch.device("cpu"), seed=5, critics=critics)
    for mod in (m.actor, m.actor_target, m.critic, m.critic_target):
        mod.double()
    m.actor_opt = FusedAdam(list(m.actor.parameters()), lr)
    m.critic_opt = FusedAdam(list(m.critic.parameters()), lr)
    with torch.no_grad():
        for net in (m.actor_target, m.critic_target):
            for p in net.parameters():
                p.add_(0.05 * torch.randn_like(p))
    return m


def _batch() -> Batch:
    g = torch.Generator().manual_seed(2)
    return Batch(
        obs=torch.randn(N, OBS, generator=g, dtype=torch.float64),
        actions=torch.rand(N, ACT, generator=g, dtype=torch.float64) * 2 - 1,
        rewards=torch.randn(N, 1, generator=g, dtype=torch.float64),
        next_obs=torch.randn(N, OBS, generator=g, dtype=torch.float64),
        terminated=torch.tensor([[0.0], [1.0]] * (N // 2), dtype=torch.float64),
    )


def _reference(m: TD3Model, b: Batch, p: TD3Params, noise: torch.Tensor) -> tuple[list[torch.Tensor], ...]:
    with torch.no_grad():
        smoothing = (noise * p.target_noise).clamp(-p.target_noise_clip, p.target_noise_clip)
        a_next = (torch.tanh(m.actor_target(b.next_obs)) + smoothing).clamp(-1, 1)
        q_t = m.critic_target(b.next_obs, a_next)
        y = b.rewards + p.gamma * (1 - b.terminated) * torch.min(q_t[0], q_t[1])
    q = m.critic(b.obs, b.actions)
    critic_loss = 0.5 * ((q[0] - y) ** 2).mean() + 0.5 * ((q[1] - y) ** 2).mean()
    critic_grads = list(torch.autograd.grad(critic_loss, list(m.critic.parameters())))
    actor_loss = -m.critic(b.obs, torch.tanh(m.actor(b.obs)))[0].mean()
    actor_grads = list(torch.autograd.grad(actor_loss, list(m.actor.parameters())))
    return critic_grads, actor_grads


def test_td3_gradients_match_autograd_and_the_actor_waits_for_the_delay() -> None:
    m = _model()
    b = _batch()
    p = TD3Params(tau=0.0, policy_delay=2)
    state = m.generator.get_state()
    noise = torch.randn((N, ACT), generator=m.generator, dtype=torch.float64)
    m.generator.set_state(state)
    critic_ref, actor_ref = _reference(m, b, p, noise)

    stats = td3_update(m, b, p)  # update 0: a policy step
    assert "actor_loss" in stats
    for got, want in zip([q.grad for q in m.critic.parameters()], critic_ref, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)
    for got, want in zip([q.grad for q in m.actor.parameters()], actor_ref, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)

    for q in m.actor.parameters():
        assert q.grad is not None
        q.grad.fill_(123.0)
    stats = td3_update(m, b, p)  # update 1: critic only
    assert "actor_loss" not in stats
    assert all(torch.equal(q.grad, torch.full_like(q, 123.0)) for q in m.actor.parameters() if q.grad is not None)


def test_td3_targets_move_only_on_policy_steps() -> None:
    m = make_td3_model(OBS, ACT, (10, 8), "relu", 1e-3, torch.device("cpu"), seed=0)
    b = Batch(
        obs=torch.randn(N, OBS),
        actions=torch.rand(N, ACT) * 2 - 1,
        rewards=torch.randn(N, 1),
        next_obs=torch.randn(N, OBS),
        terminated=torch.zeros(N, 1),
    )
    p = TD3Params(policy_delay=3)
    snapshots = []
    for i in range(5):
        snapshots.append((m.actor_target.weights[0].detach().clone(), m.critic_target.weights[0].detach().clone()))
        if i < 4:
            td3_update(m, b, p)
    actor_moved = [not torch.equal(a[0], b_[0]) for a, b_ in itertools.pairwise(snapshots)]
    critic_moved = [not torch.equal(a[1], b_[1]) for a, b_ in itertools.pairwise(snapshots)]
    assert actor_moved == [True, False, False, True]
    assert critic_moved == [True, False, False, True]


def _ddpg_reference(m: TD3Model, b: Batch, gamma: float) -> tuple[float, float, list[torch.Tensor], list[torch.Tensor]]:
    """DDPG's losses (Lillicrap et al. 2016, Algorithm 1) written plainly for autograd, with the 1/2 of the fused
    update's critic loss: ``y = r + gamma (1 - d) Q'(s', mu'(s'))``, ``0.5 mean((Q(s, a) - y)^2)``, and
    ``-mean(Q(s, mu(s)))``; returns both losses and their gradients."""
    with torch.no_grad():
        q_next = m.critic_target(b.next_obs, torch.tanh(m.actor_target(b.next_obs)))[0]
        y = b.rewards + gamma * (1 - b.terminated) * q_next
    critic_loss = 0.5 * (m.critic(b.obs, b.actions)[0] - y).pow(2).mean()
    actor_loss = -m.critic(b.obs, torch.tanh(m.actor(b.obs)))[0].mean()
    return (critic_loss.item(), actor_loss.item(), list(torch.autograd.grad(critic_loss, list(m.critic.parameters()))),
            list(torch.autograd.grad(actor_loss, list(m.actor.parameters()))))


def test_ddpg_is_td3s_update_with_one_critic_no_smoothing_and_no_delay() -> None:
    m = _model(lr=1e-2, critics=DDPG_CRITICS)
    assert all(p.shape[0] == 1 for p in m.critic.parameters())
    b = _batch()
    generator = m.generator.get_state()
    for step in range(4):  # each from the parameters the previous steps left
        critic_loss, actor_loss, critic_ref, actor_ref = _ddpg_reference(m, b, DDPG.gamma)
        targets = [p.clone() for p in (*m.actor_target.parameters(), *m.critic_target.parameters())]
        stats = td3_update(m, b, DDPG)
        assert stats["critic_loss"] == pytest.approx(critic_loss, rel=1e-12)
        assert stats["actor_loss"] == pytest.approx(actor_loss, rel=1e-12), f"no actor step at update {step}"
        for got, want in zip([q.grad for q in m.critic.parameters()], critic_ref, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)
        for got, want in zip([q.grad for q in m.actor.parameters()], actor_ref, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)
        after = [*m.actor_target.parameters(), *m.critic_target.parameters()]
        assert all(not torch.equal(a, t) for a, t in zip(after, targets, strict=True)), "the targets wait"
    assert torch.equal(m.generator.get_state(), generator), "no smoothing noise may be drawn"
