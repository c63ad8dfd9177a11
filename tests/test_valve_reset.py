"""Resetting the valve: its encoder's servo drives it to the episode's start during the scripted reset, and only then.

The config field, the ``passive_driven`` / ``write_passive`` bus API (mock bus on a fake clock, Dynamixel bus on
the emulator), the emulator's servo torque on the valve (both engines), and the controller's reset.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any

import dynamixel_sdk as sdk
import numpy as np
import pytest
import yaml
from lockstep_emulator import lockstep_bus
from sdk_recording import fast_state_blocks

from robot.bus import Bus, BusError, Reading
from robot.config import DEFAULT_PASSIVE_RESET_VELOCITY_RAD_S, RobotConfig, config_from_mapping, load_config
from robot.controller import Controller, ControllerSettings, EpisodeResult
from robot.dynamixel.control_table import STATE_BLOCK_SIZE, OperatingMode, Register, decode
from robot.dynamixel.units import RAD_PER_TICK
from robot.emulator import Emulator, RealityConfig
from robot.emulator.physics import XM430_TORQUE_LIMIT_NM, RealTimePhysics
from robot.hardware import OpenOptions, open_robot
from robot.mock import MockBus
from robot.runner import run_episodes, run_info
from s2r.core.errors import UserError
from s2r.core.trajlog import TrajectoryWriter, read_episodes, read_run
from sim.state import SimState
from sim.tasks.actions import wrap_angle
from sim.tasks.dclaw_turn import DClawTurn

ROOT = Path(__file__).resolve().parents[1]
CONFIG_PATH = ROOT / "hardware_configs" / "dclaw.yaml"
CONFIG = load_config(CONFIG_PATH)
SPEC = CONFIG.task_spec()
FAST_SETTINGS = ControllerSettings(spin_s=0.0)
TOLERANCE_RAD = FAST_SETTINGS.reset_tolerance_rad
TURN_PER_STEP_RAD = 0.1
"""How far the playing policy turns the mock's valve per step (rad): 4 rad in a 40-step episode."""


class FakeClock:
    """Time that moves only when slept in (s)."""

    def __init__(self) -> None:
        self.t = 500.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, dt: float) -> None:
        self.t += max(0.0, dt)


def config_with_valve(**valve: Any) -> RobotConfig:
    """The claw config with the valve encoder's entry replaced (its ID kept)."""
    data = yaml.safe_load(CONFIG_PATH.read_text())
    data["encoders"]["valve"] = {"id": 50, **valve}
    return config_from_mapping(data, source="test config")


class WatchingBus:
    """Wraps a bus; at every read records the reading and which passive joints the servos say are driven."""

    def __init__(self, inner: Bus, ask_servos: bool) -> None:
        self.inner = inner
        self.config = inner.config
        self.ask_servos = ask_servos
        self.reads: list[tuple[Reading, bool]] = []
        self.passive_goals: list[list[float]] = []
        """The valve goals written, one list per ``passive_driven`` block."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def read(self) -> Reading:
        # The servos' own Torque Enable (a sync read) on the emulator; the mock's servo state otherwise.
        valve_on = self.inner.torque_status()["valve"] if self.ask_servos else bool(
            isinstance(self.inner, MockBus) and self.inner.passive_torque[0])
        reading = self.inner.read()
        self.reads.append((reading, valve_on))
        return reading

    def passive_driven(self, *names: str) -> AbstractContextManager[None]:
        self.passive_goals.append([])
        return self.inner.passive_driven(*names)

    def write_passive(self, goals_rad: Mapping[str, float]) -> dict[str, float]:
        self.passive_goals[-1].append(goals_rad["valve"])
        return self.inner.write_passive(goals_rad)

    def valve_on_at(self, times: np.ndarray) -> list[bool]:
        """Whether the valve's servo was on at each of these reading times."""
        by_time = {r.time: on for r, on in self.reads}
        return [by_time[float(t)] for t in times]


class GlitchingBus(WatchingBus):
    """The first valve reading while its servo is on is 1604 rad off (as an emulated valve once read)."""

    def __init__(self, inner: MockBus) -> None:
        super().__init__(inner, ask_servos=False)
        self.glitched = False

    def read(self) -> Reading:
        reading = super().read()
        if self.reads[-1][1] and not self.glitched:
            self.glitched = True
            return replace(reading, passive_pos=reading.passive_pos + 1604.0)
        return reading


