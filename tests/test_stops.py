"""Stops that must be safe and quick: a lost serial port (servos or IMU), a read that would outlast the watchdog, a
requested stop during the safety hold, a policy whose every action is held, and the exit codes that report them."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dynamixel_sdk as sdk
import numpy as np
import pytest
import yaml
from lockstep_emulator import lockstep_bus
from test_controller import (
    CONFIG,
    CONFIG_PATH,
    FAST_SETTINGS,
    FakeClock,
    make_controller,
    random_policy,
    run,
    task_for,
)

from robot.bus import BusError, PortLost
from robot.config import config_from_mapping, load_config
from robot.controller import Controller, ControllerSettings, Stop, bus_watchdog_s
from robot.dynamixel.bus import DynamixelBus, TunedPortHandler
from robot.dynamixel.control_table import (
    BUS_WATCHDOG_ERROR,
    Instruction,
    Register,
    StatusError,
    bus_watchdog_units,
    encode,
)
from robot.dynamixel.protocol import PacketDecoder, encode_instruction
from robot.dynamixel.timing import state_read_attempt_s
from robot.emulator import Emulator
from robot.emulator.faults import FaultSpec
from robot.emulator.reality import RealityConfig
from robot.emulator.server import build_chain
from robot.imu.reader import ImuReader, SerialByteSource
from robot.mock import MockBus
from robot.safety import Hold
from s2r.commands.robot import EXIT_PORT_LOST, EXIT_SAFETY_STOP, EXIT_TORQUE_NOT_OFF, deploy_exit_code
from s2r.core.errors import UserError
from s2r.core.trajlog import episode_files, read_episodes

ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 60.0
SLOW_LINE_LATENCY_TIMER_S = 0.05
"""The read-deadline arithmetic tests (on a fake clock) take a slow line: a 50 ms latency timer, so 205 ms per
failing read attempt ..."""
SLOW_LINE_DATA_AGE_S = 2.0
"""... and a 2 s data-age bound, so the attempts that fit are easy to count."""


def shipped_config(**changes: Any) -> dict[str, Any]:
    """The shipped claw config, with top-level changes."""
    data: dict[str, Any] = yaml.safe_load(CONFIG_PATH.read_text())
    data.update(changes)
    return data


def slow_line_config(**changes: Any) -> dict[str, Any]:
    """The claw config on a slow line (SLOW_LINE_*), with top-level changes: numbers for the fake-clock tests."""
    data = shipped_config(latency_timer_s=SLOW_LINE_LATENCY_TIMER_S)
    data["watchdog"] = {**data["watchdog"], "max_data_age_s": SLOW_LINE_DATA_AGE_S}
    data.update(changes)
    return data


# --- a lost port -------------------------------------------------------------------------------------------
def test_a_dead_pty_is_a_lost_port_every_time_and_closes_quietly() -> None:
    master, slave = os.openpty()
    path = os.ttyname(slave)
    port = TunedPortHandler(path, CONFIG.latency_timer_s)
    try:
        assert port.openPort()
    finally:
        os.close(slave)
    port.clearPort()  # alive while the other end is open
    os.close(master)  # the emulator's process gone, or the USB cable pulled
    with pytest.raises(PortLost, match=f"serial port {path} lost while flushing"):
        port.clearPort()
    for use in (lambda: port.readPort(4), lambda: port.writePort([1, 2]), lambda: port.drain(0.001, 0.01),
                lambda: port.is_using):
        with pytest.raises(PortLost, match="lost while flushing"):  # the first cause, at once
            use()
    port.closePort()  # quiet
    assert not port.is_open


def test_an_imu_line_whose_other_end_died_is_a_lost_port_and_closes_quietly() -> None:
    import test_dkitty_hardware as kitty

    imu = kitty.CONFIG.imu
    assert imu is not None
    master, slave = os.openpty()
    path = os.ttyname(slave)
    source = SerialByteSource(path, imu.baud)
    os.close(slave)
    reader = ImuReader(source, imu)
    assert reader.poll() is None  # alive, nothing sent yet
    os.close(master)  # the IMU unplugged
    with pytest.raises(PortLost, match=f"serial port {path} lost while reading the IMU"):
        reader.poll()
    assert reader.counters.read_errors == 1
    reader.close()  # quiet


def test_a_killed_emulator_is_a_lost_port_on_the_bus_which_closes_quietly() -> None:
    config = config_from_mapping(shipped_config(), source="test config")
    emulator = Emulator(config, lockstep=True)
    emulator.start()
    bus = lockstep_bus(config, emulator, on_close=emulator.stop)
    try:
        bus.connect()
        assert bus.read().ok
        assert emulator.pid is not None
        os.kill(emulator.pid, signal.SIGKILL)
        deadline = time.monotonic() + WAIT_S
        with pytest.raises(PortLost):
            while time.monotonic() < deadline:  # the child may take a moment to die
                bus.read()
        with pytest.raises(PortLost):
            bus.write(np.zeros(9))
        with pytest.raises(PortLost):
            bus.torque(False)
    finally:
        bus.close()  # no second traceback from a dead descriptor
    bus.close()


class LosingBus(MockBus):
    """The mock bus whose port goes away once ``lost`` is set: every later use raises :class:`PortLost`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lost = False

    def _check_line(self) -> None:
        if self.lost:
            raise PortLost("serial port /dev/ttyFAKE lost while reading: OSError: [Errno 5] Input/output error")

    def read(self) -> Any:
        self._check_line()
        return super().read()

    def write(self, command_rad: Any) -> Any:
        self._check_line()
        return super().write(command_rad)

    def torque(self, enabled: bool) -> None:
        self._check_line()
        super().torque(enabled)


