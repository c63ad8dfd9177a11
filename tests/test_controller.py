"""The controller on the mock bus with a fake clock (zero time), one short real-time run through the emulator,
and observation/command parity with the simulated env."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from robot_helpers import FakeClock

from robot.bus import Bus, Reading
from robot.config import RobotConfig, config_from_mapping, load_config
from robot.controller import (
    Controller,
    ControllerSettings,
    EpisodeResult,
    PolicyState,
    check_policy,
    episode_start_action,
)
from robot.dynamixel.units import TORQUE_NM_PER_A
from robot.emulator.faults import parse_faults
from robot.hardware import OpenOptions, open_robot
from robot.mock import MockBus
from robot.runner import RunSummary, run_episodes, run_info
from robot.safety import Hold, SafetyLimits
from s2r.core.errors import UserError
from s2r.core.trajlog import TrajectoryWriter, read_episodes
from sim.env import SimEnv
from sim.state import RobotState
from sim.tasks.actions import clip_action
from sim.tasks.base import total_reward
from sim.tasks.dclaw_turn import DClawTurn

ROOT = Path(__file__).resolve().parents[1]
CONFIG_PATH = ROOT / "hardware_configs" / "dclaw.yaml"
CONFIG = load_config(CONFIG_PATH)
RAD_PER_TICK = 2 * math.pi / 4096
FAST_SETTINGS = ControllerSettings(spin_s=0.0)


def config_with(**changes: Any) -> RobotConfig:
    """The claw config with top-level fields (or ``watchdog`` entries) changed."""
    data = yaml.safe_load(CONFIG_PATH.read_text())
    for key, value in changes.items():
        if key in ("max_consecutive_failed_reads", "max_data_age_s"):
            data["watchdog"][key] = value
        else:
            data[key] = value
    return config_from_mapping(data, source="test config")


def task_for(config: RobotConfig) -> DClawTurn:
    return replace(DClawTurn(), spec=config.task_spec())


def random_policy(seed: int = 0, scale: float = 1.0) -> Callable[[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    return lambda obs: rng.normal(0.0, scale, 9)


def make_controller(policy: Callable[[np.ndarray], Any], *, faults: str | None = None,
                    config: RobotConfig = CONFIG, settings: ControllerSettings = FAST_SETTINGS,
                    should_stop: Callable[[], str | None] = lambda: None,
                    clock: FakeClock | None = None, **mock: Any) -> tuple[Controller, MockBus, FakeClock]:
    clk = clock or FakeClock()
    bus = MockBus(config, faults=parse_faults(faults) if faults else None, clock=clk, **mock)
    bus.connect()
    ctrl = Controller(policy, bus, task_for(config), config, settings=settings, clock=clk, sleep=clk.sleep,
                      should_stop=should_stop)
    return ctrl, bus, clk


def run(ctrl: Controller, tmp_path: Path, episodes: int, seed: int = 0) -> RunSummary:
    writer = TrajectoryWriter(tmp_path, run_info(ctrl.config, "mock", ctrl.episode_steps))
    return run_episodes(ctrl, writer, episodes, np.random.default_rng(seed))


def episodes_until_stop(ctrl: Controller, n: int, seed: int = 0) -> list[EpisodeResult]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        out.append(ctrl.episode(rng))
        if out[-1].stop is not None:
            break
    return out


def assert_commands_safe(directory: Path, config: RobotConfig) -> None:
    """Every logged command inside the limits; every filtered command within the rate limit of the one before."""
    limits = SafetyLimits.from_config(config)
    for ep in read_episodes(directory):
        sent, filtered = ep["command"], ep["command_filtered"]
        assert np.all(sent >= config.low - 1e-12) and np.all(sent <= config.high + 1e-12)
        # the bus rounds to a tick, and inwards at the limits (its tick limits lie inside the joint limits)
        assert np.all(np.abs(sent - filtered) <= RAD_PER_TICK + 1e-9)
        chain = np.vstack([np.asarray(ep.meta["start_command"])[None], filtered])
        assert np.all(np.abs(np.diff(chain, axis=0)) <= limits.max_step + 1e-12)


# --- faults -----------------------------------------------------------------------------------------
def test_one_percent_dropped_replies_over_2000_cycles(tmp_path: Path) -> None:
    calls = {"n": 0, "nan": 0}
    wild = random_policy(1, scale=5.0)

    def policy(obs: np.ndarray) -> np.ndarray:
        calls["n"] += 1
        a = wild(obs)
        if calls["n"] % 97 == 0:
            a[calls["n"] % 9] = np.nan if calls["n"] % 2 else np.inf
            calls["nan"] += 1
        return a

    ctrl, bus, _ = make_controller(policy, faults="drop=0.01,seed=7")
    summary = run(ctrl, tmp_path, 50)
    assert summary.stop_kind == "completed", summary.stop_reason
    assert summary.episodes == summary.episodes_logged == 50
    assert summary.loop["cycles"] >= 2000
    counters = bus.counters
    assert summary.comm_errors == counters.total_comm_errors > 100
    episodes = list(read_episodes(tmp_path))
    logged = sum(int(ep["comm_errors"].sum()) + ep.meta["reset_comm_errors"] for ep in episodes)
    assert logged + summary.comm_errors_at_connect + summary.comm_errors_at_shutdown == counters.total_comm_errors
    assert summary.stale_reads == counters.stale_reads
    assert sum(int(ep["stale"].sum()) for ep in episodes) <= counters.stale_reads
    assert summary.held_actions == calls["nan"] > 0
    assert sum(int((ep["hold"] == Hold.NON_FINITE_ACTION).sum()) for ep in episodes) == calls["nan"]
    assert_commands_safe(tmp_path, CONFIG)
    assert summary.torque_off and not bus.torque_enabled


def test_silent_servo_stops_within_three_periods(tmp_path: Path) -> None:
    clk = FakeClock()
    onset = clk.t + 2.05
    ctrl, bus, _ = make_controller(random_policy(), faults="silent=21@2.05s", clock=clk)
    results = episodes_until_stop(ctrl, 5)
    stop = results[-1].stop
    assert stop is not None and stop.kind == "safety"
    assert "3 consecutive failed reads" in stop.reason and "id 21" in stop.reason
    assert stop.time - onset <= 3 * CONFIG.control_period_s
    last = results[-1]
    assert not last.complete and last.arrays["stale"][-1] == 1
    goal_before = bus.goal.copy()
    assert ctrl.shutdown(stop)
    np.testing.assert_array_equal(bus.goal, goal_before)  # held the last safe command ...
    assert not bus.torque_enabled  # ... then torque off


def test_safety_stop_is_summarised_and_partial_episode_logged(tmp_path: Path) -> None:
    ctrl, bus, _ = make_controller(random_policy(), faults="silent=12@6s")
    summary = run(ctrl, tmp_path, 5)
    assert summary.stop_kind == "safety" and "id 12" in summary.stop_reason
    assert summary.torque_off and not bus.torque_enabled
    episodes = list(read_episodes(tmp_path))
    assert summary.episodes == sum(ep.meta["complete"] for ep in episodes) >= 1
    assert episodes[-1].meta["complete"] is False and "safety" in episodes[-1].meta["stop_reason"]


def test_data_age_watchdog(tmp_path: Path) -> None:
    config = config_with(max_consecutive_failed_reads=50, max_data_age_s=0.25)
    ctrl, _, _ = make_controller(random_policy(), faults="silent=31@1s", config=config)
    stop = episodes_until_stop(ctrl, 3)[-1].stop
    assert stop is not None and stop.kind == "safety" and "ms old" in stop.reason


def test_servo_hardware_error_stops(tmp_path: Path) -> None:
    ctrl, _, _ = make_controller(random_policy(), faults="overload=21@1.5s")
    stop = episodes_until_stop(ctrl, 3)[-1].stop
    assert stop is not None and stop.kind == "safety"
    assert "f1_mid" in stop.reason and "overload" in stop.reason


def test_policy_failure_stops_safely(tmp_path: Path) -> None:
    calls = {"n": 0}

    def policy(obs: np.ndarray) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 50:
            raise RuntimeError("inference failed")
        return np.zeros(9)

    ctrl, bus, _ = make_controller(policy)
    summary = run(ctrl, tmp_path, 3)
    assert summary.stop_kind == "safety" and "inference failed" in summary.stop_reason
    assert not bus.torque_enabled


def test_policy_of_the_wrong_shape_is_refused_before_running() -> None:
    with pytest.raises(UserError, match=r"shape \(4,\)"):
        check_policy(lambda obs: np.zeros(4), 21, 9)
    check_policy(lambda obs: np.zeros(9), 21, 9)


def test_requested_stop_turns_torque_off_and_keeps_logs(tmp_path: Path) -> None:
    calls = {"n": 0}
    inner = random_policy()

    def policy(obs: np.ndarray) -> np.ndarray:
        calls["n"] += 1
        return inner(obs)

    def should_stop() -> str | None:
        # ten steps into the third episode, however many cycles the resets take
        return "SIGTERM" if calls["n"] > 90 else None

    ctrl, bus, _ = make_controller(policy, should_stop=should_stop)
    summary = run(ctrl, tmp_path, 10)
    assert summary.stop_kind == "requested" and summary.stop_reason == "SIGTERM"
    assert summary.torque_off and not bus.torque_enabled
    episodes = list(read_episodes(tmp_path))
    assert summary.episodes >= 2 and len(episodes) == summary.episodes + 1
    assert all(ep.steps == 40 and ep.meta["complete"] for ep in episodes[:-1])
    assert episodes[-1].meta["complete"] is False and episodes[-1].steps < 40


# --- timing -------------------------------------------------------------------------------------------
def test_fixed_rate_timing_and_overruns(tmp_path: Path) -> None:
    period = CONFIG.control_period_s
    clk = FakeClock()
    calls = {"n": 0}

    def slow_policy(obs: np.ndarray) -> np.ndarray:
        calls["n"] += 1
        clk.t += 1.5 * period if calls["n"] == 10 else 0.3 * period
        return np.zeros(9)

    ctrl, _, _ = make_controller(slow_policy, clock=clk)
    result = ctrl.episode(np.random.default_rng(0))
    assert result.complete and result.stop is None
    cycle = result.arrays["cycle_time"]
    error = result.arrays["period_error"]
    np.testing.assert_allclose(np.delete(cycle, 9), 0.3 * period, atol=1e-9)
    assert cycle[9] == pytest.approx(1.5 * period)
    assert result.arrays["overrun"][10] == 1 and result.arrays["overrun"].sum() == 1
    assert error[10] == pytest.approx(0.5 * period)
    np.testing.assert_allclose(np.delete(error, 10), 0.0, atol=1e-9)
    assert ctrl.stats.overruns == 1
    assert ctrl.stats.summary()["period_error_p50_us"] == pytest.approx(0.0, abs=1e-3)


class OversleepingClock:
    """Time that every read moves by ``READ_S`` (a spin costs something) and every sleep overshoots by ``LATE_S``
    (the OS wakes the thread late), deterministically: the real clock's behaviour without its load."""

    READ_S = 1e-5
    LATE_S = 3e-4

    def __init__(self) -> None:
        self.t = 0.0
        self.naps: list[float] = []

    def __call__(self) -> float:
        self.t += self.READ_S
        return self.t

    def sleep(self, dt: float) -> None:
        self.naps.append(dt)
        self.t += dt + self.LATE_S


