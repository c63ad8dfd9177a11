"""The reset strategies (robot.resets) against a fake robot behind the ResetIO protocol: the claw's order (joints to the
start without settling, the valve driven and released, then the joints' settling judged), the passive drive's settle
judgement and its timeout, and the legged placement."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from robot_helpers import FakeCommands

from robot.bus import Reading
from robot.config import RobotConfig, load_config
from robot.controller import ControllerSettings
from robot.resets import (
    JointReset,
    PlacedReset,
    ResetSettings,
    ResetStart,
    make_reset,
    passive_settled,
)
from robot.safety import SafetyLimits, clip_to_limits
from sim.tasks.spec import FloatArray

ROOT = Path(__file__).resolve().parents[1]
CLAW = load_config(ROOT / "hardware_configs" / "dclaw.yaml")
KITTY = load_config(ROOT / "hardware_configs" / "dkitty.yaml")
SETTINGS = ResetSettings()
LOG = logging.getLogger("test_resets")
TWO_PI = 2 * math.pi


class FakeStop(Exception):
    """The fake controller's safety stop."""


class FakeRobot(FakeCommands):
    """A :class:`robot.resets.ResetIO` on a plant that moves only between cycles, by one control period each: the
    joints reach the last command when ``joints_follow``, else stay; a driven passive joint covers ``passive_gain``
    of the way to its goal. ``events`` records what the reset did, in order."""

    def __init__(self, config: RobotConfig, joint_pos: FloatArray, passive_pos: FloatArray, *,
                 joints_follow: bool = True, passive_gain: float = 1.0, imu_lag_s: float = math.nan,
                 glitch_rad: float = 0.0) -> None:
        self.period = config.control_period_s
        self.t = 100.0
        self.joint_pos = np.array(joint_pos, dtype=np.float64)
        self.passive_pos = np.array(passive_pos, dtype=np.float64)
        self.passive_vel = np.zeros_like(self.passive_pos)
        self.joints_follow = joints_follow
        self.passive_gain = passive_gain
        self.imu_lag_s = imu_lag_s
        """How old the IMU sample of each reading is (s); NaN: no IMU."""
        self.glitch_rad = glitch_rad
        """Added to the first passive reading while driven (a glitched encoder reading)."""
        super().__init__(np.zeros_like(self.joint_pos))
        self.passive_goal: FloatArray | None = None
        self.driving: tuple[str, ...] = ()
        self.events: list[Any] = []
        self.passive_goals: list[float] = []

    # the plant
    def _advance(self) -> None:
        self.t += self.period
        if self.joints_follow and self._commanded:
            self.joint_pos = self._command.copy()
        before = self.passive_pos.copy()
        if self.driving and self.passive_goal is not None:
            self.passive_pos = self.passive_pos + self.passive_gain * (self.passive_goal - self.passive_pos)
        self.passive_vel = (self.passive_pos - before) / self.period

    # ResetIO
    def now(self) -> float:
        return self.t

    def restart_timer(self) -> None:
        self.events.append("restart")

    def begin_cycle(self, check_tilt: bool = True) -> Reading:
        self._advance()
        passive = self.passive_pos.copy()
        if self.driving and self.glitch_rad:
            passive, self.glitch_rad = passive + self.glitch_rad, 0.0
        z = np.zeros_like(self.joint_pos)
        return Reading(self.t, self.t, self.joint_pos.copy(), z, z.copy(), passive, self.passive_vel.copy(), True, 1,
                       imu_time=self.t - self.imu_lag_s)

    def write(self, command: FloatArray) -> None:
        super().write(command)
        self.events.append("write")

    def placed(self, command: FloatArray) -> None:
        self._command = command
        self._commanded = True
        self.joint_pos = command.copy()
        self.events.append("placed")

    @contextmanager
    def passive_driven(self, names: tuple[str, ...]) -> Iterator[None]:
        self.driving = names
        self.events.append(("on", names))
        try:
            yield
        finally:
            self.driving = ()
            self.passive_goal = None
            self.events.append(("off", names))

    def write_passive(self, goals: dict[str, float]) -> None:
        assert tuple(goals) == self.driving
        self.passive_goal = np.array(list(goals.values()))
        self.passive_goals.append(goals["valve"])
        self.events.append("passive")

    def safety_stop(self, reason: str) -> Exception:
        return FakeStop(reason)


def limits(config: RobotConfig) -> SafetyLimits:
    return SafetyLimits(config.task_spec(), config.low, config.high)


