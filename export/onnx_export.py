"""Export a deterministic policy to ONNX, verified against PyTorch before the file appears.

:func:`export_policy` exports an s2r checkpoint, :func:`export_module` any torch actor (a policy trained
elsewhere; :mod:`export.sb3_export` builds one from a Stable-Baselines3 model); both write the same contract.
The graph is the observation normalization, the actor (raw or normalized observation -> normalized action in
[-1, 1]) and, for non-s2r environments with bounds other than [-1, 1], the linear map onto the environment's
action bounds. Input ``obs`` (float32, ``(batch, O)``, dynamic
batch), output ``action`` (``(batch, A)``). The file is written under a temporary name, run through
onnxruntime on observations sampled from the observation space and from rollouts of the policy,
compared with PyTorch, and renamed into place only when every action agrees within the tolerance.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import Tensor, nn

import s2r
from export.config import DEFAULT_OPSET as DEFAULT_OPSET
from export.config import FLOAT32_ALLOWANCE as FLOAT32_ALLOWANCE
from export.config import MAX_ABS_DIFF as MAX_ABS_DIFF
from export.config import MIN_OPSET, ExportConfig, ExportResult, Verification, VerificationError
from export.config import MIN_VERIFY_SAMPLES as MIN_VERIFY_SAMPLES
from export.metadata import (
    ACTION_ENV_BOUNDS,
    ACTION_NORMALIZED,
    UNKNOWN_RANDOMIZATION,
    GoalSpec,
    GoalValue,
    ObsSlice,
    PolicyMetadata,
    Provenance,
    config_sha256,
    describe_randomization,
)
from export.onnx_policy import OnnxPolicy
from export.sb3_files import is_sb3_zip, sb3_zip_refusal
from policies.checkpoint import Checkpoint, load_checkpoint, resolve_checkpoint_path
from policies.envs import S2R_PREFIX, find_goal_env, make_env, resolve_task
from policies.networks import ObsNormalizer
from s2r.core.atomicio import atomic_path
from s2r.core.errors import UserError
from sim.goal_env import DESIRED_GOAL, GoalEnv, GoalTask, goal_obs_layout
from sim.rollout import to_env_action
from sim.tasks.spec import ObsLayout, TaskSpec

INPUT_NAME = "obs"
OUTPUT_NAME = "action"
OBS_SAMPLE_SPREAD_STD = 3.0
"""Random observations on unbounded dimensions are uniform within the normalizer's mean +- this many std.
Wider ranges drive the hidden activations so high that float32 rounding alone (PyTorch's own float32 vs
float64 result) nears the 1e-5 tolerance."""
CLIP_PROBE_FRACTION = 0.1
"""Share of the random observations that are the mean with one coordinate pushed past the normalizer's clip."""
CLIP_PROBE_MARGIN_STD = 2.0
"""How far past the clip (std) that coordinate lies."""
DEFAULT_OUT_NAME = "policy.onnx"
# ExportConfig, ExportResult, VerificationError and the limits above them live in the torch-free export.config (the
# command line and s2r.api name them before loading torch); this module re-exports them.


