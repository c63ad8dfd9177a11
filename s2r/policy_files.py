"""The one way to load a policy: an exported ``.onnx`` file, a checkpoint (``.pt``), a training run directory, or a
scripted policy (``scripted:NAME``), as one :class:`LoadedPolicy` whose ``act`` returns the normalized action.

Every command that takes a policy (``s2r deploy``, ``eval``, ``render``, ``sweep``, ``simlogs``, the demo) calls
:func:`load_policy`. It lives in the application layer (``s2r``) because it joins the packages: ``policies`` reads
checkpoints, ``export`` reads ONNX files, ``sim`` holds the scripted excitation; none of them imports another for it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from export.metadata import ACTION_NORMALIZED
from export.onnx_policy import OnnxPolicy
from export.sb3_files import is_sb3_zip, sb3_zip_refusal
from policies.evaluate import evaluate
from s2r.core.errors import UserError
from s2r.core.extras import require_torch
from sim.tasks import GOAL_IDS
from sim.tasks.excitation import ExcitePolicy, MultiSine
from sim.tasks.spec import FloatArray, TaskSpec

Policy = Callable[[np.ndarray], np.ndarray]

SCRIPTED_PREFIX = "scripted:"
SCRIPTED_POLICIES = ("hold", "zero", "random", "excite")
"""``scripted:hold`` keeps the joints where the reset put them; ``scripted:zero`` moves them to the middle of
their ranges; ``scripted:random`` draws uniform actions in [-1, 1] (seeded); ``scripted:excite`` drives every joint
along its own multi-sine inside the joint limits and under the velocity limit, for system identification with
``s2r adapt`` (:mod:`sim.tasks.excitation`; the phases are seeded)."""

EXPECTED = ("an .onnx file, a checkpoint (.pt), a training run directory holding best.pt or last.pt, or "
            + ", ".join(SCRIPTED_PREFIX + n for n in SCRIPTED_POLICIES))
"""What a policy argument may name, for error messages."""
POLICY_FILES = "an exported .onnx file, a checkpoint (.pt) or a training run directory (its best.pt, else last.pt)"
"""What the positional ``POLICY`` of a command that runs a policy in simulation may name, for its help."""

KINDS = ("onnx", "checkpoint", "scripted")
IMPORT_HINT = ("export it with `s2r export`, or, for a policy trained elsewhere, `s2r export --from-sb3 MODEL.zip "
               "--task TASK` (Stable-Baselines3) or export.export_module (any torch actor)")
"""How to make an s2r policy file, for the errors about a file that is none."""


@dataclass(frozen=True)
class LoadedPolicy:
    """A policy ready to run, with what its file says about it."""

    act: Policy
    """Observation (float32, ``(O,)`` or ``(B, O)``) -> normalized action in [-1, 1], whatever the file's output."""
    kind: str
    """One of :data:`KINDS`."""
    description: str
    """What was loaded, for logs and summaries."""
    path: Path | None = None
    """The file read (for a run directory its ``best.pt``, else ``last.pt``); ``None`` for a scripted policy."""
    env_id: str | None = None
    """Gymnasium id trained on, when the file records it."""
    engine: str = "mujoco"
    """Physics engine trained on (``mujoco`` when unknown)."""
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Extra ``gym.make`` keyword arguments trained with."""
    algo: str | None = None
    """Training algorithm, when the file records it."""
    step: int | None = None
    """Environment steps trained, when the file records it."""
    obs_size: int | None = None
    """Observation length the policy takes (``None`` for a scripted policy: any)."""
    action_size: int | None = None
    """Action length the policy returns."""
    obs_layout: tuple[tuple[str, tuple[int, int]], ...] = ()
    """The observation's blocks ``(name, (start, stop))`` as an ONNX file records them (empty when unknown)."""
    goal_conditioned: bool = False
    """Whether the policy takes ``concat(observation, desired_goal)`` (a goal task's, :mod:`sim.goal_env`) instead
    of the task's flat observation."""


def load_policy(source: str | os.PathLike[str], *, spec: TaskSpec | None = None, seed: int = 0,
                period_override: bool = False, limits: tuple[FloatArray, FloatArray] | None = None) -> LoadedPolicy:
    """The policy that ``source`` names; a missing or bad file is a :class:`UserError` naming it and what was
    expected.

    With ``spec`` (the robot's task) an ONNX file must carry s2r metadata that matches it (task, joints, observation
    layout, control period); ``period_override`` lets the control period alone differ. Scripted policies need
    ``spec``; ``seed`` seeds ``scripted:random`` and the phases of ``scripted:excite``, which ``limits`` (joint
    limits, rad) bound (default: the task's ranges).
    """
    text = os.fspath(source)
    if text.startswith(SCRIPTED_PREFIX):
        if spec is None:
            raise UserError(f"policy {text!r}: a scripted policy runs on a robot's task (s2r deploy); here expected "
                            "an .onnx file, a checkpoint (.pt) or a training run directory")
        return LoadedPolicy(scripted_policy(text[len(SCRIPTED_PREFIX):], spec, seed, limits), "scripted", text)
    path = Path(text)
    if not path.exists():
        raise UserError(f"policy {text!r} does not exist: expected {EXPECTED}")
    if path.suffix.lower() == ".onnx":
        return _load_onnx(path, spec, period_override)
    if is_sb3_zip(path):
        raise UserError(sb3_zip_refusal(path))
    return _load_checkpoint(path)


