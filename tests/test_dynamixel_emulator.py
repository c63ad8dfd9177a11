"""The servo emulator, driven by the real dynamixel-sdk over a pseudo-terminal: in lock-step (simulated time) at the
shipped config's latency timer, except the test of real-time pacing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import dynamixel_sdk as sdk
import numpy as np
import pytest
from lockstep_emulator import lockstep_port

from robot.config import RobotConfig, load_config
from robot.dynamixel.bus import TunedPortHandler
from robot.dynamixel.control_table import (
    ALERT_BIT,
    STATE_BLOCK_SIZE,
    STATE_BLOCK_START,
    HardwareError,
    Instruction,
    Register,
    StatusError,
    decode,
    encode,
)
from robot.dynamixel.protocol import PacketDecoder, encode_instruction
from robot.dynamixel.units import joint_to_ticks, ticks_to_joint
from robot.emulator import Emulator, RealityConfig, parse_faults
from robot.emulator.faults import FaultSpec
from robot.emulator.server import build_chain

ROOT = Path(__file__).resolve().parents[1]
CONFIG = load_config("dclaw")  # the shipped claw
PH = sdk.PacketHandler(2.0)
REAL_TIME_LATENCY_TIMER_S = 0.05
"""Latency timer of the real-time pacing test (s): a packet timeout of about 100 ms, as a process on the shared
2-core VM can wake tens of ms late, which is not what that test measures."""




@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(CONFIG, lockstep=True) as emu:
        yield emu


@pytest.fixture
def port(emulator: Emulator) -> Iterator[sdk.PortHandler]:
    p = lockstep_port(emulator, CONFIG)
    yield p
    for i in CONFIG.joint_ids:  # leave every servo as found: torque off
        PH.write1ByteTxRx(p, i, Register.TORQUE_ENABLE.address, 0)
    p.closePort()


class FakeClock:
    """Time that stands still unless moved (s)."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def read_reg(port: sdk.PortHandler, servo_id: int, reg: Register) -> int:
    data, result, error = PH.readTxRx(port, servo_id, reg.address, reg.size)
    assert result == sdk.COMM_SUCCESS and error & 0x7F == 0, (result, error)
    return decode(reg, bytes(data))


def write_reg(port: sdk.PortHandler, servo_id: int, reg: Register, value: int) -> int:
    result, error = PH.writeTxRx(port, servo_id, reg.address, reg.size, list(encode(reg, value)))
    assert result == sdk.COMM_SUCCESS
    return int(error)


def test_ping_every_servo_and_broadcast_ping(port: sdk.PortHandler) -> None:
    for i in CONFIG.all_ids:
        model, result, error = PH.ping(port, i)
        assert (model, result, error) == (1020, sdk.COMM_SUCCESS, 0)
    found, result = PH.broadcastPing(port)
    assert result == sdk.COMM_SUCCESS
    assert list(found) == sorted(CONFIG.all_ids)  # every servo answers, in ID order
    assert all(model == 1020 for model, _fw in found.values())


def test_unknown_id_times_out(emulator: Emulator, port: sdk.PortHandler) -> None:
    before = emulator.stats().get("unknown_id", 0)
    _model, result, _error = PH.ping(port, 99)
    assert result == sdk.COMM_RX_TIMEOUT
    assert emulator.stats()["unknown_id"] == before + 1


def test_read_and_write_registers(port: sdk.PortHandler) -> None:
    assert write_reg(port, 20, Register.LED, 1) == 0
    assert read_reg(port, 20, Register.LED) == 1
    assert write_reg(port, 20, Register.LED, 0) == 0
    assert read_reg(port, 10, Register.MODEL_NUMBER) == 1020
    present = read_reg(port, 11, Register.PRESENT_POSITION)
    expected = joint_to_ticks(CONFIG.task_spec().reset[1], 1.0, 0.0)
    assert abs(present - int(expected)) <= 10  # at the reset pose, held while torque is off