def test_rate_timer_sleeps_then_spins() -> None:
    """The sleep ends ``spin_s`` early and the rest is spun, so a wake-up later than asked (but by less than
    ``spin_s``) costs the period nothing."""
    from robot.controller import RateTimer

    clock = OversleepingClock()
    timer = RateTimer(0.005, clock, clock.sleep, 0.0005)
    timer.wait()
    errors = [timer.wait()[1] for _ in range(20)]
    assert len(clock.naps) >= 20 and all(n <= 0.005 - 0.0005 + 1e-9 for n in clock.naps)
    assert max(abs(e) for e in errors) <= 3 * OversleepingClock.READ_S  # the spin's resolution, not the 0.3 ms


def test_rate_timer_on_a_clock_that_moves_only_when_slept_on_keeps_the_period() -> None:
    """A lock-step clock stands still while spun on: the timer sleeps the rest instead of spinning forever, and every
    cycle starts exactly one period after the last, whatever ``spin_s`` says."""
    from robot.controller import RateTimer

    clock = FakeClock()
    timer = RateTimer(0.1, clock, clock.sleep, spin_s=0.0003)
    timer.wait()
    starts = [timer.wait()[0] for _ in range(5)]
    np.testing.assert_allclose(np.diff(starts), 0.1, atol=1e-9)


