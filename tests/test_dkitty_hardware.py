"""The quadruped's hardware path: its config, the controller with an IMU (mock on a fake clock: observation,
tilt and silence stops, the safe pose), scene placement, and deploy / emulate through the emulator."""

from __future__ import annotations

import argparse
import json
import math
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from robot_helpers import FakeClock, changed_config, config_data, with_changes

from robot.config import RobotConfig, config_from_mapping, load_config
from robot.controller import Controller, ControllerSettings, EpisodeResult, episode_start_action
from robot.hardware import MockScene, OpenOptions, RobotIO, open_robot
from robot.imu.mock import MockImuStream
from robot.imu.reader import ImuReader, SerialByteSource
from robot.mock import MockBus
from robot.runner import run_episodes, run_info
from robot.safety import Hold, SafetyLimits
from s2r.commands.robot import EXIT_SAFETY_STOP, register
from s2r.core.errors import UserError
from s2r.core.trajlog import TrajectoryWriter, read_episodes, read_run
from sim.rotations import quat_from_rotvec, tilt, yaw_of
from sim.state import RobotState
from sim.tasks.actions import clip_action
from sim.tasks.base import step_reward_terms, total_reward
from sim.tasks.dkitty import DKittyStand
from sim.tasks.spec import ACTION_RATE_TERM, FloatArray

ROOT = Path(__file__).resolve().parents[1]
CONFIG_PATH = ROOT / "hardware_configs" / "dkitty.yaml"
CLAW_PATH = ROOT / "hardware_configs" / "dclaw.yaml"
CONFIG = load_config(CONFIG_PATH)
PERIOD_S = CONFIG.control_period_s
FAST = ControllerSettings(spin_s=0.0)
TIPPED = quat_from_rotvec([1.0, 0.0, 0.0])
"""57 degrees about the torso's x axis: beyond the 45 degree bound."""


def kitty_config(changes: dict[str, Any], source: str = "test config") -> RobotConfig:
    """dkitty.yaml with dotted fields set (a value of ``...`` deletes the field)."""
    return changed_config(CONFIG_PATH, changes, source)


def write_config(tmp_path: Path, changes: dict[str, Any]) -> Path:
    path = tmp_path / "kitty.yaml"
    path.write_text(yaml.safe_dump(with_changes(config_data(CONFIG_PATH), changes), sort_keys=False))
    return path


def task_for(config: RobotConfig) -> DKittyStand:
    return replace(DKittyStand(), spec=config.task_spec())


def mock_robot(config: RobotConfig = CONFIG, faults: str | None = None,
               place: bool = True) -> tuple[FakeClock, RobotIO, MockBus, MockImuStream]:
    from robot.emulator.faults import parse_faults

    clock = FakeClock()
    io = open_robot(config, "mock", OpenOptions(faults=parse_faults(faults) if faults else None, clock=clock))
    io.bus.connect()
    bus = io.bus
    assert isinstance(bus, MockBus) and isinstance(io.placer, MockScene) and io.placer.imu is not None
    stream = io.placer.imu
    if not place:
        io = RobotIO(bus, io.imu, None)
    return clock, io, bus, stream


def controller(io: RobotIO, clock: FakeClock, policy: Any, config: RobotConfig = CONFIG, steps: int = 20) -> Controller:
    return Controller(policy, io.bus, task_for(config), config, settings=replace(FAST, episode_steps=steps),
                      clock=clock, sleep=clock.sleep, imu=io.imu, placer=io.placer)


def random_policy(seed: int = 0, scale: float = 0.3) -> Any:
    rng = np.random.default_rng(seed)
    return lambda obs: rng.uniform(-scale, scale, 12)