def test_sync_read_and_sync_write(port: sdk.PortHandler) -> None:
    group = sdk.GroupSyncRead(port, PH, STATE_BLOCK_START, STATE_BLOCK_SIZE)
    for i in CONFIG.all_ids:
        group.addParam(i)
    assert group.txRxPacket() == sdk.COMM_SUCCESS
    ticks = np.array([group.getData(i, Register.PRESENT_POSITION.address, 4) for i in CONFIG.joint_ids])
    joints = ticks_to_joint(ticks, CONFIG.joint_scale, CONFIG.joint_offset)
    assert np.abs(joints - CONFIG.task_spec().reset).max() < 0.02

    goals = {i: 2000 + 10 * k for k, i in enumerate(CONFIG.joint_ids)}
    writer = sdk.GroupSyncWrite(port, PH, Register.GOAL_POSITION.address, 4)
    for i, g in goals.items():
        writer.addParam(i, list(encode(Register.GOAL_POSITION, g)))
    assert writer.txPacket() == sdk.COMM_SUCCESS
    check = sdk.GroupSyncRead(port, PH, Register.GOAL_POSITION.address, 4)
    for i in goals:
        check.addParam(i)
    assert check.txRxPacket() == sdk.COMM_SUCCESS
    assert {i: check.getData(i, Register.GOAL_POSITION.address, 4) for i in goals} == goals


def test_fast_sync_read_matches_sync_read(port: sdk.PortHandler) -> None:
    ids = CONFIG.all_ids
    slow = sdk.GroupSyncRead(port, PH, Register.MODEL_NUMBER.address, 2)
    fast = sdk.GroupSyncRead(port, PH, Register.MODEL_NUMBER.address, 2)
    for i in ids:
        slow.addParam(i)
        fast.addParam(i)
    assert slow.txRxPacket() == sdk.COMM_SUCCESS
    assert fast.fastSyncRead() == sdk.COMM_SUCCESS
    assert [fast.getData(i, 0, 2) for i in ids] == [slow.getData(i, 0, 2) for i in ids] == [1020] * len(ids)


def test_bulk_read_of_different_registers(port: sdk.PortHandler) -> None:
    bulk = sdk.GroupBulkRead(port, PH)
    assert bulk.addParam(10, Register.MODEL_NUMBER.address, 2)
    assert bulk.addParam(21, Register.PRESENT_POSITION.address, 4)
    assert bulk.addParam(50, Register.HARDWARE_ERROR_STATUS.address, 1)
    assert bulk.txRxPacket() == sdk.COMM_SUCCESS
    assert bulk.getData(10, Register.MODEL_NUMBER.address, 2) == 1020
    present = read_reg(port, 21, Register.PRESENT_POSITION)
    assert abs(bulk.getData(21, Register.PRESENT_POSITION.address, 4) - present) < 10
    assert bulk.getData(50, Register.HARDWARE_ERROR_STATUS.address, 1) == 0


def test_byte_stuffing_in_both_directions(port: sdk.PortHandler) -> None:
    value = -131073  # little endian FF FF FD FF: the write and the read reply both need a stuffed FD
    assert encode(Register.HOMING_OFFSET, value) == b"\xff\xff\xfd\xff"
    before = read_reg(port, 50, Register.PRESENT_POSITION)
    assert write_reg(port, 50, Register.HOMING_OFFSET, value) == 0
    try:
        assert read_reg(port, 50, Register.HOMING_OFFSET) == value
        assert abs(read_reg(port, 50, Register.PRESENT_POSITION) - (before + value)) <= 2
    finally:
        assert write_reg(port, 50, Register.HOMING_OFFSET, 0) == 0


def test_a_new_homing_offset_shows_in_the_next_read_within_one_physics_step() -> None:
    """A servo applies a homing offset at once; the emulator's registers must not wait for its next physics
    step (on a fast host the read came inside the same 2.5 ms step and returned the old position)."""
    clock = FakeClock()
    chain = build_chain(CONFIG, RealityConfig(), FaultSpec(), clock)
    decoder = PacketDecoder()

    def send(instruction: Instruction, params: bytes) -> bytes:
        (packet,) = decoder.feed(encode_instruction(50, instruction, params))
        (reply,) = chain.handle(packet, clock())
        (status,) = PacketDecoder().feed(reply.packet)
        assert status.params[0] == 0, status
        return status.params[1:]

    def present_position() -> int:
        address, size = Register.PRESENT_POSITION.address, Register.PRESENT_POSITION.size
        return decode(Register.PRESENT_POSITION, send(Instruction.READ, bytes((address, 0, size, 0))))

    try:
        before = present_position()
        offset = 1000
        send(Instruction.WRITE, bytes((Register.HOMING_OFFSET.address, 0)) + encode(Register.HOMING_OFFSET, offset))
        assert present_position() == before + offset  # same instant: no physics step between
    finally:
        chain.physics.close()


