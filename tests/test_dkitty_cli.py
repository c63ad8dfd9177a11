"""Every `s2r` command on the quadruped, through the same code paths as the claw: train, eval, export, sweep,
deploy (mock bus and IMU), adapt from the deployment's logs, fine-tune."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from cli_runs import ROOT, fast_robot_config, train_tiny

from s2r.cli import main
from s2r.core.trajlog import read_episodes


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny("dkitty-stand", tmp_path_factory.mktemp("kitty") / "stand")


@pytest.fixture(scope="module")
def fast_robot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fast_robot_config("dkitty", tmp_path_factory.mktemp("robot"))


def _json_out(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    out: dict[str, object] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return out


def test_every_command_runs_the_quadruped(run: Path, fast_robot: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(run), "--episodes", "1", "--json"]) == 0
    assert _json_out(capsys)["episodes"] == 1

    onnx = tmp_path / "stand.onnx"
    assert main(["export", str(run), "--out", str(onnx), "--json"]) == 0
    capsys.readouterr()
    assert onnx.is_file()

    assert main(["sweep", str(onnx), "--grid", "leg_kp=4:6:2", "--episodes", "1", "--out", str(tmp_path / "sweep"),
                 "--json"]) == 0
    assert _json_out(capsys)["cells"] == 2

    logs = tmp_path / "deploy"
    assert main(["deploy", str(onnx), "--robot", str(fast_robot), "--driver", "mock", "--lockstep", "--episodes", "2",
                 "--log-dir", str(logs), "--json"]) == 0
    deployed = _json_out(capsys)
    assert deployed["stop_kind"] == "completed" and deployed["episodes"] == 2
    episodes = list(read_episodes(logs))
    assert len(episodes) == 2 and all(np.all(np.isfinite(e.arrays["base_quat"])) for e in episodes)

    posterior = tmp_path / "adapt" / "posterior.yaml"
    assert main(["adapt", "--task", "dkitty-stand", "--prior", str(ROOT / "randomization" / "configs" / "dkitty.yaml"),
                 "--log-dir", str(logs), "--out", str(posterior), "--iterations", "1", "--samples", "4",
                 "--max-transitions", "20"]) == 0
    capsys.readouterr()
    fitted = yaml.safe_load(posterior.read_text())
    assert fitted["task"] == "dkitty-stand" and "leg_kp" in fitted["joint"]["names"]

    assert main(["finetune", str(run), "--robot", str(fast_robot), "--driver", "mock", "--lockstep", "--episodes", "1",
                 "--out", str(tmp_path / "ft"), "--quiet", "--json"]) == 0
    tuned = _json_out(capsys)
    assert tuned["episodes_done"] == 1 and tuned["stop_kind"] == "completed"


def test_eval_picks_the_walks_position_source(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`s2r eval --position-source`: a walk evaluated on the position leg odometry measures (the robot's source
    without motion capture) as well as on the simulator's; a task that observes no position has no source."""
    walk = train_tiny("dkitty-walk", tmp_path / "walk")
    for flags, source in (((), "truth"), (("--position-source", "odometry"), "odometry")):
        assert main(["eval", str(walk), "--episodes", "1", *flags, "--json"]) == 0
        result = _json_out(capsys)
        assert result["position_source"] == source and result["episodes"] == 1
        assert result["terminated"] in (0, 1)  # a fall past the tilt bound ends a walk early
    assert main(["eval", str(run), "--episodes", "1", "--json"]) == 0
    assert _json_out(capsys)["position_source"] is None
    assert main(["eval", str(run), "--episodes", "1", "--position-source", "odometry"]) != 0
    assert "--position-source is for a walk" in capsys.readouterr().err