@dataclass(frozen=True)
class ObsNorm:
    """Observation normalization at the head of the graph: ``clip((obs - mean) / sqrt(var + eps), -clip, clip)``."""

    mean: np.ndarray
    """Mean of the observations (observation units, shape ``(O,)``)."""
    var: np.ndarray
    """Variance of the observations (observation units squared, shape ``(O,)``)."""
    clip: float = float("inf")
    """Clip of the normalized observation (standard deviations; ``inf``: no clip)."""
    eps: float = 0.0
    """Added to the variance before the square root (observation units squared)."""

    def validated(self, obs_dim: int) -> ObsNorm:
        """``self`` with float64 arrays, or :class:`UserError` naming the bad field."""
        mean = np.asarray(self.mean, dtype=np.float64)
        var = np.asarray(self.var, dtype=np.float64)
        for name, value in (("mean", mean), ("var", var)):
            if value.shape != (obs_dim,):
                raise UserError(f"observation normalizer {name} has shape {value.shape}; the task's observation "
                                f"has ({obs_dim},)")
            if not np.all(np.isfinite(value)):
                raise UserError(f"observation normalizer {name} has non-finite entries")
        if np.any(var < 0.0):
            raise UserError("observation normalizer var has negative entries")
        if not self.clip > 0.0:
            raise UserError(f"observation normalizer clip must be positive, got {self.clip}")
        if not (np.isfinite(self.eps) and self.eps >= 0.0):
            raise UserError(f"observation normalizer eps must be a finite number >= 0, got {self.eps}")
        if np.any(var + self.eps <= 0.0):
            raise UserError("observation normalizer var + eps must be positive in every dimension")
        return ObsNorm(mean, var, float(self.clip), float(self.eps))

    @property
    def std(self) -> np.ndarray:
        """``sqrt(var + eps)`` (observation units)."""
        return np.sqrt(np.asarray(self.var, dtype=np.float64) + self.eps)

    def module(self) -> ObsNormalizer:
        """The normalization as a torch module."""
        return ObsNormalizer(torch.from_numpy(np.asarray(self.mean, dtype=np.float64)),
                             torch.from_numpy(np.asarray(self.var, dtype=np.float64)), self.clip, self.eps)


def checkpoint_obs_norm(ckpt: Checkpoint) -> ObsNorm | None:
    """The checkpoint's observation statistics (``None`` when it trained without normalization)."""
    return ObsNorm(ckpt.obs_mean, ckpt.obs_var, ckpt.obs_clip, ckpt.obs_eps) if ckpt.obs_norm else None


class NormalizedActor(nn.Module):
    """An actor behind an observation normalizer: raw observation -> the actor's normalized action."""

    def __init__(self, normalizer: nn.Module, actor: nn.Module) -> None:
        super().__init__()
        self.normalizer = normalizer
        self.actor = actor

    def forward(self, obs: Tensor) -> Tensor:
        return self.actor(self.normalizer(obs))


class BoundsAction(nn.Module):
    """A policy's normalized action mapped onto ``[low, high]``: ``low + (a + 1) / 2 * (high - low)``."""

    low: Tensor
    half_range: Tensor

    def __init__(self, policy: nn.Module, low: np.ndarray, high: np.ndarray) -> None:
        super().__init__()
        self.policy = policy
        self.register_buffer("low", torch.as_tensor(low, dtype=torch.float32).clone())
        self.register_buffer("half_range", torch.as_tensor(0.5 * (high - low), dtype=torch.float32))

    def forward(self, obs: Tensor) -> Tensor:
        return self.low + (self.policy(obs) + 1.0) * self.half_range


def contract_module(policy: nn.Module, env_id: str, low: np.ndarray, high: np.ndarray) -> tuple[nn.Module, str]:
    """The module to export for ``policy`` (raw observation -> normalized action) on ``env_id`` with action bounds
    ``low``/``high``, and what its output is (:data:`ACTION_NORMALIZED` for s2r tasks, whose own action mapping
    follows, else :data:`ACTION_ENV_BOUNDS`)."""
    if env_id.startswith(S2R_PREFIX):
        return policy, ACTION_NORMALIZED
    if np.all(low == -1.0) and np.all(high == 1.0):
        return policy, ACTION_ENV_BOUNDS  # the map onto [-1, 1] is the identity
    return BoundsAction(policy, low, high).eval(), ACTION_ENV_BOUNDS


def exported_module(ckpt: Checkpoint) -> tuple[nn.Module, str]:
    """The module to export and what its output is (:data:`ACTION_NORMALIZED` or :data:`ACTION_ENV_BOUNDS`)."""
    return contract_module(ckpt.policy_module(), ckpt.env_id, ckpt.action_low, ckpt.action_high)