def mock_controller(config: RobotConfig, policy: Callable[[MockBus], Callable[[np.ndarray], np.ndarray]], *,
                    variant: str = "fixed", passive_pos: float = 0.0,
                    should_stop: Callable[[MockBus], str | None] = lambda bus: None, periodic: bool = True,
                    glitch: bool = False) -> tuple[Controller, WatchingBus, MockBus]:
    clk = FakeClock()
    inner = MockBus(config, clock=clk, passive_pos=np.array([passive_pos]))
    inner.connect()
    bus = GlitchingBus(inner) if glitch else WatchingBus(inner, ask_servos=False)
    spec = config.task_spec()
    spec = spec if periodic else replace(spec, periodic_passive=())
    task = replace(DClawTurn(variant=variant), spec=spec)  # type: ignore[arg-type]
    ctrl = Controller(policy(inner), bus, task, config, settings=FAST_SETTINGS, clock=clk, sleep=clk.sleep,
                      should_stop=lambda: should_stop(inner))
    return ctrl, bus, inner


def turning_policy(bus: MockBus) -> Callable[[np.ndarray], np.ndarray]:
    """Holds the fingers and turns the mock's valve by hand, as a successful episode turns the real one."""

    def act(obs: np.ndarray) -> np.ndarray:
        bus.passive_pos = bus.passive_pos + TURN_PER_STEP_RAD
        return np.asarray(obs[SPEC.obs_layout.slice("last_action")], dtype=np.float64)

    return act


# --- the config ------------------------------------------------------------------------------------------
def test_the_claw_valve_is_resettable_and_the_fields_are_validated() -> None:
    valve = CONFIG.encoder("valve")
    assert valve.resettable and valve.reset_velocity_limit_rad_s == 2.0
    assert CONFIG.resettable_passive_joints == ("valve",)
    plain = config_with_valve(scale=1.0).encoder("valve")
    assert not plain.resettable and plain.reset_velocity_limit_rad_s == DEFAULT_PASSIVE_RESET_VELOCITY_RAD_S
    assert config_with_valve(resettable=True).encoder("valve").reset_velocity_limit_rad_s == \
        DEFAULT_PASSIVE_RESET_VELOCITY_RAD_S
    bad: list[tuple[dict[str, Any], str]] = [
        ({"resettable": "yes"}, r"encoders\.valve\.resettable must be true or false"),
        ({"resettable": True, "reset_velocity_limit_rad_s": 0}, r"reset_velocity_limit_rad_s must be a speed"),
        ({"resettable": True, "reset_velocity_limit_rad_s": 100.0}, r"reset_velocity_limit_rad_s must be a speed"),
        ({"resettable": True, "reset_velocity_limit_rad_s": "fast"}, r"must be a finite number"),
        ({"reset_velocity_limit_rad_s": 1.0}, r"absent unless resettable is true"),
        ({"resettable": True, "reset_speed": 1.0}, r"unknown field encoders\.valve\.reset_speed"),
    ]
    for valve_fields, message in bad:
        with pytest.raises(UserError, match=message):
            config_with_valve(**valve_fields)
    with pytest.raises(KeyError, match="no encoder for a passive joint named 'lid'"):
        CONFIG.encoder("lid")


# --- the bus API (mock) -------------------------------------------------------------------------------------
def connected_mock(config: RobotConfig = CONFIG, passive_pos: float = 0.7) -> tuple[MockBus, FakeClock]:
    clk = FakeClock()
    bus = MockBus(config, clock=clk, passive_pos=np.array([passive_pos]))
    bus.connect()
    return bus, clk


def test_the_encoder_torque_is_on_only_inside_the_block_and_enabling_does_not_jump() -> None:
    bus, clk = connected_mock()
    assert bus.torque_status()["valve"] is False and bus.passive_driving == ()
    with bus.passive_driven("valve"):
        assert bus.torque_status()["valve"] is True and bus.passive_driving == ("valve",)
        clk.sleep(1.0)
        assert bus.read().passive_pos[0] == pytest.approx(0.7, abs=RAD_PER_TICK)  # goal = present: no jump
        sent = bus.write_passive({"valve": 0.2})
        assert sent["valve"] == pytest.approx(0.2, abs=RAD_PER_TICK / 2) and sent["valve"] != 0.2  # a whole tick
        clk.sleep(1.0)
        assert bus.read().passive_pos[0] == pytest.approx(sent["valve"], abs=RAD_PER_TICK)
    assert bus.torque_status()["valve"] is False and bus.passive_driving == ()
    with pytest.raises(BusError, match="only inside passive_driven"):
        bus.write_passive({"valve": 0.0})
    bus.passive_pos = np.array([1.5])  # turned by a finger: a free valve stays where it is put
    clk.sleep(1.0)
    assert bus.read().passive_pos[0] == pytest.approx(1.5, abs=RAD_PER_TICK)