def _load_checkpoint(path: Path) -> LoadedPolicy:
    # torch is the optional `train` extra, loaded here and not with this module: an ONNX deploy runs without it (and
    # every s2r command imports this module, for its --help: torch would add 1.8 s).
    require_torch(f"loading the checkpoint {str(path)!r}")
    from policies.checkpoint import load_checkpoint, policy_from_checkpoint, resolve_checkpoint_path

    file = resolve_checkpoint_path(path)
    ckpt = load_checkpoint(file)
    return LoadedPolicy(policy_from_checkpoint(ckpt), "checkpoint",
                        f"checkpoint {file} ({ckpt.algo}, step {ckpt.step})", file, ckpt.env_id, ckpt.engine,
                        dict(ckpt.config.get("env_kwargs") or {}), ckpt.algo, ckpt.step, ckpt.obs_dim, ckpt.act_dim,
                        goal_conditioned=ckpt.env_id in GOAL_IDS)


def _load_onnx(path: Path, spec: TaskSpec | None, period_override: bool) -> LoadedPolicy:
    onnx = OnnxPolicy(path)
    if spec is not None:
        problems = onnx.compatibility_problems(spec)
        if period_override:
            problems = [p for p in problems if not p.startswith("control period")]
        if problems:
            lines = "\n".join(f"  - {p}" for p in problems)
            raise UserError(f"refusing to deploy {str(path)!r} on the {spec.robot} ({spec.name}):\n{lines}")
    info = onnx.info
    if info is None:
        return LoadedPolicy(onnx.act, "onnx", f"onnx {path}", path, obs_size=onnx.obs_size,
                            action_size=onnx.action_size)
    act: Policy = onnx.act
    if info.action_output != ACTION_NORMALIZED:
        # Callers map the normalized action onto their env's bounds themselves (as for a checkpoint).
        def act(obs: NDArray[np.float32]) -> NDArray[np.float32]:
            return onnx.to_normalized(onnx.act(obs))

    return LoadedPolicy(act, "onnx", f"onnx {path}", path, info.env_id, info.engine, dict(info.env_kwargs or {}),
                        info.provenance.algo, info.provenance.training_steps, onnx.obs_size, onnx.action_size,
                        tuple((b.name, (b.start, b.stop)) for b in info.obs_layout), info.goal is not None)


def scripted_policy(name: str, spec: TaskSpec, seed: int,
                    limits: tuple[FloatArray, FloatArray] | None = None) -> Policy:
    """A policy for bring-up, tests and system identification (see :data:`SCRIPTED_POLICIES`)."""
    n = spec.n_joints
    if name == "zero":
        return lambda obs: np.zeros(n)
    if name == "hold":
        try:
            last = spec.obs_layout.slice("last_action")
        except KeyError:
            raise UserError(f"scripted:hold needs a last_action block in the observation of {spec.name}") from None
        return lambda obs: np.asarray(obs[last], dtype=np.float64)
    if name == "random":
        rng = np.random.default_rng(seed)
        return lambda obs: rng.uniform(-1.0, 1.0, n)
    if name == "excite":
        low, high = limits if limits is not None else (spec.low, spec.high)
        return ExcitePolicy(MultiSine(spec, seed, low=low, high=high))
    raise UserError(f"unknown scripted policy {name!r}; expected one of {', '.join(SCRIPTED_POLICIES)}")


def evaluate_policy(policy: LoadedPolicy, episodes: int, seed: int, engine: str | None = None) -> dict[str, Any]:
    """Evaluate ``policy`` in simulation on the environment it was trained on (with its ``env_kwargs``), on
    ``engine`` (default: the one trained on); episodes are seeded ``seed, seed + 1, ...`` as in
    :func:`policies.evaluate.evaluate`, so an exported file and its checkpoint give the same result."""
    if policy.env_id is None:
        raise UserError(f"cannot evaluate {str(policy.path)!r}: it carries no s2r metadata naming its environment "
                        f"({IMPORT_HINT})")
    if episodes < 1:
        raise UserError(f"episodes must be at least 1, got {episodes}")
    return evaluate(policy.act, policy.env_id, episodes, seed, engine or policy.engine,
                    dict(policy.env_kwargs) or None)


def evaluate_policy_file(source: str | os.PathLike[str], episodes: int, seed: int,
                         engine: str | None = None) -> dict[str, Any]:
    """:func:`evaluate_policy` of the policy file ``source``."""
    return evaluate_policy(load_policy(source), episodes, seed, engine)
