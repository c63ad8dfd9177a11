"""Protocol 2.0 codec, control table and unit conversions (no port, no emulator)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from dynamixel_sdk import PacketHandler
from hypothesis import given, settings
from hypothesis import strategies as st

from robot.dynamixel.control_table import (
    CONTROL_TABLE_SIZE,
    EEPROM_END,
    REGISTER_AT,
    STATE_BLOCK_SIZE,
    STATE_BLOCK_START,
    Instruction,
    Register,
    decode,
    encode,
)
from robot.dynamixel.protocol import (
    PacketDecoder,
    crc16,
    encode_instruction,
    encode_status,
    stuff,
    unstuff,
)
from robot.dynamixel.units import (
    CENTER_TICK,
    RAD_PER_TICK,
    RAD_S_PER_VELOCITY_UNIT,
    joint_limits_to_ticks,
    joint_to_ticks,
    ticks_to_joint,
    wire_time_s,
)

PING_ID1 = bytes.fromhex("FFFFFD0001030001")


def test_crc_check_value_from_the_reference() -> None:
    # The Ping example of the ROBOTIS e-manual, Protocol 2.0 (emanual.robotis.com/docs/en/dxl/protocol2/#ping-0x01):
    # ID 1 is FF FF FD 00 01 03 00 01 with CRC 19 4E.
    assert crc16(PING_ID1) == 0x4E19
    assert encode_instruction(1, Instruction.PING) == PING_ID1 + bytes((0x19, 0x4E))


@given(st.binary(min_size=0, max_size=64))
def test_crc_matches_dynamixel_sdk(data: bytes) -> None:
    assert crc16(data) == PacketHandler(2.0).updateCRC(0, list(data), len(data))


@given(st.lists(st.sampled_from([0x00, 0xFD, 0xFF, 0x12]), max_size=40).map(bytes))
def test_stuffing_round_trip_and_no_header_left(body: bytes) -> None:
    stuffed = stuff(body)
    assert unstuff(stuffed) == body
    # After stuffing, FF FF FD is always followed by FD, so it can never be read as a header.
    for k in range(len(stuffed) - 2):
        if stuffed[k:k + 3] == b"\xff\xff\xfd":
            assert stuffed[k + 3:k + 4] == b"\xfd"


@settings(max_examples=60)
@given(st.integers(0, 252), st.sampled_from([0x01, 0x02, 0x03, 0x82, 0x83]),
       st.lists(st.sampled_from([0x00, 0x01, 0xFD, 0xFF]), max_size=30).map(bytes))
def test_instruction_encoding_matches_dynamixel_sdk(dxl_id: int, inst: int, params: bytes) -> None:
    """Our encoder builds the same bytes as the SDK's txPacket (header, stuffing, LEN, CRC)."""
    ph = PacketHandler(2.0)
    pkt = [0] * (len(params) + 10)
    pkt[4], pkt[5], pkt[6], pkt[7] = dxl_id, (len(params) + 3) & 0xFF, (len(params) + 3) >> 8, inst
    pkt[8:8 + len(params)] = list(params)
    pkt = ph.addStuffing(pkt)
    total = (pkt[5] | (pkt[6] << 8)) + 7
    pkt[0:4] = [0xFF, 0xFF, 0xFD, 0x00]
    crc = ph.updateCRC(0, pkt, total - 2)
    pkt[total - 2], pkt[total - 1] = crc & 0xFF, crc >> 8
    assert encode_instruction(dxl_id, inst, params) == bytes(pkt[:total])


def test_stuffed_packet_has_length_of_stuffed_body() -> None:
    # Homing Offset = -131073 is the bytes FF FF FD FF: the write needs one stuffed FD.
    data = encode(Register.HOMING_OFFSET, -131073)
    assert data == b"\xff\xff\xfd\xff"
    pkt = encode_instruction(10, Instruction.WRITE, bytes((20, 0)) + data)
    assert b"\xff\xff\xfd\xfd\xff" in pkt
    assert pkt[5] | (pkt[6] << 8) == 1 + 2 + 4 + 1 + 2  # INST, address, data, stuffed FD, CRC
    (decoded,) = PacketDecoder().feed(pkt)
    assert decoded.crc_ok and decoded.params == bytes((20, 0)) + data