# --- the config ------------------------------------------------------------------------------------
def test_dkitty_yaml_matches_the_task_and_robel_ids() -> None:
    spec = CONFIG.task_spec()
    assert (CONFIG.robot, CONFIG.task, spec.name) == ("dkitty", "dkitty-stand", "dkitty-stand")
    assert CONFIG.joint_names == spec.joint_names
    assert CONFIG.joint_ids == (10, 11, 12, 20, 21, 22, 30, 31, 32, 40, 41, 42)
    assert CONFIG.servo.model_number == 1030 and CONFIG.encoders == ()
    assert np.all(CONFIG.low >= spec.low) and np.all(CONFIG.high <= spec.high)
    assert CONFIG.control_period_s == spec.control_period
    imu = CONFIG.imu
    assert imu is not None and imu.frame_version == 1 and imu.rate_hz >= 1 / PERIOD_S
    assert imu.max_tilt_rad == pytest.approx(spec.extras["max_tilt_rad"]) and imu.mounting_quat == (1, 0, 0, 0)
    assert CONFIG.safe_pose_rad is not None and len(CONFIG.safe_pose_rad) == 12


@pytest.mark.parametrize(("changes", "message"), [
    ({"imu": ...}, "field imu is missing: the task 'dkitty-stand' observes the orientation"),
    ({"imu.rate_hz": 5}, r"field imu.rate_hz must be a rate in \[10, 2000\] Hz"),
    ({"imu.baud": 57600}, "field imu.baud must be a line rate of at least 88889 bit/s"),
    ({"imu.max_tilt_rad": 1.0}, r"field imu.max_tilt_rad must be a tilt in \(0, 0.785398\] rad"),
    ({"imu.max_tilt_rad": "steep"}, "field imu.max_tilt_rad must be a finite number"),
    ({"imu.max_silence_s": 0.005}, "field imu.max_silence_s must be a time of at least 0.01 s"),
    ({"imu.max_silence_s": ...}, "field imu.max_silence_s is missing"),
    ({"imu.frame_version": 2}, "field imu.frame_version must be one of 1"),
    ({"imu.mounting_quat": [1, 1, 0, 0]}, "field imu.mounting_quat must be a unit quaternion"),
    ({"imu.gyro_range": 2000}, "unknown field imu.gyro_range"),
    ({"imu": [1, 2]}, "field imu must be a mapping"),
    ({"safe_pose_rad": [0.0] * 11}, "field safe_pose_rad must be a list of 12 finite angles"),
    ({"safe_pose_rad": [0.0, 1.3, -2.5] * 4}, r"field safe_pose_rad\[2\] must be an angle of fr_knee2 inside"),
    ({"servo.model_number": 1060}, r"servo.model_number must be 1020 \(XM430-W350\) or 1030 \(XM430-W210\)"),
    ({"joints.fr_knee2.low_rad": -2.2}, "joints.fr_knee2.low_rad must be a limit inside the task's range"),
    ({"encoders": {"valve": {"id": 50}}}, "field encoders must be one encoder per passive joint"),
    ({"control_period_s": 0.05}, "control_period_s must be the task's control period 0.1 s"),
])
def test_bad_fields_name_the_field_and_what_was_expected(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError, match=message):
        kitty_config(changes)


def test_imu_section_only_where_a_floating_base_is_and_encoders_may_be_omitted() -> None:
    claw = yaml.safe_load(CLAW_PATH.read_text())
    claw["imu"] = config_data(CONFIG_PATH)["imu"]
    with pytest.raises(UserError, match="field imu must be absent: the task 'dclaw-turn' has no floating base"):
        config_from_mapping(claw)
    assert kitty_config({"encoders": ...}).encoders == ()
    assert kitty_config({"safe_pose_rad": ...}).safe_pose_rad is None
    default_tilt = kitty_config({"imu.max_tilt_rad": ...}).imu
    assert default_tilt is not None and default_tilt.max_tilt_rad == pytest.approx(math.radians(45))