def test_a_lost_port_mid_episode_is_a_port_lost_stop_and_every_episode_is_written(tmp_path: Path) -> None:
    clock = FakeClock()
    bus = LosingBus(CONFIG, clock=clock)
    bus.connect()
    inner = random_policy()
    calls = {"n": 0}

    def policy(obs: np.ndarray) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 2 * 40 + 15:  # the 15th step of the third episode, whose write fails
            bus.lost = True
        return inner(obs)

    ctrl = Controller(policy, bus, task_for(CONFIG), CONFIG, settings=FAST_SETTINGS, clock=clock, sleep=clock.sleep)
    assert ctrl.episode_steps == 40
    summary = run(ctrl, tmp_path, 5)
    assert summary.stop_kind == "port_lost" and "Input/output error" in summary.stop_reason
    assert summary.torque_off is False  # nothing could confirm it
    assert deploy_exit_code(summary.stop_kind, summary.torque_off) == EXIT_PORT_LOST
    episodes = list(read_episodes(tmp_path))
    assert [ep.meta["complete"] for ep in episodes] == [True, True, False] and summary.episodes == 2
    assert episodes[-1].steps == 14 and episodes[-1].meta["stop_reason"].startswith("port_lost: ")


def test_a_lost_imu_port_is_a_port_lost_stop_that_still_folds_the_legs(tmp_path: Path) -> None:
    import test_dkitty_hardware as kitty

    clock, io, bus, stream = kitty.mock_robot()
    calls = {"n": 0}

    def policy(obs: np.ndarray) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 5:
            stream.close()  # the IMU's cable pulled
        return np.zeros(12)

    ctrl = kitty.controller(io, clock, policy)
    summary = run(ctrl, tmp_path, 2)
    assert summary.stop_kind == "port_lost" and "IMU" in summary.stop_reason
    assert summary.torque_off and not bus.torque_enabled  # the servos' own line still works
    assert kitty.CONFIG.safe_pose_rad is not None
    np.testing.assert_allclose(bus.goal, kitty.CONFIG.safe_pose_rad, atol=0.01)
    assert list(read_episodes(tmp_path))[-1].meta["complete"] is False


