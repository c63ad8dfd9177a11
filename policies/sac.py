"""Soft Actor-Critic (Haarnoja et al. 2018): the model and its update, :func:`sac_update`.

One update, all gradients computed from the same parameters (as in the original SAC, where the
critic, actor and temperature steps are taken together):

- critic: ``0.5 * sum_k mean((Q_k(s, a) - y)^2)`` with
  ``y = r + gamma * (1 - terminated) * (min_k Q'_k(s', a') - alpha * log pi(a'|s'))``, ``a' ~ pi(s')``;
  only termination stops bootstrapping, a time-limit truncation is stored as ``terminated = 0``;
- actor: ``mean(alpha * log pi(a|s) - min_k Q_k(s, a))`` with ``a = tanh(mu + std * eps)``;
- temperature: ``-mean(log_alpha * (log pi(a|s) + target_entropy))`` (SB3's form);
- Polyak averaging of the target critic with rate ``tau``.

A critic-only update (``update_actor=False``, :func:`sac_critic_update`) takes the critic step and the Polyak
step alone: Adam steps the critic's parameters only, so the actor and ``log_alpha`` keep every bit.

The log-probability of the squashed action uses the exact, numerically stable correction
``log(1 - tanh(u)^2) = 2 * (log 2 - u - softplus(-2u))``.

The backward passes are written out (see :mod:`policies.networks`): the actor and both critics
run on stacked batches — the actor on ``[s; s']`` at once, the twin critic on
``[(s, a); (s, a_pi)]`` at once — and each network's gradients land in preallocated buffers
for one fused Adam step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from policies.networks import (
    LOG_STD_MAX,
    LOG_STD_MIN,
    Activation,
    Actor,
    CriticEnsemble,
    Workspace,
    mlp_backward,
    mlp_forward,
)
from policies.offpolicy import FusedAdam, critic_and_policy_backward, grads_of, load_module_state, polyak_
from policies.replay import Batch

_LOG_2PI = math.log(2.0 * math.pi)
_LOG_2 = math.log(2.0)


@dataclass(frozen=True, kw_only=True)
class MaxEntParams:
    """The hyperparameters every maximum-entropy update (SAC, CrossQ) reads."""

    gamma: float = 0.99
    """Discount per environment step."""
    target_entropy: float | None = None
    """Entropy target (nats); ``None`` means ``-act_dim``."""
    autotune_alpha: bool = True
    """Learn ``log alpha``; when False alpha stays at its initial value (``init_alpha``)."""

    def entropy_target(self, act_dim: int) -> float:
        """``target_entropy``, or ``-act_dim`` when it is ``None``."""
        return self.target_entropy if self.target_entropy is not None else -float(act_dim)


@dataclass(frozen=True, kw_only=True)
class SACParams(MaxEntParams):
    """Hyperparameters of one SAC update."""

    tau: float = 0.005
    """Polyak rate of the target critic per update."""


@dataclass
class SACModel:
    """Everything an SAC update reads and changes."""

    actor: Actor
    critic: CriticEnsemble
    critic_target: CriticEnsemble
    log_alpha: torch.nn.Parameter
    """``log alpha``, shape ``[1]``."""
    opt: FusedAdam
    """One Adam over actor, critic and ``log_alpha`` (all gradients come from the same parameters)."""
    generator: torch.Generator
    """Source of the reparameterization noise."""
    workspace: Workspace
    """Scratch buffers of the update."""


def make_sac_model(
    obs_dim: int,
    act_dim: int,
    hidden: tuple[int, ...],
    activation: Activation,
    lr: float,
    init_alpha: float,
    device: torch.device,
    seed: int,
) -> SACModel:
    """A freshly initialized SAC model (the target critic starts as a copy of the critic)."""
    if init_alpha <= 0:
        raise ValueError(f"init_alpha must be positive, got {init_alpha}")
    init = torch.Generator().manual_seed(seed)
    actor = Actor(obs_dim, act_dim, hidden, activation, stochastic=True, generator=init).to(device)
    critic = CriticEnsemble(obs_dim, act_dim, hidden, activation, generator=init).to(device)
    target = CriticEnsemble(obs_dim, act_dim, hidden, activation).to(device)
    target.load_state_dict(critic.state_dict())
    target.requires_grad_(False)
    log_alpha = torch.nn.Parameter(torch.full((1,), math.log(init_alpha), device=device))
    return SACModel(
        actor=actor,
        critic=critic,
        critic_target=target,
        log_alpha=log_alpha,
        opt=FusedAdam([*actor.parameters(), *critic.parameters(), log_alpha], lr),
        generator=torch.Generator(device=device).manual_seed(seed + 1),
        workspace=Workspace(),
    )


def squashed_sample(mu: Tensor, log_std: Tensor, eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(a, log_prob, u)`` for ``u = mu + exp(log_std) * eps``, ``a = tanh(u)``; log-prob ``[N, 1]``.

    ``log_prob`` is the exact density of ``a`` under the tanh-squashed Gaussian.
    """
    u = torch.addcmul(mu, log_std.exp(), eps)
    a = torch.tanh(u)
    # sum_i [-eps_i^2/2 - log_std_i - log(2 pi)/2 - log(1 - tanh(u_i)^2)]
    per_dim = eps.square().mul_(-0.5).sub_(log_std).add_(u.add(F.softplus(u.mul(-2.0))), alpha=2.0)
    const = -0.5 * _LOG_2PI - 2.0 * _LOG_2
    logp = per_dim.sum(-1, keepdim=True).add_(const * mu.shape[-1])
    return a, logp, u


