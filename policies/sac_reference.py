"""The SAC update written plainly with autograd and ``torch.distributions``: the reference that
:func:`policies.sac.sac_update` and :func:`policies.sac.sac_critic_update` (hand-written backward passes, fused
and several times faster) are tested against.

The same losses as :mod:`policies.sac`, one gradient each, all from the same parameters:

- critic: ``0.5 * sum_k mean((Q_k(s, a) - y)^2)``,
  ``y = r + gamma^h * (1 - terminated) * (min_k Q'_k(s', a') - alpha * log pi(a'|s'))``, ``a' ~ pi(s')``
  (``h``: the transition's horizon, 1 for one-step transitions);
- actor: ``mean(alpha * log pi(a|s) - min_k Q_k(s, a))``, ``a = tanh(mu + std * eps)``;
- temperature: ``-mean(log_alpha * (log pi(a|s) + target_entropy))``.

Then one Adam step over every parameter (the critic's alone for a critic-only update) and the target critic's
Polyak step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from policies.networks import LOG_STD_MAX, LOG_STD_MIN
from policies.offpolicy import polyak_
from policies.replay import Batch
from policies.sac import SACModel, SACParams, critic_params


@dataclass(frozen=True)
class SACGradients:
    """The losses of one SAC update and their gradients."""

    critic: list[Tensor]
    """Of the critic loss, per critic parameter."""
    actor: list[Tensor] | None
    """Of the actor loss, per actor parameter (``None`` for a critic-only update)."""
    log_alpha: Tensor | None
    """Of the temperature loss (``None`` for a critic-only update or a fixed temperature)."""
    critic_loss: float
    actor_loss: float | None
    alpha_loss: float | None


def _policy(model: SACModel, obs: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
    """The squashed Gaussian's action and log-density at ``obs`` for the standard normal noise ``eps``."""
    act_dim = model.actor.act_dim
    z = model.actor(obs)
    mu, log_std = z[:, :act_dim], z[:, act_dim:].clamp(LOG_STD_MIN, LOG_STD_MAX)
    std = log_std.exp()
    u = mu + std * eps
    a = torch.tanh(u)
    logp = torch.distributions.Normal(mu, std).log_prob(u).sum(-1, keepdim=True)
    logp = logp - torch.log1p(-(a**2)).sum(-1, keepdim=True)
    return a, logp


def sac_reference_gradients(model: SACModel, batch: Batch, params: SACParams, eps: Tensor,
                            update_actor: bool = True) -> SACGradients:
    """The losses and gradients of one SAC update; ``eps`` is the reparameterization noise: rows for ``s`` then
    ``s'`` (``[2B, act_dim]``), or for ``s'`` alone with ``update_actor=False``. Nothing is changed."""
    actor, critic, target = model.actor, model.critic, model.critic_target
    n = batch.obs.shape[0]
    alpha = model.log_alpha.exp().detach()
    if update_actor:
        a, logp = _policy(model, torch.cat([batch.obs, batch.next_obs]), eps)
        a_pi, logp_pi, a_next, logp_next = a[:n], logp[:n], a[n:], logp[n:]
    else:
        with torch.no_grad():
            a_next, logp_next = _policy(model, batch.next_obs, eps)
    with torch.no_grad():
        q_t = target(batch.next_obs, a_next)
        v_next = torch.min(q_t[0], q_t[1]) - alpha * logp_next
        y = batch.rewards + batch.discount(params.gamma) * (1 - batch.terminated) * v_next
    q = critic(batch.obs, batch.actions)
    critic_loss = 0.5 * ((q[0] - y) ** 2).mean() + 0.5 * ((q[1] - y) ** 2).mean()
    critic_grads = list(torch.autograd.grad(critic_loss, list(critic.parameters())))
    if not update_actor:
        return SACGradients(critic_grads, None, None, critic_loss.item(), None, None)

    q_pi = critic(batch.obs, a_pi)
    actor_loss = (alpha * logp_pi - torch.min(q_pi[0], q_pi[1])).mean()
    actor_grads = list(torch.autograd.grad(actor_loss, list(actor.parameters())))
    alpha_loss = -(model.log_alpha * (logp_pi + params.entropy_target(actor.act_dim)).detach()).mean()
    alpha_grad = None
    if params.autotune_alpha:
        (alpha_grad,) = torch.autograd.grad(alpha_loss, [model.log_alpha])
    return SACGradients(critic_grads, actor_grads, alpha_grad, critic_loss.item(), actor_loss.item(),
                        alpha_loss.item() if params.autotune_alpha else 0.0)


def sac_reference_update(model: SACModel, batch: Batch, params: SACParams, update_actor: bool = True) -> SACGradients:
    """One SAC update of ``model`` through :func:`sac_reference_gradients`: the noise drawn from
    ``model.generator`` as the fast update draws it, the gradients written to ``.grad``, Adam's and the Polyak
    step taken. After it ``model`` holds what :meth:`policies.sac.SACLearner.update` would have left (up to
    rounding)."""
    actor = model.actor
    rows = 2 * batch.obs.shape[0] if update_actor else batch.obs.shape[0]
    eps = torch.randn((rows, actor.act_dim), generator=model.generator, dtype=batch.obs.dtype,
                      device=batch.obs.device)
    grads = sac_reference_gradients(model, batch, params, eps, update_actor)
    with torch.no_grad():
        for p, g in zip(model.critic.parameters(), grads.critic, strict=True):
            _grad_buffer(p).copy_(g)
        if grads.actor is None:
            model.opt.step(only=critic_params(model))
        else:
            for p, g in zip(actor.parameters(), grads.actor, strict=True):
                _grad_buffer(p).copy_(g)
            if grads.log_alpha is not None:
                _grad_buffer(model.log_alpha).copy_(grads.log_alpha)
            model.opt.step()
        polyak_(model.critic_target, model.critic, params.tau)
    return grads


def _grad_buffer(p: Tensor) -> Tensor:
    """The preallocated ``.grad`` that the fused Adam reads (see :class:`policies.offpolicy.FusedAdam`)."""
    assert p.grad is not None, "gradient buffers are preallocated by FusedAdam"
    return p.grad
