"""The legged robot's recovery reset (robot.resets.RecoveryReset, ``reset: {kind: recovery}``): its config, the
strategy against a fake plant (a fallen robot righted, a displaced upright one stood up, one that cannot be righted),
the controller's failure count and safe stop on the mock, and the emulated D'Kitty in lock-step."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from robot_helpers import FakeCommands, changed_config
from test_dkitty_hardware import TIPPED, deploy, mock_robot, task_for

from policies.dataset import trajlog_segments, trajlog_to_dataset
from robot.bus import Reading
from robot.config import RobotConfig, load_config
from robot.controller import Controller, ControllerSettings
from robot.emulator.reality import RealityConfig, load_reality
from robot.hardware import OpenOptions, open_robot
from robot.resets import PlacedReset, RecoveryReset, ResetFailed, ResetSettings, ResetStart, make_reset
from robot.runner import run_episodes, run_info
from robot.safety import SafetyLimits, clip_to_limits, step_towards
from s2r.commands.robot import EXIT_SAFETY_STOP
from s2r.core.errors import UserError
from s2r.core.trajlog import TrajectoryWriter, read_episodes
from sim.engines import make_engine
from sim.engines.base import TERRAIN_KINDS
from sim.rotations import quat_from_rotvec, quat_from_yaw, quat_to_matrix, tilt
from sim.state import RobotState
from sim.tasks.dkitty import DKittyStand, base_pose_on_floor, resting_base_pose
from sim.tasks.spec import FloatArray

ROOT = Path(__file__).resolve().parents[1]
PATH = ROOT / "hardware_configs" / "dkitty_recovery.yaml"
CONFIG = load_config(PATH)
assert CONFIG.recovery is not None
RECOVERY = CONFIG.recovery
LIMITS = SafetyLimits(CONFIG.task_spec(), CONFIG.low, CONFIG.high)
UPRIGHT = np.array([1.0, 0.0, 0.0, 0.0])
ON_ITS_SIDE = quat_from_rotvec([math.pi / 2, 0.0, 0.0])
FAST = ControllerSettings(spin_s=0.0)
LOG = logging.getLogger("test_recovery_reset")


def recovery_config(changes: dict[str, Any]) -> RobotConfig:
    return changed_config(PATH, changes)


# --- the config ------------------------------------------------------------------------------------
def test_the_shipped_configs_choose_the_placer_by_default_and_recovery_when_asked() -> None:
    assert load_config(ROOT / "hardware_configs" / "dkitty.yaml").recovery is None
    assert recovery_config({"reset": {"kind": "placer"}}).recovery is None
    assert RECOVERY.max_consecutive_failures == 3 and len(RECOVERY.righting_poses_rad) >= 1
    spec = CONFIG.task_spec()
    assert isinstance(make_reset(spec, CONFIG, ResetSettings(), LIMITS, LOG), RecoveryReset)
    placer_config = recovery_config({"reset": ...})
    assert isinstance(make_reset(spec, placer_config, ResetSettings(), LIMITS, LOG), PlacedReset)


@pytest.mark.parametrize(("changes", "message"), [
    ({"reset.kind": "teleport"}, r"reset\.kind.*one of placer, recovery"),
    ({"reset.crouch_pose_rad": [0.0] * 11}, r"reset\.crouch_pose_rad.*a list of 12 finite angles"),
    ({"reset.righting_poses_rad": [[0.0, 2.0, -1.0] * 4]}, r"reset\.righting_poses_rad\[0\]\[1\].*fr_knee1"),
    ({"reset.righting_poses_rad": []}, r"reset\.righting_poses_rad.*non-empty list"),
    ({"reset.catch_pose_rad": [-0.5, 2.0, -1.0] * 4}, r"reset\.catch_pose_rad\[1\].*fr_knee1"),
    ({"reset.catch_pose_rad": [-0.5, 0.6]}, r"reset\.catch_pose_rad.*a list of 12 finite angles"),
    ({"reset.upright_tilt_rad": 0.9}, r"reset\.upright_tilt_rad.*at most fallen_tilt_rad"),
    ({"reset.max_consecutive_failures": 0}, r"reset\.max_consecutive_failures.*integer >= 1"),
    ({"reset.hold_s": -1.0}, r"reset\.hold_s.*a time in \[0, 10\] s"),
    ({"reset.rest_rate_rad_s": 0.0}, r"reset\.rest_rate_rad_s.*an angular rate in \(0, 10\] rad/s"),
    ({"reset.rest_s": 1.0, "reset.rest_timeout_s": 0.5}, r"reset\.rest_timeout_s.*\[1, 60\] s \(at least rest_s\)"),
    ({"reset.teleport": True}, r"unknown field reset\.teleport"),
])
def test_bad_reset_fields_name_the_field_and_what_was_expected(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError, match=message):
        recovery_config(changes)


def test_the_claw_has_nothing_to_recover_from() -> None:
    with pytest.raises(UserError, match=r"reset\.kind.*fixed base"):
        changed_config(ROOT / "hardware_configs" / "dclaw.yaml",
                       {"reset": {"kind": "recovery", "crouch_pose_rad": [0.0] * 9,
                                  "righting_poses_rad": [[0.0] * 9]}})


# --- the strategy on a fake plant ------------------------------------------------------------------
class KittyIO(FakeCommands):
    """What the legged robot's fake :class:`robot.resets.ResetIO` share: a clock ``t`` (s) that their cycles advance,
    no placer, no passive joints, and a safety stop that is a plain error."""

    t = 0.0

    def now(self) -> float:
        return self.t

    def restart_timer(self) -> None:
        pass

    def placed(self, command: FloatArray) -> None:
        raise AssertionError("the recovery reset places nothing")

    def passive_driven(self, names: tuple[str, ...]) -> Any:
        raise AssertionError("the legged robot has no passive joints")

    def write_passive(self, goals: dict[str, float]) -> None:
        raise AssertionError("the legged robot has no passive joints")

    def safety_stop(self, reason: str) -> Exception:
        return RuntimeError(reason)


class FakeKitty(KittyIO):
    """A :class:`robot.resets.ResetIO` on a plant whose joints reach each command a period later and whose torso
    stays as it is, except that reaching the righting sequence's last pose rights it when ``rightable``. Every
    command is recorded."""

    def __init__(self, joint_pos: FloatArray, quat: FloatArray, rightable: bool = True,
                 falls_in_crouch: bool = False, rocking_s: float = 0.0, tips_over: bool = False,
                 rocking_rate: float = 2.0) -> None:
        self.t = 0.0
        self.falls_in_crouch = falls_in_crouch
        self.rocking_s = rocking_s
        """The torso turns at ``rocking_rate`` (rad/s; NaN: a gyroscope reading NaN) until this time (s), wherever the
        legs are ..."""
        self.rocking_rate = rocking_rate
        self.tips_over = tips_over
        """... and then lies on its side."""
        self.command_times: list[float] = []
        self.joint_pos = np.array(joint_pos, dtype=np.float64)
        self.quat = np.array(quat, dtype=np.float64)
        self.rightable = rightable
        self.commands: list[FloatArray] = []
        super().__init__(self.joint_pos)
        self.tilt_checked: list[bool] = []

    def begin_cycle(self, check_tilt: bool = True) -> Reading:
        self.tilt_checked.append(check_tilt)
        self.t += CONFIG.control_period_s
        if self._commanded:
            self.joint_pos = self._command.copy()
        if self.rightable and np.array_equal(self.joint_pos, np.asarray(RECOVERY.righting_poses_rad[-1])):
            self.quat = UPRIGHT.copy()
            self.falls_in_crouch = False
        elif self.falls_in_crouch and np.array_equal(self.joint_pos, np.asarray(RECOVERY.crouch_pose_rad)):
            self.quat = ON_ITS_SIDE.copy()
        rocking = self.t < self.rocking_s
        if self.tips_over and not rocking:
            self.quat, self.tips_over = ON_ITS_SIDE.copy(), False
        z = np.zeros(12)
        gyro = np.array([self.rocking_rate if rocking else 0.0, 0.0, 0.0])
        return Reading(self.t, self.t, self.joint_pos.copy(), z, z.copy(), np.zeros(0), np.zeros(0), True, 1,
                       base_quat=self.quat.copy(), base_angvel=gyro, imu_time=self.t)

    def write(self, command: FloatArray) -> None:
        self.commands.append(command.copy())
        self.command_times.append(self.t)
        super().write(command)



def kitty_start() -> ResetStart:
    return ResetStart(clip_to_limits(np.asarray(CONFIG.task_spec().reset), LIMITS), np.zeros(0), None)


def run_reset(robot: FakeKitty) -> tuple[Reading, dict[str, Any]]:
    info: dict[str, Any] = {}
    reset = RecoveryReset(LIMITS, ResetSettings(), RECOVERY, LOG)
    return reset.run(robot, kitty_start(), info), info


def assert_safe_commands(robot: FakeKitty, start: FloatArray) -> None:
    """Every command inside the limits and within one rate-limited step of the one before."""
    sent = np.array([start, *robot.commands])
    assert np.all(sent[1:] >= CONFIG.low) and np.all(sent[1:] <= CONFIG.high)
    assert np.max(np.abs(np.diff(sent, axis=0))) <= LIMITS.max_step + 1e-9
    assert not any(robot.tilt_checked)  # the reset watches the tilt itself


def test_a_fallen_robot_is_righted_then_stands_up_to_the_start() -> None:
    away = np.array([0.2, 0.1, -0.3] * 4)
    robot = FakeKitty(away, ON_ITS_SIDE)
    reading, info = run_reset(robot)
    base = info["base_reset"]
    assert base["fallen"] and base["righted"] and base["righting_attempts"] == 1 and not base["placed"]
    assert base["start_tilt_rad"] == pytest.approx(math.pi / 2) and "crouched_tilt_rad" not in base
    np.testing.assert_array_equal(reading.joint_pos, kitty_start().joint_pos)
    assert info["reset_settled"] and base["tilt_rad"] == 0.0 and base["base_quat"] == [1.0, 0.0, 0.0, 0.0]
    assert_safe_commands(robot, away)
    # Fallen from the first reading: straight to the sequence (folding first rolls a robot part-way over onto its
    # back), through its last pose, and only then the crouch.
    sent = [np.asarray(c) for c in robot.commands]
    first_pose = next(k for k, c in enumerate(sent) if np.array_equal(c, np.asarray(RECOVERY.righting_poses_rad[0])))
    last_pose = next(k for k, c in enumerate(sent) if np.array_equal(c, np.asarray(RECOVERY.righting_poses_rad[-1])))
    crouch = [k for k, c in enumerate(sent) if np.array_equal(c, np.asarray(RECOVERY.crouch_pose_rad))]
    assert crouch and first_pose < last_pose < crouch[0]


def test_a_fallen_robot_is_caught_in_the_cycle_of_the_reading_that_found_the_fall() -> None:
    """It is still rolling: the catch pose goes out at once, each joint at its own rate limit, then the sequence."""
    away = np.array([0.2, 0.1, -0.3] * 4)
    robot = FakeKitty(away, ON_ITS_SIDE)
    _, info = run_reset(robot)
    assert RECOVERY.catch_pose_rad is not None
    catch = np.asarray(RECOVERY.catch_pose_rad)
    assert robot.command_times[0] == pytest.approx(CONFIG.control_period_s)  # the first reading's cycle
    np.testing.assert_allclose(robot.commands[0], step_towards(catch, away, LIMITS))
    sent = [np.asarray(c) for c in robot.commands]
    caught = next(k for k, c in enumerate(sent) if np.array_equal(c, catch))
    assert caught < next(k for k, c in enumerate(sent)
                         if np.array_equal(c, np.asarray(RECOVERY.righting_poses_rad[0])))
    assert info["base_reset"]["caught_tilt_rad"] == pytest.approx(math.pi / 2) and info["reset_settled"]
    assert_safe_commands(robot, away)


def test_without_a_catch_pose_a_fallen_robot_goes_to_the_sequence_in_the_cycle_that_found_the_fall() -> None:
    away = np.array([0.2, 0.1, -0.3] * 4)
    robot = FakeKitty(away, ON_ITS_SIDE)
    info: dict[str, Any] = {}
    RecoveryReset(LIMITS, ResetSettings(), replace(RECOVERY, catch_pose_rad=None), LOG).run(robot, kitty_start(),
                                                                                             info)
    first_pose = np.asarray(RECOVERY.righting_poses_rad[0])
    assert robot.command_times[0] == pytest.approx(CONFIG.control_period_s)
    # Every joint towards the sequence's first pose together (the waypoints), none of them towards a catch.
    step = robot.commands[0] - away
    np.testing.assert_allclose(step, (first_pose - away) * (np.max(np.abs(step)) / np.max(np.abs(first_pose - away))))
    assert "caught_tilt_rad" not in info["base_reset"] and info["base_reset"]["righted"]


def test_a_robot_that_falls_as_it_crouches_is_righted_from_there() -> None:
    robot = FakeKitty(np.array([0.1, 0.3, -0.5] * 4), UPRIGHT, falls_in_crouch=True)
    _, info = run_reset(robot)
    base = info["base_reset"]
    assert base["start_tilt_rad"] == 0.0 and base["crouched_tilt_rad"] == pytest.approx(math.pi / 2)
    assert base["fallen"] and base["righted"] and base["righting_attempts"] == 1 and info["reset_settled"]


def test_a_displaced_upright_robot_only_stands_up_where_it_is() -> None:
    robot = FakeKitty(np.array([0.1, 0.3, -0.5] * 4), quat_from_yaw(2.0))
    _, info = run_reset(robot)
    base = info["base_reset"]
    assert not base["fallen"] and base["righting_attempts"] == 0 and info["reset_settled"]
    assert base["tilt_rad"] == pytest.approx(0.0, abs=1e-9)
    assert not any(np.array_equal(c, np.asarray(RECOVERY.righting_poses_rad[0])) for c in robot.commands)


def first_move_s(robot: FakeKitty, start: FloatArray) -> float:
    """When the reset first commanded anything but the pose the robot started in (s)."""
    return next(t for t, c in zip(robot.command_times, robot.commands, strict=True) if not np.array_equal(c, start))


def test_a_rocking_robot_is_watched_with_its_legs_held_until_it_comes_to_rest() -> None:
    stance = np.array([0.1, 0.3, -0.5] * 4)
    robot = FakeKitty(stance, UPRIGHT, rocking_s=1.0)
    _, info = run_reset(robot)
    base = info["base_reset"]
    assert base["at_rest"] and not base["fallen"] and info["reset_settled"]
    # The rate drops under the bound at 1.0 s and stays there rest_s: only then do the legs fold.
    assert base["rest_wait_s"] == pytest.approx(1.0 + RECOVERY.rest_s, abs=CONFIG.control_period_s + 1e-9)
    assert first_move_s(robot, stance) >= 1.0 + RECOVERY.rest_s - 1e-9
    assert_safe_commands(robot, stance)


def test_a_robot_that_tips_over_while_watched_is_righted_without_folding_first() -> None:
    robot = FakeKitty(np.array([0.1, 0.3, -0.5] * 4), UPRIGHT, rocking_s=0.5, tips_over=True)
    _, info = run_reset(robot)
    base = info["base_reset"]
    assert not base["at_rest"] and base["fallen"] and base["righted"] and "crouched_tilt_rad" not in base
    first_pose = np.asarray(RECOVERY.righting_poses_rad[0])
    crouch = np.asarray(RECOVERY.crouch_pose_rad)
    sent = [np.asarray(c) for c in robot.commands]
    assert (next(k for k, c in enumerate(sent) if np.array_equal(c, first_pose))
            < next(k for k, c in enumerate(sent) if np.array_equal(c, crouch)))


@pytest.mark.parametrize("rate", [2.0, math.nan], ids=["turning", "a NaN gyroscope"])
def test_a_robot_that_never_comes_to_rest_is_watched_for_the_timeout_then_reset(rate: float) -> None:
    stance = np.array([0.1, 0.3, -0.5] * 4)
    robot = FakeKitty(stance, UPRIGHT, rocking_s=math.inf, rocking_rate=rate)
    _, info = run_reset(robot)
    base = info["base_reset"]
    assert not base["at_rest"] and info["reset_settled"]
    assert base["rest_wait_s"] == pytest.approx(RECOVERY.rest_timeout_s, abs=CONFIG.control_period_s + 1e-9)
    assert first_move_s(robot, stance) >= RECOVERY.rest_timeout_s - 1e-9


def test_a_robot_that_cannot_be_righted_fails_after_its_attempts() -> None:
    robot = FakeKitty(np.asarray(RECOVERY.crouch_pose_rad), quat_from_rotvec([math.pi, 0.0, 0.0]), rightable=False)
    info: dict[str, Any] = {}
    with pytest.raises(ResetFailed, match=r"still fallen after 2 righting attempts \(tilt 3\.14 rad"):
        RecoveryReset(LIMITS, ResetSettings(), RECOVERY, LOG).run(robot, kitty_start(), info)
    assert info["base_reset"]["righting_attempts"] == RECOVERY.righting_attempts
    assert "still fallen" in info["reset_failed"] and not info["reset_settled"]
    assert_safe_commands(robot, np.asarray(RECOVERY.crouch_pose_rad))


# --- the controller on the mock: failures counted, the safe stop, a fall ends an episode --------------
def test_failed_resets_are_counted_and_the_kth_in_a_row_is_a_safety_stop(tmp_path: Path) -> None:
    config = replace(CONFIG, recovery=replace(RECOVERY, hold_s=0.2))
    clock, io, _, stream = mock_robot(config)
    stream.place(TIPPED)  # the mock never moves its torso: no sequence rights it
    ctrl = Controller(lambda obs: np.zeros(12), io.bus, task_for(config), config,
                      settings=replace(FAST, episode_steps=3), clock=clock, sleep=clock.sleep, imu=io.imu,
                      placer=io.placer)
    writer = TrajectoryWriter(tmp_path / "logs", run_info(config, "mock", 3))
    summary = run_episodes(ctrl, writer, 10, np.random.default_rng(0))
    assert summary.stop_kind == "safety" and summary.torque_off
    assert summary.stop_reason.startswith("3 failed resets in a row (last: still fallen after 2 righting attempts")
    assert summary.resets == {"failed": 3, "righted": 0, "fallen": 0} and summary.episodes == 0
    assert ctrl.episodes_run == 3
    assert "resets: 3 failed" in summary.describe()
    # What each failed reset saw is kept, though no episode ran: one file each, numbered in turn.
    kept = sorted((tmp_path / "logs").glob("unstarted_*.json"))
    assert [p.name for p in kept] == [f"unstarted_{k:06d}.json" for k in range(3)]
    metas = [json.loads(p.read_text()) for p in kept]
    assert all(m["reset_failed"].startswith("still fallen after 2 righting attempts") for m in metas)
    assert all(m["base_reset"]["righting_attempts"] == 2 and m["before_episode"] == 0 for m in metas)
    assert [m["failed_resets_before"] for m in metas] == [0, 1, 2]
    assert metas[-1]["stop_reason"].startswith("safety: 3 failed resets in a row")
    # A second run in the same directory adds its own after them, never over them.
    again = Controller(lambda obs: np.zeros(12), io.bus, task_for(config), config,
                       settings=replace(FAST, episode_steps=3), clock=clock, sleep=clock.sleep, imu=io.imu,
                       placer=io.placer)
    run_episodes(again, TrajectoryWriter(tmp_path / "logs", run_info(config, "mock", 3)), 1, np.random.default_rng(1))
    assert len(list((tmp_path / "logs").glob("unstarted_*.json"))) == 4


def test_a_fall_ends_the_episode_and_the_next_reset_starts_after_counting_none_failed(tmp_path: Path) -> None:
    clock, io, _, stream = mock_robot(CONFIG)
    calls = [0]

    def policy(obs: Any) -> FloatArray:
        calls[0] += 1
        if calls[0] == 3:  # the robot falls over after its 3rd action: the next reading sees it
            stream.place(TIPPED)
        return np.zeros(12)

    ctrl = Controller(policy, io.bus, task_for(CONFIG), CONFIG, settings=replace(FAST, episode_steps=5),
                      clock=clock, sleep=clock.sleep, imu=io.imu, placer=io.placer)
    first = ctrl.episode(np.random.default_rng(0))
    assert first.stop is None and not first.complete and first.meta["stop_reason"].startswith("fallen: tilt 1.000 rad")
    assert first.meta["failed_resets_before"] == 0 and ctrl.fallen_episodes == 1
    stream.place(UPRIGHT)  # a person is not needed: here the mock's torso simply reads upright again
    second = ctrl.episode(np.random.default_rng(1))
    assert second.complete and second.stop is None and second.meta["reset_settled"]
    assert second.meta["base_reset"]["fallen"] is False, json.dumps(second.meta["base_reset"])


class EndsAtTheBound(DKittyStand):
    """A stand that ends where the walk does, past the tilt bound (the shipped stand ends by time only)."""

    def terminated(self, state: RobotState, goal: dict[str, float]) -> bool:
        return self.fallen(state)


@pytest.mark.parametrize(("task", "terminated"), [(task_for(CONFIG), False),
                                                  (replace(EndsAtTheBound(), spec=CONFIG.task_spec()), True)])
def test_a_fall_is_logged_terminal_where_the_task_ends_there(task: DKittyStand, terminated: bool,
                                                             tmp_path: Path) -> None:
    """The meta's ``terminated`` is the task's verdict on the reading that fell, and the dataset's last transition is
    terminal (not a time-out) exactly then, as in simulation."""
    clock, io, _, stream = mock_robot(CONFIG)
    calls = [0]

    def policy(obs: Any) -> FloatArray:
        calls[0] += 1
        if calls[0] == 3:
            stream.place(TIPPED)
        return np.zeros(12)

    ctrl = Controller(policy, io.bus, task, CONFIG, settings=replace(FAST, episode_steps=5), clock=clock,
                      sleep=clock.sleep, imu=io.imu, placer=io.placer)
    result = ctrl.episode(np.random.default_rng(0))
    assert result.meta["stop_reason"].startswith("fallen") and result.meta["terminated"] is terminated
    writer = TrajectoryWriter(tmp_path, run_info(CONFIG, "mock", 5))
    writer.write_episode(result.arrays, result.meta)
    data = trajlog_to_dataset(tmp_path, include_partial=True)
    assert data["terminals"].tolist() == [False, False, terminated]
    assert data["timeouts"].tolist() == [False, False, not terminated]
    assert [s.terminated for s in trajlog_segments(tmp_path, include_partial=True)] == [terminated]


# --- the emulated D'Kitty in lock-step -------------------------------------------------------------
def emulated_reset(base_pose: FloatArray, joint_pos: FloatArray, settle_s: float = 0.0,
                   reality: RealityConfig | None = None) -> dict[str, Any]:
    """One recovery reset and a one-step episode on a lock-step emulator (of ``reality``; default the nominal one)
    whose placer first put the robot at ``base_pose`` with ``joint_pos`` and left it ``settle_s`` (the IMU's next
    samples show where it lies); the episode's meta."""
    io = open_robot(CONFIG, "emulator", OpenOptions(lockstep=True, reality=reality))
    try:
        io.bus.connect()
        assert io.placer is not None
        io.placer.place(joint_pos, np.zeros(0), base_pose)
        io.sleep(settle_s)
        ctrl = Controller(lambda obs: np.zeros(12), io.bus, task_for(CONFIG), CONFIG,
                          settings=io.controller_settings(replace(FAST, episode_steps=1)), imu=io.imu,
                          placer=io.placer, clock=io.clock, sleep=io.sleep)
        result = ctrl.episode(np.random.default_rng(0))
        assert result.stop is None
        return result.meta
    finally:
        io.close()


