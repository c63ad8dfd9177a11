"""The actor and the critic ensemble, with hand-written backward passes for the update's hot path.

Layers keep their weights as ``[in, out]`` so a layer is one ``addmm`` (``x @ W + b``). The critic
ensemble stacks its critics' weights on a leading axis (of size 2, the twin critic of SAC and TD3; 1 for
DDPG), so each layer of every critic is one ``baddbmm``. The updates in :mod:`policies.sac` and :mod:`policies.td3` call
:func:`mlp_forward` / :func:`mlp_backward` instead of autograd: on a small CPU the update of these
small networks is bound by per-operation overhead as much as by arithmetic, and the explicit
backward skips every gradient nobody needs (critic weight gradients in the actor loss, input
gradients of the observation columns) and writes straight into preallocated ``.grad`` buffers.
``tests/test_sac_networks.py`` checks the hand-written gradients against autograd.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

Activation = Literal["relu", "tanh"]
ACTIVATIONS: tuple[Activation, ...] = ("relu", "tanh")
"""Hidden-layer activations the hand-written backward supports."""

LOG_STD_MIN = -20.0
"""Lower clamp of the actor's log standard deviation (log of the pre-tanh action units)."""
LOG_STD_MAX = 2.0
"""Upper clamp of the actor's log standard deviation (log of the pre-tanh action units)."""

TWINS = 2
"""Number of critics in the twin critic (clipped double-Q: SAC, TD3, CrossQ)."""


def activation_(x: Tensor, activation: Activation) -> Tensor:
    """Apply the hidden activation in place and return ``x``."""
    if activation == "relu":
        return x.relu_()
    return x.tanh_()


def activation_backward_(grad: Tensor, out: Tensor, activation: Activation) -> Tensor:
    """Gradient through the activation given its output ``out``, written over ``grad``."""
    if activation == "relu":
        return torch.ops.aten.threshold_backward.grad_input(grad, out, 0.0, grad_input=grad)
    return torch.ops.aten.tanh_backward.grad_input(grad, out, grad_input=grad)