# --- resets and episodes --------------------------------------------------------------------------------
class RecordingBus:
    """A bus that records every command written (wraps another bus)."""

    def __init__(self, inner: Bus) -> None:
        self.inner = inner
        self.config = inner.config
        self.writes: list[np.ndarray] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def write(self, command_rad: np.ndarray) -> np.ndarray:
        self.writes.append(np.array(command_rad))
        return self.inner.write(command_rad)


def test_reset_moves_rate_limited_from_anywhere() -> None:
    clk = FakeClock()
    spec = CONFIG.task_spec()
    far = np.clip(spec.reset + np.tile([0.4, 0.9, -1.2], 3), CONFIG.low, CONFIG.high)
    inner = MockBus(CONFIG, clock=clk, joint_pos=far, passive_pos=np.array([0.7]))
    inner.connect()
    bus = RecordingBus(inner)
    ctrl = Controller(lambda obs: np.zeros(9), bus, task_for(CONFIG), CONFIG,
                      settings=FAST_SETTINGS, clock=clk, sleep=clk.sleep)
    result = ctrl.episode(np.random.default_rng(0))
    assert result.complete and result.meta["reset_settled"]
    writes = np.array(bus.writes)
    start = np.asarray(result.meta["start_command"])
    steps_needed = math.ceil(np.max(np.abs(start - far)) / spec.max_step)
    assert result.meta["reset_cycles"] >= steps_needed
    assert np.all(np.abs(np.diff(writes, axis=0)) <= spec.max_step + 1e-12)
    # the first step starts from the joints as read (rounded to a tick)
    assert np.all(np.abs(writes[0] - far) <= spec.max_step + RAD_PER_TICK / 2 + 1e-12)
    assert np.max(np.abs(result.arrays["joint_pos"][0] - start)) <= ctrl.settings.reset_tolerance_rad
    # the valve is driven back to the fixed variant's start angle, 0
    assert result.arrays["passive_pos"][0, 0] == pytest.approx(0.0, abs=ctrl.settings.reset_tolerance_rad)
    assert result.meta["passive_reset"]["valve"]["driven"] is True