def test_the_emulated_robot_displaced_and_standing_is_brought_to_the_start_where_it_is() -> None:
    stand = np.array([0.0, 0.4, -0.8] * 4)
    meta = emulated_reset(np.concatenate([[0.4, -0.3, 0.22], quat_from_yaw(1.0)]), stand)
    base = meta["base_reset"]
    assert meta["complete"] and meta["reset_settled"] and not base["placed"] and not base["fallen"]
    assert base["tilt_rad"] < RECOVERY.upright_tilt_rad and meta["reset_error_rad"] < RECOVERY.joint_tolerance_rad
    assert abs(math.atan2(2 * base["base_quat"][0] * base["base_quat"][3], 1 - 2 * base["base_quat"][3] ** 2)
               - 1.0) < 0.2  # it starts where it stands: the heading it was put down with


@pytest.mark.slow
@pytest.mark.parametrize(("fall", "height_m", "attempts"), [([math.pi / 2, 0.0, 0.0], 0.2, 1),
                                                            ([-math.pi / 2, 0.0, 0.0], 0.2, 1),
                                                            ([0.0, math.pi / 2, 0.0], 0.25, 1),
                                                            ([0.5, 1.2, 0.0], 0.22, 0)],
                         ids=["left side", "right side", "on its nose", "forward and sideways"])
