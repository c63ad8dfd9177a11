"""What SAC, TD3 and DDPG share: the learner interface the training loop drives, optimizers, target averaging, the
critic ensemble's backward."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from policies.networks import Actor, CriticEnsemble, Workspace, mlp_backward
from policies.replay import Batch


class Learner(Protocol):
    """An off-policy learner as the training loop sees it."""

    algo: str
    """The config's ``algo``: ``"crossq"``, ``"sac"``, ``"td3"`` or ``"ddpg"``."""
    actor: Actor
    """The policy network (input: normalized observations)."""

    def update(self, batch: Batch, update_actor: bool = True) -> dict[str, float]:
        """One gradient step; losses and statistics as Python floats.

        ``update_actor=False`` steps the critics (and their targets) only: the actor, its target and the
        temperature keep every bit, optimizer moments included, so a critic can be warmed up on new data before
        the policy it evaluates moves."""
        ...

    def explore(self, obs: Tensor) -> Tensor:
        """Exploration actions in [-1, 1] ``[N, act_dim]`` for normalized observations ``[N, obs_dim]``."""
        ...

    def episode_start(self) -> None:
        """A new episode begins (the next :meth:`explore` is its first step): exploration that carries state from
        step to step (DDPG's Ornstein-Uhlenbeck noise) starts afresh; nothing happens for stateless exploration."""
        ...

    def training_state(self) -> dict[str, Any]:
        """Everything beyond the actor that a resumed run needs (tensors and plain data only)."""
        ...

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`training_state` returned."""
        ...


class FusedAdam:
    """Adam (as ``torch.optim.Adam`` without weight decay or AMSGrad) over a fixed list of parameters.

    One call of the fused Adam kernel updates every tensor; ``torch.optim.Adam.step`` adds
    profiling hooks, grouping and per-group bookkeeping that cost as much as the kernel itself at
    these sizes. Gradients are read from ``.grad``, which is preallocated here (the updates write
    into it); all parameters share one step counter.
    """

    def __init__(
        self,
        params: list[nn.Parameter],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        fused: bool | None = None,
    ) -> None:
        """``fused=None``: the fused kernel on CPU and CUDA, a plain loop elsewhere."""
        if not params:
            raise ValueError("FusedAdam needs at least one parameter")
        self.params: list[Tensor] = list(params)
        for p in self.params:
            p.grad = torch.zeros_like(p)
        self.grads = [p.grad for p in self.params if p.grad is not None]
        self.lr = float(lr)
        self.betas = betas
        self.eps = float(eps)
        self.exp_avgs = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sqs = [torch.zeros_like(p) for p in self.params]
        device = self.params[0].device
        self._step = torch.zeros((), dtype=torch.float32, device=device)
        self._steps = [self._step] * len(self.params)
        self._fused = device.type in ("cpu", "cuda") if fused is None else fused

    @torch.no_grad()
    def step(self, only: slice | None = None) -> None:
        """One Adam step from the current ``.grad`` of every parameter, or of ``self.params[only]`` alone.

        With ``only`` the other parameters and their moments are left untouched (a zero gradient would still
        move them through the momentum). The step counter is shared, so it counts partial steps too; its bias
        correction is already ~1 after the thousands of steps of a simulation run, where partial steps are used.
        """
        self._step.add_(1.0)
        sel = slice(None) if only is None else only
        params, grads = self.params[sel], self.grads[sel]
        exp_avgs, exp_avg_sqs = self.exp_avgs[sel], self.exp_avg_sqs[sel]
        if self._fused:
            torch._fused_adam_(
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
                [],
                self._steps[sel],
                amsgrad=False,
                lr=self.lr,
                beta1=self.betas[0],
                beta2=self.betas[1],
                weight_decay=0.0,
                eps=self.eps,
                maximize=False,
            )
            return
        bias1 = 1.0 - self.betas[0] ** float(self._step)
        bias2 = 1.0 - self.betas[1] ** float(self._step)
        for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs, strict=True):
            m.lerp_(g, 1.0 - self.betas[0])
            v.mul_(self.betas[1]).addcmul_(g, g, value=1.0 - self.betas[1])
            denom = (v / bias2).sqrt_().add_(self.eps)
            p.addcdiv_(m, denom, value=-self.lr / bias1)

    def state_dict(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "betas": list(self.betas),
            "eps": self.eps,
            "step": float(self._step),
            "exp_avgs": [m.detach().cpu().clone() for m in self.exp_avgs],
            "exp_avg_sqs": [v.detach().cpu().clone() for v in self.exp_avg_sqs],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore moments and step count (shapes must match); the learning rate stays as configured."""
        ms, vs = state["exp_avgs"], state["exp_avg_sqs"]
        if len(ms) != len(self.params) or len(vs) != len(self.params):
            raise ValueError(f"optimizer state holds {len(ms)} tensors, the model has {len(self.params)}")
        with torch.no_grad():
            for p, m, v, m_new, v_new in zip(self.params, self.exp_avgs, self.exp_avg_sqs, ms, vs, strict=True):
                if m_new.shape != p.shape or v_new.shape != p.shape:
                    raise ValueError(f"optimizer state of shape {tuple(m_new.shape)} for a parameter {tuple(p.shape)}")
                m.copy_(m_new)
                v.copy_(v_new)
            self._step.fill_(float(state["step"]))


def grads_of(params: list[Tensor]) -> list[Tensor]:
    """The preallocated ``.grad`` buffers of ``params``."""
    out = []
    for p in params:
        if p.grad is None:
            raise RuntimeError("gradient buffers are preallocated by FusedAdam; this parameter has none")
        out.append(p.grad)
    return out


def polyak_(target: nn.Module, source: nn.Module, tau: float) -> None:
    """``target <- (1 - tau) * target + tau * source``, all tensors in one fused call."""
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


def load_module_state(module: nn.Module, state: object, what: str) -> None:
    """``module.load_state_dict(state)`` with a readable :class:`ValueError` on a mismatch."""
    if not isinstance(state, dict):
        raise ValueError(f"{what}: expected a state dict, got {type(state).__name__}")
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise ValueError(f"{what}: parameters do not match (missing {missing}, unexpected {extra})")
    for name, value in state.items():
        if not isinstance(value, Tensor) or value.shape != own[name].shape:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"{what}: {name} has shape {shape}, the network expects {tuple(own[name].shape)}")
    module.load_state_dict(state)


def critic_and_policy_backward(critic: CriticEnsemble, grad_q: Tensor, outs: Sequence[Tensor], n: int,
                               ws: Workspace) -> Tensor:
    """The critic ensemble's backward after one pass on ``[(s, a); (s, a_pi)]`` (``n`` rows each): the parameter
    gradients from the ``n`` data rows into the preallocated buffers, and the gradient with respect to
    ``a_pi`` of the policy rows, ``[members, n, act_dim]`` (one slice per member)."""
    d_input = mlp_backward(
        grad_q,
        outs,
        critic.weights,
        critic.activation,
        grads_of(critic.weights),
        grads_of(critic.biases),
        param_rows=n,
        input_rows=slice(n, None),
        input_cols=slice(critic.obs_dim, None),
        ws=ws,
        key="critic",
    )
    assert d_input is not None
    return d_input