def claw_start(valve_start: float = 0.0) -> ResetStart:
    lim = limits(CLAW)
    return ResetStart(clip_to_limits(CLAW.task_spec().reset, lim), np.array([valve_start]), None)


def claw_robot(valve: float, **kw: Any) -> FakeRobot:
    away = clip_to_limits(CLAW.task_spec().reset + 0.3, limits(CLAW))
    return FakeRobot(CLAW, away, np.array([valve]), **kw)


def compressed(events: list[Any]) -> list[Any]:
    """Runs of the same event as one."""
    return [e for k, e in enumerate(events) if k == 0 or events[k - 1] != e]


def test_the_factory_picks_the_joint_reset_for_the_claw_and_the_placement_for_the_legged_robot() -> None:
    claw = make_reset(CLAW.task_spec(), CLAW, SETTINGS, limits(CLAW), LOG)
    assert isinstance(claw, JointReset) and claw.drive is not None and claw.drive.names == ("valve",)
    assert claw.drive.max_step_rad == pytest.approx([2.0 * 0.1])  # reset_velocity_limit_rad_s x control period
    kitty = make_reset(KITTY.task_spec(), KITTY, SETTINGS, limits(KITTY), LOG, place=lambda *a: None)
    assert isinstance(kitty, PlacedReset) and kitty.joints.drive is None
    assert KITTY.imu is not None and kitty.joints.imu_frame_period_s == KITTY.imu.frame_period_s


def test_the_claw_places_the_fingers_then_drives_the_valve_then_judges_the_settling() -> None:
    reset = make_reset(CLAW.task_spec(), CLAW, SETTINGS, limits(CLAW), LOG)
    robot = claw_robot(TWO_PI + 0.3)
    info: dict[str, Any] = {}
    start = claw_start()
    reading = reset.run(robot, start, info)
    assert compressed(robot.events) == ["restart", "write", ("on", ("valve",)), "passive", ("off", ("valve",))]
    assert np.array_equal(robot.command, start.joint_pos) and np.allclose(reading.joint_pos, start.joint_pos)
    # The nearest angle equivalent to the start: 0.3 rad back, not a turn and 0.3 rad.
    report = info["passive_reset"]["valve"]
    assert report["driven"] and report["settled"] and report["start_rad"] == pytest.approx(TWO_PI)
    steps = np.diff([TWO_PI + 0.3, *robot.passive_goals])
    assert np.all(np.abs(steps) <= 0.2 + 1e-12) and robot.passive_goals[-1] == report["start_rad"]
    assert info["reset_settled"] and info["reset_error_rad"] == 0.0
    assert list(info) == ["reset_cycles", "reset_error_rad", "reset_settled", "reset_duration_s", "passive_reset"]


def test_the_passive_joints_settle_only_near_the_start_and_slow() -> None:
    slow = np.array([0.01])
    assert passive_settled(0.01, slow, SETTINGS)
    assert not passive_settled(0.01, np.array([0.5]), SETTINGS)  # released now, it would coast past the start
    assert not passive_settled(0.2, slow, SETTINGS)
    assert not passive_settled(0.01, np.array([0.01, -0.3]), SETTINGS)  # every driven joint


def test_a_stuck_valve_times_out_and_the_warning_and_meta_say_why(caplog: pytest.LogCaptureFixture) -> None:
    reset = make_reset(CLAW.task_spec(), CLAW, SETTINGS, limits(CLAW), LOG)
    robot = claw_robot(1.0, passive_gain=0.0)
    info: dict[str, Any] = {}
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        reset.run(robot, claw_start(), info)
    report = info["passive_reset"]["valve"]
    assert not report["settled"] and report["error_at_release_rad"] == pytest.approx(1.0)
    # The ramp takes 5 goals of 0.2 rad; the timeout runs from the last, as the meta's duration shows.
    assert report["duration_s"] >= SETTINGS.timeout_s and report["duration_s"] < SETTINGS.timeout_s + 1.0
    assert "valve did not settle at the start within 5.0 s (largest error 1.000 rad)" in caplog.text
    assert ("off", ("valve",)) in robot.events  # released all the same


def test_joints_that_cannot_reach_the_start_time_out_and_the_episode_starts_from_there(
        caplog: pytest.LogCaptureFixture) -> None:
    reset = make_reset(CLAW.task_spec(), CLAW, SETTINGS, limits(CLAW), LOG)
    robot = claw_robot(0.0, joints_follow=False)
    info: dict[str, Any] = {}
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        reset.run(robot, claw_start(), info)
    assert not info["reset_settled"] and info["reset_error_rad"] == pytest.approx(0.3)
    assert "reset did not settle within 5.0 s (largest joint error 0.300 rad)" in caplog.text


