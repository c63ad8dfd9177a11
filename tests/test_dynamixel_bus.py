"""DynamixelBus against the emulator (and the mock on the same calls): connect, read, write, faults, recovery. The
emulator runs in lock-step at the shipped config's timeouts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dynamixel_sdk as sdk
import numpy as np
import pytest
import yaml
from lockstep_emulator import lockstep_bus, lockstep_port
from sdk_recording import fast_state_blocks

from robot.bus import Bus, BusError, Reading
from robot.config import RobotConfig, config_from_mapping
from robot.dynamixel.control_table import HardwareError, Register, decode, encode
from robot.dynamixel.units import RAD_PER_TICK
from robot.emulator import Emulator, parse_faults
from robot.hardware import OpenOptions, open_robot
from robot.mock import MockBus

ROOT = Path(__file__).resolve().parents[1]


def config(**overrides: Any) -> RobotConfig:
    data = yaml.safe_load((ROOT / "hardware_configs" / "dclaw.yaml").read_text())
    data.update(overrides)
    return config_from_mapping(data, source="test")


CONFIG = config()
PH = sdk.PacketHandler(2.0)


class RecordingPacketHandler:
    """The SDK's packet handler, recording every write (method, ID, address, data) in order."""

    def __init__(self) -> None:
        self.inner = sdk.PacketHandler(2.0)
        self.log: list[tuple[str, int, int, bytes]] = []
        self.present: dict[int, int] = {}

    def writeTxRx(self, port: Any, dxl_id: int, address: int, length: int, data: list[int]) -> Any:
        self.log.append(("write", dxl_id, address, bytes(data)))
        return self.inner.writeTxRx(port, dxl_id, address, length, data)

    def syncWriteTxOnly(self, port: Any, address: int, length: int, param: list[int], n: int) -> Any:
        for k in range(0, n, length + 1):
            self.log.append(("sync_write", param[k], address, bytes(param[k + 1:k + 1 + length])))
        return self.inner.syncWriteTxOnly(port, address, length, param, n)

    def readRx(self, port: Any, dxl_id: int, length: int) -> Any:
        data, result, error = self.inner.readRx(port, dxl_id, length)
        if result == sdk.COMM_SUCCESS and length == 10:
            self.present[dxl_id] = decode(Register.PRESENT_POSITION, bytes(data), 6)
            self.log.append(("read_present", dxl_id, Register.PRESENT_POSITION.address, bytes(data[6:10])))
        return data, result, error

    def rxPacket(self, port: Any, fast: bool) -> Any:
        packet, result = self.inner.rxPacket(port, fast)
        if fast and result == sdk.COMM_SUCCESS:
            for i, block in fast_state_blocks(packet):
                self.present[i] = decode(Register.PRESENT_POSITION, block, 6)
                self.log.append(("read_present", i, Register.PRESENT_POSITION.address, block[6:10]))
        return packet, result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(CONFIG, lockstep=True) as emu:
        yield emu


def test_goal_is_set_to_present_before_torque_is_enabled(emulator: Emulator) -> None:
    # A previous session left stale goals far from where the fingers are (torque off).
    port = lockstep_port(emulator, CONFIG)
    stale = {}
    for k, i in enumerate(CONFIG.joint_ids):
        present = decode(Register.PRESENT_POSITION,
                         bytes(PH.readTxRx(port, i, Register.PRESENT_POSITION.address, 4)[0]))
        stale[i] = present + (150 if k % 3 == 0 else 0)  # f*_top: +0.23 rad, free to move
        assert PH.writeTxRx(port, i, Register.GOAL_POSITION.address, 4,
                            list(encode(Register.GOAL_POSITION, stale[i])))[1] == 0
    port.closePort()

    recorder = RecordingPacketHandler()
    bus = lockstep_bus(CONFIG, emulator, packet_handler=recorder)
    bus.connect()
    before = bus.read()
    emulator.clock.sleep(0.3)
    after = bus.read()
    bus.close()

    log = recorder.log
    for i in CONFIG.joint_ids:
        torque_on = next(n for n, e in enumerate(log) if e[:3] == ("write", i, 64) and e[3] == b"\x01")
        goal_writes = [n for n, e in enumerate(log[:torque_on]) if e[:3] == ("sync_write", i, 116)]
        assert goal_writes, f"id {i}: torque enabled without a goal write before it"
        goal = decode(Register.GOAL_POSITION, log[goal_writes[-1]][3])
        reads = [e for e in log[:goal_writes[-1]] if e[:2] == ("read_present", i)]
        assert goal == decode(Register.PRESENT_POSITION, reads[-1][3])  # exactly the present ticks
        # EEPROM settings were made while torque was off.
        eeprom = [n for n, e in enumerate(log) if e[0] == "write" and e[1] == i and e[2] < 64]
        assert all(n < torque_on for n in eeprom)
    # No finger jumped to its stale goal.
    assert np.abs(after.joint_pos - before.joint_pos).max() < 0.02