def test_episode_records_observation_reward_and_success_from_the_task(tmp_path: Path) -> None:
    task = task_for(CONFIG)
    goal_hit = {"n": 0}
    # a valve that is not resettable stays where the mock put it: near the target
    fixed_valve = config_with(encoders={"valve": {"id": 50, "scale": 1.0, "offset_rad": 0.0}})
    ctrl, _, _ = make_controller(random_policy(3), config=fixed_valve, passive_pos=np.array([math.pi - 0.05]))
    result = ctrl.episode(np.random.default_rng(0))
    assert result.meta["passive_reset"]["valve"]["driven"] is False
    a = result.arrays
    goal = result.meta["goal"]
    limits = SafetyLimits.from_config(CONFIG)
    last_action = episode_start_action(np.asarray(result.meta["start_command"]), limits)
    for k in range(result.steps + 1):
        reading = Reading(a["time"][k], a["time"][k], a["joint_pos"][k], a["joint_vel"][k],
                          a["joint_effort"][k] / TORQUE_NM_PER_A, a["passive_pos"][k], a["passive_vel"][k],
                          True, 1)
        np.testing.assert_array_equal(a["obs"][k], task.observe(reading.state(), last_action, goal))
        if k > 0:
            terms = task.reward_terms(reading.state(), goal)
            assert a["reward"][k - 1] == total_reward(terms)
            goal_hit["n"] += int(terms["success_bonus"] > 0)
        if k < result.steps:
            last_action = clip_action(a["action"][k])
    assert result.success == task.success(reading.state(), goal)
    assert result.success and goal_hit["n"] > 0
    assert result.episode_return == pytest.approx(float(a["reward"].sum()))