def test_the_emulated_robot_fallen_on_its_side_or_nose_is_righted_and_stands(fall: list[float], height_m: float,
                                                                            attempts: int) -> None:
    """A robot on its side or its nose, with its legs as a walk left them, ends standing at the start pose: the
    catch stops its roll, and the sequence braces it, rolls it onto its belly, then onto its feet. One dropped
    forward and sideways bounces back upright as it is caught, and only crouches and stands. (One still flipping
    over its nose or its side lands on its back, where no leg reaches the floor: a failed reset.)"""
    stand = np.asarray(CONFIG.task_spec().reset)
    meta = emulated_reset(np.concatenate([[0.0, 0.0, height_m], quat_from_rotvec(fall)]), stand, settle_s=0.3)
    base = meta["base_reset"]
    assert meta["complete"], meta["stop_reason"]
    assert base["fallen"] and base["righted"] and base["righting_attempts"] == attempts and meta["reset_settled"]
    assert (base["righting_tilts_rad"][0][-1] if attempts else base["caught_tilt_rad"]) < 0.1
    assert base["tilt_rad"] < RECOVERY.upright_tilt_rad


GAP_REALITY = load_reality(ROOT / "hardware_configs" / "reality" / "dkitty_pybullet_gap.yaml", CONFIG)
_SPECS = {s.name: s for s in DKittyStand().param_specs()}
GAP_PARAMS = {name: value for name, value in GAP_REALITY.params.items()
              if not _SPECS[name].is_env_level and _SPECS[name].kind not in TERRAIN_KINDS}