# --- the controller with an IMU (mock, fake clock) ----------------------------------------------------------
def test_observation_is_the_tasks_from_servos_and_imu() -> None:
    clock, io, _, _ = mock_robot()
    ctrl = controller(io, clock, random_policy())
    result = ctrl.episode(np.random.default_rng(3))
    assert result.complete and result.stop is None
    a = result.arrays
    t = result.steps
    assert a["base_quat"].shape == (t + 1, 4) and a["base_angvel"].shape == (t + 1, 3)
    assert np.all((a["imu_age"] >= 0) & (a["imu_age"] <= PERIOD_S))
    task = task_for(CONFIG)
    limits = SafetyLimits.from_config(CONFIG)
    last_action = episode_start_action(np.asarray(result.meta["start_command"]), limits)
    previous_action = last_action
    for k in range(t + 1):
        state = RobotState(a["time"][k], a["joint_pos"][k], a["joint_vel"][k], np.zeros(0), np.zeros(0),
                           base_quat=a["base_quat"][k], base_angvel=a["base_angvel"][k])
        np.testing.assert_array_equal(a["obs"][k], task.observe(state, last_action, {}))
        if k > 0:
            # The reward of step k-1, action-rate term included, as the sim env computes it.
            terms = step_reward_terms(task, state, {}, last_action, previous_action)
            np.testing.assert_array_equal(a["reward_terms"][k - 1], [terms[n] for n in task.spec.reward_terms])
            assert a["reward"][k - 1] == total_reward(terms)
            assert terms[ACTION_RATE_TERM] < 0.0  # a random policy jitters
        if k < t:
            previous_action, last_action = last_action, clip_action(a["action"][k])
    # The mock placed the torso level at the start's heading: the IMU says so.
    start_pose = np.asarray(result.meta["base_reset"]["base_pose"])
    assert result.meta["base_reset"]["placed"] is True
    np.testing.assert_allclose(a["base_quat"][0], start_pose[3:], atol=1e-6)
    np.testing.assert_allclose(a["joint_pos"][0], result.meta["start_command"], atol=0.01)
    assert result.meta["imu"]["frames"] > t and result.meta["imu"]["gaps"] == 0


def test_tilt_stops_within_a_period_and_folds_the_legs_before_the_torque_goes_off(tmp_path: Path) -> None:
    clock, io, bus, stream = mock_robot()
    calls: list[float] = []

    def tipping_policy(obs: np.ndarray) -> np.ndarray:
        calls.append(clock.t)
        if len(calls) == 5:
            stream.place(TIPPED)  # the robot falls over after its 5th action
        return np.zeros(12)

    ctrl = controller(io, clock, tipping_policy)
    writer = TrajectoryWriter(tmp_path / "logs", run_info(CONFIG, "mock", ctrl.episode_steps))
    summary = run_episodes(ctrl, writer, 2, np.random.default_rng(0))
    assert summary.stop_kind == "safety" and summary.stop_reason.startswith("tilt 1.000 rad (57 deg) beyond the bound")
    assert summary.episodes == 0 and summary.episodes_logged == 1 and summary.torque_off
    (ep,) = read_episodes(tmp_path / "logs")
    assert ep.steps == 5 and tilt(ep["base_quat"][-1]) == pytest.approx(1.0, abs=1e-6)
    assert ep["time"][-1] - calls[-1] <= PERIOD_S + 1e-9  # the first reading after the fall stopped it
    assert "tilt" in ep.meta["stop_reason"]
    # Folded into the safe pose, then the torque went off.
    safe = np.asarray(CONFIG.safe_pose_rad)
    np.testing.assert_allclose(bus.goal, safe, atol=0.002)
    np.testing.assert_allclose(bus.q, safe, atol=0.02)
    assert not bus.torque_enabled and not any(bus.torque_status().values())


def test_tilt_during_the_reset_stops_too() -> None:
    clock, io, _, stream = mock_robot(place=False)  # nobody places the robot: it lies where it fell
    stream.place(TIPPED)
    ctrl = controller(io, clock, random_policy())
    result = ctrl.episode(np.random.default_rng(0))
    assert result.stop is not None and "tilt" in result.stop.reason and result.steps == 0
    assert result.meta["base_reset"]["placed"] is False and "person" in result.meta["base_reset"]["why"]