def test_write_returns_the_quantized_command_and_the_claw_follows(emulator: Emulator) -> None:
    with lockstep_bus(CONFIG, emulator) as bus:
        bus.connect()
        start = bus.read()
        assert start.ok and start.joint_pos.shape == (9,) and start.passive_pos.shape == (1,)
        command = start.joint_pos.copy()
        command[[0, 3, 6]] = [0.2001, -0.1234, 0.3333]  # the three abduction joints swing freely
        sent = bus.write(command)
        steps = (sent - CONFIG.joint_offset) / CONFIG.joint_scale / RAD_PER_TICK
        assert np.allclose(steps, np.round(steps), atol=1e-9)  # whole ticks
        assert np.abs(sent - command).max() <= RAD_PER_TICK / 2 + 1e-12
        beyond = command.copy()
        beyond[0] = 5.0
        assert bus.write(beyond)[0] == pytest.approx(CONFIG.joints[0].high_rad, abs=RAD_PER_TICK)
        with pytest.raises(ValueError, match="non-finite"):
            bus.write(np.full(9, np.nan))
        bus.write(command)
        emulator.clock.sleep(0.6)
        r = bus.read()
        assert np.abs(r.joint_pos[[0, 3, 6]] - sent[[0, 3, 6]]).max() < 0.03
        assert r.latency > 0 and r.time >= r.request_time
        assert bus.counters.writes == 3 and bus.counters.stale_reads == 0


def test_close_turns_the_torque_off(emulator: Emulator) -> None:
    bus = lockstep_bus(CONFIG, emulator)
    bus.connect()
    assert bus.torque_enabled
    with bus.torque_disabled():
        assert not bus.torque_enabled
    assert bus.torque_enabled
    bus.close()
    bus.close()
    port = lockstep_port(emulator, CONFIG)
    torque = [PH.readTxRx(port, i, Register.TORQUE_ENABLE.address, 1)[0] for i in CONFIG.joint_ids]
    port.closePort()
    assert torque == [[0]] * 9
    with pytest.raises(BusError, match="not connected"):
        bus.read()


def test_unknown_servo_fails_connect_and_is_counted(emulator: Emulator) -> None:
    data = yaml.safe_load((ROOT / "hardware_configs" / "dclaw.yaml").read_text())
    data["encoders"]["valve"]["id"] = 51
    cfg = config_from_mapping(data, "test")
    bus = lockstep_bus(cfg, emulator)
    with pytest.raises(BusError, match=r"valve, id 51: no answer to PING \(timeout\)"):
        bus.connect()
    assert bus.comm_errors["timeout"] == 1 + cfg.retries.connect
    bus.close()


def test_a_silent_servo_gives_stale_readings_counted_by_kind() -> None:
    with open_robot(CONFIG, "emulator", OpenOptions(faults=parse_faults("silent=32@4cycles"), lockstep=True)) as io:
        bus = io.bus
        bus.connect()  # connect's own reads are cycles 1 and 2
        good = bus.read()
        assert good.ok
        before = bus.counters
        stale = [bus.read() for _ in range(3)]
        attempts = 1 + CONFIG.retries.read
        for r in stale:
            assert r.stale and not r.ok and r.attempts == attempts
            assert np.isnan(r.joint_pos).all() and np.isnan(r.passive_pos).all()
            assert r.error == "timeout (f2_bot, id 32)"
        c = bus.counters
        assert c.total_comm_errors - before.total_comm_errors == 3 * attempts
        assert c.comm_errors["timeout"] - before.comm_errors["timeout"] == 3 * attempts
        assert c.consecutive_stale_reads == 3 and c.stale_reads == 3 and c.read_attempts - before.read_attempts == 9
        assert c.last_ok_time == good.time


@pytest.mark.parametrize(("fast", "rates"), [(False, "drop=0.01,crc=0.005"), (True, "drop=0.03,crc=0.015")])
def test_every_dropped_or_corrupted_reply_is_counted(fast: bool, rates: str) -> None:
    # Faults strike replies: a fast sync read has one per cycle, a sync read one per servo.
    n_cycles = 300
    faults = parse_faults(f"{rates},seed=11")
    patient = config(fast_sync_read=fast)
    with Emulator(patient, faults=faults, lockstep=True) as emu:
        bus = lockstep_bus(patient, emu)
        bus.connect()
        setup = bus.counters.total_comm_errors
        injected_before = emu.stats().get("read_transactions_faulted", 0)
        readings: list[Reading] = []
        command = patient.task_spec().reset
        for _ in range(n_cycles):
            readings.append(bus.read())
            bus.write(command)
        stats = emu.stats()
        # Counted before closing: the torque-off writes of close draw fates too, and are no read attempts.
        counted = bus.counters.total_comm_errors - setup
        bus.close()
    injected = stats["read_transactions_faulted"] - injected_before
    failed_attempts = sum(r.attempts - (1 if r.ok else 0) for r in readings)
    # Each failed attempt is counted exactly once, and every injected fault shows up as a failed attempt.
    assert counted == failed_attempts
    assert injected > 5
    assert counted == injected  # in lock-step no host is ever late: only the injected faults fail
    assert bus.comm_errors["corrupt"] > 0 and bus.comm_errors["timeout"] > 0
    assert all(r.ok or np.isnan(r.joint_pos).all() for r in readings)
    # A failed fast read is retried as a plain sync read: ten replies, each at the fault rate.
    assert sum(r.ok for r in readings) >= n_cycles - (5 if fast else 2)


