"""CrossQ (Bhatt, Palenicek et al., ICLR 2024): SAC without target networks, with batch-renormalized critics.

One update, :func:`crossq_update`:

- critic: the current ``(s, a)`` and the next ``(s', a')`` batches (``a' ~ pi(s')``) go through the critic in
  **one** forward pass in training mode, so the batch statistics of every normalization layer cover both
  distributions; that is what makes the bootstrap target stable without a target network. Loss
  ``0.5 * sum_k mean((Q_k(s, a) - y)^2)`` with ``y = r + gamma * (1 - terminated) * (min_k Q_k(s', a') -
  alpha * log pi(a'|s'))``, the ``(s', a')`` half detached. Only termination stops bootstrapping.
- every ``policy_delay``-th update (and only when ``update_actor``): the actor on
  ``mean(alpha * log pi(a|s) - min_k Q_k(s, a))`` with the critic in inference mode (running statistics),
  then the temperature on ``-mean(log_alpha * (log pi(a|s) + target_entropy))``.
- Adam with ``beta1 = 0.5`` (the paper's setting); the critic is wider than the actor.

The actor is the plain :class:`~policies.networks.Actor` of SAC, so a CrossQ run exports to the same ONNX
contract (normalizer + actor) as SAC and TD3. Unlike SAC's hand-written backward, this update uses autograd:
batch renormalization's backward is long, and its cost is dominated by the wide critic's matrix products.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from policies.networks import LOG_STD_MAX, LOG_STD_MIN, TWINS, Activation, Actor, activation_
from policies.offpolicy import load_module_state
from policies.replay import Batch
from policies.sac import MaxEntParams, explore_action, squashed_sample

CROSSQ_BETA1 = 0.5
"""Adam's first-moment rate in CrossQ (the paper's setting, also sb3-contrib's)."""
BRN_MOMENTUM = 0.01
"""Rate of the running statistics of every batch-renormalization layer (sb3-contrib's and the paper's)."""
BRN_EPS = 1e-3
"""Added to the variance before the square root."""
BRN_R_MAX = 3.0
"""Clip of the renormalization scale ``r`` once batch renormalization is on (Ioffe 2017)."""
BRN_D_MAX = 5.0
"""Clip of the renormalization shift ``d`` once batch renormalization is on."""
BRN_WARMUP = 100_000
"""Training-mode passes of plain batch normalization before the renormalization corrections start, as in
sb3-contrib: at first the running statistics are too young to correct towards."""


class BatchRenorm(nn.Module):
    """Batch renormalization (Ioffe 2017) over the rows of ``[members, N, features]`` inputs, one set of
    statistics and affine parameters per member of a stacked twin critic.

    Training mode normalizes with the batch statistics (corrected towards the running ones, with ``r`` and
    ``d`` clipped, after :data:`BRN_WARMUP` passes) and updates the running statistics; inference mode uses the
    running statistics only, so it is an affine map.
    """

    running_mean: Tensor
    running_var: Tensor
    steps: Tensor

    def __init__(self, members: int, features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(members, 1, features))
        self.bias = nn.Parameter(torch.zeros(members, 1, features))
        self.register_buffer("running_mean", torch.zeros(members, 1, features))
        self.register_buffer("running_var", torch.ones(members, 1, features))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            # An affine map: one fused multiply-add per element.
            scale = torch.rsqrt(self.running_var + BRN_EPS) * self.weight
            return torch.addcmul(self.bias - self.running_mean * scale, x, scale)
        n = x.shape[1]
        renorm = int(self.steps) >= BRN_WARMUP
        out: Tensor
        out, mean, var = _BatchRenormFn.apply(x, self.weight, self.bias, self.running_mean, self.running_var, renorm)
        with torch.no_grad():
            self.running_mean.lerp_(mean, BRN_MOMENTUM)
            self.running_var.lerp_(var * (n / max(n - 1, 1)), BRN_MOMENTUM)
            self.steps.add_(1)
        return out


def batch_renorm_reference(norm: BatchRenorm, x: Tensor, renorm: bool) -> Tensor:
    """Batch renormalization's training-mode map written plainly, for autograd: the reference the fused backward
    (:class:`_BatchRenormFn`) is tested against. The running statistics are read, not updated."""
    mean = x.mean(1, keepdim=True)
    std = torch.sqrt((x - mean).square().mean(1, keepdim=True) + BRN_EPS)
    x_hat = (x - mean) / std
    if renorm:
        running_std = torch.sqrt(norm.running_var + BRN_EPS)
        r = (std / running_std).clamp(1.0 / BRN_R_MAX, BRN_R_MAX).detach()
        d = ((mean - norm.running_mean) / running_std).clamp(-BRN_D_MAX, BRN_D_MAX).detach()
        x_hat = x_hat * r + d
    return x_hat * norm.weight + norm.bias