@cache
def max_ir_version() -> int:
    """The newest ONNX IR version the installed onnxruntime loads (probed with a one-node model)."""
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Tanh", ["x"], ["y"])], "probe",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    for version in range(onnx.IR_VERSION, 2, -1):
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", MIN_OPSET)])
        model.ir_version = version
        try:
            ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        except Exception:  # onnxruntime rejects an unsupported IR version with its own exception types
            continue
        return version
    raise UserError(f"onnxruntime {ort.__version__} loads no ONNX IR version up to {onnx.IR_VERSION}")


def _fit_ir_version(model: onnx.ModelProto) -> None:
    """Lower the IR version to what onnxruntime reads, when the opsets allow it."""
    top = max_ir_version()
    if model.ir_version <= top:
        return
    needed = onnx.helper.find_min_ir_version_for(list(model.opset_import))
    if needed > top:
        raise UserError(f"the exported opsets need ONNX IR {needed}, but onnxruntime {ort.__version__} reads at "
                        f"most IR {top}; export with a lower opset")
    model.ir_version = top


def torch_to_onnx(module: nn.Module, example: tuple[torch.Tensor, ...], input_names: list[str],
                  output_names: list[str], opset: int, what: str, props: Mapping[str, str],
                  producer: str) -> onnx.ModelProto:
    """``module`` as a checked ONNX model through the dynamo exporter, its inputs' first dimension a dynamic batch,
    at an IR version onnxruntime reads, with ``props`` as its only metadata and ``producer`` as its producer; a
    failure is a ``UserError`` naming ``what`` was exported, with the exporter's printout."""
    model = _dynamo_export(module, example, input_names, output_names, opset, what)
    _fit_ir_version(model)
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name = producer
    model.producer_version = s2r.__version__
    onnx.checker.check_model(model)
    return model


def _dynamo_export(module: nn.Module, example: tuple[torch.Tensor, ...], input_names: list[str],
                   output_names: list[str], opset: int, what: str) -> onnx.ModelProto:
    batch = torch.export.Dim("batch", min=1)
    log = logging.getLogger("torch.onnx")
    level = log.level
    printed = io.StringIO()
    try:
        # The exporter logs and warns about things that do not concern the user (e.g. missing torchvision).
        log.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(printed):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module, example, dynamo=True, input_names=input_names, output_names=output_names,
                dynamic_shapes=tuple({0: batch} for _ in example), opset_version=opset, verbose=False, optimize=True,
            )
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"torch.onnx.export of {what} failed: {first}\n{printed.getvalue()}") from exc
    finally:
        log.setLevel(level)
    if program is None:
        raise UserError(f"torch.onnx.export returned no program for {what}")
    model: onnx.ModelProto = program.model_proto
    return model


def _spec_of(env: gym.Env) -> TaskSpec | None:
    """The task spec the environment actually runs (with any control-period override), for s2r envs."""
    inner = env.unwrapped
    spec = getattr(inner.sim if isinstance(inner, GoalEnv) else inner, "spec_", None)
    return spec if isinstance(spec, TaskSpec) else None


def _goal_task_of(env: gym.Env) -> GoalTask | None:
    """The goal task of a goal-conditioned s2r environment, else ``None``."""
    inner = env.unwrapped
    return inner.task if isinstance(inner, GoalEnv) else None


def goal_spec(task: GoalTask) -> GoalSpec:
    """What the metadata records of how ``task``'s goal enters a goal policy's observation."""
    return GoalSpec(DESIRED_GOAL, tuple(GoalValue(f.name, f.unit, f.low, f.high) for f in task.goal_fields),
                    task.goal_encoding)


