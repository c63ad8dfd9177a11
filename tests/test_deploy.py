"""``s2r deploy`` end to end: exit codes, JSON, signals (SIGTERM, SIGKILL) in a subprocess, policy loading,
and the offline-RL dataset converter."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from policies.dataset import save_dataset, trajlog_to_dataset
from robot.config import load_config
from s2r.commands.robot import EXIT_SAFETY_STOP, register
from s2r.core.errors import UserError
from s2r.core.trajlog import episode_files, read_episodes, read_run
from s2r.policy_files import load_policy
from sim.tasks.actions import clip_action

ROOT = Path(__file__).resolve().parents[1]
CONFIG_PATH = ROOT / "hardware_configs" / "dclaw.yaml"
SPEC = load_config(CONFIG_PATH).task_spec()
FAST_PERIOD_S = 0.01
SIGNAL_WAIT_S = 60.0
SIGNAL_DATA_AGE_S = 2.0
"""The data-age bound of the real-time mock runs that receive signals (s): a signal needs a run going on in real time,
and on a shared 2-core VM a process can stall past the shipped 250 ms. Every other mock run here is in lock-step at
the shipped limits."""


def _claw_config(tmp_path: Path, name: str, max_data_age_s: float | None = None) -> Path:
    data = yaml.safe_load(CONFIG_PATH.read_text())
    data["control_period_s"] = FAST_PERIOD_S
    data["control_period_override"] = True
    if max_data_age_s is not None:
        data["watchdog"]["max_data_age_s"] = max_data_age_s
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def fast_config(tmp_path: Path) -> Path:
    """The claw config at a 10 ms control period and the shipped watchdog limits."""
    return _claw_config(tmp_path, "fast.yaml")


@pytest.fixture
def signal_config(tmp_path: Path) -> Path:
    """The claw config at a 10 ms control period, for real-time runs that receive a signal."""
    return _claw_config(tmp_path, "signals.yaml", SIGNAL_DATA_AGE_S)


def deploy(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="s2r")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["deploy", *argv])
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_mock_run_prints_json_and_logs(tmp_path: Path, fast_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs = tmp_path / "logs"
    code, out, _ = deploy(["scripted:random", "--robot", str(fast_config), "--driver", "mock", "--lockstep",
                           "--episodes", "3", "--episode-steps", "8", "--log-dir", str(logs), "--json"], capsys)
    assert code == 0
    summary = json.loads(out.strip().splitlines()[-1])
    for key in ("episodes", "success_rate", "return_mean", "loop", "comm_errors", "stop_reason"):
        assert key in summary
    for key in ("period_error_p50_us", "period_error_p99_us", "cycle_time_p50_us", "cycle_time_p99_us", "overruns"):
        assert key in summary["loop"]
    assert summary["episodes"] == 3 and summary["stop_kind"] == "completed" and summary["torque_off"]
    info = read_run(logs)
    assert info.source == "mock" and info.control_period == FAST_PERIOD_S
    assert info.extra["policy"] == "scripted:random" and info.extra["episode_steps"] == 8
    assert [ep.steps for ep in read_episodes(logs)] == [8, 8, 8]


def test_a_lock_step_mock_run_is_the_same_run_every_time(tmp_path: Path, fast_config: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The mock in lock-step: time passes only in the controller's sleeps, so the logs of a seed, reply drops
    included, are identical array for array, and the loop meets every period exactly."""
    runs = []
    for name in ("a", "b"):
        code, out, _ = deploy(["scripted:random", "--robot", str(fast_config), "--driver", "mock", "--lockstep",
                               "--faults", "drop=0.05,seed=3", "--episodes", "2", "--episode-steps", "20",
                               "--log-dir", str(tmp_path / name), "--seed", "4", "--json"], capsys)
        assert code == 0
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["loop"]["overruns"] == 0 and summary["comm_errors"] > 0  # drops were injected and counted
        runs.append(list(read_episodes(tmp_path / name)))
    a, b = runs
    assert len(a) == len(b) == 2
    for ea, eb in zip(a, b, strict=True):
        assert set(ea.arrays) == set(eb.arrays)
        for key in ea.arrays:
            np.testing.assert_array_equal(ea[key], eb[key], err_msg=key)