def explore_action(z: Tensor, act_dim: int, generator: torch.Generator) -> Tensor:
    """A squashed Gaussian draw from the actor's output ``z = [mean, log_std]``, without the log-probability that
    nobody reads on the environment's hot path."""
    log_std = z[:, act_dim:].clamp(LOG_STD_MIN, LOG_STD_MAX)
    eps = torch.randn(log_std.shape, generator=generator, dtype=z.dtype, device=z.device)
    return torch.tanh(torch.addcmul(z[:, :act_dim], log_std.exp(), eps))


def _soft_target(model: SACModel, batch: Batch, params: SACParams, next_a: Tensor, next_logp: Tensor,
                 alpha: float) -> Tensor:
    """``y = r + gamma * (1 - terminated) * (min_k Q'_k(s', a') - alpha * log pi(a'|s'))``."""
    target = model.critic_target
    xt = torch.cat([batch.next_obs, next_a], 1)
    q_next = mlp_forward(xt, target.weights, target.biases, target.activation, model.workspace, "target")[-1]
    v_next = torch.minimum(q_next[0], q_next[1]).sub_(next_logp, alpha=alpha)
    if batch.horizon is not None:
        v_next = v_next * batch.discount(params.gamma)
        return torch.addcmul(batch.rewards, torch.rsub(batch.terminated, 1.0), v_next)
    return torch.addcmul(batch.rewards, torch.rsub(batch.terminated, 1.0), v_next, value=params.gamma)


def critic_params(model: SACModel) -> slice:
    """Where the critic's parameters sit in ``model.opt`` (after the actor's, before ``log_alpha``)."""
    n_actor = sum(1 for _ in model.actor.parameters())
    return slice(n_actor, n_actor + sum(1 for _ in model.critic.parameters()))


@torch.no_grad()
def sac_critic_update(model: SACModel, batch: Batch, params: SACParams) -> dict[str, float]:
    """The critic step of :func:`sac_update` alone (the same target), and the target critic's Polyak step."""
    actor, critic = model.actor, model.critic
    n = batch.obs.shape[0]
    act_dim = actor.act_dim
    alpha = float(model.log_alpha.exp())
    z = mlp_forward(batch.next_obs, actor.weights, actor.biases, actor.activation, model.workspace, "actor_next")[-1]
    log_std = z[:, act_dim:].clamp(LOG_STD_MIN, LOG_STD_MAX)
    eps = torch.randn(log_std.shape, generator=model.generator, dtype=z.dtype, device=z.device)
    a_next, logp_next, _ = squashed_sample(z[:, :act_dim], log_std, eps)
    y = _soft_target(model, batch, params, a_next, logp_next, alpha)
    xc = torch.cat([batch.obs, batch.actions], 1)
    c_outs = mlp_forward(xc, critic.weights, critic.biases, critic.activation, model.workspace, "critic_data")
    q = c_outs[-1]
    grad_q = torch.sub(q, y)
    critic_loss = grad_q.square().sum() * (0.5 / n)
    grad_q.mul_(1.0 / n)
    mlp_backward(grad_q, c_outs, critic.weights, critic.activation, grads_of(critic.weights),
                 grads_of(critic.biases), ws=model.workspace, key="critic_data")
    model.opt.step(only=critic_params(model))
    polyak_(model.critic_target, critic, params.tau)
    stats = torch.stack([critic_loss, q.mean()]).tolist()
    return {"critic_loss": stats[0], "q_mean": stats[1], "alpha": alpha}


