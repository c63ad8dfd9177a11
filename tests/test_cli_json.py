"""``--json`` on the commands that produce a result: stdout is then exactly one JSON object on one line (progress
and warnings go to stderr), and every result command has the flag. ``s2r demo --json`` runs in tests/test_demo.py
(its --quick run takes minutes; it is not run twice)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
from cli_runs import TINY_TRAIN

from randomization.simlogs import SimLogConfig, record_sim_logs
from s2r.cli import build_parser, main
from s2r.core.resources import shipped_file

RESULT_COMMANDS = ("eval", "export", "params", "sweep", "deploy", "finetune", "trajlog-dataset", "train", "render",
                   "adapt", "simlogs", "demo", "calibrate", "train-perception", "join-perception", "eval-perception",
                   "train-pixels")
"""Commands whose run ends in a result a script may want to read: each has ``--json``."""
NO_RESULT_COMMANDS = {
    "emulate": "a server: it runs until stopped and prints its pty (and clock socket) for other commands to use",
}
"""Commands deliberately without ``--json``, and why."""


def _json_line(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """The one JSON object stdout holds, checking that it is all stdout holds."""
    out = capsys.readouterr().out
    assert out.endswith("\n") and out.count("\n") == 1, out
    data = json.loads(out.strip())
    assert isinstance(data, dict)
    return data


def test_every_result_command_has_a_json_flag() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    commands: dict[str, argparse.ArgumentParser] = dict(subparsers.choices)
    unclassified = set(commands) - set(RESULT_COMMANDS) - set(NO_RESULT_COMMANDS)
    assert not unclassified, f"new commands {sorted(unclassified)}: add --json (cliargs.add_json_flag) and list them " \
                             "in RESULT_COMMANDS, or list them in NO_RESULT_COMMANDS with the reason"
    assert set(RESULT_COMMANDS) <= set(commands) and set(NO_RESULT_COMMANDS) <= set(commands)
    for name in RESULT_COMMANDS:
        flags = {s: a for a in commands[name]._actions for s in a.option_strings}
        assert "--json" in flags, f"s2r {name} has no --json"
        assert "JSON object" in (flags["--json"].help or ""), f"s2r {name} --json help: {flags['--json'].help!r}"
    for name in NO_RESULT_COMMANDS:
        assert "--json" not in {s for a in commands[name]._actions for s in a.option_strings}


def test_train_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["train", "--task", "Pendulum-v1", "--steps", "300", "--out", str(out), *TINY_TRAIN, "--json"]) == 0
    data = _json_line(capsys)
    assert data["run_dir"] == str(out) and data["steps"] == 300 and data["interrupted"] is False
    assert data["reached_success"] is False  # no stop_success
    assert data["episodes"] >= 1 and data["train_time_s"] >= 0
    assert data["eval"]["episodes"] == 1 and "return_mean" in data["eval"]


def test_render_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gif = tmp_path / "roll.gif"
    assert main(["render", "--task", "dclaw-turn", "--episodes", "1", "--width", "64", "--height", "48",
                 "--out", str(gif), "--json"]) == 0
    data = _json_line(capsys)
    assert data["out"] == str(gif) and gif.is_file()
    assert (data["width"], data["height"], data["engine"], data["episodes"]) == (64, 48, "mujoco", 1)
    assert data["frames"] > 1 and data["frame_period_s"] > 0 and data["policy"] is None
    assert len(data["returns"]) == 1 and data["successes"] in (0, 1)


def test_simlogs_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs = tmp_path / "logs"
    assert main(["simlogs", "--task", "dclaw-turn", "--log-dir", str(logs), "--episodes", "1",
                 "--param", "valve_damping=0.15", "--seed", "3", "--json"]) == 0
    data = _json_line(capsys)
    assert data == {**data, "out": str(logs), "episodes": 1, "task": "dclaw-turn", "policy": "scripted",
                    "engine": "mujoco", "seed": 3, "params": {"valve_damping": 0.15}}
    assert len(list(logs.glob("episode_*.npz"))) == 1


def test_adapt_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs = tmp_path / "logs"
    record_sim_logs(logs, SimLogConfig(episodes=1))
    out = tmp_path / "posterior.yaml"
    prior = shipped_file("randomization.configs", "dclaw.yaml")
    assert main(["adapt", "--task", "dclaw-turn", "--prior", str(prior), "--log-dir", str(logs), "--out", str(out),
                 "--iterations", "1", "--samples", "6", "--max-transitions", "10", "--workers", "1", "--json"]) == 0
    data = _json_line(capsys)
    assert (data["yaml"], data["json"], data["png"]) == (str(out), str(out.with_suffix(".json")),
                                                         str(out.with_suffix(".png")))
    assert data["episodes"] == 1 and data["transitions"] == 10 and 0 <= data["final_beta"] <= 1
    assert 0 < data["final_ess"] <= data["pooled_samples"]
    report = json.loads(out.with_suffix(".json").read_text())
    assert data["parameters"] == report["parameters"] and data["at_prior_edge"] == report["at_prior_edge"]
    row = data["parameters"]["valve_damping"]
    assert row["unit"] and row["adapted"] is True and {"prior_mean", "posterior_std"} <= set(row)
    assert data["parameters"]["obs_noise_std"]["adapted"] is False  # not informed by the logs
