"""The in-process mock bus: first-order servos on a fake clock, faults counted like the real bus."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from robot.bus import BusError, HardwareFault, make_bus
from robot.config import load_config
from robot.dynamixel.control_table import HardwareError
from robot.dynamixel.units import RAD_PER_TICK
from robot.emulator import parse_faults
from robot.mock import DEFAULT_TIME_CONSTANT_S, MockBus

ROOT = Path(__file__).resolve().parents[1]
CONFIG = load_config(ROOT / "hardware_configs" / "dclaw.yaml")
RESET = CONFIG.task_spec().reset


class FakeClock:
    """Time that moves only when a test says so (s)."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t

    def tick(self, dt: float) -> None:
        self.t += dt


def connected(faults: str = "", **kwargs: object) -> tuple[MockBus, FakeClock]:
    clock = FakeClock()
    bus = MockBus(CONFIG, faults=parse_faults(faults), clock=clock, **kwargs)  # type: ignore[arg-type]
    bus.connect()
    return bus, clock


def test_first_order_response_with_velocity_limit() -> None:
    bus, clock = connected()
    command = RESET.copy()
    command[0] = 0.01  # a small step: pure first-order lag
    sent = bus.write(command)
    clock.tick(DEFAULT_TIME_CONSTANT_S)
    r = bus.read()
    assert r.joint_pos[0] == pytest.approx(sent[0] * (1 - math.exp(-1)), abs=RAD_PER_TICK)
    command[0] = -0.45  # a big step: the velocity limit binds
    bus.write(command)
    clock.tick(0.01)
    moved = abs(bus.read().joint_pos[0] - r.joint_pos[0])
    assert moved == pytest.approx(CONFIG.joints[0].velocity_limit_rad_s * 0.01, abs=2 * RAD_PER_TICK)
    clock.tick(2.0)
    final = bus.read()
    assert final.joint_pos[0] == pytest.approx(-0.45, abs=RAD_PER_TICK)
    assert final.time == clock.t and final.ok and final.attempts == 1


def test_torque_off_holds_and_enabling_does_not_jump() -> None:
    bus, clock = connected()
    command = RESET.copy()
    command[3] = 0.3
    with bus.torque_disabled():
        bus.write(command)  # a goal while torque is off: stored, not followed
        clock.tick(1.0)
        assert bus.read().joint_pos[3] == pytest.approx(RESET[3], abs=RAD_PER_TICK)
    clock.tick(1.0)  # torque is back with goal = present: still no motion
    assert bus.read().joint_pos[3] == pytest.approx(RESET[3], abs=RAD_PER_TICK)
    bus.close()
    with pytest.raises(BusError, match="not connected"):
        bus.write(command)


def test_same_calls_give_the_same_readings() -> None:
    runs = []
    for _ in range(2):
        bus, clock = connected("drop=0.05,crc=0.05,seed=4")
        out = []
        for k in range(40):
            bus.write(RESET + 0.01 * math.sin(k))
            clock.tick(0.01)
            r = bus.read()
            out.append((r.ok, r.attempts, np.nan_to_num(r.joint_pos).tolist()))
        runs.append((out, bus.comm_errors))
    assert runs[0] == runs[1]


@pytest.mark.parametrize(("faults", "kind"), [("drop=1", "timeout"), ("crc=1", "corrupt"),
                                              ("late=1:50ms", "timeout")])
def test_failed_reads_are_stale_and_counted(faults: str, kind: str) -> None:
    clock = FakeClock()
    bus = MockBus(CONFIG, faults=parse_faults(faults), clock=clock)
    bus.connect()  # the mock's connect does no state reads that can fail
    r = bus.read()
    attempts = 1 + CONFIG.retries.read
    assert r.stale and r.attempts == attempts and np.isnan(r.joint_pos).all()
    assert r.error is not None and r.error.startswith(kind)
    assert bus.comm_errors[kind] == attempts
    assert bus.counters.consecutive_stale_reads == 1 and bus.counters.last_ok_time is None


def test_a_short_late_reply_is_not_a_failure() -> None:
    bus, _ = connected("late=1:1ms")
    assert bus.read().ok and sum(bus.comm_errors.values()) == 0


def test_silent_servo_from_a_time_and_connect_refusing_a_faulty_chain() -> None:
    bus, clock = connected("silent=50@0.5s")
    assert bus.read().ok
    clock.tick(0.6)
    r = bus.read()
    assert r.stale and r.error == "timeout (valve, id 50)"
    with pytest.raises(BusError, match="valve, id 50: no answer to PING"):
        MockBus(CONFIG, faults=parse_faults("silent=50@0s")).connect()
    clock2 = FakeClock()
    faulty = MockBus(CONFIG, faults=parse_faults("overheat=31@0s"), clock=clock2)
    with pytest.raises(HardwareFault, match="f2_mid: overheating") as info:
        faulty.connect()
    assert info.value.errors == {"f2_mid": HardwareError.OVERHEATING}
    faulty.reboot(["f2_mid"])
    faulty.connect()
    assert faulty.read().ok


def test_overload_turns_the_joint_off_until_reboot() -> None:
    bus, clock = connected("overload=11@3cycles")
    command = RESET.copy()
    bus.read()  # cycle 3: the overload starts
    command[1] = RESET[1] + 0.2
    bus.write(command)
    clock.tick(1.0)
    r = bus.read()
    assert r.alerts == ("f0_mid",) and r.joint_pos[1] == pytest.approx(RESET[1], abs=RAD_PER_TICK)
    bus.reboot()
    bus.write(command)
    clock.tick(1.0)
    assert bus.read().joint_pos[1] == pytest.approx(command[1], abs=RAD_PER_TICK)


def test_make_bus_mock_driver_and_bad_driver() -> None:
    bus = make_bus(CONFIG, "mock")
    assert isinstance(bus, MockBus)
    from s2r.core.errors import UserError

    with pytest.raises(UserError, match="unknown bus driver 'can'"):
        make_bus(CONFIG, "can")


def test_a_reading_feeds_the_task_observation_built_as_in_sim() -> None:
    from sim.tasks.dclaw_turn import DClawTurn

    bus, _ = connected()
    r = bus.read()
    task = DClawTurn()
    obs = task.observe(r.state(), np.zeros(9), {"target": math.pi})
    layout = task.spec.obs_layout
    assert obs.shape == (layout.size,)
    assert np.allclose(obs[layout.slice("joint_pos")], r.joint_pos, atol=1e-6)
    assert np.allclose(obs[layout.slice("valve_cos_sin")], [1.0, 0.0], atol=1e-6)
    assert r.state().joint_effort.shape == (9,)