@torch.no_grad()
def sac_update(model: SACModel, batch: Batch, params: SACParams) -> dict[str, float]:
    """One SAC gradient step on ``batch``; returns losses and statistics as Python floats."""
    actor, critic, target = model.actor, model.critic, model.critic_target
    n = batch.obs.shape[0]
    act_dim = actor.act_dim
    alpha = float(model.log_alpha.exp())
    inv_n = 1.0 / n

    # Actor on [s; s'] in one pass.
    x = torch.cat([batch.obs, batch.next_obs])
    ws = model.workspace
    a_outs = mlp_forward(x, actor.weights, actor.biases, actor.activation, ws, "actor")
    z = a_outs[-1]
    mu, log_std_raw = z[:, :act_dim], z[:, act_dim:]
    log_std = log_std_raw.clamp(LOG_STD_MIN, LOG_STD_MAX)
    eps = torch.randn(mu.shape, generator=model.generator, dtype=mu.dtype, device=mu.device)
    a_all, logp_all, _ = squashed_sample(mu, log_std, eps)
    a_pi, logp_pi = a_all[:n], logp_all[:n]

    # Soft target from the target critic at (s', a').
    y = _soft_target(model, batch, params, a_all[n:], logp_all[n:], alpha)

    # Twin critic on [(s, a); (s, a_pi)] in one pass.
    xc = torch.cat([torch.cat([batch.obs, batch.actions], 1), torch.cat([batch.obs, a_pi], 1)])
    c_outs = mlp_forward(xc, critic.weights, critic.biases, critic.activation, ws, "critic")
    q = c_outs[-1]
    q_data, q_pi = q[:, :n], q[:, n:]
    grad_q = torch.empty_like(q)
    diff = torch.sub(q_data, y, out=grad_q[:, :n])
    critic_loss = diff.square().sum() * (0.5 * inv_n)
    diff.mul_(inv_n)
    first = q_pi[0] <= q_pi[1]
    min_q_pi = torch.minimum(q_pi[0], q_pi[1])
    torch.mul(first, -inv_n, out=grad_q[0, n:])
    torch.sub(-inv_n, grad_q[0, n:], out=grad_q[1, n:])

    d_input = critic_and_policy_backward(critic, grad_q, c_outs, n, ws)
    g_a = d_input[0].add_(d_input[1])

    # Through tanh and the reparameterization, for the s rows only.
    dz = torch.empty((n, 2 * act_dim), dtype=z.dtype, device=z.device)
    du = dz[:, :act_dim]
    torch.addcmul(g_a, g_a, a_pi.square(), value=-1.0, out=du)
    du.add_(a_pi, alpha=2.0 * alpha * inv_n)
    dls = torch.mul(du, log_std[:n].exp(), out=dz[:, act_dim:])
    dls.mul_(eps[:n]).sub_(alpha * inv_n).mul_(log_std[:n] == log_std_raw[:n])
    a_in = [o[:n] for o in a_outs]
    actor_grads = grads_of(actor.weights), grads_of(actor.biases)
    mlp_backward(dz, a_in, actor.weights, actor.activation, *actor_grads, ws=ws, key="actor")

    mean_logp = logp_pi.mean()
    actor_loss = (alpha * logp_pi - min_q_pi).mean()
    if params.autotune_alpha:
        gap = mean_logp + params.entropy_target(act_dim)
        assert model.log_alpha.grad is not None
        torch.neg(gap, out=model.log_alpha.grad[0])
        alpha_loss = -model.log_alpha[0] * gap
    else:
        alpha_loss = torch.zeros((), dtype=q.dtype, device=q.device)  # log_alpha's gradient stays 0
    model.opt.step()
    polyak_(target, critic, params.tau)

    stats = torch.stack([critic_loss, actor_loss, alpha_loss, -mean_logp, q_data.mean()]).tolist()
    return {
        "critic_loss": stats[0],
        "actor_loss": stats[1],
        "alpha_loss": stats[2],
        "alpha": alpha,
        "entropy": stats[3],
        "q_mean": stats[4],
    }


class SACLearner:
    """SAC behind the :class:`policies.offpolicy.Learner` interface."""

    algo = "sac"

    def __init__(self, model: SACModel, params: SACParams) -> None:
        self.model = model
        self.params = params
        self.actor = model.actor

    def update(self, batch: Batch, update_actor: bool = True) -> dict[str, float]:
        if not update_actor:
            return sac_critic_update(self.model, batch, self.params)
        return sac_update(self.model, batch, self.params)

    @torch.no_grad()
    def explore(self, obs: Tensor) -> Tensor:
        actor = self.actor
        z = mlp_forward(obs, actor.weights, actor.biases, actor.activation)[-1]
        return explore_action(z, actor.act_dim, self.model.generator)

    def episode_start(self) -> None:
        pass  # the policy's own noise, independent from step to step

    def training_state(self) -> dict[str, Any]:
        m = self.model
        return {
            "critic": m.critic.state_dict(),
            "critic_target": m.critic_target.state_dict(),
            "log_alpha": m.log_alpha.detach().clone(),
            "opt": m.opt.state_dict(),
            "generator": m.generator.get_state(),
        }

    def load_training_state(self, state: dict[str, Any]) -> None:
        m = self.model
        load_module_state(m.critic, state["critic"], "critic")
        load_module_state(m.critic_target, state["critic_target"], "target critic")
        with torch.no_grad():
            m.log_alpha.copy_(state["log_alpha"])
        m.opt.load_state_dict(state["opt"])
        m.generator.set_state(state["generator"])