def _deploy_on_the_emulator(config: Path, logs: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "s2r.commands.robot", "deploy", "scripted:random", "--robot", str(config), "--driver",
         "emulator", "--lockstep", "--episodes", "100000", "--episode-steps", "10", "--log-dir", str(logs), "--json"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def test_deploy_whose_emulator_dies_exits_port_lost_with_a_summary_and_its_episodes(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    proc = _deploy_on_the_emulator(CONFIG_PATH, logs)
    try:
        deadline = time.monotonic() + WAIT_S
        while not (logs.is_dir() and len(episode_files(logs)) >= 2):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "no two episodes in time"
            time.sleep(0.02)
        (emulator,) = _children(proc.pid)
        os.kill(emulator, signal.SIGKILL)  # the cable pulled
        out, err = proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == EXIT_PORT_LOST, err
    assert "Traceback" not in err and "port lost" in err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["stop_kind"] == "port_lost" and summary["torque_off"] is False
    episodes = list(read_episodes(logs))
    assert len(episodes) >= 2 and summary["episodes"] >= 2
    assert all(ep.steps == 10 and ep.meta["complete"] for ep in episodes[:summary["episodes"]])
    assert len(episodes) == summary["episodes_logged"]


def test_exit_codes() -> None:
    assert deploy_exit_code("completed", True) == 0 and deploy_exit_code("requested", True) == 0
    assert deploy_exit_code("safety", True) == deploy_exit_code("safety", False) == EXIT_SAFETY_STOP
    assert deploy_exit_code("port_lost", False) == EXIT_PORT_LOST
    assert deploy_exit_code("completed", False) == deploy_exit_code("requested", False) == EXIT_TORQUE_NOT_OFF


# --- held actions ------------------------------------------------------------------------------------------
def test_a_nan_policy_stops_within_a_few_cycles_instead_of_completing(tmp_path: Path) -> None:
    ctrl, bus, _ = make_controller(lambda obs: np.full(9, np.nan))
    summary = run(ctrl, tmp_path, 3)
    assert summary.stop_kind == "safety" and "NaN or infinite in 6 of the last 6 cycles" in summary.stop_reason
    assert deploy_exit_code(summary.stop_kind, summary.torque_off) == EXIT_SAFETY_STOP
    assert summary.episodes == 0 and summary.held_actions == 6 and not bus.torque_enabled
    (episode,) = read_episodes(tmp_path)
    assert episode.steps == 5 and np.all(episode["hold"] == Hold.NON_FINITE_ACTION)


def test_occasional_held_actions_do_not_stop(tmp_path: Path) -> None:
    calls = {"n": 0}

    def policy(obs: np.ndarray) -> np.ndarray:
        calls["n"] += 1
        return np.full(9, np.nan) if calls["n"] % 3 == 0 else np.zeros(9)  # a third held: under half

    ctrl, _, _ = make_controller(policy)
    summary = run(ctrl, tmp_path, 2)
    assert summary.stop_kind == "completed" and summary.held_actions > 20


@pytest.mark.parametrize(("changes", "message"), [({"held_window": 0}, "held_window"),
                                                   ({"max_held_fraction": 1.0}, "max_held_fraction"),
                                                   ({"max_held_fraction": float("nan")}, "max_held_fraction")])
def test_held_action_settings_are_checked(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError, match=message):
        ControllerSettings(**changes)


# --- a requested stop acts within a period ------------------------------------------------------------------
def test_a_requested_stop_cuts_the_safety_hold_short() -> None:
    clock = FakeClock()
    asked: dict[str, float] = {}

    def should_stop() -> str | None:
        return "SIGTERM" if "at" in asked and clock() >= asked["at"] else None

    settings = ControllerSettings(spin_s=0.0, safe_stop_hold_s=5.0)
    ctrl, bus, _ = make_controller(random_policy(), settings=settings, should_stop=should_stop, clock=clock)
    ctrl.episode(np.random.default_rng(0))
    start = clock()
    asked["at"] = start + 0.25
    assert ctrl.shutdown(Stop("safety", "test", start))
    assert not bus.torque_enabled
    assert clock() - asked["at"] <= CONFIG.control_period_s + 1e-9  # not the 5 s hold


def test_a_safety_hold_without_a_request_lasts_its_time() -> None:
    clock = FakeClock()
    ctrl, _, _ = make_controller(random_policy(), settings=ControllerSettings(spin_s=0.0, safe_stop_hold_s=0.5),
                                 clock=clock)
    ctrl.episode(np.random.default_rng(0))
    start = clock()
    ctrl.shutdown(Stop("safety", "test", start))
    assert clock() - start == pytest.approx(0.5)


# --- read deadlines -----------------------------------------------------------------------------------------
class StalledHost:
    """A packet handler whose every sync read times out after ``stall_s`` on ``clock`` (a host that stalls)."""

    def __init__(self, clock: FakeClock, stall_s: float) -> None:
        self.clock = clock
        self.stall_s = stall_s
        self.attempts = 0

    def getProtocolVersion(self) -> float:
        return 2.0

    def _timeout(self, *args: Any) -> int:
        self.attempts += 1
        self.clock.sleep(self.stall_s)
        return int(sdk.COMM_RX_TIMEOUT)

    syncReadTx = _timeout
    fastSyncReadTx = _timeout


class QuietPort:
    """A port handler with nothing on the line."""

    is_using = False

    def clearPort(self) -> None:
        pass

    def closePort(self) -> None:
        pass


def test_a_state_read_starts_no_attempt_it_cannot_finish_by_the_data_age_bound() -> None:
    config = config_from_mapping(slow_line_config(retries={"read": 8, "write": 2, "connect": 3}), "test config")
    clock = FakeClock()
    host = StalledHost(clock, stall_s=0.5)
    bus = DynamixelBus(config, "/dev/null", port_handler=QuietPort(), packet_handler=host, clock=clock)
    start = clock()
    reading, ticks = bus._read_state()  # the read under the bus's public read(), without a connect's traffic
    attempt_s = state_read_attempt_s(config.baud, len(config.all_ids), config.latency_timer_s, config.return_delay_s)
    assert ticks is None and reading.stale and "read deadline of 2 s reached" in (reading.error or "")
    # attempts start at 0, 0.5, 1.0 and 1.5 s; one at 2.0 s could not end by 2 s (nor could one at 1.5 + 0.205)
    assert attempt_s == pytest.approx(0.205, abs=0.001)
    assert host.attempts == reading.attempts == 4
    assert clock() - start <= SLOW_LINE_DATA_AGE_S


def test_a_read_that_fits_makes_every_attempt() -> None:
    config = config_from_mapping(slow_line_config(), "test config")
    clock = FakeClock()
    host = StalledHost(clock, stall_s=0.1)
    bus = DynamixelBus(config, "/dev/null", port_handler=QuietPort(), packet_handler=host, clock=clock)
    reading, _ = bus._read_state()
    assert reading.stale and reading.attempts == host.attempts == 1 + config.retries.read
    assert "deadline" not in (reading.error or "")


@pytest.mark.parametrize(("changes", "message"), [
    ({"retries": {"read": 500}}, r"retries.read must be at most 8: 501 failing state reads of 10 servos take up to "
                                 r"102\.\d+ s \(205\.\d ms each"),
    ({"retries": {"read": 2000}}, r"retries.read must be at most 8"),
    ({"retries": {"write": 1000}}, r"retries.write must be an integer in \[0, 20\]"),
    ({"retries": {"connect": 21}}, r"retries.connect must be an integer in \[0, 20\]"),
    ({"watchdog": {"max_data_age_s": 0.05}}, r"watchdog.max_data_age_s must be at least the control period 0.1 s"),
    ({"latency_timer_s": 0.05, "watchdog": {"max_data_age_s": 0.25}}, r"retries.read must be at most 0"),
])
def test_retries_that_cannot_fit_the_data_age_bound_are_refused(changes: dict[str, Any], message: str) -> None:
    data = slow_line_config()
    for key, value in changes.items():
        if isinstance(value, dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    with pytest.raises(UserError, match=message):
        config_from_mapping(data, "test config")


def test_the_shipped_and_test_configs_fit() -> None:
    for name in ("dclaw", "dkitty"):
        load_config(ROOT / "hardware_configs" / f"{name}.yaml")
    config_from_mapping(slow_line_config(), "test config")
    assert CONFIG.retries.read == 2


# --- the servos' Bus Watchdog --------------------------------------------------------------------------------
def test_the_emulated_bus_watchdog_stops_a_servo_the_host_left_and_refuses_goals_until_cleared() -> None:
    clock = FakeClock(100.0)
    chain = build_chain(CONFIG, RealityConfig(), FaultSpec(), clock)
    decoder = PacketDecoder()
    servo_id = CONFIG.joint_ids[0]
    servo = next(s for s in chain.servos if s.id == servo_id)

    def write(reg: Register, value: int) -> int:
        (packet,) = decoder.feed(encode_instruction(servo_id, Instruction.WRITE,
                                                    bytes((reg.address, 0)) + encode(reg, value)))
        (reply,) = chain.handle(packet, clock())
        (status,) = PacketDecoder().feed(reply.packet)
        return status.params[0] & 0x7F

    try:
        assert write(Register.TORQUE_ENABLE, 1) == 0
        goal = servo.get(Register.PRESENT_POSITION) + 300
        assert write(Register.GOAL_POSITION, goal) == 0
        assert write(Register.BUS_WATCHDOG, bus_watchdog_units(0.1)) == 0  # 5 x 20 ms
        clock.sleep(0.09)
        chain.idle(clock())
        assert servo.get(Register.BUS_WATCHDOG) == 5 and servo.get(Register.GOAL_POSITION) == goal
        clock.sleep(0.02)  # 110 ms without an instruction
        chain.idle(clock())
        assert servo.get(Register.BUS_WATCHDOG) == BUS_WATCHDOG_ERROR == -1
        assert servo.get(Register.GOAL_POSITION) == servo.get(Register.PRESENT_POSITION) != goal  # stopped there
        assert chain.stats["bus_watchdog_stops"] == 1  # the others have their torque off
        assert write(Register.GOAL_POSITION, goal) == StatusError.DATA_RANGE  # read-only until cleared
        assert write(Register.BUS_WATCHDOG, 0) == 0
        assert write(Register.GOAL_POSITION, goal) == 0 and servo.get(Register.GOAL_POSITION) == goal
        clock.sleep(1.0)
        chain.idle(clock())
        assert servo.get(Register.BUS_WATCHDOG) == 0  # disarmed: no stop however long the silence
    finally:
        chain.physics.close()


def test_bus_watchdog_units_round_up_to_the_register_step() -> None:
    assert [bus_watchdog_units(t) for t in (0.0, 0.001, 0.02, 0.021, 0.1, 2.54, 10.0)] == [0, 1, 1, 2, 5, 127, 127]
    with pytest.raises(ValueError):
        bus_watchdog_units(float("nan"))


def test_a_dynamixel_bus_whose_host_goes_quiet_leaves_the_emulated_servos_stopped() -> None:
    config = CONFIG
    with Emulator(config, lockstep=True) as emulator:
        bus = lockstep_bus(config, emulator)
        sleep = emulator.clock.sleep
        try:
            bus.connect()
            start = bus.read()
            assert start.ok
            target = np.clip(start.joint_pos + 0.3, config.low, config.high)
            bus.set_bus_watchdog(0.1)
            sleep(0.09)
            assert emulator.stats().get("bus_watchdog_stops", 0) == 0
            sleep(0.31)  # the host hangs
            assert emulator.stats()["bus_watchdog_stops"] == len(config.joints)
            bus.write(target)  # refused by every servo (a sync write hears nothing back)
            sleep(0.3)
            stopped = bus.read()
            np.testing.assert_allclose(stopped.joint_pos, start.joint_pos, atol=0.02)
            bus.set_bus_watchdog(0.0)  # clears the error: goals are taken again
            bus.write(target)
            sleep(0.5)
            moved = bus.read()
            np.testing.assert_allclose(moved.joint_pos, target, atol=0.05)
        finally:
            bus.close()


def test_the_controller_arms_the_bus_watchdog_for_each_episode_and_disarms_it_after() -> None:
    armed: list[float] = []

    class Recording(MockBus):
        def set_bus_watchdog(self, timeout_s: float) -> None:
            armed.append(timeout_s)
            super().set_bus_watchdog(timeout_s)

    clock = FakeClock()
    bus = Recording(CONFIG, clock=clock)
    bus.connect()
    ctrl = Controller(random_policy(), bus, task_for(CONFIG), CONFIG, settings=FAST_SETTINGS, clock=clock,
                      sleep=clock.sleep)
    ctrl.episode(np.random.default_rng(0))
    ctrl.episode(np.random.default_rng(1))
    timeout = bus_watchdog_s(CONFIG)
    assert timeout == pytest.approx(CONFIG.watchdog.max_data_age_s + 3 * CONFIG.control_period_s)
    assert armed == [timeout, 0.0, timeout, 0.0]


def test_a_host_stall_past_the_bus_watchdog_is_a_safety_stop() -> None:
    clock = FakeClock()
    sleeps = {"n": 0}

    def late_sleep(dt: float) -> None:
        sleeps["n"] += 1
        clock.sleep(dt + (1.0 if sleeps["n"] == 20 else 0.0))  # one wake-up a second late, between write and read

    bus = MockBus(CONFIG, clock=clock)
    bus.connect()
    ctrl = Controller(random_policy(), bus, task_for(CONFIG), CONFIG, settings=FAST_SETTINGS, clock=clock,
                      sleep=late_sleep)
    result = ctrl.episode(np.random.default_rng(0))
    assert result.stop is not None and result.stop.kind == "safety", result.stop
    assert "past the servos' bus watchdog (0.55 s)" in result.stop.reason
    assert not result.complete and not bus.bus_watchdog_s  # disarmed again at the episode's end


def test_a_requested_stop_gives_a_state_read_up_after_one_transaction() -> None:
    config = config_from_mapping(slow_line_config(retries={"read": 8, "write": 2, "connect": 3}), "test config")
    clock = FakeClock()
    host = StalledHost(clock, stall_s=0.2)
    asked = {"stop": False}

    def interrupt() -> bool:
        asked["stop"] = True  # SIGTERM arrived during the first attempt
        return True

    bus = DynamixelBus(config, "/dev/null", port_handler=QuietPort(), packet_handler=host, clock=clock,
                       interrupt=interrupt)
    start = clock()
    reading, _ = bus._read_state()
    assert asked["stop"] and reading.stale and reading.attempts == host.attempts == 1
    assert "given up for a requested stop" in (reading.error or "")
    assert clock() - start == pytest.approx(0.2)  # one transaction, not nine


@pytest.mark.parametrize("at_cycle", [2, 4, 30])  # in the finger reset, the valve reset, the policy steps
def test_a_requested_stop_acts_within_one_control_period(at_cycle: int) -> None:
    clock = FakeClock()
    cycles = {"n": 0, "asked": math.nan}

    def should_stop() -> str | None:  # polled once per cycle: the request lands between two polls
        cycles["n"] += 1
        if cycles["n"] == at_cycle:
            cycles["asked"] = clock() + 1e-6
        return "SIGTERM" if clock() >= cycles["asked"] else None

    ctrl, _, _ = make_controller(random_policy(), should_stop=should_stop, clock=clock)
    (result,) = [ctrl.episode(np.random.default_rng(0))]
    assert result.stop is not None and result.stop.kind == "requested"
    assert 0 < result.stop.time - cycles["asked"] <= CONFIG.control_period_s + 1e-9


def test_a_deploy_killed_mid_episode_leaves_the_emulated_servos_stopped_by_their_bus_watchdog(tmp_path: Path) -> None:
    # `s2r emulate --lockstep` in a process of its own, driven by a `s2r deploy` in another through its time socket:
    # once the deploy is killed, time moves only when this test moves it, on the same socket.
    from robot.emulator.lockstep import connect_clock

    config = CONFIG
    logs = tmp_path / "logs"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    emulate = subprocess.Popen([sys.executable, "-m", "s2r.commands.emulator", "--robot", str(CONFIG_PATH),
                                "--lockstep"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env)
    proc: subprocess.Popen[str] | None = None
    try:
        assert emulate.stdout is not None
        port, socket_path = emulate.stdout.readline().strip(), emulate.stdout.readline().strip()
        proc = subprocess.Popen(
            [sys.executable, "-m", "s2r.commands.robot", "deploy", "scripted:random", "--robot", str(CONFIG_PATH),
             "--driver", "emulator", "--port", port, "--lockstep", "--clock-socket", socket_path,
             "--episodes", "100000", "--episode-steps", "200", "--log-dir", str(logs)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + WAIT_S
        while not (logs.is_dir() and len(episode_files(logs)) >= 1):  # the second episode has started
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "no episode in time"
            time.sleep(0.02)
        # into the second episode (20 s of simulated time, over a second of wall time here), where the servos'
        # watchdog is armed; between two episodes it is not
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)  # the host dies: nothing turns the torque off
        proc.communicate(timeout=WAIT_S)
        clock = connect_clock(socket_path)  # the dead host's hang-up ended its session; this is the next
        before = clock.stats().get("bus_watchdog_stops", 0)
        clock.sleep(bus_watchdog_s(config) + 0.01)  # the last instruction came at or before the present time
        stats = clock.stats()
        clock.close()
    finally:
        for p in (proc, emulate):
            if p is not None and p.poll() is None:
                p.kill()
                p.communicate()
    assert before == 0
    # Every joint servo stopped itself, and the valve's servo too when the kill came while the valve reset drove it
    # (the kill lands at a wall-clock moment: on a loaded host still in the second episode's reset).
    assert len(config.joints) <= stats["bus_watchdog_stops"] <= len(config.all_ids)


class ArmingFailsBus(MockBus):
    """A mock whose Bus Watchdog cannot be armed: the bus fails while a stop may have been asked for."""

    def set_bus_watchdog(self, timeout_s: float) -> None:
        if timeout_s > 0:
            raise BusError("no answer from f0_top, id 10 writing BUS_WATCHDOG: retries given up for a requested stop")
        super().set_bus_watchdog(timeout_s)


@pytest.mark.parametrize(("request_", "kind"), [("SIGINT", "requested"), (None, "safety")])
def test_a_bus_failure_during_a_requested_stop_is_the_requested_stop(request_: str | None, kind: str) -> None:
    clock = FakeClock()
    bus = ArmingFailsBus(CONFIG, clock=clock)
    bus.connect()
    ctrl = Controller(random_policy(), bus, task_for(CONFIG), CONFIG, settings=FAST_SETTINGS, clock=clock,
                      sleep=clock.sleep, should_stop=lambda: request_)
    result = ctrl.episode(np.random.default_rng(0))
    assert result.stop is not None and result.stop.kind == kind
    assert "arming the servos' bus watchdog" in result.stop.reason


class FarTurnedValveBus(MockBus):
    """A mock whose valve goal would lie beyond the Goal Position register, as after ~256 turns one way."""

    def write_passive(self, goals_rad: Any) -> dict[str, float]:
        return super().write_passive({name: 1700.0 for name in goals_rad})  # 270 turns: outside +-256


def test_a_reset_goal_beyond_the_register_is_a_safety_stop_not_a_traceback() -> None:
    clock = FakeClock()
    bus = FarTurnedValveBus(CONFIG, clock=clock)
    bus.connect()
    ctrl = Controller(random_policy(), bus, task_for(CONFIG), CONFIG, settings=FAST_SETTINGS, clock=clock,
                      sleep=clock.sleep)
    result = ctrl.episode(np.random.default_rng(0))
    assert result.stop is not None and result.stop.kind == "safety"
    assert "cannot drive valve for the reset" in result.stop.reason and "Goal Position range" in result.stop.reason