def test_imu_silence_stops_with_the_reason_within_the_timeout() -> None:
    clock, io, _, _ = mock_robot(faults="imu_silent@12cycles")
    ctrl = controller(io, clock, random_policy())
    result = ctrl.episode(np.random.default_rng(0))
    stop = result.stop
    assert stop is not None and stop.kind == "safety"
    assert stop.reason.startswith("IMU silent: no valid IMU frame for") and "(limit 250 ms;" in stop.reason
    assert CONFIG.imu is not None
    last_frame = io.imu.counters.last_receive_time  # type: ignore[union-attr]
    assert last_frame is not None
    assert CONFIG.imu.max_silence_s < stop.time - last_frame <= CONFIG.imu.max_silence_s + PERIOD_S + 1e-9
    assert 0 < result.steps < 20


def test_corrupt_and_dropped_imu_frames_are_counted_and_the_run_goes_on() -> None:
    clock, io, _, _ = mock_robot(faults="imu_corrupt=0.3,imu_drop=0.1,seed=2")
    ctrl = controller(io, clock, random_policy())
    result = ctrl.episode(np.random.default_rng(0))
    assert result.complete and result.stop is None
    imu = result.meta["imu"]
    assert imu["corrupt_crc"] > 20 and imu["gaps"] > 20 and imu["frames"] > 50


def test_without_any_imu_frame_the_command_is_held_until_the_silence_bound() -> None:
    config = kitty_config({"imu.max_silence_s": 1.0})
    # Placed by the mock, the episode never starts: the reset waits for the IMU to see the placed robot.
    clock, io, _, stream = mock_robot(config, faults="imu_silent@1cycles")  # not a single frame
    result = controller(io, clock, lambda obs: np.ones(12), config=config).episode(np.random.default_rng(0))
    assert stream.frames_sent == 0 and result.steps == 0
    assert result.stop is not None and result.stop.reason.startswith("IMU silent: no valid IMU frame in 1000 ms")
    # Not placed (a person did it), the episode starts from the joints, and every cycle holds the command.
    clock, io, _, stream = mock_robot(config, faults="imu_silent@1cycles", place=False)
    result = controller(io, clock, lambda obs: np.ones(12), config=config).episode(np.random.default_rng(0))
    assert stream.frames_sent == 0
    assert result.stop is not None and result.stop.reason.startswith("IMU silent: no valid IMU frame in")
    assert "since the start" in result.stop.reason
    a = result.arrays
    assert result.steps > 3 and np.all(a["hold"] == Hold.STALE_READING) and np.all(np.isnan(a["action"]))
    assert np.all(np.isnan(a["base_quat"])) and np.all(np.isnan(a["imu_age"]))
    np.testing.assert_array_equal(a["command"], np.tile(a["command"][0], (result.steps, 1)))


def test_the_controller_needs_the_imu_of_a_legged_config() -> None:
    clock, io, _, _ = mock_robot()
    with pytest.raises(UserError, match="has an imu section: the controller needs the IMU"):
        Controller(random_policy(), io.bus, task_for(CONFIG), CONFIG, clock=clock, sleep=clock.sleep)


def test_open_robot_refuses_what_cannot_work() -> None:
    from robot.emulator.faults import parse_faults

    claw = load_config(CLAW_PATH)
    with pytest.raises(UserError, match=r"IMU faults \(imu_silent@1s\) need an IMU"):
        open_robot(claw, "mock", OpenOptions(faults=parse_faults("imu_silent@1s")))
    with pytest.raises(UserError, match="has no imu section"):
        open_robot(claw, "mock", OpenOptions(imu_port="/dev/null"))
    with pytest.raises(UserError, match=r"imu\.port 'auto' means the emulator's or the mock's IMU"):
        open_robot(CONFIG, "dynamixel", OpenOptions(port="/dev/null"))
    with pytest.raises(UserError, match=r"^imu_port is needed: the emulator on /dev/null serves its IMU on the pty"):
        open_robot(CONFIG, "emulator", OpenOptions(port="/dev/null"))
    with pytest.raises(UserError, match=r"^imu_port applies to the emulator and dynamixel drivers; the mock driver"):
        open_robot(CONFIG, "mock", OpenOptions(imu_port="/dev/null"))
    with pytest.raises(UserError, match=r"^imu_port needs port: an emulator started here serves its own IMU$"):
        open_robot(CONFIG, "emulator", OpenOptions(imu_port="/dev/null"))


