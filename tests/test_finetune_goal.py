"""``s2r finetune`` of a goal-conditioned run (``s2r/DClawTurnGoal-v0``): episodes on the emulated claw with
commanded goals (logged with every reading), the robot's transitions replayed with hindsight goals as in training,
their rewards the environment's ``compute_reward`` of the achieved goals read from the logged states, and the
refusals of goals that cannot be."""

from __future__ import annotations

import io
import json
import math
import shutil
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from cli_runs import fast_robot_config, train_tiny

from policies.checkpoint import load_checkpoint, save_checkpoint
from policies.finetune import Finetuner, GoalSetup, build_agent, goal_segments_from_logs
from policies.finetune_config import FinetuneConfig
from policies.her import HerReplayBuffer
from policies.replay import ReplayBuffer
from s2r.cli import main
from s2r.core.errors import ParameterError
from s2r.core.trajlog import read_episodes, read_run
from sim.tasks import GOAL_IDS
from sim.tasks.actions import wrap_angle

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.0
"""The commanded valve angle (rad)."""
TOLERANCE = 0.1
"""The claw's goal tolerance (rad): the sparse reward is 0 within it, else -1."""
SMALL_ROUNDS = ["--incumbent-episodes", "1", "--explore-episodes", "1", "--gate-episodes", "1",
                "--critic-warmup", "5", "--updates-per-step", "1"]


@pytest.fixture(scope="module")
def goal_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny(GOAL_IDS[0], tmp_path_factory.mktemp("goalft") / "run")


@pytest.fixture(scope="module")
def fast_robot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fast_robot_config("dclaw", tmp_path_factory.mktemp("robot"))


