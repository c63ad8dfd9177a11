"""The live view (``robot.view``, ``robot.rerun_view``; ``s2r deploy --view``): the controller shows every policy step
with the numbers of its trajectory-log row, a failing view never stops the robot, and a recording read back holds
the logged trajectory."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_runs import FAST_PERIOD_S, fast_robot_config
from test_controller import FAST_SETTINGS, make_controller, random_policy, run

from policies.finetune_config import FinetuneConfig
from robot.config import load_config
from robot.controller import Stop
from robot.view import SPAWN, ProcessView, StepRecord, ViewLayout, check_view_target, open_view
from s2r.api import deploy_task
from s2r.cli import build_parser
from s2r.commands.robot import register
from s2r.core.errors import ParameterError, UserError
from s2r.core.trajlog import Episode, read_episodes, read_run

NO_RERUN = "import sys; sys.modules['rerun'] = None; from s2r.cli import main; sys.exit(main(sys.argv[1:]))"
EPISODE_STEPS = 12
"""Not a multiple of the Rerun view's batch at FAST_PERIOD_S (5 steps): each episode ends with a partial batch."""


class Collect:
    """A view that keeps what it is shown."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.records: list[StepRecord] = []
        self.ends: list[tuple[int, dict[str, Any]]] = []
        self.fail_at = fail_at

    def step(self, record: StepRecord) -> None:
        if len(self.records) == self.fail_at:
            raise RuntimeError("the viewer went away")
        self.records.append(record)

    def episode_end(self, episode: int, meta: Mapping[str, Any]) -> None:
        self.ends.append((episode, dict(meta)))


def test_the_controller_shows_each_policy_step_as_its_log_row(tmp_path: Path) -> None:
    ctrl, _, _ = make_controller(random_policy(1, scale=2.0), faults="drop=0.05,seed=0",
                                 settings=replace(FAST_SETTINGS, episode_steps=EPISODE_STEPS))
    view = Collect()
    ctrl.view = view
    summary = run(ctrl, tmp_path, 2)
    assert summary.episodes == 2 and summary.stale_reads > 0  # stale (NaN) readings are shown too
    episodes = list(read_episodes(tmp_path))
    assert [e for e, _ in view.ends] == [0, 1]
    for index, ep in enumerate(episodes):
        records = [r for r in view.records if r.episode == index]
        assert [r.step for r in records] == list(range(ep.steps))
        assert view.ends[index][1]["return"] == ep.meta["return"]
        np.testing.assert_array_equal([r.reading.joint_pos for r in records], ep["joint_pos"][:-1])
        np.testing.assert_array_equal([r.reading.passive_pos for r in records], ep["passive_pos"][:-1])
        np.testing.assert_array_equal([r.reading.time for r in records], ep["time"][:-1])
        np.testing.assert_array_equal([r.command for r in records], ep["command"])
        np.testing.assert_array_equal([r.action for r in records], ep["action"])
        np.testing.assert_array_equal([r.hold for r in records], ep["hold"])
        np.testing.assert_array_equal([r.cycle_time_s for r in records], ep["cycle_time"])
        np.testing.assert_array_equal([r.period_error_s for r in records], ep["period_error"])
        np.testing.assert_array_equal([r.overrun for r in records], ep["overrun"])
        # A running total: between two records, the errors of the later step's cycle (the log's last row also gets
        # the errors after the episode's last step).
        totals = np.array([r.comm_errors for r in records])
        np.testing.assert_array_equal(np.diff(totals)[:-1], ep["comm_errors"][1:-1])
    assert view.records[-1].comm_errors <= summary.comm_errors and summary.comm_errors > 0


def test_a_failing_view_is_detached_and_the_run_goes_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ctrl, _, _ = make_controller(random_policy(2), settings=replace(FAST_SETTINGS, episode_steps=6))
    view = Collect(fail_at=3)
    ctrl.view = view
    with caplog.at_level(logging.ERROR, logger="robot.controller"):
        summary = run(ctrl, tmp_path, 2)
    assert summary.stop_kind == "completed" and summary.episodes == 2 and summary.torque_off
    assert len(view.records) == 3 and view.ends == []  # nothing more after the failure
    assert "the view failed (RuntimeError: the viewer went away); the run goes on without it" in caplog.text


def test_finetune_episodes_show_through_the_same_controller(tmp_path: Path) -> None:
    finetune = pytest.importorskip("s2r.finetune")  # torch, the `train` extra
    robot = fast_robot_config("dclaw", tmp_path)
    config = load_config(robot)
    cfg = FinetuneConfig(run_dir=tmp_path, robot=robot, driver="mock", lockstep=True)
    view = Collect()
    session = finetune.ControllerSession(cfg, config, deploy_task(config.task, None, None, config.task_spec()),
                                         logging.getLogger("test"), lambda: None, view=view)
    try:
        result = session.episode(random_policy(3), np.random.default_rng(0))
    finally:
        session.shutdown(Stop("completed", "test"))
        session.close()
    assert [r.step for r in view.records] == list(range(result.steps))
    np.testing.assert_array_equal([r.command for r in view.records], result.arrays["command"])
    assert view.ends == [(0, result.meta)]


def test_the_view_target_is_an_rrd_file_or_nothing(tmp_path: Path) -> None:
    for good in (None, SPAWN, "run.rrd", str(tmp_path / "a" / "b.rrd")):
        check_view_target(good)
    for bad in ("policy.onnx", "run", ".rrd"):
        with pytest.raises(ParameterError, match=r"^view must be a Rerun recording file ending in \.rrd"):
            check_view_target(bad)
    (tmp_path / "dir.rrd").mkdir()
    with pytest.raises(ParameterError, match="is a directory"):
        check_view_target(str(tmp_path / "dir.rrd"))


def deploy_args(config: Path, logs: Path, *extra: str) -> list[str]:
    return ["deploy", "scripted:random", "--robot", str(config), "--driver", "mock", "--lockstep", "--episodes", "2",
            "--episode-steps", str(EPISODE_STEPS), "--log-dir", str(logs), *extra]


def run_deploy(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="s2r")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


def test_a_view_that_is_no_rrd_file_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    config = fast_robot_config("dclaw", tmp_path)
    with pytest.raises(UserError, match=r"^--view must be a Rerun recording file ending in \.rrd"):
        run_deploy(deploy_args(config, tmp_path / "logs", "--view", str(tmp_path / "policy.onnx")))
    assert not (tmp_path / "logs").exists()


def test_without_rerun_view_names_the_extra_and_writes_nothing(tmp_path: Path) -> None:
    config = fast_robot_config("dclaw", tmp_path)
    done = subprocess.run([sys.executable, "-c", NO_RERUN, *deploy_args(config, tmp_path / "logs", "--view",
                                                                        str(tmp_path / "run.rrd"))],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().endswith("the live view (--view) needs the Python package 'rerun', which is not "
                                        "installed; install it with: pip install 's2r[view]'"), done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [config.name]


def test_finetune_refuses_a_view_that_is_no_rrd_file_by_its_flag(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    config = fast_robot_config("dclaw", tmp_path)
    args = build_parser().parse_args(["finetune", str(tmp_path / "run"), "--robot", str(config), "--out",
                                      str(tmp_path / "ft"), "--episodes", "1", "--view", "policy.onnx"])
    with pytest.raises(UserError, match=r"^--view must be a Rerun recording file ending in \.rrd"):
        args.func(args)
    assert sorted(p.name for p in tmp_path.iterdir()) == [config.name]


def test_finetune_without_rerun_names_the_extra_and_writes_nothing(tmp_path: Path) -> None:
    pytest.importorskip("torch")  # s2r finetune names the `train` extra first
    config = fast_robot_config("dclaw", tmp_path)
    done = subprocess.run([sys.executable, "-c", NO_RERUN, "finetune", str(tmp_path / "run"), "--robot", str(config),
                           "--episodes", "1", "--out", str(tmp_path / "ft"), "--view",
                           str(tmp_path / "run.rrd")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().endswith("the live view (--view) needs the Python package 'rerun', which is not "
                                        "installed; install it with: pip install 's2r[view]'"), done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [config.name]


def test_a_view_that_cannot_start_stops_the_deploy_before_the_robot_moves(tmp_path: Path) -> None:
    pytest.importorskip("rerun")
    layout = ViewLayout.of(load_config("dclaw"))
    with pytest.raises(UserError, match=r"^the live view could not start: .*Failed to create file"):
        ProcessView(layout, tmp_path / "missing" / "run.rrd", "test")


def test_a_view_whose_process_dies_is_reported_and_leaves_no_file(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("rerun")
    ctrl, _, _ = make_controller(random_policy(5), settings=replace(FAST_SETTINGS, episode_steps=4))
    target = tmp_path / "run.rrd"
    with caplog.at_level(logging.WARNING), open_view(str(target), ctrl.config) as view:
        assert isinstance(view, ProcessView) and view.pid is not None
        os.kill(view.pid, signal.SIGKILL)
        ctrl.view = view
        deadline = time.monotonic() + 30
        while ctrl.view is view and time.monotonic() < deadline:  # until a write meets the closed pipe
            ctrl.episode(np.random.default_rng(0))
        assert ctrl.view is not view  # detached
    assert "the view failed (BrokenPipeError" in caplog.text
    assert "the live view's process failed (exit status -9); the view is incomplete" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing half-written


# --- the Rerun recording, read back ----------------------------------------------------------------
def read_recording(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """Every temporal entity of a recording: its ``step`` and ``time`` (s) indexes and its first component's rows,
    in step order."""
    rerun_chunk = pytest.importorskip("rerun.chunk")
    parts: dict[str, list[dict[str, Any]]] = {}
    for chunk in rerun_chunk.RrdReader(path).stream().to_chunks():
        if chunk.is_static or "step" not in chunk.timeline_names:
            continue
        batch = chunk.to_record_batch()
        data = [n for n in batch.schema.names if n not in ("rerun.controls.RowId", "step", "time")]
        assert len(data) == 1, data
        parts.setdefault(chunk.entity_path, []).append({
            "step": batch.column("step").to_numpy(),
            "time": batch.column("time").cast("int64").to_numpy() * 1e-9,
            "values": batch.column(data[0]).to_pylist(),
        })
    out = {}
    for entity, chunks in parts.items():
        steps = np.concatenate([c["step"] for c in chunks])
        order = np.argsort(steps, kind="stable")
        values = [v for c in chunks for v in c["values"]]
        out[entity] = {"step": steps[order], "time": np.concatenate([c["time"] for c in chunks])[order],
                       "values": np.array([values[i] for i in order], dtype=object)}
    return out


def rows(entity: dict[str, np.ndarray]) -> np.ndarray:
    return np.array([np.asarray(v, dtype=np.float64) for v in entity["values"]])


def logged(episodes: list[Episode], name: str, readings: bool = False) -> np.ndarray:
    """A log array over every episode; the reading arrays without the final reading (no step acts on it)."""
    return np.concatenate([e[name][:-1] if readings else e[name] for e in episodes])


def test_deploy_records_the_logged_trajectory_to_an_rrd_file(tmp_path: Path) -> None:
    pytest.importorskip("rerun")
    config = fast_robot_config("dclaw", tmp_path)
    logs, rrd = tmp_path / "logs", tmp_path / "view" / "run.rrd"
    assert run_deploy(deploy_args(config, logs, "--faults", "drop=0.05,seed=0", "--view", str(rrd))) == 0
    assert sorted(p.name for p in rrd.parent.iterdir()) == ["run.rrd"]  # the temporary file was renamed
    episodes = list(read_episodes(logs))
    total = sum(e.steps for e in episodes)
    assert total == 2 * EPISODE_STEPS
    rec = read_recording(rrd)
    joint_pos, command = logged(episodes, "joint_pos", readings=True), logged(episodes, "command")
    assert np.isnan(joint_pos).any()  # stale readings: NaN in the log and in the view
    for j, name in enumerate(read_run(logs).joint_names):
        joint = rec[f"/joints/{name}"]
        np.testing.assert_array_equal(joint["step"], np.arange(total))
        values = rows(joint)
        assert values.shape == (total, 2)
        np.testing.assert_array_equal(values[:, 0], command[:, j])
        np.testing.assert_array_equal(values[:, 1], joint_pos[:, j])
    times = logged(episodes, "time", readings=True)
    np.testing.assert_allclose(rec["/joints/f0_top"]["time"], times - times[0], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(rows(rec["/passive/valve"])[:, 0], logged(episodes, "passive_pos", True)[:, 0])
    jitter = logged(episodes, "period_error")
    np.testing.assert_array_equal(rows(rec["/timing/jitter"])[:, 0], jitter)
    np.testing.assert_allclose(rows(rec["/timing/period"])[:, 0], FAST_PERIOD_S + jitter, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(rows(rec["/timing/cycle_time"])[:, 0], logged(episodes, "cycle_time"))
    np.testing.assert_array_equal(rows(rec["/timing/overrun"])[:, 0], logged(episodes, "overrun"))
    errors = rows(rec["/bus/comm_errors"])[:, 0]
    assert errors[-1] > 0 and np.all(np.diff(errors) >= 0)
    texts = rec["/episodes"]["values"]
    assert len(texts) == 2 and str(texts[0][0]).startswith("episode 0: ")


def test_deploy_records_the_imu_of_a_legged_robot_step_by_step(tmp_path: Path) -> None:
    pytest.importorskip("rerun")
    logs, rrd = tmp_path / "logs", tmp_path / "kitty.rrd"
    # The shipped 10 Hz: the view sends each step as it happens (the batched path is the test above).
    assert run_deploy(["deploy", "scripted:random", "--robot", "dkitty", "--driver", "mock", "--lockstep",
                       "--episodes", "1", "--episode-steps", "6", "--log-dir", str(logs), "--view", str(rrd)]) == 0
    (episode,) = read_episodes(logs)
    rec = read_recording(rrd)
    for j, name in enumerate(read_run(logs).joint_names):
        np.testing.assert_array_equal(rows(rec[f"/joints/{name}"]), np.stack(
            [episode["command"][:, j], episode["joint_pos"][:-1, j]], axis=1))
    quat = episode["base_quat"][:-1]
    upright = 1.0 - 2.0 * (quat[:, 1] ** 2 + quat[:, 2] ** 2)
    np.testing.assert_allclose(rows(rec["/imu/tilt"])[:, 0], np.arccos(np.clip(upright, -1, 1)), atol=1e-12)
    np.testing.assert_array_equal(rows(rec["/imu/angvel"]), episode["base_angvel"][:-1])
    np.testing.assert_allclose(rows(rec["/imu/age"])[:, 0], episode["imu_age"][:-1], atol=1e-12)
    torso = rows(rec["/torso"])
    np.testing.assert_allclose(torso.reshape(-1, 4), quat[:, [1, 2, 3, 0]], atol=1e-7)
