"""``s2r export --from-sb3``: a Stable-Baselines3 model zip (and its ``VecNormalize`` statistics) to the verified
ONNX contract of ``s2r export``, through :func:`export.onnx_export.export_module`.

Stable-Baselines3 is not needed: :mod:`export.sb3_files` reads the zip and the statistics without running
anything in them, and this module rebuilds the deterministic actor from the ``state_dict`` alone:

- SAC (and sb3-contrib CrossQ): ``latent_pi`` (Linear + activation per hidden layer; CrossQ puts a BatchRenorm,
  in evaluation mode, before each Linear and after the last activation), then ``tanh(mu(latent))``;
- TD3 and DDPG: ``mu`` (Linear + activation per hidden layer, a last Linear, then ``tanh``).

The actor's output is the normalized action in [-1, 1]; SB3's ``predict`` maps it onto the action bounds with the
same ``low + (a + 1) / 2 * (high - low)`` as s2r's contract, which :func:`export_module` applies for non-s2r tasks.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from export.onnx_export import ExportConfig, ExportResult, ObsNorm, export_module
from export.sb3_files import SUPPORTED, Sb3Model, read_sb3_zip, read_vecnormalize
from policies.envs import make_env, resolve_task
from s2r.core.errors import UserError

ACTIVATION_MODULES: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "leaky_relu": nn.LeakyReLU, "silu": nn.SiLU, "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
}
"""The modules of :data:`export.sb3_files.ACTIVATIONS`, built with their defaults as SB3 builds them."""
LINEAR_KEYS = frozenset({"weight", "bias"})
RENORM_KEYS = frozenset({"scale", "bias", "ra_mean", "ra_var", "steps"})
"""The state of sb3-contrib's BatchRenorm (``steps`` counts training batches; evaluation ignores it)."""


class BatchRenormEval(nn.Module):
    """sb3-contrib's ``BatchRenorm1d`` in evaluation mode: ``(x - ra_mean) / sqrt(ra_var + eps) * scale + bias``."""

    ra_mean: Tensor
    ra_var: Tensor
    scale: Tensor
    bias: Tensor

    def __init__(self, state: dict[str, Tensor], eps: float) -> None:
        super().__init__()
        for key in ("ra_mean", "ra_var", "scale", "bias"):
            self.register_buffer(key, state[key].detach().to(torch.float32).clone())
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        # The same operations in the same order as BatchRenorm.forward, so the rounding matches SB3's too.
        return (x - self.ra_mean) / (self.ra_var + self.eps).sqrt() * self.scale + self.bias


class SquashedMean(nn.Module):
    """SAC's and CrossQ's deterministic action: ``tanh(mu(latent_pi(obs)))``."""

    def __init__(self, latent: nn.Module, mu: nn.Linear) -> None:
        super().__init__()
        self.latent_pi = latent
        self.mu = mu

    def forward(self, obs: Tensor) -> Tensor:
        return torch.tanh(self.mu(self.latent_pi(obs)))


def _layers(state: dict[str, Tensor], prefix: str, where: str) -> list[tuple[int, dict[str, Tensor]]]:
    """The numbered layers of the ``nn.Sequential`` under ``prefix``, in order, each with its state."""
    layers: dict[int, dict[str, Tensor]] = {}
    for key, value in state.items():
        if key.startswith(prefix):
            index, _, name = key[len(prefix):].partition(".")
            if not index.isdigit() or not name:
                raise UserError(f"{where}: unexpected entry {key!r} in the actor; the importer converts {SUPPORTED}")
            layers.setdefault(int(index), {})[name] = value
    return sorted(layers.items())


def _linear(params: dict[str, Tensor], in_dim: int, key: str, where: str) -> nn.Linear:
    weight, bias = params["weight"], params["bias"]
    if weight.ndim != 2 or bias.shape != (weight.shape[0],) or weight.shape[1] != in_dim:
        raise UserError(f"{where}: layer {key} has weights {tuple(weight.shape)} and bias {tuple(bias.shape)}, "
                        f"not a Linear layer taking {in_dim} inputs")
    layer = nn.Linear(int(weight.shape[1]), int(weight.shape[0]))
    layer.load_state_dict({"weight": weight.to(torch.float32), "bias": bias.to(torch.float32)})
    return layer


def _mlp(state: dict[str, Tensor], prefix: str, in_dim: int, activation: str, eps: float, where: str,
         *, last_is_output: bool) -> tuple[list[nn.Module], int]:
    """The modules SB3's ``create_mlp`` built under ``prefix`` and their output size.

    The ``state_dict`` names only the layers with parameters; the activation after each hidden Linear holds none
    and takes the next index, so a hidden Linear at ``i`` is followed by the next parameterized layer at ``i + 2``
    (a BatchRenorm at ``i + 1``). With ``last_is_output`` the last Linear is the output layer: no activation.
    """
    layers = _layers(state, prefix, where)
    if not layers:
        raise UserError(f"{where}: the actor has no layers under {prefix!r}; the importer converts {SUPPORTED}")
    modules: list[nn.Module] = []
    expected, dim = 0, in_dim
    for n, (index, params) in enumerate(layers):
        key = f"{prefix}{index}"
        if index != expected:
            raise UserError(f"{where}: the actor's layer {key} is not where an MLP of Linear, activation (and "
                            f"BatchRenorm) layers puts it; the importer converts {SUPPORTED}")
        names = frozenset(params)
        if names == LINEAR_KEYS:
            linear = _linear(params, dim, key, where)
            modules.append(linear)
            dim = linear.out_features
            if last_is_output and n == len(layers) - 1:
                break
            modules.append(ACTIVATION_MODULES[activation]())
            expected = index + 2
        elif names == RENORM_KEYS or names == RENORM_KEYS - {"steps"}:
            if any(params[k].shape != (dim,) for k in ("scale", "bias", "ra_mean", "ra_var")):
                raise UserError(f"{where}: BatchRenorm layer {key} does not have {dim} features")
            modules.append(BatchRenormEval(params, eps))
            expected = index + 1
        else:
            raise UserError(f"{where}: the actor's layer {key} holds {sorted(names)}, neither a Linear layer nor a "
                            f"BatchRenorm; the importer converts {SUPPORTED}")
    return modules, dim