@pytest.fixture(scope="module")
def finetuned(goal_run: Path, fast_robot: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """Three episodes (the incumbent, one of exploration, the candidate) toward ``TARGET`` on the emulated claw."""
    out = tmp_path_factory.mktemp("ft") / "ft"
    args = ["finetune", str(goal_run), "--robot", str(fast_robot), "--driver", "emulator", "--lockstep",
            "--episodes", "3", "--out", str(out), "--quiet", "--json", "--goal", f"target={TARGET}", *SMALL_ROUNDS]
    printed = io.StringIO()
    with redirect_stdout(printed):
        assert main(args) == 0
    return out, json.loads(printed.getvalue().strip().splitlines()[-1])


def _angle_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle (rad) between (cos, sin) rows, computed here from the angles themselves."""
    return np.abs(wrap_angle(np.arctan2(a[:, 1], a[:, 0]) - np.arctan2(b[:, 1], b[:, 0])))


def test_a_goal_run_fine_tunes_on_the_emulated_claw_toward_its_commanded_goal(
        goal_run: Path, finetuned: tuple[Path, dict]) -> None:
    out, summary = finetuned
    assert summary["episodes_done"] == 3 and summary["stop_kind"] == "completed"
    assert [e["kind"] for e in summary["episodes"]] == ["eval-incumbent", "explore", "eval-candidate"]
    assert summary["goals"] == {"commanded": {"target": TARGET}, "her_strategy": "future", "her_k": 4}
    steps = [e["steps"] for e in summary["episodes"]]
    assert [e["real_transitions"] for e in summary["episodes"]] == list(np.cumsum(steps))
    assert [e["updates"] for e in summary["episodes"]] == [5, steps[1], 0]
    before, after = load_checkpoint(goal_run / "best.pt"), load_checkpoint(out / "last.pt")
    assert after.obs_dim == before.obs_dim == 22 and after.env_id == GOAL_IDS[0]
    # one input scale: the deployed statistics, whose goal half training fitted to achieved goals, normalize the
    # hindsight goals as in training
    np.testing.assert_array_equal(after.obs_mean, before.obs_mean)
    np.testing.assert_array_equal(after.obs_var, before.obs_var)
    assert any(not np.array_equal(before.actor_state[k].numpy(), after.actor_state[k].numpy())
               for k in before.actor_state), "the actor did not change"
    assert sorted(p.name for p in (out / "onnx").iterdir()) == ["deployed.onnx", "round_001.onnx"]
    assert (out / "policy.onnx").read_bytes() == (out / "onnx" / "deployed.onnx").read_bytes()
    info = read_run(out / "logs")
    assert info.extra["goal_conditioned"] is True and info.extra["goal"] == {"target": TARGET}
    for ep in read_episodes(out / "logs"):
        assert ep.meta["goal"] == {"target": TARGET}
        np.testing.assert_array_equal(ep["goal"], np.full((ep.steps + 1, 1), TARGET))
        # the goal policy's observation: the goal view's, its last block (cos, sin) of the commanded angle
        np.testing.assert_allclose(ep["obs"][:, 20:], np.tile([math.cos(TARGET), math.sin(TARGET)],
                                                              (ep.steps + 1, 1)), atol=1e-6)


def test_the_robot_transitions_are_relabelled_with_the_environments_sparse_reward(
        goal_run: Path, finetuned: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = finetuned
    cfg = FinetuneConfig(run_dir=goal_run, robot=ROOT / "hardware_configs" / "dclaw.yaml", out=tmp_path / "ft",
                         sim_fraction=0.5)
    learning, _ = build_agent(cfg)
    goal = learning.goal
    assert isinstance(goal, GoalSetup) and goal.strategy == "future" and goal.k == 4
    assert isinstance(learning.sim, HerReplayBuffer) and len(learning.sim) > 0  # the run's HER replay, for mixing

    segments = goal_segments_from_logs(out / "logs", goal)
    episodes = list(read_episodes(out / "logs"))
    assert [s.episode for s in segments] == [0, 1, 2]
    for seg, ep in zip(segments, episodes, strict=True):
        angle = ep["passive_pos"][1:, 0]  # where each action left the valve
        np.testing.assert_allclose(seg.next_achieved_goals, np.stack([np.cos(angle), np.sin(angle)], 1), atol=1e-6)
        reached = np.abs(wrap_angle(angle - TARGET)) < TOLERANCE
        np.testing.assert_array_equal(seg.rewards, np.where(reached, 0.0, -1.0))
        assert not np.array_equal(seg.rewards, ep["reward"])  # not the robot's shaped reward

    tuner = Finetuner(cfg, learning, 1000)
    assert tuner.add_logs(out / "logs") == sum(len(s.rewards) for s in segments)
    assert tuner.add_logs(out / "logs") == 0  # every logged episode is in already
    assert isinstance(tuner.real, HerReplayBuffer)
    raw = tuner.real.sample_raw(4096)
    re = raw["relabelled"]
    assert 0.7 < re.mean() < 0.9  # k = 4: four hindsight goals for one commanded
    commanded = np.array([math.cos(TARGET), math.sin(TARGET)], np.float32)
    np.testing.assert_allclose(raw["goal"][~re], np.tile(commanded, ((~re).sum(), 1)), atol=1e-6)
    # a hindsight goal is one the same episode achieved at this step or later (future), and its reward the sparse
    # reward of that goal
    buf = tuner.real
    for i in np.flatnonzero(re)[:200]:
        slot = raw["idx"][i]
        later = np.arange(slot, buf.episode_start[slot] + buf.episode_length[slot])
        assert (buf.next_achieved_goal[later] == raw["goal"][i]).all(axis=1).any()
    achieved = tuner.real.next_achieved_goal[raw["idx"]]
    want = np.where(_angle_between(achieved, raw["goal"]) < TOLERANCE, 0.0, -1.0)
    np.testing.assert_array_equal(raw["rewards"], want)
    assert (raw["rewards"][re] == 0).mean() > (raw["rewards"][~re] == 0).mean()  # HER's premise, on the robot


def test_a_goal_run_trained_without_her_replays_its_commanded_goals(tmp_path: Path, finetuned: tuple[Path, dict],
                                                                    goal_run: Path) -> None:
    out, _ = finetuned
    run = tmp_path / "run"
    shutil.copytree(goal_run, run)
    for name in ("best.pt", "last.pt"):
        ckpt = load_checkpoint(run / name)
        ckpt.config["her_strategy"] = "none"
        save_checkpoint(run / name, ckpt)
    cfg = FinetuneConfig(run_dir=run, robot=ROOT / "hardware_configs" / "dclaw.yaml", out=tmp_path / "ft",
                         sim_fraction=0.0)
    learning, _ = build_agent(cfg)
    assert learning.goal is not None and learning.goal.strategy is None
    tuner = Finetuner(cfg, learning, 1000)
    n = tuner.add_logs(out / "logs")
    assert isinstance(tuner.real, ReplayBuffer) and len(tuner.real) == n
    segments = goal_segments_from_logs(out / "logs", learning.goal)
    # the commanded goal only, and the environment's rewards (not the robot's shaped ones)
    np.testing.assert_array_equal(tuner.real.act_rew_term[:n, -2], np.concatenate([s.rewards for s in segments]))
    np.testing.assert_array_equal(tuner.real.obs[:n], np.concatenate([s.observations[:-1] for s in segments]))


@pytest.mark.parametrize(("extra", "message"), [
    (["--goal", "angle=1"], "--goal names 'angle', which is not a goal of the task"),
    (["--goal", "target=9"], "--goal target = 9 rad is outside its range"),
    (["--goal-schedule", "SCHEDULE"], "--episodes is 2, but the goal schedule"),
])
def test_bad_goals_are_refused_before_the_robot_is_touched(
        goal_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str) -> None:
    schedule = tmp_path / "goals.yaml"
    schedule.write_text("goals:\n  - {target: 0.5}\n")
    extra = [str(schedule) if e == "SCHEDULE" else e for e in extra]
    out = tmp_path / "ft"
    args = ["finetune", str(goal_run), "--robot", str(ROOT / "hardware_configs" / "dclaw.yaml"), "--driver", "mock",
            "--episodes", "2", "--out", str(out), "--quiet", *extra]
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()  # refused before anything is written


def test_one_goal_and_a_schedule_do_not_go_together(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="goal_schedule and goal do not go together"):
        FinetuneConfig(run_dir=tmp_path, robot=tmp_path / "r.yaml", goal={"target": 1.0},
                       goal_schedule=tmp_path / "g.yaml")
