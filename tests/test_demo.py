"""``s2r demo --quick``: every stage of the story runs on the emulated claw and the report holds the run's numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from s2r.cli import main


def test_quick_demo_runs_every_stage_and_writes_an_honest_report(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--quiet", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "seed 3" in printed and "| 4. after fine-tuning (1 robot episodes) | emulated robot |" in printed
    data = json.loads((out / "demo.json").read_text())
    assert data["seed"] == 3 and data["quick"] is True
    # every deployment really ran on the emulator and logged its episodes
    for name in ("first", "adapted", "finetuned"):
        d = data["deploy"][name]
        assert d["episodes"] == data["budget"]["deploy_episodes"] and d["stop"] is None
        assert len(list(Path(d["log_dir"]).glob("episode_*.npz"))) == d["episodes"]
    assert data["finetune"]["episodes_done"] == 1
    assert Path(data["adapt"]["posterior"]).is_file() and data["adapt"]["episodes"] == 2
    # the report's table is the run's table, and every figure it links exists
    report = (out / "report.md").read_text()
    for row in data["table"]:
        assert row["stage"] in report
    first = data["deploy"]["first"]["success_rate"]
    assert f"| 2. first deployment | emulated robot | {first:.2f} |" in report
    for link in ("learning_curve.png", "posterior.png", "sweep.png", "rollout.gif"):
        assert link in report
    for key in ("heatmap",):
        assert Path(data["sweep"][key]).is_file()
    assert Path(data["gif"]["gif"]).is_file()
    assert "Seed 3" in report


def test_demo_refuses_to_overwrite_an_earlier_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    out.mkdir()
    (out / "demo.json").write_text("{}")
    assert main(["demo", "--quick", "--out", str(out), "--quiet"]) == 2
    assert "already holds a demo; pass --force" in capsys.readouterr().err
    assert (out / "demo.json").read_text() == "{}"
