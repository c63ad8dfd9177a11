"""``s2r finetune`` on the emulated claw: the incumbent measured, learning between exploration episodes, the
candidate frozen, exported and measured, a checkpoint after every episode, and a resume after SIGKILL that keeps
every completed episode's log and transitions (the gate's decisions themselves: ``test_finetune_gate.py``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cli_runs import fast_robot_config, train_tiny
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_view import read_recording, rows

from export.onnx_policy import OnnxPolicy
from policies.checkpoint import load_checkpoint
from policies.dataset import trajlog_to_dataset
from s2r.cli import main
from s2r.core.trajlog import episode_files, read_episodes, read_run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny("dclaw-turn", tmp_path_factory.mktemp("finetune") / "run")


@pytest.fixture(scope="module")
def fast_robot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The shipped limits (the emulator runs in lock-step), at a shorter control period: fewer physics steps.
    return fast_robot_config("dclaw", tmp_path_factory.mktemp("robot"))


def usable_transitions(logs: Path, episodes: int) -> list[int]:
    """Transitions each of the first ``episodes`` logged episodes adds to the real replay: its steps, less any
    next to a stale reading (``policies.dataset``)."""
    episode = trajlog_to_dataset(logs, include_partial=True)["episode"]
    return [int(np.sum(episode == k)) for k in range(episodes)]


SMALL_ROUNDS = ["--incumbent-episodes", "1", "--explore-episodes", "1", "--gate-episodes", "1",
                "--critic-warmup", "5", "--updates-per-step", "1"]
"""Episodes 0: the incumbent, 1: exploration, 2: the candidate, 3: exploration, ..."""


def _finetune_args(run: Path, robot: Path, out: Path, episodes: int, *extra: str) -> list[str]:
    return ["finetune", str(run), "--robot", str(robot), "--driver", "emulator", "--lockstep", "--episodes",
            str(episodes), "--out", str(out), "--quiet", "--json", *SMALL_ROUNDS, *extra]


def test_finetune_measures_the_incumbent_learns_and_measures_the_candidate(
        sim_run: Path, fast_robot: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ft"
    before = load_checkpoint(sim_run / "best.pt")  # the deployed policy
    assert main(_finetune_args(sim_run, fast_robot, out, 3)) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["episodes_done"] == 3 and summary["stop_kind"] == "completed"
    assert [e["kind"] for e in summary["episodes"]] == ["eval-incumbent", "explore", "eval-candidate"]
    steps = [e["steps"] for e in summary["episodes"]]
    usable = usable_transitions(out / "logs", 3)
    assert usable == steps  # in lock-step no reading is stale without an injected fault
    assert [e["real_transitions"] for e in summary["episodes"]] == list(np.cumsum(usable))
    # the critic warm-up after the incumbent's episodes, 1 update per step after exploring, none while measuring
    assert [e["updates"] for e in summary["episodes"]] == [5, steps[1], 0]
    after = load_checkpoint(out / "last.pt")
    assert after.training is not None and after.training["finetune"]["episodes_done"] == 3
    moved = any(not np.array_equal(before.actor_state[k].numpy(), after.actor_state[k].numpy())
                for k in before.actor_state)
    assert moved, "the actor did not change"
    assert sorted(p.name for p in (out / "onnx").iterdir()) == ["deployed.onnx", "round_001.onnx"]
    assert summary["episodes"][2]["onnx"] == str(out / "onnx" / "round_001.onnx")
    (decision,) = summary["gate"]["decisions"]
    assert not decision["replaced"]  # one episode each is never evidence
    assert (out / "policy.onnx").read_bytes() == (out / "onnx" / "deployed.onnx").read_bytes()
    assert OnnxPolicy(out / "policy.onnx").info is not None
    assert json.loads((out / "finetune.json").read_text())["history"] == summary["history"]
    episodes = list(read_episodes(out / "logs"))
    assert len(episodes) == 3 and all(ep.meta["complete"] for ep in episodes)
    assert [ep.meta["finetune"]["kind"] for ep in episodes] == ["eval-incumbent", "explore", "eval-candidate"]

    # one metrics row per robot episode, in metrics.jsonl and TensorBoard (under SB3's names too)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert [r["return"] for r in rows] == [e["episode_return"] for e in summary["episodes"]]
    assert [r["updates"] for r in rows] == [5, steps[1], 0]
    assert "critic_loss" in rows[0] and "actor_loss" not in rows[0]  # the warm-up moves the critics only
    assert "actor_loss" in rows[1] and "critic_loss" not in rows[2]
    events = EventAccumulator(str(out / "tensorboard")).Reload()
    assert [(e.step, e.value) for e in events.Scalars("rollout/ep_rew_mean")] == [
        (r["step"], pytest.approx(r["return"])) for r in rows]
    assert [e.step for e in events.Scalars("train/critic_loss")] == [1, 2]
    assert events.Scalars("finetune/incumbent_success_rate")[-1].value == summary["success_rate"]


def test_finetune_resumes_after_sigkill_with_every_completed_episode(
        sim_run: Path, fast_robot: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ft"
    logs = out / "logs"
    cmd = [sys.executable, "-m", "s2r.cli", *_finetune_args(sim_run, fast_robot, out, 4)]
    # One torch thread, as this process has since train_tiny: the tiny networks' updates are too small to share,
    # and on a busy 2-core host two threads made them several times slower.
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 240
        while not logs.is_dir() or len(episode_files(logs)) < 2:
            assert proc.poll() is None, "fine-tuning ended before it could be killed"
            assert time.monotonic() < deadline, "fine-tuning never finished two episodes"
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    kept = {p.name: p.read_bytes() for p in episode_files(logs)}
    assert len(kept) >= 2
    transitions_before = len(trajlog_to_dataset(logs, include_partial=True)["rewards"])

    assert main(_finetune_args(sim_run, fast_robot, out, 4, "--resume")) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["resumed_from_episode"] == len(kept) and summary["episodes_done"] == 4
    first = summary["episodes"][0]
    assert first["episode"] == len(kept)
    # the killed run's are all there
    assert first["real_transitions"] == transitions_before + usable_transitions(logs, len(kept) + 1)[-1]
    for name, data in kept.items():
        assert (logs / name).read_bytes() == data, f"{name} changed"
    assert [p.name for p in episode_files(logs)] == [f"episode_{k:06d}.npz" for k in range(4)]
    assert (out / "onnx" / "round_001.onnx").is_file()
    assert [h["kind"] for h in summary["history"]] == ["eval-incumbent", "explore", "eval-candidate", "explore"]
    # the metrics of the killed run's episodes are kept (the kill may have come between an episode's log and its
    # row), and the resumed episodes' follow them once each
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-(4 - len(kept)):] == list(range(len(kept) + 1, 5))


@pytest.mark.parametrize(("extra", "message"), [
    (["--sim-fraction", "1.5"], "--sim-fraction must be in"),
    (["--episodes", "-1"], "--episodes must be >= 0"),
    (["--reality", "x.yaml", "--driver", "mock"], "--reality applies to the emulator driver only"),
    (["--lockstep", "--driver", "dynamixel"], "--lockstep runs a simulated robot this run starts"),
    (["--lockstep", "--port", "/dev/pts/9"], "--lockstep runs a simulated robot this run starts"),
    (["--gate-episodes", "0"], "--gate-episodes must be at least 1"),
    (["--confidence", "1"], "--confidence must be in (0, 1)"),
    (["--critic-warmup", "-1"], "--critic-warmup must be >= 0"),
])
def test_bad_finetune_arguments_exit_2(sim_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       extra: list[str], message: str) -> None:
    args = ["finetune", str(sim_run), "--robot", str(ROOT / "hardware_configs" / "dclaw.yaml"), "--episodes", "1",
            "--out", str(tmp_path / "ft"), "--quiet", *extra]
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_finetune_refuses_a_missing_run_and_an_existing_output(sim_run: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    robot = str(ROOT / "hardware_configs" / "dclaw.yaml")
    assert main(["finetune", str(tmp_path / "nope"), "--robot", robot, "--episodes", "1", "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err
    # a policy without its learner is named as what it is, with the way to deploy it
    for name, expected in (("model.zip", "is a Stable-Baselines3 model (deploy it with `s2r export --from-sb3"),
                           ("policy.onnx", "is an exported policy (fine-tune the RUN_DIR it was exported from)")):
        (tmp_path / name).write_bytes(b"PK")
        assert main(["finetune", str(tmp_path / name), "--robot", robot, "--episodes", "1", "--quiet"]) == 2
        assert expected in capsys.readouterr().err
    (tmp_path / "ft" / "logs").mkdir(parents=True)
    (tmp_path / "ft" / "last.pt").write_bytes(b"")
    assert main(["finetune", str(sim_run), "--robot", robot, "--episodes", "1", "--out", str(tmp_path / "ft"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"--out {str(tmp_path / 'ft')!r} already holds a fine-tuning run; pass --resume to continue it or pick " \
           "another --out" in err


@pytest.mark.slow  # a fine-tuning run's imports and exports (the wiring alone: test_view.py, ControllerSession)
def test_finetune_view_records_every_robot_step(sim_run: Path, fast_robot: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("rerun")
    out, rrd = tmp_path / "ft", tmp_path / "finetune.rrd"
    # One episode of the incumbent, on the mock: the view's wiring, not the learning, is under test here.
    args = _finetune_args(sim_run, fast_robot, out, 1, "--view", str(rrd))
    args[args.index("--driver") + 1] = "mock"
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["episodes_done"] == 1
    episodes = list(read_episodes(out / "logs"))
    recording = read_recording(rrd)
    for j, name in enumerate(read_run(out / "logs").joint_names):
        values = rows(recording[f"/joints/{name}"])
        np.testing.assert_array_equal(values[:, 0], np.concatenate([e["command"][:, j] for e in episodes]))
        np.testing.assert_array_equal(values[:, 1], np.concatenate([e["joint_pos"][:-1, j] for e in episodes]))
    assert len(recording["/episodes"]["values"]) == 1