def test_the_encoder_torque_goes_off_when_the_block_raises() -> None:
    bus, _ = connected_mock()
    with pytest.raises(RuntimeError, match="inside"), bus.passive_driven("valve"):
        raise RuntimeError("a failure inside the block")
    assert bus.torque_status()["valve"] is False and bus.passive_driving == ()
    with pytest.raises(BusError, match="do not nest"), bus.passive_driven("valve"), bus.passive_driven("valve"):
        pass
    assert bus.torque_status()["valve"] is False
    with bus.passive_driven("valve"):
        bus.torque(False)  # turning the robot's torque off releases a driven valve too
        assert bus.torque_status()["valve"] is False and bus.passive_driving == ()
    bus.close()
    assert not any(bus.passive_torque)


def test_only_a_resettable_encoder_may_be_driven() -> None:
    bus, _ = connected_mock(config_with_valve(scale=1.0))
    with pytest.raises(UserError, match="not resettable"), bus.passive_driven("valve"):
        pass
    with pytest.raises(UserError, match="no encoder for a passive joint named 'lid'"), bus.passive_driven("lid"):
        pass
    with pytest.raises(ValueError, match="at least one"), bus.passive_driven():
        pass
    assert bus.torque_status()["valve"] is False


# --- the controller's reset (mock) -----------------------------------------------------------------------
def test_each_episode_starts_at_the_start_angle_with_the_valve_servo_off(tmp_path: Path) -> None:
    # Three turns and more off the start: the valve is seen modulo a turn, so it must not be unwound.
    ctrl, bus, inner = mock_controller(CONFIG, turning_policy, passive_pos=20.3)
    writer = TrajectoryWriter(tmp_path, run_info(CONFIG, "mock", ctrl.episode_steps))
    summary = run_episodes(ctrl, writer, 3, np.random.default_rng(0))
    assert summary.stop_kind == "completed" and summary.episodes == 3
    assert read_run(tmp_path).extra["resettable_passive_joints"] == ["valve"]
    episodes = list(read_episodes(tmp_path))
    ends = [20.3] + [float(ep["passive_pos"][-1, 0]) for ep in episodes[:-1]]
    starts = [6 * math.pi, 8 * math.pi, 10 * math.pi]  # the fixed variant's 0, whole turns on: 4 rad a turn is kept
    for ep, start, previous_end in zip(episodes, starts, ends, strict=True):
        valve = ep["passive_pos"][:, 0]
        assert abs(start - previous_end) <= math.pi  # the nearest angle equivalent to 0 ...
        assert valve[0] == pytest.approx(start, abs=TOLERANCE_RAD)  # ... is where the episode starts
        assert valve[-1] - valve[0] == pytest.approx(40 * TURN_PER_STEP_RAD, abs=RAD_PER_TICK)  # ... turned 4 rad
        report = ep.meta["passive_reset"]["valve"]
        assert report["driven"] and report["settled"] and report["start_rad"] == pytest.approx(start, abs=1e-12)
        assert not any(bus.valve_on_at(ep["time"]))  # free for the whole episode
    assert any(on for _, on in bus.reads)  # ... and on during the resets: the check above can fail
    # each reset ramps the goal at the configured rate, from where the valve was to the start angle exactly
    limit = CONFIG.encoder("valve").reset_velocity_limit_rad_s * CONFIG.control_period_s
    assert len(bus.passive_goals) == 3
    for previous_end, goals, ep in zip(ends, bus.passive_goals, episodes, strict=True):
        ramp = np.diff([previous_end, *goals])
        assert np.all(np.abs(ramp) <= limit + RAD_PER_TICK)
        assert goals[-1] == ep.meta["passive_reset"]["valve"]["start_rad"]
        assert len(goals) == math.ceil(abs(goals[-1] - previous_end) / limit)
    assert not any(inner.passive_torque) and not inner.torque_status()["valve"]