def test_a_glitched_valve_reading_never_becomes_the_ramps_first_goal() -> None:
    reset = make_reset(CLAW.task_spec(), CLAW, SETTINGS, limits(CLAW), LOG)
    robot = claw_robot(0.5, glitch_rad=1604.0)
    info: dict[str, Any] = {}
    reset.run(robot, claw_start(), info)
    assert robot.passive_goals[0] == pytest.approx(0.3) and info["passive_reset"]["valve"]["settled"]


def test_a_valve_that_is_not_resettable_is_left_where_it_is() -> None:
    reset = JointReset(limits(CLAW), SETTINGS, ("valve",), None, "test config", None, LOG)
    robot = claw_robot(2.0)
    info: dict[str, Any] = {}
    reset.run(robot, claw_start(0.25), info)
    assert not any(isinstance(e, tuple) for e in robot.events) and info["reset_settled"]
    assert info["passive_reset"]["valve"] == {"driven": False, "start_rad": 0.25,
                                               "why": "not resettable in test config: the episode starts where it is"}


def kitty_start() -> ResetStart:
    pose = np.array([0.0, 0.0, 0.3, 1.0, 0.0, 0.0, 0.0])
    return ResetStart(clip_to_limits(KITTY.task_spec().reset, limits(KITTY)), np.zeros(0), pose)


def test_the_legged_robot_is_placed_and_done_at_an_imu_sample_from_after_the_placement() -> None:
    placed: list[tuple[FloatArray, ...]] = []
    reset = make_reset(KITTY.task_spec(), KITTY, SETTINGS, limits(KITTY), LOG,
                       place=lambda *args: placed.append(args))
    start = kitty_start()
    # Legs that sag under the robot's weight never come within the tolerance: the IMU sample decides.
    robot = FakeRobot(KITTY, start.joint_pos + 0.2, np.zeros(0), joints_follow=False, imu_lag_s=0.0)
    info: dict[str, Any] = {}
    reading = reset.run(robot, start, info)
    assert len(placed) == 1 and placed[0][2] is start.base_pose
    assert info["base_reset"] == {"placed": True, "base_pose": [0.0, 0.0, 0.3, 1.0, 0.0, 0.0, 0.0]}
    assert robot.events[:2] == ["placed", "restart"] and "write" not in robot.events  # the servos hold the start
    assert info["reset_settled"] and info["reset_cycles"] == 1 and reading.time == 100.0 + KITTY.control_period_s


def test_an_imu_sample_older_than_the_placement_does_not_end_the_reset() -> None:
    reset = make_reset(KITTY.task_spec(), KITTY, SETTINGS, limits(KITTY), LOG, place=lambda *args: None)
    # Every sample is a period old: the first one predates the placement, the second does not.
    robot = FakeRobot(KITTY, np.zeros(12), np.zeros(0), imu_lag_s=KITTY.control_period_s)
    info: dict[str, Any] = {}
    reset.run(robot, kitty_start(), info)
    assert info["reset_settled"] and info["reset_cycles"] == 2


def test_without_a_placer_a_person_places_the_robot_and_the_joints_settle_by_tolerance() -> None:
    reset = make_reset(KITTY.task_spec(), KITTY, SETTINGS, limits(KITTY), LOG)
    start = kitty_start()
    robot = FakeRobot(KITTY, start.joint_pos, np.zeros(0), imu_lag_s=0.0)
    info: dict[str, Any] = {}
    reset.run(robot, start, info)
    assert info["base_reset"]["placed"] is False and "person" in info["base_reset"]["why"]
    assert "placed" not in robot.events and info["reset_settled"]


def test_a_failed_placement_is_a_safety_stop_that_names_the_failure() -> None:
    def refuse(*args: object) -> None:
        raise ConnectionError("emulator gone")

    reset = make_reset(KITTY.task_spec(), KITTY, SETTINGS, limits(KITTY), LOG, place=refuse)
    robot = FakeRobot(KITTY, np.zeros(12), np.zeros(0), imu_lag_s=0.0)
    with pytest.raises(FakeStop, match="scene placement failed: ConnectionError: emulator gone"):
        reset.run(robot, kitty_start(), {})
    assert robot.events == []


def test_the_controllers_reset_settings_are_the_strategies_defaults() -> None:
    assert ControllerSettings().reset_settings() == SETTINGS
    custom = ControllerSettings(reset_timeout_s=2.0, reset_agree_rad=0.5).reset_settings()
    assert custom.timeout_s == 2.0 and custom.agree_rad == 0.5