def test_decoder_splits_a_stream_with_noise_and_partial_packets() -> None:
    a = encode_status(10, 0, b"\x01\x02")
    b = encode_instruction(0xFE, Instruction.SYNC_READ, bytes((126, 0, 10, 0, 10, 11)))
    bad = bytearray(encode_instruction(11, Instruction.PING))
    bad[-1] ^= 0xFF
    stream = b"\x00\xff\x13" + a + bytes(bad) + b
    dec = PacketDecoder()
    got = []
    for k in range(0, len(stream), 5):  # arrives in small chunks
        got += dec.feed(stream[k:k + 5])
    assert [(p.id, p.instruction, p.crc_ok) for p in got] == [
        (10, Instruction.STATUS, True), (11, Instruction.PING, False), (0xFE, Instruction.SYNC_READ, True)]
    assert got[0].params == b"\x00\x01\x02"
    assert dec.pending == 0


def test_decoder_skips_an_impossible_length() -> None:
    junk = b"\xff\xff\xfd\x00\x01\xff\xff"  # LEN 0xFFFF: noise that looks like a header
    ok = encode_instruction(1, Instruction.PING)
    assert [p.id for p in PacketDecoder().feed(junk + ok)] == [1]


def test_control_table_is_consistent() -> None:
    spans = sorted((r.address, r.address + r.size, r) for r in Register)
    for (_, end, r), (start, _, nxt) in itertools.pairwise(spans):
        assert end <= start, f"{r.name} overlaps {nxt.name}"
    assert spans[-1][1] <= CONTROL_TABLE_SIZE
    assert REGISTER_AT[116] is Register.GOAL_POSITION
    assert Register.TORQUE_ENABLE.address == EEPROM_END
    assert (STATE_BLOCK_START, STATE_BLOCK_SIZE) == (126, 10)
    for r in Register:
        s = r.spec
        assert s.low <= s.default <= s.high or not s.writable, r.name
        assert decode(r, encode(r, s.default)) == s.default


def test_units_have_the_datasheet_values() -> None:
    assert RAD_PER_TICK == pytest.approx(2 * math.pi / 4096)
    # 0.229 rpm per unit: the ROBOTIS e-manual's XM430-W350 control table (Velocity Limit, address 44; Goal
    # Velocity, 104). The 0.0239691 rad/s sometimes quoted for it is 0.05 % off 0.229 * 2 pi / 60.
    assert RAD_S_PER_VELOCITY_UNIT == pytest.approx(0.229 * 2 * math.pi / 60)
    assert RAD_S_PER_VELOCITY_UNIT == pytest.approx(0.0239691, rel=1e-3)
    assert wire_time_s(100, 1_000_000) == pytest.approx(1e-3)


@given(st.floats(-3.0, 3.0), st.sampled_from([1.0, -1.0]), st.floats(-0.5, 0.5))
def test_calibration_round_trip_is_within_half_a_tick(q: float, scale: float, offset: float) -> None:
    ticks = joint_to_ticks(q, scale, offset)
    assert abs(float(ticks_to_joint(ticks, scale, offset)) - q) <= RAD_PER_TICK / 2 + 1e-12
    assert int(joint_to_ticks(ticks_to_joint(ticks, scale, offset), scale, offset)) == int(ticks)


def test_center_tick_is_zero_raw_rad_and_scale_flips_direction() -> None:
    assert float(ticks_to_joint(CENTER_TICK, 1.0, 0.0)) == 0.0
    assert float(ticks_to_joint(CENTER_TICK + 1024, -1.0, 0.1)) == pytest.approx(-math.pi / 2 + 0.1)


@pytest.mark.parametrize("scale", [1.0, -1.0])
def test_limit_ticks_round_inwards(scale: float) -> None:
    lo, hi = joint_limits_to_ticks(-0.48, 0.48, scale, 0.01)
    angles = ticks_to_joint(np.array([lo, hi]), scale, 0.01)
    assert angles.min() >= -0.48 and angles.max() <= 0.48
    outside = ticks_to_joint(np.array([lo - 1, hi + 1]), scale, 0.01)
    assert outside.min() < -0.48 and outside.max() > 0.48