class _BatchRenormFn(torch.autograd.Function):
    """Batch renormalization's training-mode map with a hand-written backward; returns ``(y, mean, var)``.

    ``y = (x_hat * r + d) * weight + bias`` with ``x_hat = (x - mean) / sqrt(var + eps)`` over the batch axis
    (1, biased variance). With ``renorm`` off ``r = 1`` and ``d = 0``; on, ``r`` and ``d`` are the clipped
    corrections towards the running statistics, constants of the backward (Ioffe 2017 stops their gradient).
    Autograd through the same formula runs about 30 elementwise kernels per layer; this backward is batch
    normalization's closed form, ``dx = weight * r / sqrt(var + eps) * (g - mean(g) - x_hat * mean(g * x_hat))``,
    with the two batch sums shared by the weight's and bias's gradients. ``tests/test_crossq.py`` checks it
    against autograd in float64."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor, running_mean: Tensor, running_var: Tensor,
                renorm: bool) -> tuple[Tensor, Tensor, Tensor]:
        mean = x.mean(1, keepdim=True)
        centred = x - mean
        var = centred.square().mean(1, keepdim=True)
        inv_std = torch.rsqrt(var + BRN_EPS)
        x_hat = centred.mul_(inv_std)
        r = d = None
        scale, shift = weight, bias
        if renorm:
            running_std = torch.sqrt(running_var + BRN_EPS)
            r = (torch.sqrt(var + BRN_EPS) / running_std).clamp_(1.0 / BRN_R_MAX, BRN_R_MAX)
            d = ((mean - running_mean) / running_std).clamp_(-BRN_D_MAX, BRN_D_MAX)
            scale, shift = weight * r, torch.addcmul(bias, weight, d)
        ctx.save_for_backward(x_hat, inv_std, scale, r, d)
        ctx.mark_non_differentiable(mean, var)
        return torch.addcmul(shift, x_hat, scale), mean, var

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> tuple[Tensor | None, ...]:
        g = grads[0]
        x_hat, inv_std, scale, r, d = ctx.saved_tensors
        n = g.shape[1]
        g_sum = g.sum(1, keepdim=True)
        gx_sum = (g * x_hat).sum(1, keepdim=True)
        grad_weight = gx_sum if r is None else torch.addcmul(gx_sum * r, g_sum, d)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = (g - g_sum / n).sub_(x_hat * (gx_sum / n)).mul_(scale * inv_std)
        return grad_x, grad_weight, g_sum, None, None, None


class RenormTwinCritic(nn.Module):
    """Two Q networks, weights stacked on a leading axis of size 2, each layer's input batch-renormalized:
    ``BRN -> Linear -> act -> BRN -> Linear -> act -> ... -> BRN -> Linear(1)``. Output ``[2, N, 1]``."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], activation: Activation,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if not hidden or any(h < 1 for h in hidden):
            raise ValueError(f"critic hidden sizes must be a non-empty list of positive ints, got {list(hidden)}")
        self.activation: Activation = activation
        sizes = (obs_dim + act_dim, *hidden, 1)
        self.norms = nn.ModuleList(BatchRenorm(TWINS, n) for n in sizes[:-1])
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in itertools.pairwise(sizes):
            bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default initialization, as in sb3-contrib
            self.weights.append(nn.Parameter(torch.empty(TWINS, fan_in, fan_out).uniform_(-bound, bound,
                                                                                            generator=generator)))
            self.biases.append(nn.Parameter(torch.empty(TWINS, 1, fan_out).uniform_(-bound, bound,
                                                                                      generator=generator)))

    def forward(self, obs: Tensor, action: Tensor) -> Tensor:
        h = torch.cat([obs, action], -1).unsqueeze(0).expand(TWINS, -1, -1)
        last = len(self.weights) - 1
        for i, (norm, w, b) in enumerate(zip(self.norms, self.weights, self.biases, strict=True)):
            h = torch.baddbmm(b, norm(h), w)
            if i < last:
                h = activation_(h, self.activation)
        return h


@dataclass(frozen=True, kw_only=True)
class CrossQParams(MaxEntParams):
    """Hyperparameters of one CrossQ update."""

    policy_delay: int = 3
    """Critic updates per actor and temperature update."""


@dataclass
class CrossQModel:
    """Everything a CrossQ update reads and changes."""

    actor: Actor
    critic: RenormTwinCritic
    log_alpha: nn.Parameter
    """``log alpha``, shape ``[1]``."""
    actor_opt: torch.optim.Adam
    critic_opt: torch.optim.Adam
    alpha_opt: torch.optim.Adam
    generator: torch.Generator
    """Source of the reparameterization noise."""
    updates: int = 0
    """Critic updates done so far (the delay counter)."""


def make_crossq_model(obs_dim: int, act_dim: int, hidden: tuple[int, ...], critic_hidden: tuple[int, ...],
                      activation: Activation, lr: float, beta1: float, init_alpha: float, device: torch.device,
                      seed: int) -> CrossQModel:
    """A freshly initialized CrossQ model."""
    if init_alpha <= 0:
        raise ValueError(f"init_alpha must be positive, got {init_alpha}")
    init = torch.Generator().manual_seed(seed)
    actor = Actor(obs_dim, act_dim, hidden, activation, stochastic=True, generator=init).to(device)
    critic = RenormTwinCritic(obs_dim, act_dim, critic_hidden, activation, generator=init).to(device)
    log_alpha = nn.Parameter(torch.full((1,), math.log(init_alpha), device=device))
    betas = (beta1, 0.999)
    return CrossQModel(
        actor=actor,
        critic=critic,
        log_alpha=log_alpha,
        actor_opt=torch.optim.Adam(actor.parameters(), lr, betas=betas, fused=True),
        critic_opt=torch.optim.Adam(critic.parameters(), lr, betas=betas, fused=True),
        alpha_opt=torch.optim.Adam([log_alpha], lr, betas=betas, fused=True),
        generator=torch.Generator(device=device).manual_seed(seed + 1),
    )