class SpokeBus(WatchingBus):
    """A spoke holds the first finger's distal joint 0.3 rad short of its start pose until the valve has been
    driven back in the reset: where the last episode left a spoke under a fingertip."""

    BLOCKED_RAD = 0.3

    def __init__(self, inner: MockBus) -> None:
        super().__init__(inner, ask_servos=False)
        self.valve_reset = False
        self.blocked_reads = 0
        """Readings in which the spoke held the finger more than the reset tolerance short of its start."""

    def passive_driven(self, *names: str) -> AbstractContextManager[None]:
        self.valve_reset = True
        return super().passive_driven(*names)

    def read(self) -> Reading:
        reading = super().read()
        if self.valve_reset:
            return reading
        pos = reading.joint_pos.copy()
        pos[2] = min(pos[2], SPEC.reset[2] - self.BLOCKED_RAD)
        self.blocked_reads += int(SPEC.reset[2] - pos[2] > TOLERANCE_RAD)
        return replace(reading, joint_pos=pos)


def test_a_finger_resting_on_a_spoke_settles_once_the_valve_is_reset() -> None:
    """The valve's reset comes before the fingers' settling is judged: waiting for the blocked finger first
    ran out the reset timeout and warned, although the episode then started in place."""
    clk = FakeClock()
    inner = MockBus(CONFIG, clock=clk, passive_pos=np.array([2.5]))
    inner.connect()
    bus = SpokeBus(inner)
    task = DClawTurn(variant="fixed")
    ctrl = Controller(turning_policy(inner), bus, task, CONFIG, settings=FAST_SETTINGS, clock=clk, sleep=clk.sleep)
    result = ctrl.episode(np.random.default_rng(0))
    assert bus.blocked_reads > 0  # the controller saw the finger held off its start
    assert result.meta["reset_settled"] and result.meta["reset_error_rad"] <= TOLERANCE_RAD
    assert result.meta["reset_duration_s"] < FAST_SETTINGS.reset_timeout_s / 2
    assert result.meta["passive_reset"]["valve"]["settled"]
    assert result.arrays["joint_pos"][0, 2] == pytest.approx(result.arrays["command"][0, 2], abs=TOLERANCE_RAD)


def test_a_valve_the_task_sees_in_absolute_angle_is_unwound_to_its_start() -> None:
    ctrl, bus, _ = mock_controller(CONFIG, turning_policy, passive_pos=7.0, periodic=False)
    result = ctrl.episode(np.random.default_rng(0))
    assert result.arrays["passive_pos"][0, 0] == pytest.approx(0.0, abs=TOLERANCE_RAD)
    assert bus.passive_goals[0][-1] == 0.0 and result.meta["passive_reset"]["valve"]["start_rad"] == 0.0


def test_a_glitched_reading_never_becomes_the_valve_reset_goal() -> None:
    ctrl, bus, _ = mock_controller(CONFIG, turning_policy, passive_pos=2.5, glitch=True)
    assert isinstance(bus, GlitchingBus)
    result = ctrl.episode(np.random.default_rng(0))
    assert bus.glitched
    goals = bus.passive_goals[0]
    assert max(abs(g) for g in goals) <= 2.5 and goals[-1] == 0.0  # from where the valve is, not 1606.5 rad
    assert result.arrays["passive_pos"][0, 0] == pytest.approx(0.0, abs=TOLERANCE_RAD)


def test_periodic_passive_joints_must_be_passive_joints() -> None:
    with pytest.raises(ValueError, match="periodic_passive \\['lid'\\] must name passive joints"):
        replace(SPEC, periodic_passive=("lid",))


def test_the_random_variant_starts_at_its_sampled_angle() -> None:
    ctrl, _, _ = mock_controller(CONFIG, turning_policy, variant="random")
    rng, replay = np.random.default_rng(4), np.random.default_rng(4)
    for _ in range(3):
        result: EpisodeResult = ctrl.episode(rng)
        start = ctrl.task.sample_start(replay)
        # modulo a turn: the valve is not unwound
        assert wrap_angle(result.arrays["passive_pos"][0, 0] - start.passive_pos[0]) == pytest.approx(
            0.0, abs=TOLERANCE_RAD)
        assert result.meta["goal"] == start.goal