def _policy_metadata(env_id: str, engine: str, env_kwargs: Mapping[str, Any], obs_dim: int, low: np.ndarray,
                     high: np.ndarray, spec: TaskSpec | None, action_output: str,
                     provenance: Provenance, goal_task: GoalTask | None = None) -> PolicyMetadata:
    """The metadata of an export (task fields from ``spec`` for s2r tasks; for a goal-conditioned one,
    ``goal_task``, the observation layout is its goal view's and the ``goal`` key says how the goal enters)."""
    act_dim = len(low)
    obs_layout: ObsLayout | None = None
    if spec is not None:
        obs_layout = goal_obs_layout(goal_task, spec) if goal_task is not None else spec.obs_layout
    if spec is not None and obs_layout is not None and (obs_layout.size != obs_dim or spec.n_joints != act_dim):
        what = provenance.source_checkpoint or "the policy"
        raise UserError(f"{what!r} has obs/action sizes {obs_dim}/{act_dim}, but the task {spec.name!r} has "
                        f"{obs_layout.size}/{spec.n_joints}")
    layout: tuple[ObsSlice, ...] = ()
    if obs_layout is not None:
        slices = obs_layout.slices()
        layout = tuple(ObsSlice(f.name, *slices[f.name], f.unit) for f in obs_layout.fields)
    return PolicyMetadata(
        env_id=env_id,
        engine=engine,
        obs_size=obs_dim,
        action_size=act_dim,
        action_output=action_output,
        action_low=tuple(float(v) for v in low),
        action_high=tuple(float(v) for v in high),
        provenance=provenance,
        s2r_version=s2r.__version__,
        export_time_utc=datetime.now(UTC).isoformat(timespec="seconds"),
        env_kwargs=dict(env_kwargs),
        task=None if spec is None else spec.name,
        robot=None if spec is None else spec.robot,
        joint_names=() if spec is None else spec.joint_names,
        obs_layout=layout,
        control_period_s=None if spec is None else spec.control_period,
        goal=None if spec is None or goal_task is None else goal_spec(goal_task),
    )


def checkpoint_provenance(ckpt: Checkpoint, ckpt_path: Path) -> Provenance:
    """What the metadata records of where ``ckpt`` comes from."""
    return Provenance(ckpt.algo, ckpt.step, config_sha256(ckpt.config), describe_randomization(ckpt.config),
                      str(ckpt_path))


def build_metadata(ckpt: Checkpoint, ckpt_path: Path, spec: TaskSpec | None, action_output: str) -> PolicyMetadata:
    """The metadata of an export of ``ckpt`` (task fields from ``spec`` for s2r tasks)."""
    return _policy_metadata(ckpt.env_id, ckpt.engine, ckpt.config.get("env_kwargs") or {}, ckpt.obs_dim,
                            ckpt.action_low, ckpt.action_high, spec, action_output,
                            checkpoint_provenance(ckpt, ckpt_path))