# --- the command line, the emulator -------------------------------------------------------------------
def deploy(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="s2r")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["deploy", *argv])
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_deploy_names_the_imu_port_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # open_robot says imu_port (test_open_robot_refuses_what_cannot_work); the command line says --imu-port.
    base = ["--robot", str(CONFIG_PATH), "--episodes", "1", "--log-dir"]
    with pytest.raises(UserError, match=r"^--imu-port applies to the emulator and dynamixel drivers; the mock driver"):
        deploy(["scripted:hold", "--driver", "mock", "--imu-port", "/dev/null", *base, str(tmp_path / "m")], capsys)
    with pytest.raises(UserError, match=r"^--imu-port needs --port: an emulator started here serves its own IMU$"):
        deploy(["scripted:hold", "--driver", "emulator", "--imu-port", "/dev/null", *base, str(tmp_path / "e")],
               capsys)
    with pytest.raises(UserError, match=r"^--imu-port is needed: the emulator on /dev/null serves its IMU"):
        deploy(["scripted:hold", "--driver", "emulator", "--port", "/dev/null", *base, str(tmp_path / "e")], capsys)


def test_mock_deploy_logs_base_fields_and_the_imu_in_run_json(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    logs = tmp_path / "logs"
    code, out, _ = deploy(["scripted:hold", "--robot", str(CONFIG_PATH), "--driver", "mock", "--episodes", "1",
                           "--episode-steps", "3", "--log-dir", str(logs), "--json"], capsys)
    assert code == 0
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["imu"]["frames"] > 0 and summary["imu"]["corrupt_crc"] == 0
    assert read_run(logs).extra["imu"]["rate_hz"] == 200.0
    (ep,) = read_episodes(logs)
    assert ep["base_quat"].shape == (4, 4) and ep.meta["base_reset"]["placed"]
    bad = {**ep.arrays, "base_quat": ep["base_quat"][:, :3]}
    writer = TrajectoryWriter(logs, read_run(logs))
    with pytest.raises(ValueError, match="base_quat has shape"):
        writer.write_episode(bad, ep.meta)


def test_random_policy_on_the_emulator_logs_base_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs = tmp_path / "logs"
    seed = 7  # a start heading far from the one the emulator powers on with (seed 0), and no fall in 3 steps
    code, out, err = deploy(["scripted:random", "--robot", str(CONFIG_PATH), "--driver", "emulator", "--lockstep",
                             "--episodes", "1", "--episode-steps", "3", "--seed", str(seed), "--log-dir", str(logs),
                             "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["stop_kind"] == "completed" and summary["torque_off"] and summary["imu"]["frames"] > 20
    assert summary["comm_errors"] == 0 and summary["imu"]["gaps"] == 0
    (ep,) = read_episodes(logs)
    assert ep.steps == 3 and ep.meta["complete"]
    quats = ep["base_quat"]
    assert quats.shape == (4, 4) and np.all(np.isfinite(quats))
    np.testing.assert_allclose(np.linalg.norm(quats, axis=1), 1.0, atol=1e-6)
    assert np.all(np.isfinite(ep["base_angvel"])) and ep["base_angvel"].shape == (4, 3)
    # In lock-step the sample is received at the cycle's start, just before the servos' read: its logged age is
    # that read's time on the wire, every cycle.
    assert np.all((ep["imu_age"] > 0) & (ep["imu_age"] < 0.005))
    # The emulator put the robot down at this episode's start, not where it powered on (another heading).
    placed = np.asarray(ep.meta["base_reset"]["base_pose"])
    power_on = DKittyStand().sample_start(np.random.default_rng(0)).base_pose
    assert ep.meta["base_reset"]["placed"] and abs(yaw_of(placed[3:]) - yaw_of(power_on[3:])) > 0.1
    assert abs(yaw_of(quats[0]) - yaw_of(placed[3:])) < 0.02 and tilt(quats[0]) < 0.1
    # Placed at the start pose; a period later the weight-bearing knees sag under the soft (kp 5 N m/rad) servos.
    np.testing.assert_allclose(ep["joint_pos"][0], ep.meta["start_command"], atol=0.15)
    assert ep.meta["reset_settled"] and 2 <= ep.meta["reset_cycles"] <= 4


@dataclass(frozen=True)
class FallenStand(DKittyStand):
    """The stand task, but every episode starts with the torso tipped over in the air."""

    def sample_start(self, rng: np.random.Generator) -> Any:
        start = super().sample_start(rng)
        pose: FloatArray = np.concatenate([[0.0, 0.0, 0.4], TIPPED])
        return replace(start, base_pose=pose)


def test_emulator_places_a_tipped_robot_and_the_controller_stops_for_tilt(tmp_path: Path) -> None:
    config = CONFIG
    io = open_robot(config, "emulator", OpenOptions(lockstep=True))
    try:
        io.bus.connect()
        task = replace(FallenStand(), spec=config.task_spec())
        ctrl = Controller(random_policy(), io.bus, task, config,
                          settings=io.controller_settings(replace(FAST, episode_steps=5)), imu=io.imu,
                          placer=io.placer, clock=io.clock, sleep=io.sleep)
        t0 = io.clock()
        result: EpisodeResult = ctrl.episode(np.random.default_rng(0))
        assert result.stop is not None and result.stop.kind == "safety" and "tilt" in result.stop.reason
        assert result.steps == 0 and result.meta["base_reset"]["placed"]
        assert result.stop.time - t0 < 4 * PERIOD_S  # the reset's second or third reading sees it
        assert ctrl.shutdown(result.stop)
    finally:
        io.close()


def test_emulator_imu_silence_is_a_safety_stop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs = tmp_path / "logs"
    assert CONFIG.imu is not None and CONFIG.imu.max_silence_s == 0.25
    code, _, err = deploy(["scripted:hold", "--robot", str(CONFIG_PATH), "--driver", "emulator", "--lockstep",
                           "--faults", "imu_silent@12cycles", "--episodes", "1", "--episode-steps", "30",
                           "--log-dir", str(logs)], capsys)
    assert code == EXIT_SAFETY_STOP
    assert "safety stop: IMU silent: no valid IMU frame for" in err and "limit 250 ms" in err
    (ep,) = read_episodes(logs)
    assert not ep.meta["complete"] and ep["imu_age"][-1] > 0.25


def test_emulate_prints_the_imu_pty_on_its_second_line() -> None:
    assert CONFIG.imu is not None
    proc = subprocess.Popen([sys.executable, "-m", "s2r.commands.emulator", "--robot", str(CONFIG_PATH)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        servo_path, imu_path = proc.stdout.readline().strip(), proc.stdout.readline().strip()
        assert servo_path.startswith("/dev/pts/") and imu_path.startswith("/dev/pts/") and servo_path != imu_path
        reader = ImuReader(SerialByteSource(imu_path, CONFIG.imu.baud), CONFIG.imu)
        deadline = time.monotonic() + 10.0
        while reader.counters.received < 10 and time.monotonic() < deadline:
            time.sleep(0.02)
            reader.poll()
        sample = reader.latest
        assert sample is not None and reader.counters.received >= 10 and reader.counters.total_rejected == 0
        assert tilt(sample.quat) < 0.1  # powered on resting on its feet
        reader.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    stats = json.loads(err.strip().splitlines()[-1])["emulator_stats"]
    assert stats["imu_frames"] >= 10