def test_a_valve_that_is_not_resettable_stays_where_it_is_and_the_meta_says_so() -> None:
    config = config_with_valve(scale=1.0)
    ctrl, bus, _ = mock_controller(config, turning_policy, passive_pos=2.5)
    first = ctrl.episode(np.random.default_rng(0))
    second = ctrl.episode(np.random.default_rng(1))
    assert first.arrays["passive_pos"][0, 0] == pytest.approx(2.5, abs=RAD_PER_TICK)
    assert second.arrays["passive_pos"][0, 0] == pytest.approx(first.arrays["passive_pos"][-1, 0], abs=RAD_PER_TICK)
    report = second.meta["passive_reset"]["valve"]
    assert report["driven"] is False and "not resettable" in report["why"] and "starts where it is" in report["why"]
    assert not any(on for _, on in bus.reads) and bus.passive_goals == []


def test_a_stop_while_the_valve_is_driven_turns_its_servo_off(tmp_path: Path) -> None:
    ctrl, _, inner = mock_controller(CONFIG, turning_policy, passive_pos=2.5,
                                     should_stop=lambda bus: "SIGTERM" if bus.passive_driving else None)
    summary = run_episodes(ctrl, TrajectoryWriter(tmp_path, run_info(CONFIG, "mock", 40)), 2,
                           np.random.default_rng(0))
    assert summary.stop_kind == "requested" and summary.torque_off
    assert inner.passive_driving == () and not any(inner.torque_status().values())
    assert inner.read().passive_pos[0] == pytest.approx(2.5, abs=RAD_PER_TICK)  # stopped before it was driven


# --- the emulator ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ["mujoco", "pybullet"])
def test_the_emulated_valve_follows_its_servo_while_on_and_is_free_when_off(engine: str) -> None:
    clk = FakeClock()
    task = DClawTurn()
    physics = RealTimePhysics(task, engine, 0.0025, {}, 0.0, SPEC.reset, np.array([0.0]), clk)

    def run(seconds: float) -> float:
        clk.sleep(seconds)
        physics.advance_to(clk())
        return float(physics.state().passive_pos[0])

    def kick(velocity_rad_s: float) -> None:
        """A finger's blow: the valve gets a velocity at once."""
        s = physics.engine.get_state()
        qvel = s.qvel.copy()
        qvel[SPEC.n_joints] = velocity_rad_s
        physics.engine.set_state(SimState(s.qpos, qvel, s.command))

    try:
        physics.set_targets(clk(), SPEC.reset, np.array([1.0]))
        run(0.005)
        assert physics.passive_driven
        assert physics.passive_effort[0] == pytest.approx(XM430_TORQUE_LIMIT_NM)  # a big error: the stall torque
        assert run(1.0) == pytest.approx(1.0, abs=2 * RAD_PER_TICK)
        kick(10.0)
        assert run(1.0) == pytest.approx(1.0, abs=2 * RAD_PER_TICK)  # the servo pulls it back
        physics.set_targets(clk(), SPEC.reset)  # torque off
        held = run(0.2)
        assert not physics.passive_driven and physics.passive_effort[0] == 0.0
        kick(10.0)
        assert run(1.0) - held > 0.1  # it coasts and stays where it stopped: free, as before
    finally:
        physics.close()


class WriteLog:
    """The SDK's packet handler, recording every register write and every Present Position read, in order."""

    def __init__(self) -> None:
        self.inner = sdk.PacketHandler(2.0)
        self.log: list[tuple[str, int, int, int]] = []

    def writeTxRx(self, port: Any, dxl_id: int, address: int, length: int, data: list[int]) -> Any:
        self.log.append(("write", dxl_id, address, int.from_bytes(bytes(data), "little", signed=True)))
        return self.inner.writeTxRx(port, dxl_id, address, length, data)

    def syncWriteTxOnly(self, port: Any, address: int, length: int, param: list[int], n: int) -> Any:
        for k in range(0, n, length + 1):
            value = int.from_bytes(bytes(param[k + 1:k + 1 + length]), "little", signed=True)
            self.log.append(("sync_write", param[k], address, value))
        return self.inner.syncWriteTxOnly(port, address, length, param, n)

    def readRx(self, port: Any, dxl_id: int, length: int) -> Any:
        data, result, error = self.inner.readRx(port, dxl_id, length)
        if result == sdk.COMM_SUCCESS and length == STATE_BLOCK_SIZE:
            self.log.append(("present", dxl_id, Register.PRESENT_POSITION.address,
                             decode(Register.PRESENT_POSITION, bytes(data), 6)))
        return data, result, error

    def rxPacket(self, port: Any, fast: bool) -> Any:
        packet, result = self.inner.rxPacket(port, fast)
        if fast and result == sdk.COMM_SUCCESS:
            for i, block in fast_state_blocks(packet):
                self.log.append(("present", i, Register.PRESENT_POSITION.address,
                                 decode(Register.PRESENT_POSITION, block, 6)))
        return packet, result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def writes_to(self, servo_id: int, register: Register) -> list[tuple[int, int]]:
        """(log index, value) of every write of ``register`` to ``servo_id``."""
        return [(n, e[3]) for n, e in enumerate(self.log)
                if e[0] in ("write", "sync_write") and e[1] == servo_id and e[2] == register.address]


