"""``s2r finetune``: learning from real episodes between them, per-episode checkpoints and ONNX, and a resume
after SIGKILL that keeps every completed episode's log and transitions."""

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
from busy_machine import LATENCY_TIMER_S, MAX_DATA_AGE_S
from cli_runs import fast_robot_config, train_tiny

from export.onnx_policy import OnnxPolicy
from policies.checkpoint import load_checkpoint
from robot.dataset import trajlog_to_dataset
from robot.trajlog import episode_files, read_episodes
from s2r.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny("dclaw-turn", tmp_path_factory.mktemp("finetune") / "run")


@pytest.fixture(scope="module")
def fast_robot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A packet timeout clear of a loaded test machine's hiccups.
    return fast_robot_config("dclaw", tmp_path_factory.mktemp("robot"), latency_timer_s=LATENCY_TIMER_S,
                             watchdog={"max_consecutive_failed_reads": 3, "max_data_age_s": MAX_DATA_AGE_S})


def usable_transitions(logs: Path, episodes: int) -> list[int]:
    """Transitions each of the first ``episodes`` logged episodes adds to the real replay: its steps, less any
    next to a stale reading (``robot.dataset``), which a loaded machine's late replies cause."""
    episode = trajlog_to_dataset(logs, include_partial=True)["episode"]
    return [int(np.sum(episode == k)) for k in range(episodes)]


def _finetune_args(run: Path, robot: Path, out: Path, episodes: int, *extra: str) -> list[str]:
    return ["finetune", str(run), "--robot", str(robot), "--driver", "emulator", "--episodes", str(episodes),
            "--out", str(out), "--quiet", "--json", *extra]


def test_finetune_learns_between_episodes_and_exports_every_episode(
        sim_run: Path, fast_robot: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ft"
    before = load_checkpoint(sim_run / "last.pt")
    assert main(_finetune_args(sim_run, fast_robot, out, 2)) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["episodes_done"] == 2 and summary["stop_kind"] == "completed"
    steps = [e["steps"] for e in summary["episodes"]]
    usable = usable_transitions(out / "logs", 2)
    assert all(0 < u <= n for u, n in zip(usable, steps, strict=True))
    assert [e["real_transitions"] for e in summary["episodes"]] == [usable[0], usable[0] + usable[1]]
    assert all(e["updates"] == e["steps"] for e in summary["episodes"])  # 1 update per control step
    # every episode: a checkpoint with the new learner, a verified ONNX file, and a deploy-format log
    after = load_checkpoint(out / "last.pt")
    assert after.training is not None and after.training["finetune"]["episodes_done"] == 2
    moved = any(not np.array_equal(before.actor_state[k].numpy(), after.actor_state[k].numpy())
                for k in before.actor_state)
    assert moved, "the actor did not change"
    assert sorted(p.name for p in (out / "onnx").iterdir()) == ["episode_000000.onnx", "episode_000001.onnx"]
    assert OnnxPolicy(out / "policy.onnx").info is not None
    episodes = list(read_episodes(out / "logs"))
    assert len(episodes) == 2 and all(ep.meta["complete"] for ep in episodes)


def test_finetune_resumes_after_sigkill_with_every_completed_episode(
        sim_run: Path, fast_robot: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ft"
    logs = out / "logs"
    cmd = [sys.executable, "-m", "s2r.cli", *_finetune_args(sim_run, fast_robot, out, 4)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
    assert (out / "onnx" / "episode_000003.onnx").is_file()


@pytest.mark.parametrize(("extra", "message"), [
    (["--sim-fraction", "1.5"], "--sim-fraction must be in"),
    (["--episodes", "-1"], "--episodes must be >= 0"),
    (["--reality", "x.yaml", "--driver", "mock"], "--reality applies to the emulator driver only"),
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
    (tmp_path / "ft" / "logs").mkdir(parents=True)
    (tmp_path / "ft" / "last.pt").write_bytes(b"")
    assert main(["finetune", str(sim_run), "--robot", robot, "--episodes", "1", "--out", str(tmp_path / "ft"),
                 "--quiet"]) == 2
    assert "already holds a fine-tuning run" in capsys.readouterr().err