def sb3_actor(model: Sb3Model) -> nn.Module:
    """The deterministic actor of ``model`` (raw or VecNormalize-normalized observation -> normalized action in
    [-1, 1]), rebuilt from its ``state_dict`` (``torch.load(weights_only=True)``: tensors only), in eval mode."""
    where = f"SB3 model {str(model.path)!r}"
    try:
        state = torch.load(io.BytesIO(model.state_dict_bytes), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load fails in many ways on a damaged or non-tensor entry
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{where}: cannot read policy.pth as plain tensors ({first})") from exc
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(f"{where}: policy.pth is not a state_dict of tensors")
    actor = {k: v for k, v in state.items() if k.startswith("actor.")}
    obs_dim = model.obs_shape[0]
    if model.algo in ("td3", "ddpg"):
        allowed: tuple[str, ...] = ("actor.mu.",)
    else:
        allowed = ("actor.latent_pi.", "actor.mu.", "actor.log_std.")
    stray = sorted(k for k in actor if not k.startswith(allowed))
    if stray:
        raise UserError(f"{where}: the actor has parameters the importer does not know ({', '.join(stray[:3])}"
                        f"{', ...' if len(stray) > 3 else ''}: a custom features extractor?); it converts {SUPPORTED}")
    if model.algo in ("td3", "ddpg"):
        modules, _ = _mlp(actor, "actor.mu.", obs_dim, model.activation, model.batch_norm_eps, where,
                          last_is_output=True)
        return nn.Sequential(*modules, nn.Tanh()).eval()
    latent, dim = _mlp(actor, "actor.latent_pi.", obs_dim, model.activation, model.batch_norm_eps, where,
                       last_is_output=False)
    if "actor.mu.weight" not in actor or "actor.mu.bias" not in actor:
        raise UserError(f"{where}: the actor has no mu layer; the importer converts {SUPPORTED}")
    mu = _linear({"weight": actor["actor.mu.weight"], "bias": actor["actor.mu.bias"]}, dim, "actor.mu", where)
    return SquashedMean(nn.Sequential(*latent), mu).eval()


def default_out(model: str | os.PathLike[str]) -> Path:
    """The model's path with ``.onnx`` for ``.zip``."""
    return Path(model).with_suffix(".onnx")


def export_sb3(
    model: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    task: str,
    vecnormalize: str | os.PathLike[str] | None = None,
    engine: str = "mujoco",
    activation: str | None = None,
    config: ExportConfig | None = None,
) -> ExportResult:
    """Export the SB3 model zip ``model`` (with the observation statistics of the ``VecNormalize`` file
    ``vecnormalize``, if it trained with one) for ``task`` (an s2r task or gymnasium id) to ``out`` (default: the
    zip's path with ``.onnx``); see the module docstring. ``activation`` overrides the one read from the zip."""
    sb3 = read_sb3_zip(model, activation)
    stats = read_vecnormalize(vecnormalize) if vecnormalize is not None else None
    env_id = resolve_task(task)
    env = make_env(env_id, engine)
    try:
        obs_space, act_space = env.observation_space, env.action_space
    finally:
        env.close()
    if obs_space.shape != sb3.obs_shape:
        raise UserError(f"SB3 model {str(sb3.path)!r} observes {sb3.obs_shape}, but {env_id} has the observation "
                        f"space {obs_space.shape}: is --task the environment it trained on?")
    assert isinstance(act_space, gym.spaces.Box)  # make_env admits Box action spaces only
    low, high = np.asarray(act_space.low, dtype=np.float64), np.asarray(act_space.high, dtype=np.float64)
    if sb3.action_low is not None and sb3.action_high is not None and not (
            sb3.action_low.shape == low.shape and np.allclose(sb3.action_low, low, rtol=1e-6, atol=1e-6)
            and np.allclose(sb3.action_high, high, rtol=1e-6, atol=1e-6)):
        raise UserError(f"SB3 model {str(sb3.path)!r} acts within [{sb3.action_low}, {sb3.action_high}], but {env_id} "
                        f"has the action bounds [{low}, {high}]: is --task the environment it trained on?")
    norm = None
    if stats is not None and stats.norm_obs:
        norm = ObsNorm(stats.mean, stats.var, stats.clip, stats.eps)
    provenance = {
        "format": "stable-baselines3",
        "sb3_version": sb3.sb3_version,
        "policy_class": sb3.policy_class,
        "activation": sb3.activation,
        "data_sha256": sb3.data_sha256,
        "policy_sha256": sb3.policy_sha256,
        "vecnormalize_sha256": None if stats is None else stats.sha256,
        "obs_normalized": norm is not None,
    }
    return export_module(sb3_actor(sb3), out if out is not None else default_out(model), task=env_id,
                         obs_norm=norm, engine=engine, algo=f"sb3-{sb3.algo}", training_steps=sb3.num_timesteps,
                         source=sb3.path, provenance=provenance, config=config)
