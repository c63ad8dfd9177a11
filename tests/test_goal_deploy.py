"""Goal-conditioned deployment: the goal layout in an ONNX file's metadata, ``s2r deploy --goal`` and
``--goal-schedule`` on the lock-step mock (the goal policy's observation built from the task's goal view, the goal
logged with every reading), and the refusals of bad goals before anything is written."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from export.metadata import GoalSpec, GoalValue, ObsSlice, PolicyMetadata, Provenance, parse_metadata
from export.onnx_policy import OnnxPolicy
from robot.config import load_config
from robot.goals import check_goal, load_goal_schedule, parse_goal
from s2r.commands.robot import register
from s2r.core.errors import ParameterError, UserError
from s2r.core.trajlog import RunInfo, TrajectoryWriter, read_episodes, read_run
from s2r.policy_files import load_policy
from sim.goal_env import GoalView, goal_obs_layout
from sim.tasks import GOAL_IDS
from sim.tasks.actions import wrap_angle
from sim.tasks.dclaw_turn import DClawTurn

ROOT = Path(__file__).resolve().parents[1]
CONFIG_PATH = ROOT / "hardware_configs" / "dclaw.yaml"
SPEC = load_config(CONFIG_PATH).task_spec()
TASK = DClawTurn(variant="goal", spec=SPEC)
LAYOUT = goal_obs_layout(TASK)
GOAL = GoalSpec("desired_goal", tuple(GoalValue(f.name, f.unit, f.low, f.high) for f in TASK.goal_fields),
                TASK.goal_encoding)
STEPS = 5


@pytest.fixture
def fast_config(tmp_path: Path) -> Path:
    """The claw config at a 10 ms control period (lock-step runs at the shipped watchdog limits)."""
    data = yaml.safe_load(CONFIG_PATH.read_text())
    data["control_period_s"] = 0.01
    data["control_period_override"] = True
    path = tmp_path / "fast.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _metadata(**overrides: object) -> PolicyMetadata:
    slices = LAYOUT.slices()
    fields: dict[str, object] = dict(
        env_id=GOAL_IDS[0], engine="mujoco", obs_size=LAYOUT.size, action_size=SPEC.n_joints,
        action_output="normalized", action_low=(-1.0,) * SPEC.n_joints, action_high=(1.0,) * SPEC.n_joints,
        provenance=Provenance("td3", 0, "0" * 64, "none", "none"), s2r_version="test",
        export_time_utc="2026-01-01T00:00:00+00:00", task=SPEC.name, robot=SPEC.robot, joint_names=SPEC.joint_names,
        obs_layout=tuple(ObsSlice(f.name, *slices[f.name], f.unit) for f in LAYOUT.fields),
        control_period_s=SPEC.control_period, goal=GOAL,
    )
    fields.update(overrides)
    return PolicyMetadata(**fields)  # type: ignore[arg-type]


def _goal_onnx(path: Path, **overrides: object) -> Path:
    """obs (1, 22) -> tanh(obs @ W) (1, 9), built with onnx.helper, with the goal claw's metadata."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).normal(0, 0.5, (LAYOUT.size, SPEC.n_joints)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["obs", "W"], ["z"]), helper.make_node("Tanh", ["z"], ["action"])],
        "tiny_goal_policy",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, [1, LAYOUT.size])],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, [1, SPEC.n_joints])],
        [numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    for key, value in _metadata(**overrides).to_props().items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


def deploy(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, object]]:
    parser = argparse.ArgumentParser(prog="s2r")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["deploy", *argv, "--json"])
    code = args.func(args)
    out, _ = capsys.readouterr()
    return code, json.loads(out.strip().splitlines()[-1])


def _mock(config: Path, logs: Path, episodes: int) -> list[str]:
    return ["--robot", str(config), "--driver", "mock", "--lockstep", "--episodes", str(episodes),
            "--episode-steps", str(STEPS), "--log-dir", str(logs)]


# --- the ONNX contract --------------------------------------------------------------------------------------
def test_the_goal_layout_round_trips_through_the_metadata_and_the_policy_exposes_it(tmp_path: Path) -> None:
    path = _goal_onnx(tmp_path / "goal.onnx")
    policy = OnnxPolicy(path)
    assert policy.goal == GOAL and policy.obs_size == 22
    assert [b.name for b in policy.info.obs_layout] == ["joint_pos", "valve_cos_sin", "last_action",  # type: ignore[union-attr]
                                                        "desired_goal"]
    assert policy.compatibility_problems(SPEC) == []  # the flat spec's blocks, then the goal block
    loaded = load_policy(path, spec=SPEC)
    assert loaded.goal_conditioned and loaded.obs_layout[-1] == ("desired_goal", (20, 22))
    # A file whose blocks are not the task's is refused against it.
    other = _goal_onnx(tmp_path / "other.onnx", obs_layout=(ObsSlice("joint_pos", 0, 9, "rad"),
                                                            ObsSlice("tip_pos", 9, 20, "m"),
                                                            ObsSlice("desired_goal", 20, 22, "-")))
    with pytest.raises(UserError, match=r"observation block 'tip_pos' of the goal policy is not in the task"):
        load_policy(other, spec=SPEC)


