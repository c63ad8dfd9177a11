"""TD3 (Fujimoto et al. 2018) on the same core as SAC, and DDPG (Lillicrap et al. 2016) as a configuration of it:
:func:`td3_update`.

- critic: ``0.5 * sum_k mean((Q_k(s, a) - y)^2)`` with
  ``y = r + gamma * (1 - terminated) * min_k Q'_k(s', clip(mu'(s') + clip(noise), -1, 1))``
  (target-policy smoothing: Gaussian noise of std ``target_noise`` clipped to ``±target_noise_clip``);
- every ``policy_delay``-th update also the actor, ``-mean(Q_1(s, mu(s)))``, and Polyak averaging of
  both target networks (delayed policy updates);
- the deterministic actor's action is ``tanh`` of its output.

**DDPG** is this update with one critic (``make_td3_model(..., critics=DDPG_CRITICS)``: the minimum over the
critics is that critic's value), no target-policy smoothing (``target_noise=0``: no noise is drawn at all) and
``policy_delay=1`` (the actor and both targets every update): the critic loss ``0.5 * mean((Q(s, a) - y)^2)``
with ``y = r + gamma * (1 - terminated) * Q'(s', mu'(s'))``, the actor loss ``-mean(Q(s, mu(s)))``
(``TD3Params(policy_delay=1, target_noise=0)``, the ``ddpg`` defaults of :class:`policies.config.TrainConfig`).
Its exploration noise comes from :mod:`policies.exploration`, as TD3's.

A critic-only update (``update_actor=False``) takes the critic step of every update and the critic target's
Polyak step on the usual every-``policy_delay``-th schedule; the actor, its target and the actor's optimizer
keep every bit.

As in :mod:`policies.sac`, all gradients of one update come from the same parameters, and the critic
ensemble runs once on ``[(s, a); (s, mu(s))]`` when the actor is updated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from policies.exploration import ExplorationNoise
from policies.networks import TWINS, Activation, Actor, CriticEnsemble, Workspace, mlp_backward, mlp_forward
from policies.offpolicy import FusedAdam, critic_and_policy_backward, grads_of, load_module_state, polyak_
from policies.replay import Batch

DDPG_CRITICS = 1
"""Critics of DDPG (TD3 has :data:`~policies.networks.TWINS`, for its clipped double-Q target)."""


@dataclass(frozen=True)
class TD3Params:
    """Hyperparameters of one TD3 (or DDPG) update."""

    gamma: float = 0.99
    """Discount per environment step."""
    tau: float = 0.005
    """Polyak rate of the target networks per actor update."""
    policy_delay: int = 2
    """Critic updates per actor (and target) update (1: every update, DDPG's)."""
    target_noise: float = 0.2
    """Std of the target-policy smoothing noise (normalized action units); 0 turns smoothing off (DDPG) and
    draws no noise."""
    target_noise_clip: float = 0.5
    """Clip of the smoothing noise (normalized action units)."""


def min_over_critics(q: Tensor) -> Tensor:
    """``min_k q[k]`` over the leading (critic) axis of ``q``: with one critic, its value (a view of ``q``)."""
    out = q[0]
    for k in range(1, q.shape[0]):
        out = torch.minimum(out, q[k])
    return out


@dataclass
class TD3Model:
    """Everything a TD3 update reads and changes."""

    actor: Actor
    actor_target: Actor
    critic: CriticEnsemble
    critic_target: CriticEnsemble
    actor_opt: FusedAdam
    critic_opt: FusedAdam
    generator: torch.Generator
    """Source of the smoothing and exploration noise (the exploration's own state lives in the learner)."""
    workspace: Workspace = field(default_factory=Workspace)
    """Scratch buffers of the update."""
    updates: int = 0
    """Critic updates done so far (the delay counter)."""


def make_td3_model(
    obs_dim: int,
    act_dim: int,
    hidden: tuple[int, ...],
    activation: Activation,
    lr: float,
    device: torch.device,
    seed: int,
    critics: int = TWINS,
) -> TD3Model:
    """A freshly initialized TD3 model (targets start as copies); ``critics=DDPG_CRITICS`` for DDPG."""
    init = torch.Generator().manual_seed(seed)
    actor = Actor(obs_dim, act_dim, hidden, activation, stochastic=False, generator=init).to(device)
    critic = CriticEnsemble(obs_dim, act_dim, hidden, activation, critics, generator=init).to(device)
    actor_target = Actor(obs_dim, act_dim, hidden, activation, stochastic=False).to(device)
    critic_target = CriticEnsemble(obs_dim, act_dim, hidden, activation, critics).to(device)
    actor_target.load_state_dict(actor.state_dict())
    critic_target.load_state_dict(critic.state_dict())
    actor_target.requires_grad_(False)
    critic_target.requires_grad_(False)
    return TD3Model(
        actor=actor,
        actor_target=actor_target,
        critic=critic,
        critic_target=critic_target,
        actor_opt=FusedAdam(list(actor.parameters()), lr),
        critic_opt=FusedAdam(list(critic.parameters()), lr),
        generator=torch.Generator(device=device).manual_seed(seed + 1),
    )


@torch.no_grad()
def td3_update(model: TD3Model, batch: Batch, params: TD3Params, update_actor: bool = True) -> dict[str, float]:
    """One TD3 step (critic always, actor and targets every ``policy_delay``-th call; with ``update_actor=False``
    the critic target only on those calls)."""
    actor, critic = model.actor, model.critic
    n = batch.obs.shape[0]
    inv_n = 1.0 / n
    ws = model.workspace
    delayed_step = model.updates % params.policy_delay == 0
    policy_step = delayed_step and update_actor
    model.updates += 1

    # Smoothed target action and the clipped double-Q target (DDPG: the target actor's action, the one critic).
    target_actor = model.actor_target
    mu_next = mlp_forward(batch.next_obs, target_actor.weights, target_actor.biases, target_actor.activation)[-1]
    a_next = torch.tanh(mu_next)
    if params.target_noise > 0:
        noise = torch.randn(mu_next.shape, generator=model.generator, dtype=mu_next.dtype, device=mu_next.device)
        noise.mul_(params.target_noise).clamp_(-params.target_noise_clip, params.target_noise_clip)
        a_next.add_(noise).clamp_(-1.0, 1.0)
    target = model.critic_target
    xt = torch.cat([batch.next_obs, a_next], 1)
    q_next = mlp_forward(xt, target.weights, target.biases, target.activation, ws, "target")[-1]
    not_done = torch.rsub(batch.terminated, 1.0)
    y = torch.addcmul(batch.rewards, not_done, min_over_critics(q_next).mul_(batch.discount(params.gamma)))

    data_rows = torch.cat([batch.obs, batch.actions], 1)
    if policy_step:
        a_outs = mlp_forward(batch.obs, actor.weights, actor.biases, actor.activation, ws, "actor")
        a_pi = torch.tanh(a_outs[-1])
        xc = torch.cat([data_rows, torch.cat([batch.obs, a_pi], 1)])
    else:
        xc = data_rows
    c_outs = mlp_forward(xc, critic.weights, critic.biases, critic.activation, ws, "critic")
    q = c_outs[-1]
    q_data = q[:, :n]
    grad_q = torch.zeros_like(q) if policy_step else torch.empty_like(q)
    diff = torch.sub(q_data, y, out=grad_q[:, :n])
    critic_loss = diff.square().sum() * (0.5 * inv_n)
    diff.mul_(inv_n)
    stats = [critic_loss, q_data.mean()]
    if policy_step:
        grad_q[0, n:] = -inv_n  # actor loss -mean(Q_1(s, mu(s))); the other critics get no gradient
        d_input = critic_and_policy_backward(critic, grad_q, c_outs, n, ws)
        # Through tanh: d tanh(z)/dz = 1 - tanh(z)^2.
        dz = torch.ops.aten.tanh_backward(d_input[0], a_pi)
        actor_grads = grads_of(actor.weights), grads_of(actor.biases)
        mlp_backward(dz, a_outs, actor.weights, actor.activation, *actor_grads, ws=ws, key="actor")
        stats.append(-q[0, n:].mean())
        model.critic_opt.step()
        model.actor_opt.step()
        polyak_(model.critic_target, critic, params.tau)
        polyak_(model.actor_target, actor, params.tau)
    else:
        mlp_backward(
            grad_q,
            c_outs,
            critic.weights,
            critic.activation,
            grads_of(critic.weights),
            grads_of(critic.biases),
            ws=ws,
            key="critic",
        )
        model.critic_opt.step()
        if delayed_step:
            polyak_(model.critic_target, critic, params.tau)
    values = torch.stack(stats).tolist()
    out = {"critic_loss": values[0], "q_mean": values[1]}
    if policy_step:
        out["actor_loss"] = values[2]
    return out


class TD3Learner:
    """TD3 (or DDPG, ``algo="ddpg"``) behind the :class:`policies.offpolicy.Learner` interface."""

    def __init__(self, model: TD3Model, params: TD3Params, exploration: ExplorationNoise, algo: str = "td3") -> None:
        self.algo = algo
        self.model = model
        self.params = params
        self.actor = model.actor
        self.exploration = exploration
        """Noise on the explored actions; it draws from ``model.generator``."""

    def update(self, batch: Batch, update_actor: bool = True) -> dict[str, float]:
        return td3_update(self.model, batch, self.params, update_actor)

    @torch.no_grad()
    def explore(self, obs: Tensor) -> Tensor:
        actor = self.actor
        a = torch.tanh(mlp_forward(obs, actor.weights, actor.biases, actor.activation)[-1])
        return self.exploration.add_(a).clamp_(-1.0, 1.0)

    def episode_start(self) -> None:
        self.exploration.reset()

    def training_state(self) -> dict[str, Any]:
        m = self.model
        state = {
            "actor_target": m.actor_target.state_dict(),
            "critic": m.critic.state_dict(),
            "critic_target": m.critic_target.state_dict(),
            "actor_opt": m.actor_opt.state_dict(),
            "critic_opt": m.critic_opt.state_dict(),
            "generator": m.generator.get_state(),
            "updates": m.updates,
        }
        exploration = self.exploration.state_dict()
        if exploration:  # Gaussian noise has none (and TD3's checkpoints keep their keys)
            state["exploration"] = exploration
        return state

    def load_training_state(self, state: dict[str, Any]) -> None:
        m = self.model
        load_module_state(m.actor_target, state["actor_target"], "target actor")
        load_module_state(m.critic, state["critic"], "critic")
        load_module_state(m.critic_target, state["critic_target"], "target critic")
        m.actor_opt.load_state_dict(state["actor_opt"])
        m.critic_opt.load_state_dict(state["critic_opt"])
        m.generator.set_state(state["generator"])
        m.updates = int(state["updates"])
        # A checkpoint of a run that explored otherwise (or of no exploration state) starts the process afresh.
        exploration = state.get("exploration")
        if exploration:
            self.exploration.load_state_dict(exploration)
        else:
            self.exploration.reset()