def test_a_packet_with_a_bad_crc_is_ignored(emulator: Emulator, port: sdk.PortHandler) -> None:
    good = encode_instruction(10, Instruction.READ, bytes((Register.MODEL_NUMBER.address, 0, 2, 0)))
    bad = good[:-1] + bytes((good[-1] ^ 0x5A,))
    before = emulator.stats().get("crc_errors_received", 0)
    port.clearPort()
    port.writePort(bad)
    emulator.clock.sleep(0.03)
    assert port.getBytesAvailable() == 0  # no status packet: a real servo stays silent too
    assert emulator.stats()["crc_errors_received"] == before + 1
    port.writePort(good)
    port.setPacketTimeout(11 + 2)  # as the SDK does after sending: the read waits at most this
    packets: list = []
    decoder = PacketDecoder()
    while not packets and not port.isPacketTimeout():
        packets = decoder.feed(port.readPort(64))
    assert packets and packets[0].crc_ok and packets[0].params == b"\x00" + (1020).to_bytes(2, "little")


def test_eeprom_is_locked_while_torque_is_on(port: sdk.PortHandler) -> None:
    assert write_reg(port, 11, Register.TORQUE_ENABLE, 1) == 0
    assert write_reg(port, 11, Register.OPERATING_MODE, 4) == StatusError.ACCESS
    assert read_reg(port, 11, Register.OPERATING_MODE) == 3
    assert write_reg(port, 11, Register.TORQUE_ENABLE, 0) == 0
    assert write_reg(port, 11, Register.OPERATING_MODE, 4) == 0
    assert write_reg(port, 11, Register.OPERATING_MODE, 3) == 0


def test_bad_address_length_and_value_are_status_errors(port: sdk.PortHandler) -> None:
    _data, result, error = PH.readTxRx(port, 10, 140, 20)  # runs past the table
    assert (result, error) == (sdk.COMM_SUCCESS, StatusError.DATA_RANGE)
    result, error = PH.writeTxRx(port, 10, Register.GOAL_POSITION.address, 2, [0, 8])  # half a register
    assert error == StatusError.DATA_LENGTH
    result, error = PH.writeTxRx(port, 10, Register.PRESENT_POSITION.address, 4, [0, 8, 0, 0])  # read-only
    assert error == StatusError.ACCESS
    result, error = PH.writeTxRx(port, 10, 14, 1, [0])  # reserved address
    assert error == StatusError.ACCESS
    assert write_reg(port, 10, Register.TORQUE_ENABLE, 2) == StatusError.DATA_RANGE
    assert write_reg(port, 10, Register.MAX_POSITION_LIMIT, 3000) == 0
    try:
        assert write_reg(port, 10, Register.GOAL_POSITION, 3500) == StatusError.DATA_LIMIT
    finally:
        assert write_reg(port, 10, Register.MAX_POSITION_LIMIT, 4095) == 0
    txpacket = [0] * 10
    txpacket[4], txpacket[5], txpacket[7] = 10, 3, 0x50  # an undefined instruction
    _rx, result, error = PH.txRxPacket(port, txpacket)
    assert (result, error) == (sdk.COMM_SUCCESS, StatusError.INSTRUCTION)