def test_the_dynamixel_bus_drives_the_valve_servo_only_inside_the_block() -> None:
    config = load_config(CONFIG_PATH)
    valve_id = config.encoder("valve").id
    recorder = WriteLog()
    with Emulator(config, RealityConfig(initial_passive_pos_rad=(0.8,)), lockstep=True) as emu:
        bus = lockstep_bus(config, emu, packet_handler=recorder)
        try:
            bus.connect()
            mode = recorder.writes_to(valve_id, Register.OPERATING_MODE)
            assert [v for _, v in mode] == [int(OperatingMode.EXTENDED_POSITION)]  # set once, while torque is off
            assert bus.torque_status()["valve"] is False
            with bus.passive_driven("valve"):
                assert bus.torque_status()["valve"] is True
                torque_on = recorder.writes_to(valve_id, Register.TORQUE_ENABLE)[-1]
                goal = [w for w in recorder.writes_to(valve_id, Register.GOAL_POSITION) if w[0] < torque_on[0]][-1]
                present = [e[3] for e in recorder.log[:goal[0]] if e[:2] == ("present", valve_id)][-1]
                assert torque_on[1] == 1 and goal[1] == present  # goal = present, then torque on: no jump
                for angle in np.linspace(0.8, -0.4, 7)[1:]:
                    sent = bus.write_passive({"valve": float(angle)})
                    emu.clock.sleep(0.1)
                assert bus.read().passive_pos[0] == pytest.approx(sent["valve"], abs=RAD_PER_TICK)
            assert bus.torque_status()["valve"] is False
            with pytest.raises(RuntimeError, match="inside"), bus.passive_driven("valve"):
                raise RuntimeError("a failure inside the block")
            assert bus.torque_status()["valve"] is False and bus.passive_driving == ()
            with bus.passive_driven("valve"):
                bus.close()  # closing inside the block turns the valve's servo off too
            bus.connect()
            assert bus.torque_status()["valve"] is False
        finally:
            bus.close()


def test_on_the_emulator_a_turned_valve_is_reset_and_free_during_episodes(tmp_path: Path) -> None:
    # The valve was left at 1.5 rad; the scripted policy sweeps the top joints, which turns it again.
    config = load_config(CONFIG_PATH)
    reality = RealityConfig(initial_passive_pos_rad=(1.5,))
    io = open_robot(config, "emulator", OpenOptions(reality=reality, lockstep=True))
    inner = io.bus
    bus = WatchingBus(inner, ask_servos=True)
    last = SPEC.obs_layout.slice("last_action")
    hold = np.tile([0.0, -0.75, 0.47], 3)  # fingertips lowered towards the spokes

    def sweep(obs: np.ndarray) -> np.ndarray:
        action = hold.copy()
        action[0::3] = np.minimum(np.asarray(obs[last], dtype=np.float64)[0::3] + 0.04, 1.0)
        return action

    try:
        inner.connect()
        task = replace(DClawTurn(), spec=config.task_spec())
        settings = io.controller_settings(ControllerSettings(episode_steps=25))
        ctrl = Controller(sweep, bus, task, config, settings=settings, clock=io.clock, sleep=io.sleep)
        summary = run_episodes(ctrl, TrajectoryWriter(tmp_path, run_info(config, "emulator", 25)), 2,
                               np.random.default_rng(0))
        status = inner.torque_status()
    finally:
        io.close()
    assert summary.stop_kind == "completed", summary.stop_reason
    episodes = list(read_episodes(tmp_path))
    assert len(episodes) == 2
    for ep in episodes:
        valve = ep["passive_pos"][:, 0]
        assert abs(valve[0]) <= TOLERANCE_RAD
        assert abs(valve[-1] - valve[0]) > 0.1  # the episode turned it, so the next reset had work to do
        assert ep.meta["passive_reset"]["valve"]["settled"]
        assert not any(bus.valve_on_at(ep["time"]))  # the servo says: torque off throughout the episode
    assert any(on for _, on in bus.reads)
    assert not any(status.values())
