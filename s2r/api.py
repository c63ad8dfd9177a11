"""The Python API: one plain function per stage of the sim-to-real loop, each taking a frozen, typed config and
returning a typed result. The ``s2r`` commands build these configs from their flags and call these functions: the
command line and a script run the same code.

- :func:`train`: a :class:`policies.config.TrainConfig` and a run directory -> :class:`TrainResult`;
- :func:`export`: an :class:`ExportJob` (its knobs an :class:`export.config.ExportConfig`) ->
  :class:`export.config.ExportResult`;
- :func:`evaluate`: an :class:`EvalJob` -> :class:`EvalResult`;
- :func:`deploy`: a :class:`DeployJob` -> :class:`DeployResult`;
- :func:`adapt`: an :class:`AdaptJob` (its knobs a :class:`randomization.adapt.AdaptConfig`) -> :class:`AdaptRun`;
- :func:`sweep`: a :class:`SweepJob` -> :class:`SweepRun`;
- :func:`finetune`: a :class:`policies.finetune_config.FinetuneConfig` -> :class:`s2r.finetune.FinetuneSummary`;
- :func:`train_perception`: a :class:`PerceptionTrainJob` -> :class:`PerceptionTrainResult` (a valve-angle estimator
  from camera images); :func:`evaluate_perception`: a :class:`PerceptionEvalJob` -> :class:`PerceptionEvalResult`.

A config is checked when it is made (a :class:`~policies.config.TrainConfig` when :func:`train` starts, as a
config file is when read): a bad field is a :class:`s2r.core.errors.UserError` naming the field.
Importing this module does not import torch (the ``train`` extra): :func:`train`, :func:`export` (and
:func:`evaluate` of a checkpoint) and :func:`finetune` load it when called, and name the extra if it is missing.
None of the functions installs signal handlers; :func:`deploy` and :func:`finetune` take ``should_stop``, polled once
per control cycle (the command line passes its SIGINT/SIGTERM flag).
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

import s2r
from export.config import ExportConfig, ExportResult
from export.metadata import canonical_json
from export.modular_policy import ModularPolicy
from export.onnx_policy import CONTROL_PERIOD_TOLERANCE_S
from export.perception_model import OnnxAngleEstimator, PerceptionMetadata, camera_json
from export.pixels_export import PixelsExport, export_pixels_policy
from export.pixels_policy import END_TO_END, OnnxPixelsPolicy, pixels_file, split_pixels_policy
from policies.config import TrainConfig, config_from_mapping
from policies.envs import make_env
from policies.evaluate import evaluate_env
from policies.finetune_config import FinetuneConfig
from policies.perception_config import PerceptionTrainConfig
from policies.pixels_config import PixelsSacConfig
from randomization.adapt import AdaptConfig, AdaptResult, edge_warning, output_paths, result_json, write_outputs
from randomization.adapt import adapt as fit_distribution
from randomization.distributions import (
    ParameterDistribution,
    combine_distributions,
    load_distribution,
    parse_distribution,
    task_param_specs,
)
from randomization.parallel import ExecutorConfig
from randomization.perception_data import PERCEPTION_TASK, SceneConfig, angle_error_deg, render_angle_dataset
from randomization.sweep import (
    GridAxis,
    SweepResult,
    check_axis_count,
    check_out_dir,
    default_out_dir,
    parse_grid_axis,
    run_sweep,
    write_sweep,
)
from randomization.wrapper import RandomizedEnv
from robot.bus import BusError
from robot.config import RobotConfig, load_config
from robot.controller import Controller, ControllerSettings, check_policy
from robot.emulator.faults import faults_from_arg
from robot.emulator.reality import load_reality
from robot.goals import episode_goals
from robot.hardware import OpenOptions, check_camera_options, check_driver_options, open_robot
from robot.runner import RunSummary, run_episodes, run_info
from robot.view import check_view_target, open_view, require_view
from s2r.core.errors import ParameterError, UserError
from s2r.core.extras import require_torch
from s2r.core.trajlog import SkippedFile, SkippedFileWarning, TrajectoryWriter
from s2r.policy_files import LoadedPolicy, evaluate_policy, load_policy
from sim import resolve_env_id
from sim.env import POSITION_SOURCES
from sim.goal_env import GoalView, is_goal_task
from sim.pixels_env import PixelsEnv
from sim.rollout import Policy
from sim.tasks import PIXEL_IDS, make_task
from sim.tasks.base import Task, observes_base_position
from sim.tasks.spec import TaskSpec

if TYPE_CHECKING:
    from policies.pixels_sac import PixelsTrainResult
    from s2r.finetune import FinetuneSummary

__all__ = [
    "AdaptConfig",
    "AdaptJob",
    "AdaptRun",
    "DeployJob",
    "DeployResult",
    "EvalJob",
    "EvalResult",
    "Evaluation",
    "ExecutorConfig",
    "ExportConfig",
    "ExportJob",
    "ExportResult",
    "FinetuneConfig",
    "PerceptionEvalJob",
    "PerceptionEvalResult",
    "PerceptionTrainConfig",
    "PerceptionTrainJob",
    "PerceptionTrainResult",
    "PixelsExportJob",
    "PixelsExportResult",
    "PixelsSacConfig",
    "PixelsTrainJob",
    "Sb3Model",
    "SweepJob",
    "SweepRun",
    "TrainConfig",
    "TrainResult",
    "adapt",
    "deploy",
    "deploy_task",
    "evaluate",
    "evaluate_perception",
    "export",
    "export_pixels",
    "export_pixels_run",
    "finetune",
    "pixels_run",
    "sweep",
    "train",
    "train_perception",
    "train_pixels",
]

PathLike = str | Path
StopPoll = Callable[[], str | None]
"""Polled once per control cycle: a reason (``"SIGINT"``) stops the run with the torque off, ``None`` carries on."""
DRIVERS = ("emulator", "dynamixel", "mock")


def _seed(seed: int, owner: str) -> None:
    if seed < 0:
        raise ParameterError("seed", f"must be >= 0 (numpy refuses a negative seed), got {seed}", owner)


# --- train ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Evaluation:
    """Deterministic episodes of a policy in simulation."""

    episodes: int
    """Episodes run, seeded ``seed, seed + 1, ...``."""
    success_rate: float | None
    """Fraction of episodes that ended in success; ``None`` for an environment that does not report success."""
    return_mean: float
    """Mean episode return."""
    return_std: float
    """Standard deviation of the episode returns (population)."""
    terminated: int | None = None
    """Episodes the task ended before their time limit (a walk's falls past the tilt bound); ``None`` where not
    counted (metrics written before the count)."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Evaluation:
        ended = data.get("terminated")
        return cls(int(data["episodes"]), data["success_rate"], float(data["return_mean"]),
                   float(data["return_std"]), None if ended is None else int(ended))


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` did (``s2r train --json`` prints :meth:`to_json`)."""

    run_dir: Path
    """The run directory: ``config.yaml``, ``metrics.jsonl``, ``last.pt``, ``best.pt``, ``learning_curve.png``."""
    steps: int
    """Environment steps trained in total (across resumes)."""
    episodes: int
    """Training episodes in total."""
    interrupted: bool
    """Whether SIGINT stopped the run early (``last.pt`` is saved; resume with ``resume=True``)."""
    reached_success: bool
    """Whether an evaluation reached the config's ``stop_success`` and ended the run before ``steps``."""
    train_time_s: float
    """Wall time of the training loop (s), across resumes."""
    eval: Evaluation | None
    """The last evaluation of the policy; ``None`` when none ran."""

    def to_json(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "steps": self.steps, "episodes": self.episodes,
                "interrupted": self.interrupted, "reached_success": self.reached_success,
                "train_time_s": self.train_time_s,
                "eval": None if self.eval is None else asdict(self.eval)}


def train(config: TrainConfig, out: PathLike, *, resume: bool = False, progress: bool = False) -> TrainResult:
    """Train a policy as ``config`` says into the run directory ``out`` (a new one, or with ``resume`` the one there,
    continued from its ``last.pt`` to ``config.steps``). Needs torch (the ``train`` extra)."""
    require_torch("s2r.api.train")
    from policies.train import train as train_run  # torch, the optional `train` extra

    checked = config_from_mapping({}, config)  # a TrainConfig made directly is checked here, as a file's is
    summary = train_run(checked, out, resume=resume, progress=progress)
    last = summary["eval"]
    return TrainResult(Path(summary["run_dir"]), summary["steps"], summary["episodes"], summary["interrupted"],
                       summary["reached_success"], summary["train_time_s"],
                       None if last is None else Evaluation.from_dict(last))


# --- export -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sb3Model:
    """A Stable-Baselines3 model to export (SAC, TD3, DDPG or sb3-contrib CrossQ with ``MlpPolicy``)."""

    model: Path
    """The zip ``model.save`` wrote. Never unpickled as it is (see :mod:`export.sb3_files`)."""
    task: str
    """The environment it trained on: an s2r task (``dclaw-turn``) or a gymnasium id (``Pendulum-v1``)."""
    vecnormalize: Path | None = None
    """The ``VecNormalize.save`` statistics it trained with (their normalization goes into the graph)."""
    engine: str = "mujoco"
    """Physics engine of an s2r task."""
    activation: str | None = None
    """The actor's hidden activation when the zip does not say (default: the zip's, else SB3's ``relu``)."""

    def __post_init__(self) -> None:
        if not self.task:
            raise ParameterError("task", "must name the s2r task or gymnasium id the model trained on", "sb3")


@dataclass(frozen=True)
class ExportJob:
    """A policy to export to a verified ONNX file."""

    source: Path | Sb3Model
    """A training run directory (its ``best.pt``, else ``last.pt``), a checkpoint (``.pt``), or an SB3 model."""
    out: Path | None = None
    """ONNX file to write; default ``policy.onnx`` in the run directory, beside the checkpoint, or the zip's name
    with ``.onnx``."""
    config: ExportConfig = field(default_factory=ExportConfig)
    """Verification: samples, tolerance, opset, seed."""

    def __post_init__(self) -> None:
        self.config.validated()


def export(job: ExportJob) -> ExportResult:
    """Export ``job.source`` to ONNX; the file appears only when onnxruntime and PyTorch agree within the tolerance
    (else :class:`export.config.VerificationError`, nothing written). Needs torch (the ``train`` extra)."""
    require_torch("s2r.api.export")
    from export.onnx_export import export_policy  # torch, the optional `train` extra
    from export.sb3_export import export_sb3

    source = job.source
    if isinstance(source, Sb3Model):
        return export_sb3(source.model, job.out, task=source.task, vecnormalize=source.vecnormalize,
                          engine=source.engine, activation=source.activation, config=job.config)
    return export_policy(source, job.out, job.config)


def pixels_run(source: Path | Sb3Model) -> Path | None:
    """The ``s2r train-pixels`` checkpoint ``source`` names (the file, or a run directory's ``best.pt``, else
    ``last.pt``), ``None`` for anything else. Needs torch."""
    require_torch("s2r.api.pixels_run")
    from policies.pixels_sac import run_checkpoint  # torch, the optional `train` extra

    return run_checkpoint(source) if isinstance(source, Path) else None


def export_pixels_run(checkpoint: Path, out: Path | None = None, seed: int = 0) -> PixelsExport:
    """The end-to-end camera policy of an ``s2r train-pixels`` checkpoint to ONNX (default ``policy_pixels.onnx``
    beside it), checked against PyTorch before it appears (:func:`export.pixels_sac_export.export_pixels_sac`)."""
    require_torch("s2r.api.export_pixels_run")
    from export.pixels_sac_export import export_pixels_sac  # torch, the optional `train` extra

    return export_pixels_sac(checkpoint, out if out is not None else checkpoint.with_name("policy_pixels.onnx"), seed)


@dataclass(frozen=True)
class PixelsExportJob:
    """A state policy of a D'Claw turn task and a valve-angle estimator to join into one camera policy file
    (:mod:`export.pixels_policy`: the camera frame and the robot's own readings in, the action out)."""

    state_policy: Path | Sb3Model
    """An exported state policy (``.onnx``), or what :class:`ExportJob` exports first (a run directory, a checkpoint,
    an SB3 model), to its usual file."""
    perception: Path
    """The estimator, ``s2r train-perception``'s ``perception.onnx``."""
    out: Path | None = None
    """Camera policy file to write; default the state policy file's name with ``_pixels.onnx``, beside it."""
    config: ExportConfig = field(default_factory=ExportConfig)
    """The state policy's export, when it is not an ONNX file yet; its ``seed`` also seeds the camera policy's
    check."""

    def __post_init__(self) -> None:
        self.config.validated()


@dataclass(frozen=True)
class PixelsExportResult:
    """What :func:`export_pixels` wrote and measured."""

    pixels: PixelsExport
    """The camera policy file and its check against the modular policy."""
    state_policy: Path
    """The state policy file joined."""
    state_export: ExportResult | None
    """The state policy's own export, when this job made it."""

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.pixels.path), "env_id": self.pixels.env_id, "state_policy": str(self.state_policy),
                "state_export": None if self.state_export is None else self.state_export.to_dict(),
                "verification": self.pixels.verification.to_dict()}


def export_pixels(job: PixelsExportJob) -> PixelsExportResult:
    """Join ``job.state_policy`` and ``job.perception`` into one camera policy file, written only when onnxruntime
    running it gives the modular policy's actions (:func:`export.pixels_export.export_pixels_policy`). An ONNX state
    policy needs no torch; anything else is exported first (:func:`export`)."""
    source = job.state_policy
    state_export = None
    if isinstance(source, Path) and source.suffix.lower() == ".onnx":
        state_file = source
    else:
        state_export = export(ExportJob(source, None, job.config))
        state_file = state_export.path
    out = job.out if job.out is not None else state_file.with_name(f"{state_file.stem}_pixels.onnx")
    made = export_pixels_policy(state_file, job.perception, out, seed=job.config.seed)
    return PixelsExportResult(made, state_file, state_export)


# --- evaluate ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalJob:
    """Deterministic (mean-action) episodes of a policy in simulation."""

    policy: PathLike
    """An exported ``.onnx`` file, a checkpoint (``.pt``) or a training run directory (its ``best.pt``, else
    ``last.pt``)."""
    episodes: int = 50
    """Episodes to run."""
    seed: int = 0
    """Seed of the first episode; the others are ``seed + 1, ...``."""
    engine: str | None = None
    """Physics engine; default the one the policy trained on."""
    perception: PathLike | None = None
    """A valve-angle estimator (``s2r train-perception``'s ``perception.onnx``): run ``policy``, a state policy of a
    D'Claw turn task, as a :class:`export.modular_policy.ModularPolicy` on that task's camera env (no valve angle in
    the observation; :data:`sim.tasks.PIXEL_IDS`). ``None``: the policy on its own env."""
    randomize: tuple[PathLike, ...] = ()
    """Randomization files (combined) drawn afresh for every episode, seeded by the episode's seed."""
    position_source: str | None = None
    """Where a walk's observed position comes from (:data:`sim.env.POSITION_SOURCES`): ``truth`` (the simulator's,
    as motion capture gives it) or ``odometry`` (leg odometry, as a robot without motion capture measures it; success
    is still judged on the truth). ``None``: the one the policy trained with."""

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ParameterError("episodes", f"must be at least 1, got {self.episodes}")
        _seed(self.seed, "eval")
        if self.position_source is not None and self.position_source not in POSITION_SOURCES:
            raise ParameterError("position_source", f"must be one of {', '.join(POSITION_SOURCES)}, got "
                                 f"{self.position_source!r}")


@dataclass(frozen=True)
class EvalResult:
    """What :func:`evaluate` measured, and of what."""

    evaluation: Evaluation
    """The episodes' success rate and returns."""
    policy: str
    """The policy as given."""
    path: Path | None
    """The file read (a run directory's ``best.pt``, else ``last.pt``)."""
    kind: str
    """``onnx`` or ``checkpoint``."""
    env_id: str
    """Gymnasium id evaluated on (the one trained on)."""
    engine: str
    """Physics engine evaluated on."""
    algo: str | None
    """Training algorithm, when the file records it."""
    step: int | None
    """Environment steps trained, when the file records it."""
    seed: int
    """Seed of the first episode."""
    perception: str | None = None
    """The valve-angle estimator the policy read the valve through, as given (a camera policy's own file, which
    carries it; ``None``: the simulator's angle)."""
    randomize: tuple[str, ...] = ()
    """The randomization files drawn from, as given."""
    position_source: str | None = None
    """The walk's position source evaluated with (``truth`` or ``odometry``); ``None`` for a task without one."""


def evaluate(job: EvalJob) -> EvalResult:
    """Run ``job.policy`` in simulation on the environment it trained on; an ONNX file runs through the same
    :class:`export.onnx_policy.OnnxPolicy` the robot runs, so it and its checkpoint give the same result. With
    ``job.perception`` it runs behind that estimator on the camera env of its task (:func:`_eval_env`); a camera
    policy file (``s2r export --perception``) runs on that env as it is (:func:`_evaluate_pixels`)."""
    if pixels_file(job.policy):
        return _evaluate_pixels(job)
    loaded = load_policy(job.policy)
    engine = job.engine or loaded.engine
    if job.perception is None and not job.randomize and job.position_source is None:
        result = evaluate_policy(loaded, job.episodes, job.seed, job.engine)
        env_id = str(loaded.env_id)
    else:
        env, policy, env_id = _eval_env(loaded, job, engine)
        try:
            result = evaluate_env(policy, env, job.episodes, job.seed)
        finally:
            env.close()
    source = job.position_source or trained_position_source(loaded)
    return EvalResult(Evaluation.from_dict(result), os.fspath(job.policy), loaded.path, loaded.kind, env_id, engine,
                      loaded.algo, loaded.step, job.seed,
                      None if job.perception is None else os.fspath(job.perception),
                      tuple(os.fspath(p) for p in job.randomize),
                      source if _observes_position(env_id) else None)


def _eval_env(loaded: LoadedPolicy, job: EvalJob, engine: str) -> tuple[gym.Env, Policy, str]:
    """The env (randomized if asked) and the policy of an evaluation with perception or randomization."""
    if loaded.env_id is None:
        raise UserError(f"cannot evaluate {str(loaded.path)!r}: it carries no s2r metadata naming its environment")
    env_id: str = loaded.env_id
    policy: Policy = loaded.act
    if job.perception is not None:
        flat_to_pixels = {flat: pixels for pixels, flat in PIXEL_IDS.items()}
        if env_id not in flat_to_pixels:
            raise ParameterError("perception", f"reads the valve for a state policy of {', '.join(flat_to_pixels)}; "
                                 f"{os.fspath(job.policy)!r} was trained on {env_id}")
        env_id = flat_to_pixels[env_id]
    env_kwargs = dict(loaded.env_kwargs)
    if job.position_source is not None:
        if not _observes_position(env_id):
            raise ParameterError("position_source", f"is for a walk, whose observation holds its position; "
                                 f"{os.fspath(job.policy)!r} was trained on {env_id}")
        env_kwargs["position_source"] = job.position_source
    env = make_env(env_id, engine, env_kwargs or None, dict_obs=job.perception is not None)
    try:
        if job.perception is not None:
            inner = env.unwrapped
            assert isinstance(inner, PixelsEnv)
            policy = ModularPolicy(OnnxAngleEstimator(job.perception, camera=inner.camera), loaded.act, inner.task)
        env = _randomized(env, env_id, job.randomize)
    except BaseException:
        env.close()
        raise
    return env, policy, env_id


def _observes_position(env_id: str) -> bool:
    """Whether ``env_id``'s task observes the torso's position (the walk), so it has a position source."""
    return env_id.startswith("s2r/") and observes_base_position(make_task(env_id))


def _randomized(env: gym.Env, env_id: str, files: tuple[PathLike, ...]) -> gym.Env:
    """``env`` drawing the parameters of ``files`` (combined) afresh every episode; ``env`` itself without files."""
    if not files:
        return env
    task = make_task(env_id).spec.name
    return RandomizedEnv(env, combine_distributions([load_distribution(p, task=task) for p in files]))


def _evaluate_pixels(job: EvalJob) -> EvalResult:
    """A camera policy file on the camera env it was made for (checked against that env's camera)."""
    if job.perception is not None:
        raise ParameterError("perception", f"{os.fspath(job.policy)!r} is a camera policy: it carries its own "
                             "estimator; give a state policy to run behind another one")
    policy = OnnxPixelsPolicy(job.policy)
    info = policy.info
    engine = job.engine or info.engine
    env = make_env(info.env_id, engine, dict(info.env_kwargs) or None, dict_obs=True)
    try:
        inner = env.unwrapped
        assert isinstance(inner, PixelsEnv)
        policy.check_camera(inner.camera)
        env = _randomized(env, info.env_id, job.randomize)
        result = evaluate_env(policy, env, job.episodes, job.seed)
    finally:
        env.close()
    return EvalResult(Evaluation.from_dict(result), os.fspath(job.policy), policy.path, "onnx", info.env_id, engine,
                      info.algo, info.training_steps, job.seed, os.fspath(job.policy),
                      tuple(os.fspath(p) for p in job.randomize))


# --- deploy -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeployJob:
    """Episodes of a policy on a robot (real servos, the emulator or the mock), each logged as it ends."""

    policy: PathLike
    """An ``.onnx`` file (or, with torch, a checkpoint or run directory), or ``scripted:hold``, ``scripted:zero``,
    ``scripted:random``, ``scripted:excite``."""
    robot: PathLike
    """Hardware config: a shipped name (``dclaw``) or a YAML file."""
    log_dir: Path
    """Trajectory log directory to write: ``run.json`` and one episode file per episode."""
    driver: str = "emulator"
    """``emulator`` (a physics-backed servo emulator, started here unless ``port``), ``dynamixel`` (the real
    servos) or ``mock`` (in-process first-order servos)."""
    episodes: int = 10
    """Episodes to run."""
    seed: int = 0
    """Seed of the episode starts and goals (and of ``scripted:random`` and ``scripted:excite``)."""
    port: str | None = None
    """Serial device instead of the config's, or the pty of a running ``s2r emulate``."""
    imu_port: str | None = None
    """The IMU's serial device instead of the config's ``imu.port`` (robots with an IMU)."""
    reality: PathLike | None = None
    """Reality file of the emulator started here: a YAML file, or a shipped reality by name (``dclaw_pybullet_gap``)."""
    faults: str | None = None
    """Faults to inject (an emulator started here, or the mock): a YAML file or a spec (``drop=0.01,silent=21@5s``)."""
    lockstep: bool = False
    """Emulator or mock: run in the robot's simulated time (deterministic for a seed, faster than real time)."""
    clock_socket: str | None = None
    """With ``lockstep`` and ``port``: the time socket a running ``s2r emulate --lockstep`` printed."""
    task: str | None = None
    """Task variant for the goals (``dclaw-turn-random``); default the policy's, else the hardware config's."""
    episode_steps: int | None = None
    """Policy steps per episode; default the task's (fewer only for smoke tests)."""
    view: PathLike | None = None
    """The live view of every policy step (Rerun, the ``view`` extra): :data:`robot.view.SPAWN` (``"spawn"``) for
    a viewer of its own, or a recording file ending in ``.rrd`` to write; ``None``: no view."""
    goal: Mapping[str, float] | None = None
    """The goal of every episode, the task's named goal values in SI units (``{"target": 1.57}``, rad), checked
    against the task's names and ranges; ``None``: the task draws each episode's goal (or ``goal_schedule``)."""
    goal_schedule: PathLike | None = None
    """A YAML file of one goal per episode, in order (:mod:`robot.goals`); it must hold at least ``episodes``
    goals. Not together with ``goal``."""
    perception: PathLike | None = None
    """A valve-angle estimator (``s2r train-perception``'s ``perception.onnx``): ``policy``, a D'Claw turn state
    policy, observes the valve through the hardware config's ``camera`` and this estimator instead of the encoder (the
    encoder is still read and logged, and judges success). ``None``: the encoder."""

    def __post_init__(self) -> None:
        if self.episodes < 0:
            raise ParameterError("episodes", f"must be >= 0; got {self.episodes}")
        if self.goal is not None and self.goal_schedule is not None:
            raise ParameterError("goal_schedule", "and {goal} do not go together: give one goal for every episode "
                                 "or a schedule of one per episode")
        _seed(self.seed, "deploy")
        if self.reality is not None and self.driver != "emulator":
            raise ParameterError("reality", "applies to the emulator driver only")
        if self.faults is not None and self.driver == "dynamixel":
            raise ParameterError("faults", "applies to the emulator and mock drivers only")
        check_driver_options(self.driver, self.lockstep, self.clock_socket)
        check_view_target(_view_target(self.view))


@dataclass(frozen=True)
class DeployResult:
    """What :func:`deploy` ran (``s2r deploy --json`` prints :meth:`to_json`)."""

    summary: RunSummary
    """Episodes, success rate, returns, loop timing, bus errors, and how the run stopped."""
    policy: str
    """What was loaded, in words (``onnx PATH``, ``checkpoint PATH (crossq, step N)``, ``scripted:excite``)."""
    driver: str
    """The bus driver the episodes ran on."""

    def to_json(self) -> dict[str, Any]:
        return {**self.summary.to_json(), "policy": self.policy, "driver": self.driver}


def _view_target(view: PathLike | None) -> str | None:
    return None if view is None else os.fspath(view)


def _check_view(view: PathLike | None) -> str | None:
    """``view`` as :func:`robot.view.open_view` takes it, checked: a bad value is a :class:`ParameterError` of
    ``view``, a missing ``view`` extra a :class:`s2r.core.extras.MissingExtra`; before anything is written."""
    target = _view_target(view)
    check_view_target(target)
    if target is not None:
        require_view()
    return target


def deploy_task(config_task: str, requested: str | None, policy_env_id: str | None, spec: TaskSpec) -> Task:
    """The task the episodes use: its goals from the requested (or the policy's) variant, its spec the config's."""
    name = requested or policy_env_id or config_task
    try:
        task = make_task(resolve_env_id(name))
    except KeyError as exc:
        raise UserError(f"unknown task {name!r}: {exc.args[0]}") from None
    if task.spec.name != spec.name:
        raise UserError(f"the task {name!r} ({task.spec.name}) is not the hardware config's task {spec.name!r}")
    return replace(task, spec=spec)  # type: ignore[type-var]


def goal_view(task: Task, loaded: LoadedPolicy) -> Task:
    """``task`` as the goal policy ``loaded`` sees it (:class:`sim.goal_env.GoalView`: the observation
    ``concat(observation, desired_goal)``), checked against the layout its file records."""
    if not is_goal_task(task):
        raise UserError(f"{loaded.description} is goal-conditioned, but the task {task.spec.name!r} has no "
                        "goal-conditioned view (desired goal) to feed it")
    view = GoalView(task)  # type: ignore[arg-type]
    expected = list(view.spec.obs_layout.slices().items())
    if loaded.obs_layout and list(loaded.obs_layout) != expected:
        def text(blocks: list[tuple[str, tuple[int, int]]]) -> str:
            return ", ".join(f"{n}[{a}:{b}]" for n, (a, b) in blocks)
        raise UserError(f"{loaded.description} takes the observation [{text(list(loaded.obs_layout))}], but the goal "
                        f"view of the task {task.spec.name!r} is [{text(expected)}]")
    return view


def deploy(job: DeployJob, *, should_stop: StopPoll | None = None, logger: logging.Logger | None = None
           ) -> DeployResult:
    """Run ``job.episodes`` episodes of ``job.policy`` at the hardware config's control rate, each a scripted reset
    and one episode of policy steps, written to ``job.log_dir`` as soon as it ends. A safety stop (watchdog, servo
    hardware error, bus or policy failure) holds and turns the torque off; the result says how the run stopped
    (``summary.stop_kind``) and whether the servos confirmed the torque off. Everything is checked before the
    robot is touched. A camera policy file (``s2r export --perception``) runs as its state policy behind its
    estimator, both cut out of the file (:func:`export.pixels_policy.split_pixels_policy`)."""
    if not pixels_file(job.policy):
        return _deploy(job, {}, should_stop, logger)
    if job.perception is not None:
        raise ParameterError("perception", f"{os.fspath(job.policy)!r} is a camera policy: it carries its own "
                             "estimator; give a state policy to run behind another one")
    provenance = {"camera_policy": os.fspath(job.policy)}
    policy = OnnxPixelsPolicy(job.policy)
    if policy.info.kind == END_TO_END:
        return _deploy(job, provenance, should_stop, logger, frame_policy=policy)
    with tempfile.TemporaryDirectory(prefix="s2r-camera-policy-") as parts:
        state, estimator = split_pixels_policy(job.policy, parts)
        return _deploy(replace(job, policy=state, perception=estimator), provenance, should_stop, logger)


def _deploy(job: DeployJob, provenance: dict[str, Any], should_stop: StopPoll | None,
            logger: logging.Logger | None, frame_policy: OnnxPixelsPolicy | None = None) -> DeployResult:
    """:func:`deploy` of a state policy, or of ``frame_policy`` (an end-to-end camera policy, which reads its own
    frames and logs its own angle); ``provenance`` goes into the run's info as it is."""
    config = load_config(job.robot)
    spec = config.task_spec()
    view_target = _check_view(job.view)
    reality = load_reality(job.reality, config) if job.reality else None
    faults = faults_from_arg(job.faults) if job.faults else None
    if faults is not None:
        # A fault on a servo the robot does not have would never start, and the run would look fault-free.
        unknown = sorted({f.id for f in faults.servo_faults} - set(config.all_ids))
        if unknown:
            raise ParameterError("faults", f"names servo ID(s) {', '.join(map(str, unknown))}, which {config.source} "
                                 f"does not have; its IDs: {', '.join(map(str, config.all_ids))}")
    settings = ControllerSettings(episode_steps=job.episode_steps)
    if frame_policy is None:
        loaded = load_policy(job.policy, spec=spec, seed=job.seed, period_override=config.control_period_override,
                             limits=(config.low, config.high))
    else:
        loaded = _frame_policy_loaded(job, frame_policy, config)
    task = deploy_task(config.task, job.task, loaded.env_id, spec)
    goals = episode_goals(task, job.goal, job.goal_schedule, job.episodes)
    if loaded.goal_conditioned:
        task = goal_view(task, loaded)
    estimator: OnnxAngleEstimator | OnnxPixelsPolicy | None = frame_policy
    if frame_policy is None:
        check_policy(loaded.act, task.spec.obs_layout.size, spec.n_joints)
        estimator = None if job.perception is None else _deploy_estimator(job, config, loaded)
    steps = settings.episode_steps or spec.episode_steps
    described = f"camera policy {provenance['camera_policy']}" if "camera_policy" in provenance \
        else loaded.description
    writer = TrajectoryWriter(job.log_dir, run_info(config, job.driver, steps, {
        "policy": described, "task_variant": job.task or loaded.env_id or config.task,
        "seed": job.seed, "reality": None if job.reality is None else os.fspath(job.reality),
        "faults": faults.describe() if faults else None, "lockstep": job.lockstep,
        "goal_conditioned": loaded.goal_conditioned, "goal": None if job.goal is None or not goals else goals[0],
        "goal_schedule": None if job.goal_schedule is None else os.fspath(job.goal_schedule),
        "perception": None if job.perception is None else os.fspath(job.perception), **provenance,
    }))
    poll = should_stop or _never
    log = logger or logging.getLogger("robot.deploy")
    mismatch = position_source_mismatch(config, loaded)
    if mismatch:
        log.warning("%s", mismatch)
    with open_view(view_target, config, name="s2r deploy", log=log) as view:
        options = OpenOptions(port=job.port, imu_port=job.imu_port, reality=reality, faults=faults, interrupt=poll,
                              lockstep=job.lockstep, clock_socket=job.clock_socket, camera=estimator is not None)
        io = open_robot(config, job.driver, options)
        try:
            try:
                io.bus.connect()
            except BusError as exc:
                raise UserError(f"cannot start on the robot: {exc}") from exc
            policy = loaded.act if frame_policy is None else frame_policy
            controller = Controller(policy, io.bus, task, config, settings=io.controller_settings(settings),
                                    logger=log, should_stop=poll, imu=io.imu, placer=io.placer, clock=io.clock,
                                    sleep=io.sleep, view=view, tracker=io.tracker, camera=io.camera,
                                    estimator=estimator, truth=io.truth)
            summary = run_episodes(controller, writer, job.episodes, np.random.default_rng(job.seed), goals)
        finally:
            io.close()
    return DeployResult(summary, described, job.driver)


def position_source_mismatch(config: RobotConfig, loaded: LoadedPolicy) -> str | None:
    """A warning when a walk trained on the simulator's position runs on leg odometry (``tracker: {kind:
    estimator}``): a gait whose feet slide walks on past a target its odometry has not reached (the README's
    *Walking on the emulated robot*). ``None`` otherwise: on motion capture a walk trained on the simulator's position
    sees what it trained on, and the one trained on odometry measured 0.855 on the emulated robot (0.805 on
    odometry)."""
    if (config.tracker is None or config.tracker.kind != "estimator"
            or trained_position_source(loaded) == "odometry"):
        return None
    return (f"{loaded.description} was trained on the simulator's position, and {config.source} measures its "
            f"position by leg odometry: `s2r eval POLICY --position-source odometry` shows how it walks on that in "
            f"simulation; a walk trained with env_kwargs {{position_source: odometry}} learns a gait it can follow")


def trained_position_source(loaded: LoadedPolicy) -> str:
    """The position source ``loaded`` trained with (``SimEnv``'s ``position_source``; ``truth`` when its
    ``env_kwargs`` name none)."""
    return str(loaded.env_kwargs.get("position_source", "truth"))


def _never() -> str | None:
    return None


def _frame_policy_loaded(job: DeployJob, policy: OnnxPixelsPolicy, config: RobotConfig) -> LoadedPolicy:
    """An end-to-end camera policy checked against the robot (its task, joints, control period and camera; a
    :class:`UserError` naming every mismatch before the robot is touched), described as a loaded policy."""
    info, spec = policy.info, config.task_spec()
    problems = []
    if info.task != spec.name:
        problems.append(f"task: the file has {info.task!r}, the robot {spec.name!r}")
    if info.joint_names != spec.joint_names:
        problems.append(f"joint names/order: the file has {list(info.joint_names)}, the robot {list(spec.joint_names)}")
    if not config.control_period_override and not math.isclose(info.control_period_s, spec.control_period, rel_tol=0.0,
                                                              abs_tol=CONTROL_PERIOD_TOLERANCE_S):
        problems.append(f"control period: the file has {info.control_period_s} s, the robot {spec.control_period} s")
    if config.camera is None:
        problems.append(f"camera: the policy reads one, and {config.source} has no camera section")
    else:
        cameras = {c.name: c for c in spec.cameras}
        try:
            policy.check_camera(cameras[config.camera.name])
        except UserError as exc:
            problems.append(str(exc))
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise UserError(f"refusing to deploy {str(policy.path)!r} on the {spec.robot} ({spec.name}):\n{lines}")
    check_camera_options(config, job.driver, OpenOptions(port=job.port, camera=True))

    def not_an_observation_policy(_obs: np.ndarray) -> np.ndarray:
        raise AssertionError("an end-to-end camera policy acts on frames (FramePolicy.act_frame)")

    return LoadedPolicy(not_an_observation_policy, "onnx", f"camera policy {policy.path}", policy.path,
                        PIXEL_IDS[info.env_id], info.engine, info.env_kwargs, info.algo, info.training_steps)


def _deploy_estimator(job: DeployJob, config: RobotConfig, loaded: LoadedPolicy) -> OnnxAngleEstimator:
    """The estimator of ``job.perception``, checked against the config's camera and the policy's task: a
    :class:`UserError` (or a :class:`ParameterError` of ``perception``) before the robot is touched."""
    assert job.perception is not None
    if config.camera is None:
        raise ParameterError("perception", f"reads the valve from a camera, but {config.source} has no camera section "
                             "(its source, frame rate and stale-frame bound)")
    flat = set(PIXEL_IDS.values())
    if loaded.env_id not in flat:
        raise ParameterError("perception", f"feeds a state policy of {', '.join(sorted(flat))}; "
                             f"{loaded.description} was trained on {loaded.env_id or 'an unknown task'}")
    check_camera_options(config, job.driver, OpenOptions(port=job.port, camera=True))
    cameras = {c.name: c for c in config.task_spec().cameras}
    return OnnxAngleEstimator(job.perception, camera=cameras[config.camera.name])


# --- adapt ------------------------------------------------------------------------------------------------------
LIKELIHOOD_REPLAY = ("engine driven directly: logged state set with set_sim_state, logged commands applied with "
                     "engine.set_command/engine.step for the logged period")
"""How the adaptation replays the logs, for its report."""


@dataclass(frozen=True)
class AdaptJob:
    """A source-distribution adaptation: fit the simulator's parameter distribution to trajectory logs."""

    task: str
    """Task the logs are of (``dclaw-turn``)."""
    prior: Path
    """Randomization YAML to start from (``randomization/configs/dclaw.yaml``)."""
    log_dir: Path
    """Trajectory log directory to read (``run.json`` and ``episode_*.npz``), written by deploy or ``s2r simlogs``."""
    out: Path
    """Posterior randomization YAML to write; its JSON report and PNG plot go beside it (``.json``, ``.png``)."""
    engine: str = "mujoco"
    """Physics engine of the replay."""
    config: AdaptConfig = field(default_factory=AdaptConfig)
    """The importance-sampling loop: rounds, samples, seed, tempering."""
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    """Where the simulations run: worker processes (1: this process) or a Ray cluster."""
    strict: bool = False
    """Fail on the first damaged episode file instead of skipping it with a warning."""

    def __post_init__(self) -> None:
        output_paths(self.out)  # a bad out fails before minutes of simulation


@dataclass(frozen=True)
class AdaptRun:
    """What :func:`adapt` fitted and wrote (``s2r adapt --json`` prints :meth:`to_json`)."""

    result: AdaptResult
    """The posterior and the rounds that reached it."""
    yaml: Path
    """The posterior distribution (usable as ``TrainConfig.randomize`` through ``load_distribution``)."""
    json: Path
    """The report: every round, the noise model, the posterior Gaussian."""
    png: Path
    """Prior against posterior per parameter."""
    report: Mapping[str, Any]
    """The report's content as written to :attr:`json`."""
    skipped_files: tuple[SkippedFile, ...]
    """Damaged episode files left out."""
    warning: str | None
    """Parameters whose posterior presses against the prior's edge (not an identification), in words; or ``None``."""

    def to_json(self) -> dict[str, Any]:
        """The written files and the essentials of the report (its per-parameter rows, the data used, the last
        round's tempering); the report file keeps every round, the noise model and the posterior Gaussian."""
        last = self.result.iterations[-1]
        return {
            "yaml": str(self.yaml), "json": str(self.json), "png": str(self.png),
            **{k: self.report[k] for k in ("task", "prior", "logs", "engine", "skipped_files")},
            "episodes": self.result.episodes, "transitions": self.result.transitions,
            "final_beta": last.beta, "final_ess": last.ess, "pooled_samples": last.pooled,
            "parameters": self.report["parameters"],
            "at_prior_edge": self.warning,
        }


def adapt(job: AdaptJob, *, on_skip: Callable[[SkippedFile], None] | None = None) -> AdaptRun:
    """Fit ``job.prior`` to the logs in ``job.log_dir`` by iterated, tempered importance sampling and write the
    posterior YAML, the JSON report and the plot (each atomically). A damaged episode file is left out and told to
    ``on_skip`` (default: a :class:`s2r.core.trajlog.SkippedFileWarning`), or with ``job.strict`` is an error."""
    prior = load_distribution(job.prior, task=job.task)
    skipped: list[SkippedFile] = []

    def record(file: SkippedFile) -> None:
        skipped.append(file)
        if on_skip is not None:
            on_skip(file)
        else:
            warnings.warn(str(file), SkippedFileWarning, stacklevel=2)

    result = fit_distribution(prior, job.log_dir, job.config, task=job.task, engine=job.engine, executor=job.executor,
                 strict=job.strict, on_skip=record)
    c = job.config
    extra: dict[str, Any] = {
        "task": job.task, "prior": str(job.prior), "logs": str(job.log_dir), "engine": job.engine,
        "skipped_files": [{"path": str(f.path), "problem": f.problem} for f in skipped],
        "config": {"iterations": c.iterations, "samples": c.samples, "seed": c.seed, "ess_fraction": c.ess_fraction,
                   "proposal_inflation": c.proposal_inflation, "min_std_fraction": c.min_std_fraction,
                   "max_transitions": c.max_transitions},
        "likelihood_replay": LIKELIHOOD_REPLAY,
    }
    yaml_path, json_path, png_path = write_outputs(prior, result, job.out, extra)
    report = result_json(result, {s.name: s for s in task_param_specs(job.task)}, extra)
    return AdaptRun(result, yaml_path, json_path, png_path, report, tuple(skipped), edge_warning(result))


# --- sweep ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepJob:
    """A robustness sweep: success rate of a policy over a grid of one or two physics parameters."""

    policy: PathLike
    """An exported ``.onnx`` file, a checkpoint (``.pt``) or a training run directory."""
    grid: tuple[GridAxis | str, ...]
    """1 or 2 axes: :class:`randomization.sweep.GridAxis` or ``NAME=LO:HI:N`` text (``valve_damping=0.01:0.3:5``)."""
    episodes: int = 10
    """Episodes per cell, seeded ``seed .. seed + episodes - 1`` in every cell."""
    engine: str | None = None
    """Physics engine; default the one trained on."""
    task: str | None = None
    """Task to sweep on; default the one trained on."""
    out: Path | None = None
    """Directory for ``sweep.json`` and ``sweep.png``; default ``sweep_NAME[_NAME2]`` in a run directory, or
    ``STEM_sweep_NAME[_NAME2]`` beside a policy file."""
    seed: int = 0
    """Seed of the first episode of every cell."""
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    """Where the episodes run: worker processes (1: this process) or a Ray cluster."""

    def __post_init__(self) -> None:
        check_axis_count(self.axes)
        if self.episodes < 1:
            raise ParameterError("episodes", f"must be at least 1, got {self.episodes}", "sweep")
        _seed(self.seed, "sweep")

    @property
    def axes(self) -> tuple[GridAxis, ...]:
        """The grid as :class:`GridAxis` values."""
        return tuple(parse_grid_axis(a) if isinstance(a, str) else a for a in self.grid)


@dataclass(frozen=True)
class SweepRun:
    """What :func:`sweep` measured and wrote (``s2r sweep --json`` prints :meth:`to_json`)."""

    result: SweepResult
    """Every cell's success rate and returns, and the robustness summary."""
    json: Path
    """``sweep.json``."""
    png: Path
    """``sweep.png``, the heatmap (or line)."""

    def to_json(self) -> dict[str, Any]:
        r = self.result
        return {**r.summary, "wall_time_s": r.wall_time_s, "policy": r.policy, "env_id": r.env_id,
                "engine": r.engine, "json": str(self.json), "png": str(self.png)}


def sweep(job: SweepJob, *, progress: Callable[[str], None] | None = None) -> SweepRun:
    """Evaluate ``job.policy`` in every cell of ``job.grid`` and write ``sweep.json`` and ``sweep.png``;
    ``progress`` gets one line per finished cell."""
    axes = job.axes
    out = check_out_dir(job.out or default_out_dir(job.policy, axes))  # before minutes of simulation
    result = run_sweep(job.policy, axes, job.episodes, load_policy=load_policy, engine=job.engine, task=job.task,
                       seed=job.seed, executor_config=job.executor, progress=progress)
    json_path, png_path = write_sweep(result, out)
    return SweepRun(result, json_path, png_path)


# --- finetune ---------------------------------------------------------------------------------------------------
def finetune(config: FinetuneConfig, *, should_stop: StopPoll | None = None, progress: bool = False,
             logger: logging.Logger | None = None, view: PathLike | None = None) -> FinetuneSummary:
    """Fine-tune the policy deployed from ``config.run_dir`` on the robot (see :mod:`s2r.finetune`): the incumbent
    measured, rounds of exploration and gradient steps, each round's candidate replacing the incumbent only when it
    measures better; writes ``config.out_dir``. ``view`` shows every robot step live, as :attr:`DeployJob.view`.
    Needs torch (the ``train`` extra)."""
    require_torch("s2r.api.finetune")
    view_target = _check_view(view)
    from s2r.finetune import ControllerSession  # torch, the optional `train` extra
    from s2r.finetune import finetune as run

    with open_view(view_target, load_config(config.robot), name="s2r finetune", log=logger) as shown:
        return run(config, logger=logger, should_stop=should_stop, progress=progress,
                   open_session=partial(ControllerSession, view=shown))


# --- perception -------------------------------------------------------------------------------------------------
PERCEPTION_CHECKPOINT = "perception.pt"
"""The estimator's weights in ``train-perception``'s output directory."""
PERCEPTION_ONNX = "perception.onnx"
"""The exported estimator in ``train-perception``'s output directory."""
PERCEPTION_VERIFY_FRAMES = 64
"""Training frames the export is verified on (besides random ones)."""


def _distribution_of(randomize: tuple[PathLike, ...]) -> ParameterDistribution | None:
    if not randomize:
        return None
    return combine_distributions([load_distribution(p, task=PERCEPTION_TASK) for p in randomize])


@dataclass(frozen=True)
class PerceptionTrainJob:
    """Train a valve-angle estimator on rendered images and export it."""

    out: Path
    """Directory to write ``perception.pt`` and ``perception.onnx`` into (created if missing)."""
    samples: int = 60000
    """Training images to render. At 24,000 the 95th percentile on PyBullet's renders (an engine it never trained
    on) depended on the training seed: 7.3 to 8.2 deg for seed 0, 10.6 to 11.2 for seed 1, against a 10 deg goal.
    36,000 put seeds 0, 1 and 2 under it (7.9 to 9.3 deg); 60,000 (seeds 0 and 1) 6.1 to 7.0, and 10.9 to 11.7 on
    held-out conditions where 36,000 gave 12.8 to 19.6, for 70 % more training time."""
    engine: str = "mujoco"
    """Engine that renders them."""
    randomize: tuple[PathLike, ...] = ()
    """Visual randomization files, combined (empty: the nominal scene only)."""
    seed: int = 0
    """Seed of the images (their scenes, parameters and noise) and of training."""
    train: PerceptionTrainConfig = field(default_factory=PerceptionTrainConfig)
    """Network and training settings (its own ``seed`` is replaced by ``seed``)."""

    def __post_init__(self) -> None:
        _seed(self.seed, "perception")
        SceneConfig(samples=self.samples, engine=self.engine, seed=self.seed).validated()
        replace(self.train, seed=self.seed).validated()


@dataclass(frozen=True)
class PerceptionTrainResult:
    """What :func:`train_perception` wrote and measured."""

    checkpoint: Path
    """The weights (``torch.save`` of tensors and plain values)."""
    onnx: Path
    """The verified ONNX file."""
    samples: int
    """Training images, each labelled with the simulator's valve angle
    (:func:`randomization.perception_data.render_angle_dataset`)."""
    epochs: int
    """Passes over them."""
    skipped_params: tuple[str, ...]
    """Visual parameters the engine could not render, left out."""
    render_time_s: float
    """Wall time of rendering the images (s)."""
    train_time_s: float
    """Wall time of the gradient steps (s)."""
    final_loss: float
    """Mean training loss of the last epoch."""
    train_error_deg: tuple[float, float]
    """Median and 95th percentile absolute angle error (deg) on the training images."""
    max_onnx_diff_rad: float
    """Largest angle difference between the ONNX file and PyTorch in the export's check (rad)."""

    def to_json(self) -> dict[str, Any]:
        return {"checkpoint": str(self.checkpoint), "onnx": str(self.onnx), "samples": self.samples,
                "epochs": self.epochs, "skipped_params": list(self.skipped_params),
                "render_time_s": self.render_time_s, "train_time_s": self.train_time_s,
                "final_loss": self.final_loss, "train_median_error_deg": self.train_error_deg[0],
                "train_p95_error_deg": self.train_error_deg[1], "max_onnx_diff_rad": self.max_onnx_diff_rad}


def train_perception(job: PerceptionTrainJob, *, progress: Callable[[str], None] | None = None
                     ) -> PerceptionTrainResult:
    """Render ``job.samples`` labelled images (:func:`randomization.perception_data.render_angle_dataset`), train an
    :class:`policies.perception.AngleNet` on them, save its checkpoint and export it, verified, to ONNX. Needs torch
    (the ``train`` extra)."""
    require_torch("s2r.api.train_perception")
    say = progress or (lambda _text: None)
    if job.out.exists() and not job.out.is_dir():
        raise UserError(f"output {str(job.out)!r} is a file; expected a directory to write "
                        f"{PERCEPTION_CHECKPOINT} and {PERCEPTION_ONNX} into")
    distribution = _distribution_of(job.randomize)  # a bad file fails before torch loads (seconds)
    from export.perception_export import export_estimator  # torch, the optional `train` extra
    from policies.perception import predict_angles, save_checkpoint, train_angle_net

    start = time.perf_counter()
    data = render_angle_dataset(SceneConfig(samples=job.samples, engine=job.engine, seed=job.seed), distribution)
    render_s = time.perf_counter() - start
    say(f"rendered {job.samples} images on {job.engine} in {render_s:.0f} s")
    cfg = replace(job.train, seed=job.seed)
    trained = train_angle_net(data.images, data.angles, cfg,
                              progress=lambda e, loss: say(f"epoch {e}/{cfg.epochs}: loss {loss:.4f}"))
    predicted, _ = predict_angles(trained.model, data.images)
    errors = angle_error_deg(predicted, data.angles)
    randomization = "none" if distribution is None else canonical_json(distribution.to_yaml_dict())
    info = {"engine": job.engine, "samples": job.samples, "seed": job.seed, "train": cfg.to_json(),
            "randomization": randomization, "skipped_params": list(data.skipped), "losses": list(trained.losses)}
    checkpoint = save_checkpoint(job.out / PERCEPTION_CHECKPOINT, trained.model, info)
    meta = PerceptionMetadata(task=PERCEPTION_TASK, camera=camera_json(data.camera), engine=job.engine,
                              samples=job.samples, epochs=cfg.epochs, seed=job.seed, randomization=randomization,
                              skipped_params=data.skipped, s2r_version=s2r.__version__,
                              export_time_utc=datetime.now(UTC).isoformat(timespec="seconds"),
                              source_checkpoint=str(checkpoint))
    verification = export_estimator(trained.model, job.out / PERCEPTION_ONNX, meta,
                                    data.images[:PERCEPTION_VERIFY_FRAMES], seed=job.seed)
    return PerceptionTrainResult(checkpoint, job.out / PERCEPTION_ONNX, job.samples, cfg.epochs, data.skipped,
                                 render_s, trained.train_time_s, trained.losses[-1],
                                 (float(np.median(errors)), float(np.percentile(errors, 95))),
                                 verification.max_angle_diff_rad)


@dataclass(frozen=True)
class PerceptionJoinJob:
    """Read several trained estimators together, each on a few views of the frame (:class:`policies.perception.
    AngleEnsemble`), as one ONNX file."""

    runs: tuple[Path, ...]
    """``s2r train-perception`` output directories (each with ``perception.pt`` and ``perception.onnx``), trained for
    the same camera on the same distribution, each with its own seed."""
    out: Path
    """The ONNX file to write (``.onnx``; its directory is created if missing)."""
    shift: int = 2
    """Each network also reads the frame moved this many pixels left, right, up and down, five views in all
    (0: the frame only)."""

    def __post_init__(self) -> None:
        if not self.runs:
            raise ParameterError("runs", "must name one or more train-perception output directories, got none")
        if not isinstance(self.shift, int) or self.shift < 0:
            raise ParameterError("shift", f"must be a whole number of pixels >= 0, got {self.shift}")


@dataclass(frozen=True)
class PerceptionJoinResult:
    """What :func:`join_perception` wrote."""

    onnx: Path
    """The verified ONNX file."""
    networks: int
    """Networks read together."""
    views: int
    """Views of each frame every network reads (the frame and its shifted copies)."""
    max_onnx_diff_rad: float
    """Largest angle difference between the ONNX file and PyTorch in the export's check (rad)."""

    def to_json(self) -> dict[str, Any]:
        return {"onnx": str(self.onnx), "networks": self.networks, "views": self.views,
                "max_onnx_diff_rad": self.max_onnx_diff_rad}


def join_perception(job: PerceptionJoinJob) -> PerceptionJoinResult:
    """Export the runs' networks, read together, as ``job.out``, verified against PyTorch on rendered and random
    frames. Runs made for another camera or trained on another distribution are refused by name. Needs torch (the
    ``train`` extra)."""
    require_torch("s2r.api.join_perception")
    if job.out.suffix.lower() != ".onnx":
        raise UserError(f"output {str(job.out)!r} must end in .onnx")
    infos = [OnnxAngleEstimator(run / PERCEPTION_ONNX).info for run in job.runs]  # each names a missing file
    first = infos[0]
    # The same seed and images give the same network: averaging it twice only weighs it double.
    seen = {(first.seed, first.samples, first.engine): job.runs[0]}
    for run, info in zip(job.runs[1:], infos[1:], strict=True):
        for what, mine, theirs in (("camera", info.camera, first.camera),
                                   ("training distribution", info.randomization, first.randomization),
                                   ("task", info.task, first.task)):
            if mine != theirs:
                raise UserError(f"{str(run)!r} was trained for another {what} than {str(job.runs[0])!r}; the "
                                "networks read together must share camera, task and training distribution")
        key = (info.seed, info.samples, info.engine)
        if key in seen:
            raise UserError(f"{str(run)!r} and {str(seen[key])!r} are the same network (seed {info.seed}, "
                            f"{info.samples} {info.engine} images); join networks trained with different --seed")
        seen[key] = run
    from export.perception_export import export_estimator  # torch, the optional `train` extra
    from policies.perception import AngleEnsemble, load_checkpoint

    ensemble = AngleEnsemble([load_checkpoint(run / PERCEPTION_CHECKPOINT)[0] for run in job.runs], job.shift)
    distribution = None if first.distribution is None else parse_distribution(
        first.distribution, f"{job.runs[0] / PERCEPTION_ONNX} (its metadata)", PERCEPTION_TASK)
    frames = render_angle_dataset(SceneConfig(samples=PERCEPTION_VERIFY_FRAMES, engine=first.engine, seed=first.seed,
                                              held_out=True), distribution).images
    meta = replace(first, engine=",".join(sorted({i.engine for i in infos})), samples=sum(i.samples for i in infos),
                   epochs=max(i.epochs for i in infos), s2r_version=s2r.__version__,
                   export_time_utc=datetime.now(UTC).isoformat(timespec="seconds"),
                   source_checkpoint=", ".join(str(run / PERCEPTION_CHECKPOINT) for run in job.runs))
    job.out.parent.mkdir(parents=True, exist_ok=True)
    verification = export_estimator(ensemble, job.out, meta, frames, seed=first.seed)
    return PerceptionJoinResult(job.out, len(job.runs), len(ensemble.moves),
                                verification.max_angle_diff_rad)


@dataclass(frozen=True)
class PixelsTrainJob:
    """Learn a claw policy end to end from the camera (:mod:`policies.pixels_sac`)."""

    out: Path
    """Directory to write ``best.pt``, ``last.pt`` and ``metrics.jsonl`` into (created if missing)."""
    config: PixelsSacConfig = field(default_factory=PixelsSacConfig)
    """The learner and its budget."""

    def __post_init__(self) -> None:
        self.config.validated()


def train_pixels(job: PixelsTrainJob, *, progress: Callable[[str], None] | None = None) -> PixelsTrainResult:
    """SAC from pixels with DrQ's shift and a critic that sees the simulator's state; needs torch (the ``train``
    extra)."""
    require_torch("s2r.api.train_pixels")
    if job.out.exists() and not job.out.is_dir():
        raise UserError(f"output {str(job.out)!r} is a file; expected a directory to write the run into")
    from policies.pixels_sac import train_pixels as learn  # torch, the optional `train` extra

    return learn(job.config, job.out, progress)


@dataclass(frozen=True)
class PerceptionEvalJob:
    """Measure an exported estimator on held-out renders."""

    model: PathLike
    """The ``perception.onnx`` file."""
    samples: int = 1000
    """Images to render."""
    engine: str = "mujoco"
    """Engine that renders them."""
    randomize: tuple[PathLike, ...] | None = None
    """Visual randomization files, combined; ``None``: the distribution the model was trained on (its metadata), ``()``
    the nominal scene."""
    seed: int = 0
    """Seed of the images, drawn apart from training's (the same seed gives other images)."""

    def __post_init__(self) -> None:
        _seed(self.seed, "eval-perception")
        SceneConfig(samples=self.samples, engine=self.engine, seed=self.seed).validated()


@dataclass(frozen=True)
class PerceptionEvalResult:
    """Angle errors of an estimator on held-out renders."""

    model: str
    """The file evaluated."""
    engine: str
    """Engine that rendered the images."""
    samples: int
    """Images."""
    randomization: str
    """What drew their visual parameters: ``trained`` (the model's own distribution), file names, or ``none``."""
    skipped_params: tuple[str, ...]
    """Visual parameters the engine could not render, left out."""
    median_error_deg: float
    """Median absolute angle error (deg, wrapped)."""
    p95_error_deg: float
    """95th percentile absolute angle error (deg, wrapped)."""
    max_error_deg: float
    """Largest absolute angle error (deg)."""
    seed: int
    """Seed of the images."""

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "skipped_params": list(self.skipped_params)}


def evaluate_perception(job: PerceptionEvalJob) -> PerceptionEvalResult:
    """Render ``job.samples`` held-out images and compare the ONNX estimator's angles with the simulator's. Runs on
    the base install (onnxruntime, no torch)."""
    estimator = OnnxAngleEstimator(job.model)
    if job.randomize is None:
        recorded = estimator.info.distribution
        distribution = None if recorded is None else parse_distribution(recorded, f"{job.model} (its metadata)",
                                                                       task=PERCEPTION_TASK)
        described = "trained" if recorded is not None else "none"
    else:
        distribution = _distribution_of(job.randomize)
        described = ", ".join(os.fspath(p) for p in job.randomize) or "none"
    data = render_angle_dataset(SceneConfig(samples=job.samples, engine=job.engine, seed=job.seed, held_out=True),
                                distribution)
    estimator.check_camera(data.camera)
    predicted, _ = estimator.predict(data.images)
    errors = angle_error_deg(predicted, data.angles)
    return PerceptionEvalResult(os.fspath(job.model), job.engine, job.samples, described, data.skipped,
                                float(np.median(errors)), float(np.percentile(errors, 95)), float(np.max(errors)),
                                job.seed)