"""The PyBullet-gap reality's physical parameters, its terrain left out: a heavier torso on softer servos."""


def _righted_in_seeded_falls(engine_name: str, params: dict[str, float], falls: int) -> tuple[int, int]:
    """Seeded falls of the D'Kitty in ``engine_name`` with ``params`` (tilted 0.7 to 1.4 rad about a random
    horizontal axis, legs at the start pose), each run through the shipped recovery's sequence as the reset moves
    (every joint together at the rate limit, each pose held ``hold_s``, at most ``righting_attempts`` times, then the
    crouch): (righted, fallen but not on its back after the fall). The emulator's IMU, latency and servo bus are
    left out, so that the physics alone decides."""
    task = DKittyStand()
    engine = make_engine(engine_name, task, 0.0025)
    specs = {s.name: s for s in task.param_specs()}
    for name, value in params.items():
        engine.set_param(specs[name], value)
    start = np.asarray(task.spec.reset)
    crouch = np.asarray(RECOVERY.crouch_pose_rad)
    speed = LIMITS.max_step / CONFIG.control_period_s
    rng = np.random.default_rng(1)
    righted = fallen = 0
    try:
        for _ in range(falls):
            command = start.copy()

            def move(target: FloatArray) -> float:
                nonlocal command
                steps = max(1, math.ceil(float(np.max(np.abs(target - command))) / (speed * engine.timestep)))
                for k in range(1, steps + 1):
                    engine.set_command(command + (target - command) * k / steps)
                    engine.step(1)
                command = target.copy()
                engine.step(round(RECOVERY.hold_s / engine.timestep))
                return tilt(engine.read().base_quat)

            axis = np.array([*rng.normal(size=2), 0.0])
            pose = resting_base_pose(start, 0.0)
            pose[2] += 0.02
            pose[3:] = quat_from_rotvec(axis / np.linalg.norm(axis) * rng.uniform(0.7, 1.4))
            engine.reset(start, np.zeros(0), pose)
            engine.step(round(0.5 / engine.timestep))
            angle = tilt(engine.read().base_quat)
            if angle <= RECOVERY.fallen_tilt_rad or angle > 2.5:
                continue  # not fallen, or on its back: no sequence helps there
            fallen += 1
            for _ in range(RECOVERY.righting_attempts):
                for p in RECOVERY.righting_poses_rad:
                    move(np.asarray(p))
                angle = move(crouch)
                if angle <= RECOVERY.fallen_tilt_rad:
                    righted += 1
                    break
    finally:
        engine.close()
    return righted, fallen