def test_bad_goal_metadata_is_refused_naming_the_key() -> None:
    props = _metadata().to_props()
    parse_metadata(props, "f.onnx")
    bad = json.loads(props["goal"]) | {"block": "last_action"}
    with pytest.raises(UserError, match=r"metadata key goal.block must be the name of the last obs_layout block "
                                        r"\(desired_goal\)"):
        parse_metadata({**props, "goal": json.dumps(bad)}, "f.onnx")
    bad = json.loads(props["goal"])
    bad["fields"][0]["low"] = 5.0
    with pytest.raises(UserError, match=r"goal.fields\[0\].high must be a number >= low"):
        parse_metadata({**props, "goal": json.dumps(bad)}, "f.onnx")


# --- deploying ----------------------------------------------------------------------------------------------
def test_deploy_with_one_goal_feeds_it_to_the_policy_and_logs_it_every_step(
        tmp_path: Path, fast_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _goal_onnx(tmp_path / "goal.onnx")
    logs = tmp_path / "logs"
    code, summary = deploy([str(path), *_mock(fast_config, logs, 2), "--goal", "target=1.57"], capsys)
    assert code == 0 and summary["episodes"] == 2
    assert read_run(logs).extra["goal"] == {"target": 1.57} and read_run(logs).extra["goal_conditioned"] is True
    policy = OnnxPolicy(path)
    episodes = list(read_episodes(logs))
    for ep in episodes:
        assert ep.meta["goal"] == {"target": 1.57} and ep.meta["goal_names"] == ["target"]
        np.testing.assert_array_equal(ep["goal"], np.full((STEPS + 1, 1), 1.57))
        obs = ep["obs"]
        assert obs.shape == (STEPS + 1, 22)
        # The goal view: the flat observation's blocks without the target error, then (cos, sin) of the goal.
        np.testing.assert_allclose(obs[:, :9], ep["joint_pos"], atol=1e-6)
        angle = ep["passive_pos"][:, 0]
        np.testing.assert_allclose(obs[:, 9:11], np.stack([np.cos(angle), np.sin(angle)], axis=1), atol=1e-6)
        np.testing.assert_allclose(obs[:, 20:], np.tile([math.cos(1.57), math.sin(1.57)], (STEPS + 1, 1)),
                                   atol=1e-7)
        np.testing.assert_allclose(ep["action"], np.stack([policy.act(o) for o in obs[:-1]]), atol=1e-6)
    # The starts are the seed's whether or not the goal is commanded.
    code, _ = deploy([str(path), *_mock(fast_config, tmp_path / "drawn", 2)], capsys)
    drawn = list(read_episodes(tmp_path / "drawn"))
    assert code == 0 and [ep.meta["start_command"] for ep in drawn] == [ep.meta["start_command"] for ep in episodes]
    for ep in drawn:  # the task's own goals, logged the same way
        np.testing.assert_array_equal(ep["goal"], np.full((STEPS + 1, 1), ep.meta["goal"]["target"]))
    assert drawn[0].meta["goal"] != drawn[1].meta["goal"]


def test_deploy_with_a_goal_schedule_runs_one_goal_per_episode(
        tmp_path: Path, fast_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    schedule = tmp_path / "goals.yaml"
    schedule.write_text("goals:\n  - {target: 1.0}\n  - target: -2.5\n  - {target: 0.0}\n")
    logs = tmp_path / "logs"
    code, summary = deploy([str(_goal_onnx(tmp_path / "goal.onnx")), *_mock(fast_config, logs, 2),
                            "--goal-schedule", str(schedule)], capsys)
    assert code == 0 and summary["episodes"] == 2  # fewer episodes than goals: the first ones
    goals = [ep["goal"][:, 0] for ep in read_episodes(logs)]
    np.testing.assert_array_equal(goals, [[1.0] * (STEPS + 1), [-2.5] * (STEPS + 1)])
    assert read_run(logs).extra["goal_schedule"] == str(schedule)


def test_a_flat_policy_takes_a_commanded_goal_in_its_target_error(
        tmp_path: Path, fast_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs = tmp_path / "logs"
    code, _ = deploy(["scripted:hold", *_mock(fast_config, logs, 1), "--goal", "target=-1"], capsys)
    (ep,) = read_episodes(logs)
    assert code == 0 and ep["obs"].shape == (STEPS + 1, 21)
    np.testing.assert_allclose(ep["obs"][:, 20], wrap_angle(-1.0 - ep["passive_pos"][:, 0]), atol=1e-6)


def test_bad_goals_are_refused_before_anything_is_written(
        tmp_path: Path, fast_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = str(_goal_onnx(tmp_path / "goal.onnx"))
    logs = tmp_path / "logs"
    base = [policy, *_mock(fast_config, logs, 2)]
    with pytest.raises(UserError, match=r"^--goal names 'valve', which is not a goal of the task 'dclaw-turn'; its "
                                        r"goal values: target \(rad, -3.1416 to 3.1416\)$"):
        deploy([*base, "--goal", "valve=1.57"], capsys)
    with pytest.raises(UserError, match=r"^--goal target = 4 rad is outside its range -3.1416 to 3.1416 rad"):
        deploy([*base, "--goal", "target=4"], capsys)
    schedule = tmp_path / "goals.yaml"
    for text, message in (
        ("goals:\n  - {target: 1.0}\n", r"--episodes is 2, but the goal schedule .* holds 1 goal\(s\)"),
        ("goals:\n  - {target: 1.0}\n  - {taget: 1.0}\n", r"goals\[1\] names 'taget', which is not a goal .*did you "
                                                          r"mean 'target'"),
        ("goals:\n  - {target: 1.0}\n  - {target: .nan}\n", r"goals\[1\] target must be a finite number \(rad\)"),
        ("goals:\n  - {target: 1.0}\n  - {}\n", r"goals\[1\] lacks target"),
        ("goal:\n  - {target: 1.0}\n", r"unknown field goal \(did you mean 'goals'\?\)"),
        ("goals: []\n", r"goals must be a non-empty list"),
    ):
        schedule.write_text(text)
        with pytest.raises(UserError, match=message):
            deploy([*base, "--goal-schedule", str(schedule)], capsys)
    assert not logs.exists()
    for argv in (["--goal", "target"], ["--goal", "target=x"], ["--goal", "target=1,target=2"],
                 ["--goal", "target=1", "--goal-schedule", str(schedule)]):
        with pytest.raises(SystemExit):
            deploy([*base, *argv], capsys)
    assert not logs.exists()


def test_goal_checks_in_the_library(tmp_path: Path) -> None:
    assert parse_goal("target=1.5") == {"target": 1.5}
    schedule = tmp_path / "goals.yaml"
    schedule.write_text("goals: [{target: 1}, {target: -0.25}]\n")
    assert load_goal_schedule(schedule, TASK) == ({"target": 1.0}, {"target": -0.25})
    with pytest.raises(ValueError, match="not a finite number"):
        parse_goal("target=inf")
    assert check_goal(TASK, {"target": -3}) == {"target": -3.0}
    with pytest.raises(ParameterError, match="lacks target"):
        check_goal(TASK, {})
    view = GoalView(TASK)
    assert view.spec.obs_layout == LAYOUT and view.spec.joint_names == SPEC.joint_names


# --- the logs -----------------------------------------------------------------------------------------------
def _arrays(steps: int, goal: np.ndarray | None) -> dict[str, np.ndarray]:
    j, p = SPEC.n_joints, 1
    arrays = {
        "time": np.arange(steps + 1, dtype=float), "joint_pos": np.zeros((steps + 1, j)),
        "joint_vel": np.zeros((steps + 1, j)), "joint_effort": np.zeros((steps + 1, j)),
        "passive_pos": np.zeros((steps + 1, p)), "passive_vel": np.zeros((steps + 1, p)),
        "stale": np.zeros(steps + 1, np.int8), "obs": np.zeros((steps + 1, 21), np.float32),
        "action": np.zeros((steps, j)), "command": np.zeros((steps, j)), "reward": np.zeros(steps),
        "reward_terms": np.zeros((steps, 5)), "comm_errors": np.zeros(steps, np.int64),
        "cycle_time": np.zeros(steps), "period_error": np.zeros(steps),
    }
    return arrays if goal is None else {**arrays, "goal": goal}


def test_logs_without_a_goal_array_read_as_before_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    info = RunInfo("dclaw-turn", "dclaw", SPEC.joint_names, ("valve",), 0.1, "mock")
    writer = TrajectoryWriter(tmp_path / "logs", info)
    writer.write_episode(_arrays(3, None), {"goal": {"target": 1.0}})  # an older log's episode
    writer.write_episode(_arrays(3, np.full((4, 1), 2.0)), {"goal": {"target": 2.0}, "goal_names": ["target"]})
    old, new = read_episodes(tmp_path / "logs")
    assert "goal" not in old.arrays and old.meta["goal"] == {"target": 1.0}
    np.testing.assert_array_equal(new["goal"], np.full((4, 1), 2.0))
    with pytest.raises(ValueError, match=r"goal has shape \(3, 1\), expected \(4, G\)"):
        writer.write_episode(_arrays(3, np.zeros((3, 1))), {})
