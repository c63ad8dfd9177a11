"""ONNX export (``s2r export``), the exported file's metadata, and ``export.OnnxPolicy``.

Checkpoints are built here with random-initialized actors, so nothing depends on a trained run.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import onnx
import pytest
import torch
import yaml

from export import OnnxPolicy
from export.metadata import NO_RANDOMIZATION, config_sha256, describe_randomization, parse_metadata
from export.onnx_export import (
    FLOAT32_ALLOWANCE,
    MAX_ABS_DIFF,
    MIN_OPSET,
    ExportConfig,
    ExportResult,
    VerificationError,
    checkpoint_obs_norm,
    export_policy,
    max_ir_version,
    random_observations,
    verify,
)
from policies.checkpoint import BEST_NAME, Checkpoint, load_checkpoint, save_checkpoint
from policies.evaluate import evaluate
from policies.networks import Actor
from robot.config import config_from_mapping
from s2r import __version__
from s2r.commands.export import register
from s2r.core.errors import UserError
from s2r.policy_files import evaluate_policy_file, load_policy
from sim.tasks import make_task
from sim.tasks.spec import TaskSpec

ROOT = Path(__file__).resolve().parents[1]
CLAW_ID = "s2r/DClawTurnFixed-v0"
CLAW_SPEC = make_task(CLAW_ID).spec
PENDULUM_ID = "Pendulum-v1"
HIDDEN = (32, 32)
SAMPLES = 1000
CONFIG = {"task": "dclaw-turn", "algo": "sac", "hidden": list(HIDDEN), "env_kwargs": {}, "seed": 3}


def synthetic_checkpoint(env_id: str, obs_dim: int, act_dim: int, low: np.ndarray, high: np.ndarray,
                         obs_norm: bool, config: dict[str, Any], seed: int = 0) -> Checkpoint:
    """A checkpoint with a random-initialized SAC actor and random observation statistics."""
    rng = np.random.default_rng(seed)
    actor = Actor(obs_dim, act_dim, HIDDEN, "relu", stochastic=True, generator=torch.Generator().manual_seed(seed))
    return Checkpoint(
        algo="sac", env_id=env_id, task=str(config.get("task", env_id)), engine="mujoco", step=1234,
        config=config, obs_dim=obs_dim, act_dim=act_dim, hidden=HIDDEN, activation="relu", stochastic=True,
        actor_state=actor.state_dict(), obs_norm=obs_norm, obs_mean=rng.normal(0.0, 0.3, obs_dim),
        obs_var=rng.uniform(0.05, 1.0, obs_dim), obs_count=1000.0, obs_clip=10.0, obs_eps=1e-8,
        action_low=np.asarray(low, dtype=np.float64), action_high=np.asarray(high, dtype=np.float64),
    )


def save_run(directory: Path, ckpt: Checkpoint) -> Path:
    directory.mkdir(parents=True)
    save_checkpoint(directory / BEST_NAME, ckpt)
    return directory


@pytest.fixture(scope="module")
def claw(tmp_path_factory: pytest.TempPathFactory) -> ExportResult:
    """A claw checkpoint exported to ONNX."""
    root = tmp_path_factory.mktemp("claw")
    n_obs, n_act = CLAW_SPEC.obs_layout.size, CLAW_SPEC.n_joints
    ckpt = synthetic_checkpoint(CLAW_ID, n_obs, n_act, -np.ones(n_act), np.ones(n_act), True, CONFIG)
    run = save_run(root / "run", ckpt)
    return export_policy(run, root / "claw.onnx", ExportConfig(samples=SAMPLES))


@pytest.fixture(scope="module")
def pendulum(tmp_path_factory: pytest.TempPathFactory) -> ExportResult:
    """A Pendulum-v1 checkpoint (actions in [-2, 2], no observation normalization) exported to ONNX."""
    root = tmp_path_factory.mktemp("pendulum")
    config = {"task": PENDULUM_ID, "algo": "sac", "env_kwargs": {}, "randomize": {"mass": [1.0, 2.0]}}
    ckpt = synthetic_checkpoint(PENDULUM_ID, 3, 1, np.array([-2.0]), np.array([2.0]), False, config, seed=1)
    run = save_run(root / "run", ckpt)
    return export_policy(run, root / "pendulum.onnx", ExportConfig(samples=SAMPLES))


def props(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


# --- the exported file ------------------------------------------------------------------------------------
def test_export_is_verified_and_leaves_only_the_file(claw: ExportResult) -> None:
    v = claw.verification
    assert v.passed and v.samples == SAMPLES and v.random_samples + v.rollout_samples == SAMPLES
    assert v.rollout_samples > 0 and v.rollout_episodes >= 1
    assert 0.0 <= v.max_abs_diff <= MAX_ABS_DIFF
    assert v.max_abs_diff == max(v.max_abs_diff_batch, v.max_abs_diff_single)
    assert sorted(p.name for p in claw.path.parent.iterdir()) == ["claw.onnx", "run"]


def test_graph_interface(claw: ExportResult) -> None:
    model = onnx.load(str(claw.path))
    onnx.checker.check_model(model)
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == "obs" and out.name == "action"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    batch, size = inp.type.tensor_type.shape.dim
    assert batch.dim_param and not batch.dim_value  # dynamic batch
    assert size.dim_value == CLAW_SPEC.obs_layout.size
    assert out.type.tensor_type.shape.dim[1].dim_value == CLAW_SPEC.n_joints
    opset = {o.domain: o.version for o in model.opset_import}[""]
    assert opset >= MIN_OPSET and claw.opset == opset
    assert model.ir_version <= max_ir_version()


def test_metadata_of_an_s2r_task(claw: ExportResult) -> None:
    meta = props(claw.path)
    assert meta["env_id"] == CLAW_ID and meta["task"] == CLAW_SPEC.name and meta["robot"] == CLAW_SPEC.robot
    assert json.loads(meta["joint_names"]) == list(CLAW_SPEC.joint_names)
    layout = json.loads(meta["obs_layout"])
    assert [(b["name"], b["start"], b["stop"]) for b in layout] == [
        (name, a, b) for name, (a, b) in CLAW_SPEC.obs_layout.slices().items()
    ]
    assert float(meta["control_period_s"]) == CLAW_SPEC.control_period
    assert int(meta["obs_size"]) == CLAW_SPEC.obs_layout.size and int(meta["action_size"]) == CLAW_SPEC.n_joints
    assert meta["action_output"] == "normalized"
    assert meta["randomization"] == NO_RANDOMIZATION
    canonical = json.dumps(CONFIG, sort_keys=True, separators=(",", ":"))
    assert meta["config_sha256"] == hashlib.sha256(canonical.encode()).hexdigest()
    assert meta["s2r_version"] == __version__
    assert meta["algo"] == "sac" and meta["training_steps"] == "1234" and meta["engine"] == "mujoco"
    exported = datetime.fromisoformat(meta["export_time_utc"])
    assert exported.utcoffset() is not None and exported.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert abs((datetime.now(UTC) - exported).total_seconds()) < 600
    policy = OnnxPolicy(claw.path)
    assert policy.metadata == meta and policy.info == claw.metadata


def test_onnx_matches_torch_one_and_batched(claw: ExportResult) -> None:
    torch_policy = load_policy(claw.checkpoint).act
    policy = OnnxPolicy(claw.path)
    obs = np.random.default_rng(7).normal(0.0, 1.0, (64, CLAW_SPEC.obs_layout.size)).astype(np.float32)
    batch = policy.act(obs)
    assert batch.shape == (64, CLAW_SPEC.n_joints) and batch.dtype == np.float32
    np.testing.assert_allclose(batch, torch_policy(obs), atol=MAX_ABS_DIFF, rtol=0)
    for o, a in zip(obs[:8], batch[:8], strict=True):
        one = policy(o)  # __call__ is act: what s2r.policy_files.load_policy gives for a normalized output
        assert one.shape == (CLAW_SPEC.n_joints,)
        np.testing.assert_allclose(one, a, atol=MAX_ABS_DIFF, rtol=0)
    first = policy.act(obs[0])
    policy.act(obs[1])
    np.testing.assert_array_equal(first, policy.act(obs[0]))  # a returned action is not overwritten later


def test_eval_of_onnx_equals_eval_of_checkpoint(claw: ExportResult) -> None:
    from_onnx = evaluate_policy_file(claw.path, episodes=3, seed=11)
    from_ckpt = evaluate(load_policy(claw.checkpoint.parent).act, CLAW_ID, 3, 11, "mujoco")
    assert from_onnx["success_rate"] == from_ckpt["success_rate"]
    assert from_onnx["return_mean"] == pytest.approx(from_ckpt["return_mean"], rel=1e-4, abs=1e-4)
    assert from_onnx["return_std"] == pytest.approx(from_ckpt["return_std"], rel=1e-3, abs=1e-3)


def test_gym_env_export_maps_onto_the_action_bounds(pendulum: ExportResult) -> None:
    meta = props(pendulum.path)
    for key in ("task", "robot", "joint_names", "obs_layout", "control_period_s"):
        assert key not in meta
    assert meta["env_id"] == PENDULUM_ID and meta["action_output"] == "env_bounds"
    assert json.loads(meta["action_low"]) == [-2.0] and json.loads(meta["action_high"]) == [2.0]
    assert json.loads(meta["randomization"]) == {"mass": [1.0, 2.0]}
    normalized = load_policy(pendulum.checkpoint).act
    policy = OnnxPolicy(pendulum.path)
    obs = np.random.default_rng(3).uniform(-8.0, 8.0, (200, 3)).astype(np.float32)
    expected = -2.0 + (normalized(obs) + 1.0) * 2.0
    np.testing.assert_allclose(policy.act(obs), expected, atol=MAX_ABS_DIFF, rtol=0)
    assert np.abs(policy.act(obs)).max() > 1.0  # not the normalized action
    from_onnx = evaluate_policy_file(pendulum.path, episodes=2, seed=4)
    from_ckpt = evaluate(normalized, PENDULUM_ID, 2, 4)
    assert from_onnx["success_rate"] is None and from_ckpt["success_rate"] is None
    assert from_onnx["return_mean"] == pytest.approx(from_ckpt["return_mean"], rel=1e-4)


def test_failed_verification_writes_nothing(tmp_path: Path) -> None:
    n_obs, n_act = CLAW_SPEC.obs_layout.size, CLAW_SPEC.n_joints
    run = save_run(tmp_path / "run", synthetic_checkpoint(CLAW_ID, n_obs, n_act, -np.ones(n_act), np.ones(n_act),
                                                          True, CONFIG, seed=2))
    out = tmp_path / "strict.onnx"
    # Two runtimes never agree to 1e-15 on a thousand observations (different tanh and GEMM kernels); without the
    # float32 allowance that is the limit.
    with pytest.raises(VerificationError, match="failed verification") as err:
        export_policy(run, out, ExportConfig(samples=SAMPLES, tolerance=1e-15, float32_allowance=0.0))
    assert not err.value.verification.passed and err.value.verification.max_abs_diff > 1e-15
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_verification_allows_float32_rounding_but_not_a_wrong_graph(claw: ExportResult) -> None:
    v = claw.verification
    assert 0.0 < v.float32_rounding < MAX_ABS_DIFF
    assert v.limit == pytest.approx(v.tolerance + FLOAT32_ALLOWANCE * v.float32_rounding, rel=1e-12)
    assert claw.checkpoint is not None
    ckpt = load_checkpoint(claw.checkpoint)
    module = ckpt.policy_module()  # what an s2r task's export runs (normalized actions)
    obs = random_observations(checkpoint_obs_norm(ckpt), gym.spaces.Box(-np.inf, np.inf, (CLAW_SPEC.obs_layout.size,)),
                              1000, np.random.default_rng(5))
    exported = OnnxPolicy(claw.path)
    same = verify(module, exported, obs, len(obs), 0, MAX_ABS_DIFF)
    assert same.passed and same.max_abs_diff <= same.limit
    # The graph of another network: one output bias moved by 1e-3, far above any rounding.
    wrong = copy.deepcopy(module)
    with torch.no_grad():
        wrong.actor.biases[-1][0] += 1e-3
    other = verify(wrong, exported, obs, len(obs), 0, MAX_ABS_DIFF)
    assert not other.passed and other.max_abs_diff > 1e-4 > other.limit


def test_export_config_and_paths_are_checked(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="samples must be at least 1000"):
        export_policy(tmp_path, config=ExportConfig(samples=999))
    with pytest.raises(UserError, match="float32_allowance must be a finite number >= 0"):
        export_policy(tmp_path, config=ExportConfig(float32_allowance=-1.0))
    with pytest.raises(UserError, match="opset must be at least 17"):
        export_policy(tmp_path, config=ExportConfig(opset=13))
    with pytest.raises(UserError, match="holds no checkpoint"):
        export_policy(tmp_path)
    with pytest.raises(UserError, match="no checkpoint or run directory"):
        export_policy(tmp_path / "missing.pt")


# --- the command line ------------------------------------------------------------------------------------
def test_s2r_eval_of_the_onnx_file_equals_eval_of_the_run(claw: ExportResult,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from s2r.cli import main

    results = []
    for target in (claw.path, claw.checkpoint.parent):
        assert main(["eval", str(target), "--episodes", "3", "--seed", "5", "--json"]) == 0
        results.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    from_onnx, from_run = results
    assert from_onnx["policy"] == str(claw.path) and from_onnx["env_id"] == CLAW_ID
    assert from_onnx["success_rate"] == from_run["success_rate"]
    assert from_onnx["return_mean"] == pytest.approx(from_run["return_mean"], rel=1e-4, abs=1e-4)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="s2r")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["export", *argv])
    code = args.func(args)
    return code, capsys.readouterr().out


def test_cli_export(claw: ExportResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = claw.checkpoint.parent
    code, out = run_cli([str(run), "--out", str(tmp_path / "p.onnx"), "--json"], capsys)
    assert code == 0 and len(out.strip().splitlines()) == 1
    summary = json.loads(out)
    assert summary["path"] == str(tmp_path / "p.onnx") and summary["verification"]["passed"]
    assert summary["verification"]["samples"] == 2000 and summary["env_id"] == CLAW_ID
    assert OnnxPolicy(tmp_path / "p.onnx").info is not None
    with pytest.raises(UserError, match=r"must end in \.onnx"):
        run_cli([str(run), "--out", str(tmp_path / "p.txt")], capsys)
    with pytest.raises(UserError, match="samples must be at least 1000"):
        run_cli([str(run), "--samples", "10"], capsys)


# --- OnnxPolicy: bad input --------------------------------------------------------------------------------
def test_bad_observations_are_named(claw: ExportResult) -> None:
    policy = OnnxPolicy(claw.path)
    n = CLAW_SPEC.obs_layout.size
    with pytest.raises(ValueError, match=rf"shape must be \({n},\) or \(B, {n}\), got \({n + 1},\)"):
        policy.act(np.zeros(n + 1, dtype=np.float32))
    with pytest.raises(ValueError, match=r"got \(2, 3, 21\)"):
        policy.act(np.zeros((2, 3, n), dtype=np.float32))
    with pytest.raises(ValueError, match=r"got \(4, 20\)"):
        policy.act(np.zeros((4, n - 1), dtype=np.float32))
    with pytest.raises(ValueError, match="dtype must be float32, got float64"):
        policy.act(np.zeros(n))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"numpy float32 array .* got list"):
        policy.act([0.0] * n)  # type: ignore[arg-type]
    bad = np.zeros(n, dtype=np.float32)
    bad[4] = np.nan
    with pytest.raises(ValueError, match=r"1 non-finite value\(s\) \(NaN or inf\) at index 4"):
        policy.act(bad)
    batch = np.zeros((3, n), dtype=np.float32)
    batch[2, 7] = np.inf
    with pytest.raises(ValueError, match=r"non-finite .* at index \(2, 7\)"):
        policy.act(batch)
    huge = np.full(n, 3e38, dtype=np.float32)  # finite, though its squares overflow
    assert np.isfinite(policy.act(huge)).all()


def test_damaged_files_are_named(claw: ExportResult, tmp_path: Path) -> None:
    data = claw.path.read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"cannot load ONNX policy '.*truncated\.onnx': the file is truncated"):
        OnnxPolicy(truncated)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model at all")
    with pytest.raises(UserError, match=r"garbage\.onnx"):
        OnnxPolicy(garbage)
    with pytest.raises(UserError, match=r"no ONNX policy at .*missing\.onnx"):
        OnnxPolicy(tmp_path / "missing.onnx")


def _with_props(src: Path, dst: Path, **changes: str) -> Path:
    model = onnx.load(str(src))
    for p in model.metadata_props:
        if p.key in changes:
            p.value = changes[p.key]
    onnx.save(model, str(dst))
    return dst


def test_bad_metadata_is_named(claw: ExportResult, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"unknown metadata key obs_layout\[0\]\.begin; expected one of: name, start, "):
        OnnxPolicy(_with_props(claw.path, tmp_path / "a.onnx", obs_layout='[{"name": "x", "begin": 0}]'))
    with pytest.raises(UserError, match=r"metadata key joint_names must be a list of 9 joint names; got \['a'\]$"):
        OnnxPolicy(_with_props(claw.path, tmp_path / "b.onnx", joint_names='["a"]'))
    with pytest.raises(UserError, match=r"metadata key s2r_format_version must be 1 \(the version this s2r reads\); "
                                        r"got 7$"):
        OnnxPolicy(_with_props(claw.path, tmp_path / "d.onnx", s2r_format_version="7"))
def test_graph_and_metadata_must_agree(pendulum: ExportResult, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="graph's observation size is 3 but its metadata says obs_size=4"):
        OnnxPolicy(_with_props(pendulum.path, tmp_path / "c.onnx", obs_size="4"))


# --- compatibility with the task and the robot ------------------------------------------------------------
def test_matching_task_and_robot_load(claw: ExportResult) -> None:
    robot = config_from_mapping(yaml.safe_load((ROOT / "hardware_configs" / "dclaw.yaml").read_text()))
    policy = OnnxPolicy(claw.path, task_spec=CLAW_SPEC, robot_config=robot)
    assert policy.compatibility_problems(CLAW_SPEC, robot) == []


def test_task_mismatch_lists_every_difference(claw: ExportResult) -> None:
    other = dataclasses.replace(
        CLAW_SPEC, name="claw-other", joint_names=tuple(reversed(CLAW_SPEC.joint_names)), control_period=0.05,
    )
    with pytest.raises(UserError) as err:
        OnnxPolicy(claw.path, task_spec=other)
    message = str(err.value)
    assert "(3 mismatches)" in message
    for part in ("task: the file has 'dclaw-turn', the task spec has 'claw-other'",
                 "joint names/order: the file has [f0_top, f0_mid", "the task spec has [f2_bot, f2_mid",
                 "control period: the file has 0.1 s, the task spec has 0.05 s"):
        assert part in message
    smaller = dataclasses.replace(CLAW_SPEC, obs_layout=dataclasses.replace(
        CLAW_SPEC.obs_layout, fields=CLAW_SPEC.obs_layout.fields[:-1]))
    problems = OnnxPolicy(claw.path).compatibility_problems(smaller)
    assert "observation size: the file has 21, the task spec has 20" in problems
    assert any(p.startswith("observation layout:") for p in problems)


def test_robot_config_mismatch(claw: ExportResult) -> None:
    data = yaml.safe_load((ROOT / "hardware_configs" / "dclaw.yaml").read_text())
    data["control_period_s"] = 0.02
    data["control_period_override"] = True
    robot = config_from_mapping(data, source="fast.yaml")
    with pytest.raises(UserError, match=r"(?s)1 mismatch\).*control period: the file has 0.1 s, "
                                        r"robot config fast.yaml \(task 'dclaw-turn'\) has 0.02 s"):
        OnnxPolicy(claw.path, robot_config=robot)


def test_gym_export_cannot_drive_a_task(pendulum: ExportResult) -> None:
    problems = OnnxPolicy(pendulum.path).compatibility_problems(CLAW_SPEC)
    assert len(problems) == 3
    assert problems[0] == "observation size: the file has 3, the task spec has 21"
    assert problems[1] == "action size: the file has 1, the task spec has 9"
    assert "'Pendulum-v1', which is not an s2r task" in problems[2]


def _plain_onnx(path: Path, spec: TaskSpec) -> None:
    """An ONNX policy written without s2r metadata, with a fixed batch of 1 (as other tools write them)."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).normal(0, 0.1, (spec.obs_layout.size, spec.n_joints)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["z"]), helper.make_node("Tanh", ["z"], ["y"])], "plain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, spec.obs_layout.size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, spec.n_joints])],
        [numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", MIN_OPSET)])
    model.ir_version = min(model.ir_version, max_ir_version())
    onnx.save(model, str(path))


def test_file_without_s2r_metadata(tmp_path: Path) -> None:
    path = tmp_path / "plain.onnx"
    _plain_onnx(path, CLAW_SPEC)
    policy = OnnxPolicy(path)
    assert policy.info is None and policy.metadata == {} and policy.batch_size == 1
    assert policy.act(np.zeros(CLAW_SPEC.obs_layout.size, dtype=np.float32)).shape == (CLAW_SPEC.n_joints,)
    with pytest.raises(ValueError, match="batches of exactly 1"):
        policy.act(np.zeros((2, CLAW_SPEC.obs_layout.size), dtype=np.float32))
    with pytest.raises(UserError, match="carries no s2r metadata"):
        policy.check_compatible(CLAW_SPEC)
    with pytest.raises(UserError, match="carries no s2r metadata naming its environment"):
        evaluate_policy_file(path, 1, 0)


# --- pieces -------------------------------------------------------------------------------------------------
def test_randomization_and_config_hash() -> None:
    assert describe_randomization({}) == NO_RANDOMIZATION
    assert describe_randomization({"randomize": None}) == NO_RANDOMIZATION
    assert describe_randomization({"randomize": "randomization/configs/dclaw.yaml"}) == \
        "randomization/configs/dclaw.yaml"
    embedded = {"task": "dclaw-turn", "parameters": {"valve_damping": {"dist": "uniform", "low": 0.1, "high": 0.2}}}
    assert json.loads(describe_randomization({"randomize": embedded})) == embedded
    assert config_sha256({"a": 1, "b": [1, 2]}) == config_sha256({"b": [1, 2], "a": 1})
    assert config_sha256({"a": 1}) != config_sha256({"a": 2})


def test_random_observations_respect_bounds_and_probe_the_clip() -> None:
    ckpt = synthetic_checkpoint(CLAW_ID, 4, 1, -np.ones(1), np.ones(1), True, CONFIG)
    space = gym.spaces.Box(np.array([-1.0, -np.inf, 0.0, -np.inf], dtype=np.float32),
                           np.array([1.0, np.inf, np.inf, 5.0], dtype=np.float32), dtype=np.float32)
    obs = random_observations(checkpoint_obs_norm(ckpt), space, 2000, np.random.default_rng(0))
    assert obs.shape == (2000, 4) and obs.dtype == np.float32
    assert np.all(obs[:, 0] >= -1.0) and np.all(obs[:, 0] <= 1.0) and np.all(obs[:, 2] >= 0.0)
    assert np.all(obs[:, 3] <= 5.0)
    z = np.abs(obs[:, 1] - ckpt.obs_mean[1]) / np.sqrt(ckpt.obs_var[1])
    assert z.max() > ckpt.obs_clip  # some rows exercise the normalizer's clip
    assert np.median(z) < 3.0


def test_import_export_is_light() -> None:
    code = ("import sys, export; assert 'torch' not in sys.modules and 'onnxruntime' not in sys.modules; "
            "from export import OnnxPolicy; assert 'torch' not in sys.modules; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


SHIPPED_POLICY = Path(__file__).resolve().parent / "data" / "dclaw_turn_crossq.onnx"


def _shipped_props() -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(SHIPPED_POLICY)).metadata_props}