def test_safety_stop_exits_non_zero_with_the_reason(tmp_path: Path, fast_config: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = deploy(["scripted:hold", "--robot", str(fast_config), "--driver", "mock", "--lockstep", "--faults",
                             "silent=22@0.3s", "--episodes", "50", "--episode-steps", "10",
                             "--log-dir", str(tmp_path / "logs")], capsys)
    assert code == EXIT_SAFETY_STOP
    assert "safety stop" in err and "consecutive failed reads" in err and "id 22" in err
    assert "stop: safety" in out


def test_deploy_on_the_emulator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs = tmp_path / "logs"
    code, out, _ = deploy(["scripted:zero", "--robot", str(CONFIG_PATH), "--driver", "emulator", "--lockstep",
                           "--episodes", "2", "--episode-steps", "15", "--log-dir", str(logs), "--json"], capsys)
    assert code == 0
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["episodes"] == 2 and summary["torque_off"] and summary["driver"] == "emulator"
    assert summary["comm_errors"] == 0 and read_run(logs).extra["lockstep"] is True
    episodes = list(read_episodes(logs))
    # scripted:zero drives every joint towards the middle of its range (0 rad): the emulated fingers follow
    bent = [k for k, name in enumerate(SPEC.joint_names) if not name.endswith("_top")]
    for ep in episodes:
        start, end = np.abs(ep["joint_pos"][0, bent]), np.abs(ep["joint_pos"][-1, bent])
        assert np.all(end < start - 0.02)


def test_bad_input_is_a_user_error(tmp_path: Path, fast_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--robot", str(fast_config), "--episodes", "1", "--log-dir", str(tmp_path / "l")]
    with pytest.raises(UserError, match="unknown scripted policy"):
        deploy(["scripted:dance", "--driver", "mock", *base], capsys)
    with pytest.raises(UserError, match=r"policy .*missing.onnx' does not exist: expected an .onnx file, a checkpoint"):
        deploy([str(tmp_path / "missing.onnx"), "--driver", "mock", *base], capsys)
    with pytest.raises(UserError, match="--reality applies to the emulator"):
        deploy(["scripted:hold", "--driver", "mock", "--reality", str(fast_config), *base], capsys)
    with pytest.raises(UserError, match=r"^--lockstep runs a simulated robot in simulated time; the dynamixel driver "
                       r"runs in real time \(set --driver to emulator or mock, or drop --lockstep\)$"):
        deploy(["scripted:hold", "--driver", "dynamixel", "--port", "/dev/null", "--lockstep", *base], capsys)
    with pytest.raises(UserError, match=r"^--clock-socket .*the mock has its own simulated time \(drop --clock-socket"):
        deploy(["scripted:hold", "--driver", "mock", "--lockstep", "--clock-socket", "/tmp/x", *base], capsys)
    emulated = [*base[:-1], str(tmp_path / "emulated")]
    with pytest.raises(UserError, match=r"^--clock-socket is needed: the lock-step emulator on /dev/null is driven"):
        deploy(["scripted:hold", "--driver", "emulator", "--port", "/dev/null", "--lockstep", *emulated], capsys)
    with pytest.raises(UserError, match=r"^--clock-socket is the time socket of a lock-step emulator: it needs "
                       r"--lockstep$"):
        deploy(["scripted:hold", "--driver", "emulator", "--port", "/dev/null", "--clock-socket", "/x", *emulated],
               capsys)
    with pytest.raises(UserError, match="unknown task"):
        deploy(["scripted:hold", "--driver", "mock", "--task", "s2r/Nope-v0", *base], capsys)


# --- policy files ----------------------------------------------------------------------------------------
def _tiny_onnx(path: Path, **metadata_overrides: object) -> None:
    """obs (1, O) -> tanh(obs @ W) (1, J), built with onnx.helper, with s2r metadata for the claw."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from export.metadata import ObsSlice, PolicyMetadata, Provenance

    w = np.random.default_rng(0).normal(0, 0.1, (SPEC.obs_layout.size, SPEC.n_joints)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["obs", "W"], ["z"]), helper.make_node("Tanh", ["z"], ["action"])],
        "tiny_policy",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, [1, SPEC.obs_layout.size])],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, [1, SPEC.n_joints])],
        [numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10  # the newest onnx writes an IR version the installed onnxruntime may not read
    fields: dict[str, object] = dict(
        env_id="s2r/DClawTurnFixed-v0", engine="mujoco", obs_size=SPEC.obs_layout.size, action_size=SPEC.n_joints,
        action_output="normalized", action_low=(-1.0,) * SPEC.n_joints, action_high=(1.0,) * SPEC.n_joints,
        provenance=Provenance("sac", 0, "0" * 64, "none", "none"), s2r_version="test",
        export_time_utc="2026-01-01T00:00:00+00:00", task=SPEC.name, robot=SPEC.robot,
        joint_names=SPEC.joint_names,
        obs_layout=tuple(ObsSlice(n, a, b, f.unit) for (n, (a, b)), f in
                         zip(SPEC.obs_layout.slices().items(), SPEC.obs_layout.fields, strict=True)),
        control_period_s=SPEC.control_period,
    )
    fields.update(metadata_overrides)
    for key, value in PolicyMetadata(**fields).to_props().items():  # type: ignore[arg-type]
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def test_onnx_policy(tmp_path: Path, fast_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tiny.onnx"
    _tiny_onnx(path)
    code, out, _ = deploy([str(path), "--robot", str(fast_config), "--driver", "mock", "--lockstep", "--episodes", "1",
                           "--episode-steps", "5", "--log-dir", str(tmp_path / "logs"), "--json"], capsys)
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["episodes"] == 1


def test_onnx_policy_for_another_robot_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.onnx"
    _tiny_onnx(path, task="dkitty-stand", robot="dkitty", joint_names=tuple(f"j{i}" for i in range(SPEC.n_joints)))
    with pytest.raises(UserError, match=r"(?s)refusing to deploy .*- task: .*- robot: .*- joint names"):
        load_policy(str(path), spec=SPEC)


def test_checkpoint_policy(tmp_path: Path, fast_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch = pytest.importorskip("torch")
    checkpoint = pytest.importorskip("policies.checkpoint")
    from policies.networks import Actor

    obs, act = SPEC.obs_layout.size, SPEC.n_joints
    actor = Actor(obs, act, (16,), "relu", stochastic=True, generator=torch.Generator().manual_seed(0))
    ckpt = checkpoint.Checkpoint(
        algo="sac", env_id="s2r/DClawTurnRandom-v0", task="dclaw-turn-random", engine="mujoco", step=10,
        config={}, obs_dim=obs, act_dim=act, hidden=(16,), activation="relu", stochastic=True,
        actor_state=actor.state_dict(), obs_norm=False, obs_mean=np.zeros(obs), obs_var=np.ones(obs),
        obs_count=1.0, obs_clip=10.0, obs_eps=1e-8, action_low=-np.ones(act), action_high=np.ones(act),
    )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    checkpoint.save_checkpoint(run_dir / checkpoint.BEST_NAME, ckpt)
    logs = tmp_path / "logs"
    code, out, _ = deploy([str(run_dir), "--robot", str(fast_config), "--driver", "mock", "--lockstep",
                           "--episodes", "2", "--episode-steps", "5", "--log-dir", str(logs), "--json"], capsys)
    assert code == 0
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["episodes"] == 2 and "checkpoint" in summary["policy"]
    info = read_run(logs)
    assert info.extra["task_variant"] == "s2r/DClawTurnRandom-v0"  # the goals follow the trained variant
    policy = load_policy(run_dir).act
    for ep in read_episodes(logs):
        np.testing.assert_allclose(ep["action"], np.stack([policy(o) for o in ep["obs"][:-1]]), atol=1e-6)


# --- signals, in a subprocess ---------------------------------------------------------------------------
def _start(config: Path, logs: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "s2r.commands.robot", "deploy", "scripted:random", "--robot", str(config),
         "--driver", "mock", "--episodes", "100000", "--episode-steps", "10", "--log-dir", str(logs), "--json"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _wait_for_episodes(proc: subprocess.Popen[str], logs: Path, n: int) -> None:
    deadline = time.monotonic() + SIGNAL_WAIT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"deploy exited early ({proc.returncode}): {proc.stderr.read() if proc.stderr else ''}")
        if logs.is_dir() and len(episode_files(logs)) >= n:
            return
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"no {n} episodes within {SIGNAL_WAIT_S} s")


def test_sigterm_mid_run_turns_torque_off_and_keeps_logs(tmp_path: Path, signal_config: Path) -> None:
    logs = tmp_path / "logs"
    proc = _start(signal_config, logs)
    _wait_for_episodes(proc, logs, 2)
    before = len(episode_files(logs))
    time.sleep(0.05)  # land in the middle of an episode
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=SIGNAL_WAIT_S)
    assert proc.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["stop_kind"] == "requested" and summary["stop_reason"] == "SIGTERM"
    assert summary["torque_off"] is True
    episodes = list(read_episodes(logs))
    assert len(episodes) >= before and summary["episodes"] >= before
    assert all(ep.steps == 10 for ep in episodes if ep.meta["complete"])
    assert [ep.index for ep in episodes] == list(range(len(episodes)))


def test_sigkill_mid_run_keeps_earlier_logs_readable(tmp_path: Path, signal_config: Path) -> None:
    logs = tmp_path / "logs"
    proc = _start(signal_config, logs)
    _wait_for_episodes(proc, logs, 3)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=SIGNAL_WAIT_S)
    assert proc.returncode == -signal.SIGKILL
    episodes = list(read_episodes(logs))
    assert len(episodes) >= 3
    assert all(ep.steps == 10 and ep.meta["complete"] for ep in episodes)


# --- dataset converter -----------------------------------------------------------------------------------
def test_trajlog_to_offline_dataset(tmp_path: Path, fast_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs = tmp_path / "logs"
    code, _, _ = deploy(["scripted:random", "--robot", str(fast_config), "--driver", "mock", "--lockstep", "--faults",
                         "drop=0.05,seed=1", "--episodes", "4", "--episode-steps", "12", "--log-dir", str(logs)],
                        capsys)
    assert code in (0, EXIT_SAFETY_STOP)  # heavy drops may trip the watchdog; the logs are what matters here
    episodes = [ep for ep in read_episodes(logs) if ep.meta["complete"]]
    assert episodes
    data = trajlog_to_dataset(logs)
    n = data["rewards"].shape[0]
    assert data["observations"].shape == (n, SPEC.obs_layout.size) == data["next_observations"].shape
    assert data["actions"].shape == (n, SPEC.n_joints) and not data["terminals"].any()
    assert data["timeouts"].sum() == len(set(data["episode"].tolist()))
    assert all(np.all(np.isfinite(v)) for v in data.values())
    total = sum(ep.steps for ep in episodes)
    stale_steps = sum(int(np.any(ep["stale"][:-1] | ep["stale"][1:])) for ep in episodes)
    assert 0 < n <= total
    if stale_steps:
        assert n < total
    ep = episodes[0]
    rows = np.flatnonzero(data["episode"] == ep.index)
    k = int(np.flatnonzero(np.all(np.isfinite(ep["obs"][:-1]), axis=1) & np.all(np.isfinite(ep["obs"][1:]), axis=1)
                           & np.all(np.isfinite(ep["action"]), axis=1))[0])
    np.testing.assert_array_equal(data["observations"][rows[0]], ep["obs"][k])
    np.testing.assert_array_equal(data["next_observations"][rows[0]], ep["obs"][k + 1])
    np.testing.assert_allclose(data["actions"][rows[0]], clip_action(ep["action"][k]), atol=1e-7)
    out = save_dataset(data, tmp_path / "data.npz")
    with np.load(out) as loaded:
        assert set(loaded.files) == set(data)
    with pytest.raises(UserError, match=r"\.npz"):
        save_dataset(data, tmp_path / "data.h5")
