"""``s2r demo``: every stage of the story runs on the emulated claw and the report holds the run's numbers (--quick);
the robot flags (``--reality``, ``--driver``, ``--robot``, ``--port``) are checked before anything runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from s2r.cli import main
from s2r.core.errors import UserError
from s2r.demo import (
    HARDWARE_CONFIG,
    REALITY,
    ROOT,
    DemoRobot,
    demo_robot,
    demo_target,
    merge_deployments,
    retrained_serves,
    robot_sentence,
    robot_test,
    summary_lines,
)


def test_quick_demo_runs_every_stage_and_writes_an_honest_report(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--quiet", "--seed", "3", "--json"]) == 0
    stdout = capsys.readouterr().out
    assert stdout.count("\n") == 1  # --json: one JSON object is all stdout holds
    summary = json.loads(stdout.strip())
    data = json.loads((out / "demo.json").read_text())
    assert data["seed"] == 3 and data["quick"] is True
    assert summary == {"json": str(out / "demo.json"), "report": str(out / "report.md"), "quick": True, "seed": 3,
                       "wall_time_s": data["wall_time_s"], "table": data["table"]}
    # the text s2r demo prints without --json, from the same data
    printed = "\n".join(summary_lines(data))
    assert "seed 3" in printed and "| 4. after fine-tuning (1 robot episodes) | emulated robot |" in printed
    # every deployment really ran on the emulator and logged its episodes
    for name in ("first", "adapted", "finetuned"):
        d = data["deploy"][name]
        assert d["episodes"] == data["budget"]["deploy_episodes"] and d["stop"] is None
        assert len(list(Path(d["log_dir"]).glob("episode_*.npz"))) == d["episodes"]
    assert data["finetune"]["episodes_done"] == 1
    # both training runs trained on the budget's torch threads (quick: one; tiny networks gain nothing from two)
    for run in ("train", "retrain"):
        config = (Path(data[run]["run_dir"]) / "config.yaml").read_text()
        assert f"\nthreads: {data['budget']['threads']}\n" in config
        # ... and both ended under hard friction (the first run for its last harden_steps, resumed)
        assert "contact_impratio:" in config
    # the first part stopped at learn_until or learn_steps, and the hardening continued from there
    budget, train = data["budget"], data["train"]
    assert train["learned_steps"] <= budget["learn_steps"]
    assert train["reached_learn_until"] or train["learned_steps"] == budget["learn_steps"]
    assert train["steps"] == train["learned_steps"] + budget["harden_steps"]
    rows = [json.loads(line) for line in (Path(train["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    assert any(r["kind"] == "eval" and r["step"] == train["learned_steps"] for r in rows)
    # fine-tuning started from the policy the stage-3 decision left in service, and the report says which
    service = data["in_service_after_retraining"]
    assert service["policy"] == ("retrained" if service["replaced"] else "first")
    assert Path(service["run_dir"]).name == ("retrain" if service["replaced"] else "train")
    # ... from the checkpoint that was deployed: the run's end (demo.DEPLOYED), whatever its best.pt
    started = json.loads((out / "finetune" / "finetune.json").read_text())["start"]
    assert started["checkpoint"] == service["checkpoint"] == str(Path(service["run_dir"]) / "last.pt")
    # the adaptation ran on episodes of scripted:excite (min(5, deploy_episodes) of them), deployed for it on the
    # same robot; in lock-step a busy machine cannot stop that run early
    excite = data["adapt"]["excite"]
    logged = len(list(Path(excite["log_dir"]).glob("episode_*.npz")))
    assert Path(data["adapt"]["posterior"]).is_file() and data["adapt"]["logs_from"] == "scripted:excite"
    assert data["adapt"]["episodes"] == excite["episodes"] == logged == 2 and excite["stop"] is None
    # ... which the report names: the default robot, the emulator in lock-step with the shipped reality
    assert data["robot"]["driver"] == "emulator" and Path(data["robot"]["reality"]) == REALITY
    assert data["robot"]["lockstep"] is True and data["robot"]["config_used"] == str(HARDWARE_CONFIG)
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
    assert ("on the servo emulator in lock-step (simulated time) with the reality "
            "`hardware_configs/reality/dclaw_pybullet_gap.yaml`") in report
    assert "episode(s) of `scripted:excite`" in report


def test_demo_refuses_to_overwrite_an_earlier_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    out.mkdir()
    (out / "demo.json").write_text("{}")
    assert main(["demo", "--quick", "--out", str(out), "--quiet"]) == 2
    assert "already holds a demo; pass --force" in capsys.readouterr().err
    assert (out / "demo.json").read_text() == "{}"


# --- --reality, --driver, --robot, --port ------------------------------------------------------------------
def test_a_bad_reality_file_is_refused_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    bad = tmp_path / "bad.yaml"
    bad.write_text("engine: mujoco\nparams:\n  finger_kp: -1\n")
    assert main(["demo", "--quick", "--out", str(out), "--quiet", "--reality", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "finger_kp" in err and str(bad) in err
    assert not out.exists()  # refused before training started
    assert main(["demo", "--quick", "--out", str(out), "--quiet", "--reality", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err
    assert "--reality" in err and "no such file" in err


def test_driver_robot_and_port_flags_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--driver", "dynamixel", "--reality", str(REALITY)]) == 2
    assert "does not apply with --driver dynamixel" in capsys.readouterr().err
    assert main(["demo", "--quick", "--out", str(out), "--robot", str(ROOT / "hardware_configs" / "dkitty.yaml")]) == 2
    assert "the demo trains, adapts and fine-tunes the claw's 'dclaw-turn'" in capsys.readouterr().err
    assert main(["demo", "--quick", "--out", str(out), "--robot", str(tmp_path / "none.yaml")]) == 2
    assert "--robot" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["demo", "--quick", "--out", str(out), "--driver", "mock"])
    assert not out.exists()


def test_the_robot_flags_reach_every_robot_stage(tmp_path: Path) -> None:
    real = demo_target(None, "dynamixel", "/dev/ttyUSB3", None)
    assert real == DemoRobot(HARDWARE_CONFIG, "dynamixel", "/dev/ttyUSB3", None)
    assert demo_robot(tmp_path, real) == HARDWARE_CONFIG  # real servos: the config as given
    assert "real Dynamixel servos on port `/dev/ttyUSB3`" in robot_sentence({**real.to_json(), "where": "real robot"})
    running = demo_target(None, "emulator", "/dev/pts/7", None)  # a running `s2r emulate`: its own reality
    assert running.reality is None and running.port == "/dev/pts/7"
    with pytest.raises(UserError, match="the running `s2r emulate` has its own reality"):
        demo_target(None, "emulator", "/dev/pts/7", REALITY)
    reality = tmp_path / "other.yaml"
    reality.write_text("engine: mujoco\nparams:\n  finger_kp: 2.6\n")
    emulated = demo_target(None, "emulator", None, reality)
    assert emulated.reality == reality and emulated.driver == "emulator" and emulated.lockstep
    assert demo_robot(tmp_path, emulated) == HARDWARE_CONFIG  # lock-step: no host to be late, the shipped timer
    real_time = demo_target(None, "emulator", None, reality, lockstep=False)
    assert not real_time.lockstep
    robot = demo_robot(tmp_path, real_time)
    assert robot == tmp_path / "robot.yaml" and "latency_timer_s: 0.004" in robot.read_text()
    report = json.loads(json.dumps(emulated.to_json()))
    assert report == {"config": str(HARDWARE_CONFIG), "driver": "emulator", "port": None, "reality": str(reality),
                      "lockstep": True}
    assert "in lock-step" in robot_sentence({**report, "where": "emulated robot"})
    assert "in lock-step" not in robot_sentence({**real_time.to_json(), "where": "emulated robot"})
    for driver, port in (("dynamixel", None), ("emulator", "/dev/pts/7")):
        with pytest.raises(UserError, match="--lockstep runs an emulator the demo starts"):
            demo_target(None, driver, port, None, lockstep=True)
    # the default is the emulated claw with the shipped reality, in lock-step
    assert demo_target(None, "emulator", None, None) == DemoRobot(HARDWARE_CONFIG, "emulator", None, REALITY,
                                                                 lockstep=True)


def _deployment(successes: int, episodes: int, return_mean: float | None = None) -> dict[str, Any]:
    return {"episodes": episodes, "success_rate": successes / episodes if episodes else None,
            "return_mean": return_mean, "loop": {}, "stop": None, "log_dir": "logs"}


def test_the_retrained_policy_serves_only_when_it_beats_the_first_on_the_robot() -> None:
    # worse, equal or slightly better on the robot: the first policy stays (the demo's seed-0 run measured 13/20
    # for the retrained policy after 18/20 for the first)
    for first, retrained in ((18, 13), (15, 15), (14, 17)):
        decision = retrained_serves(_deployment(first, 20), _deployment(retrained, 20))
        assert not decision.replaced, (first, retrained, decision.p_value)
    # clearly better: it replaces the first (one-sided Fisher p = 0.0016 for 20/20 against 12/20)
    decision = retrained_serves(_deployment(12, 20), _deployment(20, 20))
    assert decision.replaced and decision.p_value < 0.01
    # a deployment stopped before its first episode counts as no successes of no episodes: it replaces nothing
    assert not retrained_serves(_deployment(10, 20), {"episodes": 0, "success_rate": None}).replaced


def test_the_robot_test_looks_again_only_while_the_retrained_policy_is_ahead_without_passing() -> None:
    looked: list[int] = []

    def look_again(scores: tuple[int, int]) -> Any:
        def run(look: int) -> tuple[dict[str, Any], dict[str, Any]]:
            looked.append(look)
            return _deployment(scores[0], 20, 1.0), _deployment(scores[1], 20, 3.0)
        return run

    # the demo's seed-1 run: 17/20 against 20/20 is p = 0.12; 20 more each at 17 and 20 make 34/40 against 40/40,
    # p = 0.013, under the 0.025 each of two looks gets
    decision, first, retrained = robot_test(_deployment(17, 20, 2.0), _deployment(20, 20, 5.0), 2,
                                            look_again((17, 20)))
    assert looked == [2] and decision.replaced and 0.01 < decision.p_value < 0.025
    assert decision.confidence == pytest.approx(0.975)
    assert (first["episodes"], first["success_rate"], first["return_mean"]) == (40, 34 / 40, 1.5)
    assert (retrained["episodes"], retrained["success_rate"], retrained["return_mean"]) == (40, 1.0, 4.0)
    assert [d["episodes"] for d in first["looks"]] == [20, 20]
    # a second look that does not confirm the lead keeps the first policy
    looked.clear()
    decision, _, _ = robot_test(_deployment(17, 20), _deployment(20, 20), 2, look_again((19, 17)))
    assert looked == [2] and not decision.replaced
    # level or behind: no second look (stopping for futility); one look allowed: none either
    for first_s, retrained_s, looks in ((20, 20, 2), (18, 15, 2), (17, 20, 1)):
        looked.clear()
        decision, first, _ = robot_test(_deployment(first_s, 20), _deployment(retrained_s, 20), looks,
                                        look_again((0, 20)))
        assert looked == [] and not decision.replaced and first["episodes"] == 20
    # a clear win needs no second look: 12/20 against 20/20 is p = 0.0016
    decision, _, _ = robot_test(_deployment(12, 20), _deployment(20, 20), 2, look_again((0, 0)))
    assert looked == [] and decision.replaced


def test_merged_deployments_keep_every_look_and_weigh_returns_by_episodes() -> None:
    stopped = {**_deployment(3, 5, 2.0), "stop": "watchdog: stale reading"}
    merged = merge_deployments(_deployment(10, 20, 1.0), stopped)
    assert (merged["episodes"], merged["success_rate"], merged["return_mean"]) == (25, 13 / 25, 1.2)
    assert merged["stop"] == "watchdog: stale reading" and merged["log_dir"] == "logs"
    merged = merge_deployments(merged, _deployment(0, 0))
    assert merged["episodes"] == 25 and len(merged["looks"]) == 3 and merged["return_mean"] == 1.2