def test_goal_positions_drive_the_simulated_claw_in_simulated_time(emulator: Emulator,
                                                                    port: sdk.PortHandler) -> None:
    start = read_reg(port, 10, Register.PRESENT_POSITION)
    target = start + 300
    assert write_reg(port, 10, Register.GOAL_POSITION, target) == 0
    steps0, t0 = emulator.stats()["physics_steps"], emulator.clock.now()
    assert write_reg(port, 10, Register.TORQUE_ENABLE, 1) == 0
    emulator.clock.sleep(0.6)
    assert abs(read_reg(port, 10, Register.PRESENT_POSITION) - target) < 30
    assert read_reg(port, 20, Register.TORQUE_ENABLE) == 0  # the others stayed off
    elapsed_steps = emulator.stats()["physics_steps"] - steps0
    dt = RealityConfig().physics_timestep_s
    # every period of simulated time is stepped, however long the host took
    assert abs(elapsed_steps * dt - (emulator.clock.now() - t0)) <= dt


def test_goal_positions_drive_the_simulated_claw_in_real_time() -> None:
    with Emulator(CONFIG) as emu:
        port = TunedPortHandler(emu.port, REAL_TIME_LATENCY_TIMER_S)
        assert port.openPort() and port.setBaudRate(CONFIG.baud)
        try:
            real_time_drive(emu, port)
        finally:
            port.closePort()


def real_time_drive(emulator: Emulator, port: sdk.PortHandler) -> None:
    start = read_reg(port, 10, Register.PRESENT_POSITION)
    target = start + 200  # f0_top swings sideways by about 0.3 rad, clear of the valve
    steps0, t0 = emulator.stats()["physics_steps"], time.monotonic()
    assert write_reg(port, 10, Register.GOAL_POSITION, target) == 0
    assert write_reg(port, 10, Register.TORQUE_ENABLE, 1) == 0
    time.sleep(0.6)
    assert abs(read_reg(port, 10, Register.PRESENT_POSITION) - target) < 30
    assert read_reg(port, 20, Register.TORQUE_ENABLE) == 0  # the others stayed off
    elapsed_steps = emulator.stats()["physics_steps"] - steps0
    wall = time.monotonic() - t0
    assert elapsed_steps * RealityConfig().physics_timestep_s == pytest.approx(wall, rel=0.25)


def test_overload_sets_the_alert_and_reboot_clears_it() -> None:
    cfg: RobotConfig = CONFIG
    with Emulator(cfg, faults=parse_faults("overload=21@2cycles"), lockstep=True) as emu:
        port = lockstep_port(emu, cfg)
        assert write_reg(port, 21, Register.TORQUE_ENABLE, 1) == 0
        group = sdk.GroupSyncRead(port, PH, Register.HARDWARE_ERROR_STATUS.address, 1)
        group.addParam(21)
        for _ in range(2):
            assert group.txRxPacket() == sdk.COMM_SUCCESS
        assert group.getData(21, Register.HARDWARE_ERROR_STATUS.address, 1) == HardwareError.OVERLOAD
        _data, result, error = PH.readTxRx(port, 21, Register.TORQUE_ENABLE.address, 1)
        assert error & ALERT_BIT and _data == [0]  # the overload switched the torque off
        assert write_reg(port, 21, Register.TORQUE_ENABLE, 1) & 0x7F == StatusError.RESULT_FAIL
        result, error = PH.reboot(port, 21)
        assert (result, error & 0x7F) == (sdk.COMM_SUCCESS, 0)
        _data, result, error = PH.readTxRx(port, 21, Register.HARDWARE_ERROR_STATUS.address, 1)
        assert (_data, error) == ([0], 0)
        assert write_reg(port, 21, Register.TORQUE_ENABLE, 1) == 0
        assert emu.stats()["reboots"] == 1
        port.closePort()


def test_the_emulator_runs_on_pybullet_with_a_reality_file() -> None:
    pytest.importorskip("pybullet")
    from robot.emulator import load_reality

    reality = load_reality(ROOT / "robot" / "emulator" / "examples" / "reality_dclaw.yaml", CONFIG)
    reality = RealityConfig(**{**reality.__dict__, "engine": "pybullet"})
    with Emulator(CONFIG, reality=reality, lockstep=True) as emu:
        port = lockstep_port(emu, CONFIG)
        valve = ticks_to_joint(read_reg(port, 50, Register.PRESENT_POSITION), 1.0, 0.0)
        port.closePort()
    assert float(valve) == pytest.approx(0.3, abs=0.02)  # the reality's initial valve angle, with its noise