@pytest.mark.parametrize("engine_name", ["mujoco", pytest.param("pybullet", marks=pytest.mark.slow)])
def test_the_righting_sequence_rights_the_gap_robot_as_often_as_the_nominal_one(engine_name: str) -> None:
    """The last pose must bring the feet under the centre of mass. With the thighs left fully back (pi/2) the gap's
    heavier torso on softer servos pitched onto its nose, 0.7 rad, still fallen, and the next attempt's first pose
    rolled it onto its back: 2 of 13 righted in MuJoCo and 1 of 13 in PyBullet, against 9 and 6 with the nominal
    parameters; the first fall of a PyBullet-gap walk ended its unattended run that way. (The others roll onto their
    backs, where no pose helps.)"""
    pytest.importorskip(engine_name)
    nominal, fallen = _righted_in_seeded_falls(engine_name, {}, falls=20)
    gap, fallen_gap = _righted_in_seeded_falls(engine_name, GAP_PARAMS, falls=20)
    assert fallen >= 10 and fallen_gap >= 10 and nominal >= 0.4 * fallen, (nominal, fallen)
    assert gap >= nominal - 1, (gap, nominal)


@pytest.mark.slow
@pytest.mark.parametrize(("fall", "height_m"), [([math.pi / 2, 0.0, 0.0], 0.2), ([0.0, math.pi / 2, 0.0], 0.25)],
                         ids=["left side", "on its nose"])