def _sample(model: CrossQModel, obs: Tensor) -> tuple[Tensor, Tensor]:
    """``(a, log pi(a|s))`` from the squashed Gaussian of the actor, reparameterized."""
    z = model.actor(obs)
    act_dim = model.actor.act_dim
    log_std = z[:, act_dim:].clamp(LOG_STD_MIN, LOG_STD_MAX)
    eps = torch.randn(log_std.shape, generator=model.generator, dtype=z.dtype, device=z.device)
    a, logp, _ = squashed_sample(z[:, :act_dim], log_std, eps)
    return a, logp


def crossq_update(model: CrossQModel, batch: Batch, params: CrossQParams, update_actor: bool = True
                  ) -> dict[str, float]:
    """One CrossQ step on ``batch`` (the actor and temperature too on every ``policy_delay``-th call, unless
    ``update_actor`` is False); returns losses and statistics as Python floats."""
    actor, critic = model.actor, model.critic
    n = batch.obs.shape[0]
    alpha = model.log_alpha.detach().exp()

    with torch.no_grad():
        next_a, next_logp = _sample(model, batch.next_obs)
    critic.train()
    q_all = critic(torch.cat([batch.obs, batch.next_obs]), torch.cat([batch.actions, next_a]))
    q, q_next = q_all[:, :n], q_all[:, n:].detach()
    v_next = torch.minimum(q_next[0], q_next[1]) - alpha * next_logp
    y = batch.rewards + batch.discount(params.gamma) * (1.0 - batch.terminated) * v_next
    critic_loss = 0.5 * (q - y).square().mean(dim=(1, 2)).sum()
    model.critic_opt.zero_grad(set_to_none=True)
    critic_loss.backward()
    model.critic_opt.step()
    model.updates += 1
    stats = {"critic_loss": critic_loss.item(), "q_mean": q.detach().mean().item(), "alpha": alpha.item()}

    if update_actor and model.updates % params.policy_delay == 0:
        critic.eval()
        critic.requires_grad_(False)
        a, logp = _sample(model, batch.obs)
        q_pi = critic(batch.obs, a)
        actor_loss = (alpha * logp - torch.minimum(q_pi[0], q_pi[1])).mean()
        model.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        model.actor_opt.step()
        critic.requires_grad_(True)
        critic.train()
        stats["actor_loss"] = actor_loss.item()
        stats["entropy"] = -float(logp.detach().mean())
        if params.autotune_alpha:
            alpha_loss = -(model.log_alpha * (logp.detach() + params.entropy_target(actor.act_dim))).mean()
            model.alpha_opt.zero_grad(set_to_none=True)
            alpha_loss.backward()
            model.alpha_opt.step()
            stats["alpha_loss"] = alpha_loss.item()
    return stats


class CrossQLearner:
    """CrossQ behind the :class:`policies.offpolicy.Learner` interface."""

    algo = "crossq"

    def __init__(self, model: CrossQModel, params: CrossQParams) -> None:
        self.model = model
        self.params = params
        self.actor = model.actor

    def update(self, batch: Batch, update_actor: bool = True) -> dict[str, float]:
        return crossq_update(self.model, batch, self.params, update_actor)

    @torch.no_grad()
    def explore(self, obs: Tensor) -> Tensor:
        return explore_action(self.actor(obs), self.actor.act_dim, self.model.generator)  # the same draw as _sample

    def episode_start(self) -> None:
        pass  # the policy's own noise, independent from step to step

    def training_state(self) -> dict[str, Any]:
        m = self.model
        return {
            "critic": m.critic.state_dict(),
            "log_alpha": m.log_alpha.detach().clone(),
            # Copies: torch's optimizer state dicts hold the live moment tensors.
            "actor_opt": copy.deepcopy(m.actor_opt.state_dict()),
            "critic_opt": copy.deepcopy(m.critic_opt.state_dict()),
            "alpha_opt": copy.deepcopy(m.alpha_opt.state_dict()),
            "generator": m.generator.get_state(),
            "updates": m.updates,
        }

    def load_training_state(self, state: dict[str, Any]) -> None:
        m = self.model
        load_module_state(m.critic, state["critic"], "critic")
        with torch.no_grad():
            m.log_alpha.copy_(state["log_alpha"])
        m.actor_opt.load_state_dict(state["actor_opt"])
        m.critic_opt.load_state_dict(state["critic_opt"])
        m.alpha_opt.load_state_dict(state["alpha_opt"])
        m.generator.set_state(state["generator"])
        m.updates = int(state["updates"])