# --- parity with the simulated env ----------------------------------------------------------------------
def _reading_of(env: SimEnv) -> Reading:
    s = env.read()
    effort = s.joint_effort if s.joint_effort.size else np.zeros_like(s.joint_pos)
    return Reading(s.time, s.time, s.joint_pos, s.joint_vel, effort / TORQUE_NM_PER_A, s.passive_pos,
                   s.passive_vel, True, 1)


@pytest.mark.parametrize("variant", ["fixed", "random"])
def test_observation_and_command_match_the_sim_env(variant: str) -> None:
    task = DClawTurn(variant=variant)  # type: ignore[arg-type]
    env = SimEnv(task)
    try:
        obs, info = env.reset(seed=11)
        start = task.sample_start(np.random.default_rng(11))
        state = PolicyState(SafetyLimits.from_config(CONFIG))
        state.start(start.joint_pos)
        goal = info["goal"]
        assert goal == start.goal
        np.testing.assert_array_equal(state.observe(task, _reading_of(env).state(), goal), obs)
        rng = np.random.default_rng(5)
        for _ in range(15):
            action = rng.uniform(-1.4, 1.4, 9).astype(np.float32)
            f = state.act(action)
            obs, reward, _, _, info = env.step(action)
            np.testing.assert_array_equal(f.command, info["command"])
            reading = _reading_of(env)
            np.testing.assert_array_equal(state.observe(task, reading.state(), goal), obs)
            assert total_reward(task.reward_terms(reading.state(), goal)) == reward
    finally:
        env.close()


# --- one short run through the emulator, in lock-step at the shipped limits -------------------------------
def test_dropped_replies_through_the_emulator(tmp_path: Path) -> None:
    # Plain sync reads: ten replies a cycle, so 1 % drops several in 180 cycles, while three failed attempts in a row
    # (which a fast read's single reply at a higher rate makes likely during a reset) stay improbable.
    config = config_with(fast_sync_read=False)
    io = open_robot(config, "emulator", OpenOptions(faults=parse_faults("drop=0.01,seed=2"), lockstep=True))
    bus = io.bus
    try:
        bus.connect()
        ctrl = Controller(random_policy(4, scale=3.0), bus, task_for(config), config,
                          settings=io.controller_settings(ControllerSettings(episode_steps=60)), clock=io.clock,
                          sleep=io.sleep)
        writer = TrajectoryWriter(tmp_path, run_info(config, "emulator", 60))
        summary = run_episodes(ctrl, writer, 3, np.random.default_rng(0))
        counters = bus.counters
    finally:
        io.close()
    assert summary.stop_kind == "completed", summary.stop_reason
    assert summary.episodes == 3 and summary.loop["cycles"] >= 180
    # every cycle started exactly one control period of the emulator's time after the last (retries included): no
    # host can be late in lock-step
    for ep in read_episodes(tmp_path):
        errors = ep["period_error"][np.isfinite(ep["period_error"])]
        assert errors.size >= 59 and np.abs(errors).max() < 1e-9 and not ep["overrun"].any()
    assert summary.comm_errors == counters.total_comm_errors > 0
    episodes = list(read_episodes(tmp_path))
    logged = sum(int(ep["comm_errors"].sum()) + ep.meta["reset_comm_errors"] for ep in episodes)
    assert logged + summary.comm_errors_at_connect + summary.comm_errors_at_shutdown == summary.comm_errors
    assert_commands_safe(tmp_path, config)