class Workspace:
    """Named scratch tensors reused from one update to the next.

    Freshly allocated activations of these sizes (0.1-1 MB) come from ``mmap`` and are returned
    on free, so every update would page-fault them in again: over a thousand faults per update,
    several milliseconds on a virtual machine. Reusing buffers removes that cost.
    A buffer handed out under a name is overwritten the next time that name is asked for.
    """

    def __init__(self) -> None:
        self._bufs: dict[str, Tensor] = {}

    def __call__(self, key: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
        buf = self._bufs.get(key)
        if buf is None or buf.shape != shape or buf.device != like.device or buf.dtype != like.dtype:
            buf = torch.empty(shape, dtype=like.dtype, device=like.device)
            self._bufs[key] = buf
        return buf


def _affine(x: Tensor, w: Tensor, b: Tensor, out: Tensor | None) -> Tensor:
    if out is None:
        # Plain ops: differentiable by autograd and exportable to ONNX.
        return torch.addmm(b, x, w) if w.dim() == 2 else torch.baddbmm(b, x, w)
    if w.dim() == 2:
        return torch.addmm(b, x, w, out=out)
    if w.shape[-1] == 1:
        # A single output (the Q value): a batched GEMM with one column runs at a few percent of
        # the BLAS peak here; one matrix-vector product per member is several times faster.
        for k in range(w.shape[0]):
            torch.addmv(b[k, 0], x[k], w[k, :, 0], out=out[k, :, 0])
        return out
    return torch.baddbmm(b, x, w, out=out)


def mlp_forward(
    x: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    activation: Activation,
    ws: Workspace | None = None,
    key: str = "",
) -> list[Tensor]:
    """Every layer's output, input first: ``[x, h1, ..., y]``; the last layer is linear.

    For stacked (3-d) weights a 2-d ``x`` is shared by all members (an expanded view, no copy).
    With a workspace the outputs live in its buffers named ``key.h<i>`` (valid until reused).
    """
    if weights[0].dim() == 3 and x.dim() == 2:
        x = x.unsqueeze(0).expand(weights[0].shape[0], -1, -1)
    outs = [x]
    h = x
    last = len(weights) - 1
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        out = ws(f"{key}.h{i}", (*h.shape[:-1], w.shape[-1]), h) if ws is not None else None
        h = _affine(h, w, b, out)
        if i < last:
            h = activation_(h, activation)
        outs.append(h)
    return outs


def mlp_backward(
    grad: Tensor,
    outs: Sequence[Tensor],
    weights: Sequence[Tensor],
    activation: Activation,
    weight_grads: Sequence[Tensor] | None,
    bias_grads: Sequence[Tensor] | None,
    param_rows: int | None = None,
    input_rows: slice | None = None,
    input_cols: slice | None = None,
    ws: Workspace | None = None,
    key: str = "",
) -> Tensor | None:
    """Backpropagate ``grad`` (the gradient at the output, for every row of ``outs``).

    Parameter gradients are written into ``weight_grads`` / ``bias_grads`` (overwritten, not
    accumulated) from the first ``param_rows`` rows only (all rows when ``None``); the rest of the
    rows only carry gradient towards the input. Returns the gradient with respect to
    ``outs[0][..., input_rows, input_cols]``, or ``None`` when ``input_rows`` is ``None``.
    """
    n = len(weights)
    for i in range(n - 1, -1, -1):
        x_in = outs[i]
        w = weights[i]
        if weight_grads is not None and bias_grads is not None:
            g_rows = grad if param_rows is None else grad[..., :param_rows, :]
            x_rows = x_in if param_rows is None else x_in[..., :param_rows, :]
            if grad.dim() == 2:
                torch.mm(x_rows.t(), g_rows, out=weight_grads[i])
                torch.sum(g_rows, dim=0, out=bias_grads[i])
            elif w.shape[-1] == 1:
                # (x^T g) for a single output column, computed as its transpose (g^T x): a fast shape.
                wg = weight_grads[i]
                torch.bmm(g_rows.transpose(1, 2), x_rows, out=wg.view(wg.shape[0], 1, wg.shape[1]))
                torch.sum(g_rows, dim=1, keepdim=True, out=bias_grads[i])
            else:
                torch.bmm(x_rows.transpose(1, 2), g_rows, out=weight_grads[i])
                torch.sum(g_rows, dim=1, keepdim=True, out=bias_grads[i])
        if i > 0:
            shape = (*grad.shape[:-1], w.shape[-2])
            buf = ws(f"{key}.g{i}", shape, grad) if ws is not None else torch.empty_like(x_in)
            wt = w.transpose(-1, -2)
            if w.shape[-1] == 1:
                # A single output (the Q value): the product is an outer product, a broadcast multiply.
                torch.mul(grad, wt, out=buf)
            elif grad.dim() == 2:
                torch.mm(grad, wt, out=buf)
            else:
                torch.bmm(grad, wt, out=buf)
            grad = activation_backward_(buf, x_in, activation)
        elif input_rows is not None:
            w_in = w if input_cols is None else w[..., input_cols, :]
            return torch.matmul(grad[..., input_rows, :], w_in.transpose(-1, -2))
    return None


def _uniform_(t: Tensor, fan_in: int, generator: torch.Generator | None) -> Tensor:
    # PyTorch's nn.Linear default (kaiming-uniform with a=sqrt(5) reduces to this), as in SB3.
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        return t.uniform_(-bound, bound, generator=generator)


def _check_arch(in_dim: int, out_dim: int, hidden: Sequence[int], activation: str) -> None:
    if in_dim < 1 or out_dim < 1:
        raise ValueError(f"network sizes must be positive, got in={in_dim}, out={out_dim}")
    if not hidden or any(int(h) < 1 for h in hidden):
        raise ValueError(f"hidden sizes must be a non-empty list of positive ints, got {list(hidden)}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


class Actor(nn.Module):
    """MLP from the normalized observation to the pre-tanh action distribution.

    ``stochastic=True`` (SAC): the output is ``[mean, log_std]`` (``2 * act_dim`` values);
    ``stochastic=False`` (TD3): the output is the pre-tanh action (``act_dim`` values). Either way
    the deterministic action is ``tanh(mean)``, a normalized action in [-1, 1].
    Parameters are named ``w0, b0, w1, b1, ...`` with ``w_i`` of shape ``[in, out]``.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int],
        activation: Activation,
        stochastic: bool,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        out_dim = 2 * act_dim if stochastic else act_dim
        _check_arch(obs_dim, out_dim, hidden, activation)
        self.obs_dim = obs_dim
        self.act_dim = act_dim
        self.hidden = tuple(int(h) for h in hidden)
        self.activation: Activation = activation
        self.stochastic = stochastic
        sizes = (obs_dim, *self.hidden, out_dim)
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
            w = _uniform_(torch.empty(fan_in, fan_out), fan_in, generator)
            self.register_parameter(f"w{i}", nn.Parameter(w))
            self.register_parameter(f"b{i}", nn.Parameter(_uniform_(torch.empty(fan_out), fan_in, generator)))
        self.n_layers = len(sizes) - 1
        self._weights: list[Tensor] = [getattr(self, f"w{i}") for i in range(self.n_layers)]
        self._biases: list[Tensor] = [getattr(self, f"b{i}") for i in range(self.n_layers)]

    @property
    def weights(self) -> list[Tensor]:
        """``[w0, w1, ...]`` (cached: parameters keep their identity through ``.to`` and loading)."""
        return self._weights

    @property
    def biases(self) -> list[Tensor]:
        """``[b0, b1, ...]``."""
        return self._biases

    def forward(self, obs: Tensor) -> Tensor:
        """Raw output (``[mean, log_std]`` or the pre-tanh action) for normalized observations."""
        return mlp_forward(obs, self.weights, self.biases, self.activation)[-1]

    def deterministic(self, obs: Tensor) -> Tensor:
        """``tanh(mean)``: the evaluation action in [-1, 1] for normalized observations."""
        return torch.tanh(self.forward(obs)[..., : self.act_dim])


class CriticEnsemble(nn.Module):
    """``members`` Q networks ``Q(obs, action)`` with their weights stacked: ``w_i`` is ``[members, in, out]``.

    Two members (:data:`TWINS`) are the twin critic of SAC and TD3, one is DDPG's single critic. The input is
    ``cat([normalized obs, action], -1)``; the output is ``[members, N, 1]``.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int],
        activation: Activation,
        members: int = TWINS,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        _check_arch(obs_dim + act_dim, 1, hidden, activation)
        if members < 1:
            raise ValueError(f"a critic ensemble needs at least one member, got {members}")
        self.obs_dim = obs_dim
        self.act_dim = act_dim
        self.hidden = tuple(int(h) for h in hidden)
        self.activation: Activation = activation
        self.members = members
        sizes = (obs_dim + act_dim, *self.hidden, 1)
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
            w = _uniform_(torch.empty(members, fan_in, fan_out), fan_in, generator)
            self.register_parameter(f"w{i}", nn.Parameter(w))
            b = _uniform_(torch.empty(members, 1, fan_out), fan_in, generator)
            self.register_parameter(f"b{i}", nn.Parameter(b))
        self.n_layers = len(sizes) - 1
        self._weights: list[Tensor] = [getattr(self, f"w{i}") for i in range(self.n_layers)]
        self._biases: list[Tensor] = [getattr(self, f"b{i}") for i in range(self.n_layers)]

    @property
    def weights(self) -> list[Tensor]:
        """``[w0, w1, ...]`` (cached: parameters keep their identity through ``.to`` and loading)."""
        return self._weights

    @property
    def biases(self) -> list[Tensor]:
        """``[b0, b1, ...]``."""
        return self._biases

    def forward(self, obs: Tensor, action: Tensor) -> Tensor:
        """Every member's Q values, ``[members, N, 1]``."""
        return mlp_forward(torch.cat([obs, action], -1), self.weights, self.biases, self.activation)[-1]


class ObsNormalizer(nn.Module):
    """``clip((obs - mean) / sqrt(var + eps), -clip, clip)`` as a module (buffers, no parameters)."""

    mean: Tensor
    inv_std: Tensor

    def __init__(self, mean: Tensor, var: Tensor, clip: float, eps: float) -> None:
        super().__init__()
        self.register_buffer("mean", mean.to(torch.float32).clone())
        self.register_buffer("inv_std", torch.rsqrt(var.to(torch.float32) + eps))
        self.clip = float(clip)

    def forward(self, obs: Tensor) -> Tensor:
        return torch.clamp((obs - self.mean) * self.inv_std, -self.clip, self.clip)


class PolicyModule(nn.Module):
    """Raw float32 observation → deterministic normalized action in [-1, 1] (normalizer + actor).

    This is the whole deployed policy; the ONNX exporter exports exactly this module.
    """

    def __init__(self, normalizer: ObsNormalizer, actor: Actor) -> None:
        super().__init__()
        self.normalizer = normalizer
        self.actor = actor

    def forward(self, obs: Tensor) -> Tensor:
        return self.actor.deterministic(self.normalizer(obs))