def random_observations(norm: ObsNorm | None, space: gym.spaces.Box, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` observations: uniform within the space's finite bounds, else around the normalizer's mean.

    An unbounded dimension draws from ``mean +- OBS_SAMPLE_SPREAD_STD * std`` of the policy's
    observation statistics ``norm`` (mean 0, std 1 when there is none). A :data:`CLIP_PROBE_FRACTION`
    of the rows are the mean with one random coordinate :data:`CLIP_PROBE_MARGIN_STD` beyond the
    normalizer's clip (inside any finite bound), so the clip in the graph is compared too.
    """
    obs_dim = int(np.prod(space.shape or (0,)))
    mean = np.asarray(norm.mean, dtype=np.float64) if norm is not None else np.zeros(obs_dim)
    std = norm.std if norm is not None else np.ones(obs_dim)
    spread = OBS_SAMPLE_SPREAD_STD * std
    low = np.asarray(space.low, dtype=np.float64)
    high = np.asarray(space.high, dtype=np.float64)
    lo = np.where(np.isfinite(low), low, mean - spread)
    hi = np.where(np.isfinite(high), high, mean + spread)
    # A half-bounded dimension whose statistics lie beyond its bound: sample a window next to the bound.
    inverted = lo > hi
    lo = np.where(inverted & ~np.isfinite(low), hi - 2.0 * spread, lo)
    hi = np.where(inverted & ~np.isfinite(high), lo + 2.0 * spread, hi)
    obs = rng.uniform(lo, hi, (n, obs_dim))
    if norm is not None and np.isfinite(norm.clip):
        rows = np.arange(round(n * CLIP_PROBE_FRACTION))
        cols = rng.integers(0, obs_dim, len(rows))
        sign = rng.choice([-1.0, 1.0], len(rows))
        far = mean[cols] + sign * (norm.clip + CLIP_PROBE_MARGIN_STD) * std[cols]
        # The other coordinates sit at the mean (inside the bounds): one clipped input alone already drives
        # the hidden activations about as high as a fully random row.
        obs[rows] = np.clip(mean, low, high)
        obs[rows, cols] = np.clip(far, low[cols], high[cols])
    return obs.astype(np.float32)


def rollout_observations(
    policy: nn.Module, env: gym.Env, n: int, seed: int
) -> tuple[np.ndarray, int]:
    """``n`` observations met by the deterministic policy in ``env``, and how many episodes they span."""
    space = env.action_space
    assert isinstance(space, gym.spaces.Box)  # make_env admits Box action spaces only
    low, high = np.asarray(space.low), np.asarray(space.high)
    out = np.empty((n, int(np.prod(env.observation_space.shape or (0,)))), dtype=np.float32)
    episodes = 0
    i = 0
    while i < n:
        obs, _ = env.reset(seed=seed + episodes)
        episodes += 1
        while i < n:
            out[i] = np.asarray(obs, dtype=np.float32)
            i += 1
            with torch.inference_mode():
                action = policy(torch.from_numpy(out[i - 1 : i]))[0].numpy()
            obs, _, terminated, truncated, _ = env.step(to_env_action(action, low, high))
            if terminated or truncated:
                break
    return out, episodes


def _torch_actions(module: nn.Module, obs: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        actions: np.ndarray = module(torch.from_numpy(obs)).numpy()
    return actions


def float32_rounding(module: nn.Module, obs: np.ndarray, actions: np.ndarray) -> float:
    """How far float32 rounding alone moves ``module``'s ``actions`` on ``obs``: the largest difference from the
    same network run in float64 (action units; ``inf`` if either is not finite)."""
    exact = copy.deepcopy(module).double()
    with torch.inference_mode():
        reference: np.ndarray = exact(torch.from_numpy(obs).double()).numpy()
    if not (np.isfinite(reference).all() and np.isfinite(actions).all()):
        return float("inf")
    return float(np.max(np.abs(actions.astype(np.float64) - reference)))


def verify(module: nn.Module, onnx_policy: OnnxPolicy, obs: np.ndarray, n_random: int, episodes: int,
           tolerance: float, float32_allowance: float = FLOAT32_ALLOWANCE) -> Verification:
    """Run ``obs`` through PyTorch and through the exported file (as one batch and one by one) and compare; the
    limit is ``tolerance`` plus ``float32_allowance`` times the network's own float32 rounding."""
    expected = _torch_actions(module, obs)
    rounding = float32_rounding(module, obs, expected)
    expected = expected.astype(np.float64)
    batch = onnx_policy.act(obs).astype(np.float64)
    single = np.stack([onnx_policy.act(o) for o in obs]).astype(np.float64)
    finite = bool(np.isfinite(batch).all() and np.isfinite(single).all() and np.isfinite(expected).all())
    d_batch = float(np.max(np.abs(batch - expected))) if finite else float("inf")
    d_single = float(np.max(np.abs(single - expected))) if finite else float("inf")
    worst = max(d_batch, d_single)
    limit = tolerance + float32_allowance * rounding
    return Verification(
        samples=len(obs), random_samples=n_random, rollout_samples=len(obs) - n_random, rollout_episodes=episodes,
        max_abs_diff=worst, max_abs_diff_batch=d_batch, max_abs_diff_single=d_single, tolerance=tolerance,
        float32_rounding=rounding, limit=limit, passed=finite and worst <= limit,
    )


def default_out(source: str | os.PathLike[str]) -> Path:
    """``policy.onnx`` in the run directory (or beside the checkpoint file)."""
    p = Path(source)
    return (p if p.is_dir() else p.parent) / DEFAULT_OUT_NAME


def _check_out(out_path: Path) -> None:
    if out_path.suffix.lower() != ".onnx":
        raise UserError(f"output {str(out_path)!r} must end in .onnx")
    if not out_path.parent.is_dir():
        raise UserError(f"output directory {str(out_path.parent)!r} does not exist")


def _export_verified(policy: nn.Module, norm: ObsNorm | None, out_path: Path, cfg: ExportConfig, env_id: str,
                     engine: str, env_kwargs: Mapping[str, Any], provenance: Provenance,
                     bounds: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[PolicyMetadata, Verification, int,
                                                                                   int]:
    """Export ``policy`` (raw observation -> normalized action, eval mode) for ``env_id`` to ``out_path``, verified.

    ``bounds`` are the action bounds the policy trained with (default: the environment's). Returns the metadata
    written, the verification, the opset and the IR version.
    """
    what = provenance.source_checkpoint or "the policy"
    env = make_env(env_id, engine, env_kwargs or None)
    try:
        goal_task = _goal_task_of(env)
        if find_goal_env(env) is not None and (goal_task is None or not env_id.startswith(S2R_PREFIX)):
            # A goal policy's input is observation then desired goal: only an s2r goal task says which blocks and
            # how a commanded goal becomes the desired goal, so nothing could deploy another one safely.
            raise UserError(f"{what!r} is a goal-conditioned policy of {env_id}, which is not an s2r goal task: "
                            "the ONNX metadata could not say how its goal enters the observation; evaluate it in "
                            "simulation with s2r eval")
        space = env.observation_space
        act_space = env.action_space
        assert isinstance(space, gym.spaces.Box) and isinstance(act_space, gym.spaces.Box)  # make_env admits only Box
        obs_dim = int(space.shape[0])
        low, high = bounds if bounds is not None else (np.asarray(act_space.low, dtype=np.float64),
                                                       np.asarray(act_space.high, dtype=np.float64))
        try:
            with torch.inference_mode():
                probe = policy(torch.zeros(1, obs_dim))
        except RuntimeError as exc:  # a layer whose size does not fit the observation: torch says which
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"{what!r} cannot take the {obs_dim} observations of {env_id}: {first}") from exc
        if tuple(probe.shape) != (1, len(low)):
            raise UserError(f"{what!r} maps an observation batch (1, {obs_dim}) of {env_id} to actions of shape "
                            f"{tuple(probe.shape)}; the environment expects (1, {len(low)})")
        spec = _spec_of(env) if env_id.startswith(S2R_PREFIX) else None
        module, action_output = contract_module(policy, env_id, low, high)
        meta = _policy_metadata(env_id, engine, env_kwargs, obs_dim, low, high, spec, action_output, provenance,
                                goal_task)
        n_rollout = round(cfg.samples * cfg.rollout_fraction)
        rollouts, episodes = rollout_observations(policy, env, n_rollout, cfg.seed)
    finally:
        env.close()
    n_random = cfg.samples - n_rollout
    random_obs = random_observations(norm, space, n_random, np.random.default_rng(cfg.seed))
    obs = np.concatenate([random_obs, rollouts])

    model = torch_to_onnx(module, (torch.zeros(2, obs_dim),), [INPUT_NAME], [OUTPUT_NAME], cfg.opset, "the policy",
                          meta.to_props(), "s2r export")

    with atomic_path(out_path) as tmp:
        onnx.save(model, str(tmp))
        verification = verify(module, OnnxPolicy(tmp), obs, n_random, episodes, cfg.tolerance,
                              cfg.float32_allowance)
        if not verification.passed:
            raise VerificationError(
                f"export of {what!r} failed verification: onnxruntime and PyTorch differ by up to "
                f"{verification.max_abs_diff:.3g} (limit {verification.limit:.3g}: {cfg.tolerance:g} + "
                f"{cfg.float32_allowance:g} x the network's own float32 rounding, "
                f"{verification.float32_rounding:.2g}) over {verification.samples} observations; no file was written",
                verification)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return meta, verification, opset, model.ir_version


def export_policy(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    config: ExportConfig | None = None,
) -> ExportResult:
    """Export a checkpoint (or a run directory's best/last) to ``out``; see the module docstring.

    Raises :class:`UserError` for a bad checkpoint or output path, and :class:`VerificationError`
    (no file written) when onnxruntime and PyTorch disagree by more than the tolerance.
    """
    cfg = (config or ExportConfig()).validated()
    start = time.perf_counter()
    ckpt_path = resolve_checkpoint_path(source)
    if is_sb3_zip(ckpt_path):
        raise UserError(sb3_zip_refusal(ckpt_path))
    ckpt = load_checkpoint(ckpt_path)
    out_path = Path(out) if out is not None else default_out(source)
    _check_out(out_path)
    meta, verification, opset, ir_version = _export_verified(
        ckpt.policy_module(), checkpoint_obs_norm(ckpt), out_path, cfg, ckpt.env_id, ckpt.engine,
        ckpt.config.get("env_kwargs") or {}, checkpoint_provenance(ckpt, ckpt_path),
        (ckpt.action_low, ckpt.action_high))
    return ExportResult(out_path, ckpt_path, meta, verification, opset, ir_version, time.perf_counter() - start)


def export_module(
    module: nn.Module,
    out: str | os.PathLike[str],
    *,
    task: str,
    obs_norm: ObsNorm | None = None,
    engine: str = "mujoco",
    env_kwargs: Mapping[str, Any] | None = None,
    algo: str = "external",
    training_steps: int = 0,
    source: str | os.PathLike[str] | None = None,
    provenance: Mapping[str, Any] | None = None,
    randomization: str = UNKNOWN_RANDOMIZATION,
    config: ExportConfig | None = None,
) -> ExportResult:
    """Export any torch actor to ``out`` with the contract and verification of :func:`export_policy`.

    ``module`` maps a float32 observation batch ``(B, O)`` — the raw observation, or the normalized one when
    ``obs_norm`` is given — to the deterministic action **normalized to [-1, 1]** ``(B, A)`` (e.g. ``tanh`` of a
    squashed Gaussian's mean); the exporter adds ``obs_norm`` in front and, for non-s2r environments, the map onto
    the environment's action bounds (the file's ``action_output``, as for s2r checkpoints). ``task`` is an s2r
    task (``dclaw-turn``) or gymnasium id: the environment that fixes the spaces, the task metadata and the
    rollouts verified on, made with ``engine`` and ``env_kwargs``. ``algo``, ``training_steps``, ``source`` (the
    model file, if any) and ``randomization`` go into the metadata as they are; ``config_sha256`` is the hash of
    the canonical JSON of ``provenance`` (what the module was made from). The module is copied, so the caller's
    is left as it is.
    """
    cfg = (config or ExportConfig()).validated()
    start = time.perf_counter()
    if training_steps < 0:
        raise UserError(f"training_steps must be at least 0, got {training_steps}")
    out_path = Path(out)
    _check_out(out_path)
    env_id = resolve_task(task)
    actor = copy.deepcopy(module).float().cpu().eval()
    norm: ObsNorm | None = None
    policy: nn.Module = actor
    if obs_norm is not None:
        probe_env = make_env(env_id, engine, env_kwargs or None)
        shape = probe_env.observation_space.shape
        probe_env.close()
        norm = obs_norm.validated(int(np.prod(shape or (0,))))
        policy = NormalizedActor(norm.module(), actor).eval()
    source_path = None if source is None else Path(source)
    record = Provenance(algo, training_steps, config_sha256(dict(provenance or {})), randomization,
                        "" if source_path is None else str(source_path))
    meta, verification, opset, ir_version = _export_verified(policy, norm, out_path, cfg, env_id, engine,
                                                             env_kwargs or {}, record)
    return ExportResult(out_path, source_path, meta, verification, opset, ir_version, time.perf_counter() - start)