class FirstReadFails(RecordingBus):
    """The first read is stale (as after a dropped reply); the rest go to the wrapped bus."""

    def __init__(self, inner: Bus) -> None:
        super().__init__(inner)
        self.reads = 0

    def read(self) -> Reading:
        self.reads += 1
        if self.reads == 1:
            t = self.inner.counters.last_ok_time or 0.0
            return Reading.failed(9, 1, t, t, 3, "timeout (f0_top, id 10)")
        return self.inner.read()


def test_a_failed_first_read_is_one_failed_read() -> None:
    """Before any good reading the data-age bound runs from the start, not from an infinitely old reading."""
    clk = FakeClock()
    inner = MockBus(CONFIG, clock=clk)
    inner.connect()
    bus = FirstReadFails(inner)
    ctrl = Controller(lambda obs: np.zeros(9), bus, task_for(CONFIG), CONFIG, settings=FAST_SETTINGS, clock=clk,
                      sleep=clk.sleep)
    result = ctrl.episode(np.random.default_rng(0))
    assert result.stop is None and result.complete
    assert bus.writes  # the reset moved on from the second reading


# --- ground truth: judging an episode on the emulator's physics ---------------------------------------------
class FixedTruth:
    """A world whose valve sits at ``angle`` whatever the robot reads; or one that cannot answer (``angle=None``)."""

    def __init__(self, angle: float | None) -> None:
        self.angle = angle
        self.asked = 0

    def true_state(self) -> RobotState:
        self.asked += 1
        if self.angle is None:
            raise ConnectionError("emulator gone")
        return RobotState(time=1.0, joint_pos=np.zeros(9), joint_vel=np.zeros(9),
                          passive_pos=np.array([self.angle]), passive_vel=np.zeros(1))


def test_truth_judges_success_on_the_world_not_the_reading(tmp_path: Path) -> None:
    ctrl, _, _ = make_controller(random_policy(3), settings=replace(FAST_SETTINGS, episode_steps=5))
    result = ctrl.episode(np.random.default_rng(0))
    assert not result.success and result.true_success is None  # no truth; five random steps leave the valve far off
    target = float(result.meta["goal"]["target"])
    truth = FixedTruth(target)  # the world says the valve is there
    ctrl.truth = truth
    result = ctrl.episode(np.random.default_rng(1))
    assert not result.success and result.true_success is True
    assert result.meta["truth"]["success"] is True and result.meta["truth"]["passive_pos"] == [target]
    assert truth.asked == 1


def test_a_truth_that_cannot_answer_leaves_the_run_going(tmp_path: Path) -> None:
    ctrl, _, _ = make_controller(random_policy(3), settings=replace(FAST_SETTINGS, episode_steps=5))
    ctrl.truth = FixedTruth(None)
    summary = run(ctrl, tmp_path, 2)
    assert summary.stop_kind == "completed" and summary.episodes == 2
    assert summary.true_success_rate is None
    assert all("truth" not in ep.meta for ep in read_episodes(tmp_path))


def test_the_emulator_tells_its_physics_and_the_run_is_judged_on_it(tmp_path: Path) -> None:
    io = open_robot(CONFIG, "emulator", OpenOptions(lockstep=True))
    try:
        io.bus.connect()
        assert io.truth is not None
        ctrl = Controller(random_policy(4), io.bus, task_for(CONFIG), CONFIG,
                          settings=io.controller_settings(ControllerSettings(episode_steps=20)), clock=io.clock,
                          sleep=io.sleep, truth=io.truth)
        summary = run_episodes(ctrl, TrajectoryWriter(tmp_path, run_info(CONFIG, "emulator", 20)), 2,
                               np.random.default_rng(0))
    finally:
        io.close()
    assert summary.stop_kind == "completed" and summary.true_success_rate is not None
    for ep in read_episodes(tmp_path):
        truth = ep.meta["truth"]
        # the encoder reads the physics to a tick, a control period before the episode ends
        assert abs(truth["passive_pos"][0] - float(ep["passive_pos"][-1][0])) < 0.05
        assert truth["time"] >= float(ep["time"][-1]) - 1e-9
        assert truth["success"] == ep.meta["success"]