def test_metadata_round_trips_and_ignores_keys_it_does_not_know() -> None:
    meta = parse_metadata({**_shipped_props(), "later_key": "x"}, "p.onnx")
    assert meta.task == "dclaw-turn" and meta.control_period_s == 0.1 and len(meta.joint_names) == 9
    assert parse_metadata(meta.to_props(), "p.onnx") == meta


@pytest.mark.parametrize(("changes", "message"), [
    ({"obs_size": "abc"}, r"p\.onnx: metadata key obs_size must be an integer >= 1; got 'abc'$"),
    ({"action_low": "[NaN, 0, 0, 0, 0, 0, 0, 0, 0]"},
     r"metadata key action_low must be a list of 9 numbers \(none NaN\)"),
    ({"env_id": None}, r"p\.onnx: metadata key env_id is missing \(the file is damaged or was not written by "),
    ({"control_period_s": "0"}, r"metadata key control_period_s must be a positive number of seconds; got 0\.0$"),
    ({"env_kwargs": "[1]"}, r"metadata key env_kwargs must be a mapping, got list$"),
    ({"action_output": "raw"}, r"metadata key action_output must be one of normalized, env_bounds; got 'raw'$"),
    ({"obs_layout": '[{"name": "a", "start": 0, "stop": 9, "unit": "rad"}, {"name": "b", "start": 10, "stop": 21, '
                    '"unit": "-"}]'}, r"metadata key obs_layout\[1\]\.start must be 9, where the block before stops; "
                                      r"got 10$"),
    ({"obs_layout": '[{"name": "a", "start": 0, "stop": 9, "unit": "rad"}]'},
     r"metadata key obs_layout must be blocks that tile 0\.\.21 \(they stop at 9\)"),
])
def test_bad_metadata_names_the_key(changes: dict[str, str | None], message: str) -> None:
    props = {k: v for k, v in {**_shipped_props(), **changes}.items() if v is not None}
    with pytest.raises(UserError, match=message):
        parse_metadata(props, "p.onnx")