def test_the_pybullet_gap_robot_fallen_on_its_side_or_nose_is_righted_and_stands(fall: list[float],
                                                                                 height_m: float) -> None:
    """The emulated PyBullet-gap robot (its reality file), fallen, ends standing at the start pose."""
    pytest.importorskip("pybullet")
    stand = np.asarray(CONFIG.task_spec().reset)
    meta = emulated_reset(np.concatenate([[0.0, 0.0, height_m], quat_from_rotvec(fall)]), stand, settle_s=0.3,
                          reality=GAP_REALITY)
    base = meta["base_reset"]
    assert meta["complete"], meta["stop_reason"]
    assert base["fallen"] and base["righted"] and meta["reset_settled"] and base["tilt_rad"] < RECOVERY.upright_tilt_rad


@pytest.mark.slow
def test_deploy_stops_with_the_safety_exit_after_failed_resets(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = deploy(["scripted:random", "--robot", str(PATH), "--driver", "emulator", "--lockstep",
                             "--episodes", "10", "--episode-steps", "40", "--seed", "0", "--log-dir",
                             str(tmp_path / "logs"), "--json"], capsys)
    summary = json.loads(out.strip().splitlines()[-1])
    assert code == EXIT_SAFETY_STOP and summary["torque_off"] and "3 failed resets in a row" in summary["stop_reason"]
    assert summary["resets"]["failed"] == 3 and summary["resets"]["fallen"] >= 1
    (ep, *_) = read_episodes(tmp_path / "logs")
    assert ep.meta["stop_reason"].startswith("fallen: tilt") and "failed resets" in err



# --- the reset's catch on rolling falls, in physics ---------------------------------------------------------------
class EngineKitty(KittyIO):
    """A :class:`robot.resets.ResetIO` on a simulated D'Kitty: each cycle advances one control period, and a command
    reaches the servos ``latency_s`` into the next (the emulated robot's 20 ms). The IMU and the bus are exact."""

    def __init__(self, engine: Any, command: FloatArray, latency_s: float = 0.02) -> None:
        super().__init__(command)
        self.engine = engine
        self.t = 0.0
        self.latency_steps = round(latency_s / engine.timestep)
        self.pending: FloatArray | None = None

    def begin_cycle(self, check_tilt: bool = True) -> Reading:
        steps = round(CONFIG.control_period_s / self.engine.timestep)
        if self.pending is not None:
            self.engine.step(self.latency_steps)
            self.engine.set_command(self.pending)
            steps -= self.latency_steps
            self.pending = None
        self.engine.step(steps)
        self.t += CONFIG.control_period_s
        s = self.engine.read()
        return Reading(self.t, self.t, s.joint_pos, s.joint_vel, np.zeros(12), np.zeros(0), np.zeros(0), True, 1,
                       base_quat=s.base_quat, base_angvel=s.base_angvel, imu_time=self.t)

    def write(self, command: FloatArray) -> None:
        super().write(command)
        self.pending = np.array(command, dtype=np.float64)



def _rolling_falls(recovery: Any, falls: int) -> tuple[int, int, int]:
    """Seeded falls of the D'Kitty in MuJoCo, as a walk falls: standing (joints scattered about the start pose),
    tilted 0.3 to 1.3 rad about a random horizontal axis and rolling about it at 1 to 5 rad/s, the stance held until
    the tilt passes the IMU's bound (the episode's end); then the recovery reset. (falls, reset, on the back)."""
    assert CONFIG.imu is not None
    task = DKittyStand()
    engine = make_engine("mujoco", task, 0.0025)
    reset = RecoveryReset(LIMITS, ResetSettings(), recovery, LOG)
    start = kitty_start()
    rng = np.random.default_rng(5)
    fallen = done = back = 0
    try:
        for _ in range(falls):
            axis = np.array([*rng.normal(size=2), 0.0])
            axis /= np.linalg.norm(axis)
            quat = quat_from_rotvec(axis * rng.uniform(0.3, 1.3))
            stance = clip_to_limits(start.joint_pos + rng.normal(0.0, 0.1, 12), LIMITS)
            engine.reset(stance, np.zeros(0), base_pose_on_floor(stance, quat, clearance=0.01))
            spin = engine.get_state()
            spin.qvel[-3:] = quat_to_matrix(quat).T @ (axis * rng.uniform(1.0, 5.0))  # body-frame angular velocity
            engine.set_state(replace(spin, physics=None))
            robot = EngineKitty(engine, stance)
            for _ in range(15):
                if tilt(robot.begin_cycle().base_quat) > CONFIG.imu.max_tilt_rad:
                    break
            else:
                continue  # it came back upright: no fall
            fallen += 1
            try:
                reset.run(robot, start, {})
                done += 1
            except ResetFailed:
                back += tilt(engine.read().base_quat) > 2.5
    finally:
        engine.close()
    return fallen, done, back


def test_the_catch_pose_keeps_rolling_falls_off_the_robots_back() -> None:
    """A fall found by the reset is caught at once: the legs tuck in under the torso (hips fully inward, knees bent),
    each joint as fast as the rate limit lets it, and fewer falls roll on onto the back, where no leg reaches the
    floor: of these 18 falls, 16 ended standing and 2 on the back, against 12 and 6 going straight to the sequence,
    whose first pose (legs straight, every joint arriving together) was reached too late to stop the roll."""
    assert RECOVERY.catch_pose_rad is not None
    fallen, done, back = _rolling_falls(RECOVERY, falls=30)
    fallen_without, done_without, back_without = _rolling_falls(replace(RECOVERY, catch_pose_rad=None), falls=30)
    assert fallen == fallen_without >= 12
    assert back <= back_without - 3 and done >= done_without + 3, (done, back, done_without, back_without)