def _drive(bus: Bus, command: np.ndarray, sleep: Any) -> tuple[np.ndarray, Reading]:
    bus.connect()
    sent = bus.write(command)
    sleep(0.5)
    return sent, bus.read()


def test_mock_and_emulated_bus_answer_the_same_calls_alike(emulator: Emulator) -> None:
    command = CONFIG.task_spec().reset.copy()
    command[[0, 3, 6]] = [0.25, -0.2, 0.1]
    mock_time = [0.0]

    def mock_sleep(s: float) -> None:
        mock_time[0] += s

    with lockstep_bus(CONFIG, emulator) as real, MockBus(CONFIG, clock=lambda: mock_time[0]) as mock:
        real.connect()
        real.write(CONFIG.task_spec().reset)  # from the reset pose, as the mock starts
        emulator.clock.sleep(0.5)
        real_sent, real_reading = _drive(real, command, emulator.clock.sleep)
        mock_sent, mock_reading = _drive(mock, command, mock_sleep)
        assert np.array_equal(real_sent, mock_sent)
        for r in (real_reading, mock_reading):
            assert r.ok and not r.alerts
            assert np.abs(r.joint_pos[[0, 3, 6]] - command[[0, 3, 6]]).max() < 0.03
        assert real_reading.passive_pos == pytest.approx(mock_reading.passive_pos, abs=0.01)
        for b in (real, mock):
            assert b.hardware_errors() == {}
            assert b.counters.reads == 1 and b.counters.writes == 1 + (b is real)
            assert b.torque_enabled


@pytest.mark.parametrize("driver", ["emulator", "mock"])
def test_reboot_clears_an_overload_and_restores_torque(driver: str) -> None:
    faults = parse_faults("overload=20@5cycles")
    io = open_robot(CONFIG, driver, OpenOptions(faults=faults, lockstep=driver == "emulator"))
    bus = io.bus
    try:
        bus.connect()
        readings = [bus.read() for _ in range(4)]
        # Cycles 1 and 2 are connect's hardware-error and present-position reads.
        assert [r.alerts for r in readings] == [(), (), ("f1_top",), ("f1_top",)]
        assert bus.hardware_errors() == {"f1_top": HardwareError.OVERLOAD}
        bus.reboot()
        assert bus.hardware_errors() == {}
        assert not bus.read().alerts
        command = bus.read().joint_pos.copy()
        command[3] += 0.2  # f1_top has its torque back: it follows
        sent = bus.write(command)
        io.sleep(0.5)
        assert bus.read().joint_pos[3] == pytest.approx(sent[3], abs=0.03)
        assert bus.counters.alert_readings >= 2
    finally:
        bus.close()


def test_connect_refuses_a_servo_in_error_until_it_is_rebooted() -> None:
    from robot.bus import HardwareFault

    with Emulator(CONFIG, faults=parse_faults("overheat=31@1cycle"), lockstep=True) as emu:
        bus = lockstep_bus(CONFIG, emu)
        with pytest.raises(HardwareFault, match="f2_mid: overheating") as info:
            bus.connect()
        assert info.value.errors == {"f2_mid": HardwareError.OVERHEATING}
        bus.reboot(["f2_mid"])
        bus.connect()
        assert bus.torque_enabled and bus.read().ok and bus.hardware_errors() == {}
        bus.close()
        assert emu.stats()["reboots"] == 1


def test_torque_off_reaches_every_servo_when_one_is_silent() -> None:
    recorder = RecordingPacketHandler()
    with Emulator(CONFIG, faults=parse_faults("silent=21@4cycles"), lockstep=True) as emu:
        bus = lockstep_bus(CONFIG, emu, packet_handler=recorder)
        bus.connect()
        for _ in range(3):
            bus.read()
        recorder.log.clear()
        with pytest.raises(BusError, match=r"torque off not confirmed: .*id 21"):
            bus.torque(False)
        torque = Register.TORQUE_ENABLE.address
        broadcast = {i for kind, i, addr, data in recorder.log if kind == "sync_write" and addr == torque}
        told = {i for kind, i, addr, data in recorder.log if kind == "write" and addr == torque and data == b"\x00"}
        assert broadcast == set(CONFIG.joint_ids), "one sync write must carry torque off to every joint"
        assert told == set(CONFIG.joint_ids), "every joint must be told individually, past the silent one"
        bus.close()
