"""FAST_SYNC_READ end to end: the emulator's combined status is the firmware's (never stuffed), the bus checks every
servo's segment on its own, a reading is either right or failed, and implausible positions are rejected.

The bus runs on the real dynamixel-sdk, its bytes carried in process to the emulator's servo chain on a clock that
stands still, so a test sets the exact register values it needs and nothing moves under it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robot.bus import BusError
from robot.config import RobotConfig, load_config
from robot.dynamixel.bus import DynamixelBus
from robot.dynamixel.calibration import JOINT_PLAUSIBLE_MARGIN_RAD, ServoCodec
from robot.dynamixel.control_table import STATE_BLOCK_SIZE, Register
from robot.dynamixel.protocol import (
    FAST_SEGMENT_OVERHEAD,
    FAST_STATUS_HEAD,
    PacketDecoder,
    crc16,
    encode_fast_sync_status,
    encode_instruction,
    encode_status,
    parse_fast_sync_status,
    stuff,
)
from robot.dynamixel.units import RAD_PER_TICK, RAD_S_PER_VELOCITY_UNIT, ticks_to_joint
from robot.emulator import RealityConfig
from robot.emulator.chain import ServoChain
from robot.emulator.faults import FaultSpec
from robot.emulator.server import build_chain
from robot.mock import MockBus

CONFIG = load_config("dclaw")  # the shipped claw
CODEC = ServoCodec(CONFIG)
FUZZ = settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

# The e-manual's example (Protocol 2.0, "Fast Sync Read (0x8A)"): IDs 3, 7 and 4 answer Present Position 166,
# 2079 and 1023 in one status packet.
E_MANUAL_STATUS = bytes.fromhex("FFFFFD00FE190055" "0003A60000008408" "00071F08000016CA" "0004FF030000D19E")


class FakeClock:
    """Time that stands still (s)."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class LoopbackPort:
    """dynamixel-sdk's port, carried in process: what the SDK writes goes to a servo chain, its replies (after
    ``tamper``, which may damage them as a line would) are what the SDK reads next."""

    def __init__(self, chain: ServoChain, clock: Callable[[], float]) -> None:
        self.chain = chain
        self.clock = clock
        self.is_using = False
        self.rx = bytearray()
        self.decoder = PacketDecoder()
        self.tamper: Callable[[bytes], bytes] | None = None
        """Applied to the next fast sync read reply only, then cleared."""

    # dynamixel-sdk's method names.
    def openPort(self) -> bool:
        return True

    def setBaudRate(self, baud: int) -> bool:
        return True

    def closePort(self) -> None:
        self.rx.clear()

    def clearPort(self) -> None:
        self.rx.clear()

    def writePort(self, packet: Any) -> int:
        data = bytes(packet)
        for p in self.decoder.feed(data):
            for reply in self.chain.handle(p, self.clock()):
                if reply.dropped:
                    continue
                out = reply.packet
                if reply.servo_id == 0xFE and self.tamper is not None:
                    out, self.tamper = self.tamper(out), None
                self.rx += out
        return len(data)

    def readPort(self, length: int) -> bytes:
        out = bytes(self.rx[:length])
        del self.rx[:length]
        return out

    def setPacketTimeout(self, packet_length: int) -> None:
        pass

    def setPacketTimeoutMillis(self, msec: float) -> None:
        pass

    def isPacketTimeout(self) -> bool:
        return not self.rx  # every reply is there at once: an empty line means nothing more will come


class Rig:
    """A connected DynamixelBus on a loopback port to an emulated D'Claw whose registers stand still."""

    def __init__(self, config: RobotConfig = CONFIG) -> None:
        self.clock = FakeClock()
        self.chain = build_chain(config, RealityConfig(), FaultSpec(), self.clock)
        self.port = LoopbackPort(self.chain, self.clock)
        self.bus = DynamixelBus(config, "loopback", port_handler=self.port, clock=self.clock)
        self.bus.connect()

    def set_state(self, servo_id: int, current: int, velocity: int, position: int) -> None:
        """Present Current/Velocity/Position (register units) of one servo until the next resample."""
        self.chain.refresh(self.clock())  # sample now, so that the next read does not resample over these
        servo = self.chain._by_id[servo_id]
        servo.set(Register.PRESENT_CURRENT, current)
        servo.set(Register.PRESENT_VELOCITY, velocity)
        servo.set(Register.PRESENT_POSITION, position)

    def close(self) -> None:
        self.bus.close()
        self.chain.physics.close()


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.close()


def expected_reading(index: int, velocity: int, position: int) -> tuple[float, float]:
    """(position rad, velocity rad/s) the bus must report for servo ``index`` (``all_ids`` order)."""
    scale = np.concatenate([CONFIG.joint_scale, CONFIG.encoder_scale])[index]
    offset = np.concatenate([CONFIG.joint_offset, CONFIG.encoder_offset])[index]
    return float(ticks_to_joint(position, scale, offset)), velocity * RAD_S_PER_VELOCITY_UNIT * scale


def value_at(reading: Any, index: int) -> tuple[float, float]:
    n_j = len(CONFIG.joints)
    if index < n_j:
        return float(reading.joint_pos[index]), float(reading.joint_vel[index])
    return float(reading.passive_pos[index - n_j]), float(reading.passive_vel[index - n_j])


def stuffed_like_the_old_emulator(packet: bytes) -> bytes:
    """A fast reply byte-stuffed as a regular status packet is (what the emulator used to send, and a firmware that
    stuffed would): FD after every FF FF FD in the body, LEN counting it, the final CRC over the stuffed bytes."""
    body = stuff(packet[7:-2])
    n = len(body) + 2
    head = packet[:5] + bytes((n & 0xFF, n >> 8))
    crc = crc16(head + body)
    return head + body + bytes((crc & 0xFF, crc >> 8))


# Register values whose bytes hold FF FF FD, so a stuffing sender would insert an FD among them:
# current -1 (FF FF) then velocity 253 (FD 00 ..); velocity -5 (FB FF FF FF) then position 0x8FD (FD 08 ..).
STUFFED_JOINT_VALUES = [(-1, 253, 2048 + 100), (0, -5, 0x8FD)]
VALVE_STUFFED_POSITION = -131073
"""Present Position whose bytes are FF FF FD FF (-32 turns: a plausible valve angle, about -201 rad)."""


# --- the combined status itself (pure) ---------------------------------------------------------------------
def test_the_fast_status_is_the_e_manual_example_byte_for_byte() -> None:
    segments = [(0, 3, (166).to_bytes(4, "little")), (0, 7, (2079).to_bytes(4, "little")),
                (0, 4, (1023).to_bytes(4, "little"))]
    assert encode_fast_sync_status(segments) == E_MANUAL_STATUS
    parsed = parse_fast_sync_status(E_MANUAL_STATUS, [3, 7, 4], 4)
    assert [(s.servo_id, s.error, s.data, s.failure) for s in parsed] == [(i, e, d, None) for e, i, d in segments]


def test_the_emulator_never_stuffs_a_fast_reply_and_len_counts_the_bytes_sent(rig: Rig) -> None:
    for k, servo_id in enumerate(CONFIG.all_ids):
        current, velocity, position = STUFFED_JOINT_VALUES[k % 2]
        rig.set_state(servo_id, current, velocity, position if servo_id in CONFIG.joint_ids else VALVE_STUFFED_POSITION)
    request = encode_instruction(0xFE, 0x8A, bytes((126, 0, STATE_BLOCK_SIZE, 0)) + bytes(CONFIG.all_ids))
    (packet,) = PacketDecoder().feed(request)
    (reply,) = rig.chain.handle(packet, rig.clock())
    raw = reply.packet
    n = len(CONFIG.all_ids)
    assert raw.count(b"\xff\xff\xfd") > n // 2  # the data hold the pattern ...
    assert len(raw) == FAST_STATUS_HEAD + n * (STATE_BLOCK_SIZE + FAST_SEGMENT_OVERHEAD)  # ... and nothing was added
    assert raw[5] | (raw[6] << 8) == len(raw) - 7
    assert all(s.failure is None for s in parse_fast_sync_status(raw, CONFIG.all_ids, STATE_BLOCK_SIZE))


def test_a_bad_segment_fails_only_that_servo() -> None:
    ids = [10, 11, 12, 20]
    data = [bytes(range(k, k + STATE_BLOCK_SIZE)) for k in range(len(ids))]
    good = encode_fast_sync_status([(0, i, d) for i, d in zip(ids, data, strict=True)])
    seg = STATE_BLOCK_SIZE + FAST_SEGMENT_OVERHEAD
    for k in range(len(ids)):
        flipped = bytearray(good)
        flipped[FAST_STATUS_HEAD + k * seg + 5] ^= 0x01  # one bit of servo k's data
        result = parse_fast_sync_status(flipped, ids, STATE_BLOCK_SIZE)
        assert [s.failure is None for s in result] == [j != k for j in range(len(ids))]
        assert result[k].failure == "corrupt: segment CRC mismatch" and result[k].data == b""
        assert [s.data for j, s in enumerate(result) if j != k] == [d for j, d in enumerate(data) if j != k]
    # A servo answering in another's place (ID 13 where 12 belongs), its CRC right for what it sent.
    swapped = encode_fast_sync_status([(0, 13 if i == 12 else i, d) for i, d in zip(ids, data, strict=True)])
    result = parse_fast_sync_status(swapped, ids, STATE_BLOCK_SIZE)
    assert [s.failure for s in result] == [None, None, "corrupt: segment of ID 13", None]
    # Another servo's own status packet (a late reply) holds none of the data asked for.
    late = encode_status(20, 0, bytes(STATE_BLOCK_SIZE))
    assert {s.failure for s in parse_fast_sync_status(late, ids, STATE_BLOCK_SIZE)} == {
        "short_data: a status packet of ID 20, not the combined one"}
    # A reply cut short keeps the segments before the cut.
    cut = parse_fast_sync_status(good[:FAST_STATUS_HEAD + 2 * seg + 3], ids, STATE_BLOCK_SIZE)
    assert [s.failure is None for s in cut] == [True, True, False, False]
    assert cut[2].failure is not None and cut[2].failure.startswith("short_data")


# --- the bus over the real SDK ------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["first", "middle", "last joint", "last servo"])
def test_values_that_need_stuffing_read_back_exactly_in_one_fast_read(rig: Rig, where: str) -> None:
    n = len(CONFIG.all_ids)
    index = {"first": 0, "middle": n // 2, "last joint": len(CONFIG.joints) - 1, "last servo": n - 1}[where]
    servo_id = CONFIG.all_ids[index]
    for current, velocity, position in STUFFED_JOINT_VALUES:
        if servo_id not in CONFIG.joint_ids:
            position = VALVE_STUFFED_POSITION
        rig.set_state(servo_id, current, velocity, position)
        before = dict(rig.bus.comm_errors)
        reading = rig.bus.read()
        assert reading.ok and reading.attempts == 1, reading.error  # the fast read itself, not a retry
        assert rig.bus.comm_errors == before
        pos, vel = value_at(reading, index)
        want_pos, want_vel = expected_reading(index, velocity, position)
        assert pos == want_pos and vel == pytest.approx(want_vel, abs=1e-12)
        if index < len(CONFIG.joints):
            assert reading.joint_current[index] == pytest.approx(current * 0.00269)


@pytest.mark.parametrize("where", ["first", "middle", "last servo"])
def test_a_stuffed_fast_reply_is_never_read_as_a_shifted_value(rig: Rig, where: str) -> None:
    # A sender that stuffs (the emulator did) shifts every byte after the inserted FD: those segments fail their
    # CRC, the attempt fails as corrupt and the plain sync read that follows gives the exact values.
    n = len(CONFIG.all_ids)
    index = {"first": 0, "middle": n // 2, "last servo": n - 1}[where]
    servo_id = CONFIG.all_ids[index]
    position = 0x8FD if servo_id in CONFIG.joint_ids else VALVE_STUFFED_POSITION
    rig.set_state(servo_id, 0, -5, position)
    rig.port.tamper = stuffed_like_the_old_emulator
    reading = rig.bus.read()
    assert reading.ok and reading.attempts == 2
    assert reading.error is not None and reading.error.startswith("corrupt (fast sync read: ")
    assert f"id {servo_id}: corrupt" in reading.error
    assert rig.bus.comm_errors["corrupt"] == 1
    assert value_at(reading, index)[0] == expected_reading(index, -5, position)[0]


def test_a_damaged_segment_fails_the_attempt_and_names_the_servo(rig: Rig) -> None:
    seg = STATE_BLOCK_SIZE + FAST_SEGMENT_OVERHEAD
    k = 4  # f1_mid, id 21

    def flip(packet: bytes) -> bytes:
        out = bytearray(packet)
        out[FAST_STATUS_HEAD + k * seg + 8] ^= 0x40  # a bit of its Present Position
        return bytes(out)

    truth = rig.bus.read()
    rig.port.tamper = flip
    reading = rig.bus.read()
    assert reading.ok and reading.attempts == 2  # retried as a plain sync read
    assert reading.error == "corrupt (fast sync read: f1_mid, id 21: corrupt: segment CRC mismatch)"
    assert np.array_equal(reading.joint_pos, truth.joint_pos)
    assert rig.bus.comm_errors["corrupt"] == 1


def test_an_implausible_joint_reading_is_rejected_and_counted(rig: Rig) -> None:
    # A correctly framed reply that reads 800 rad (the misread of issue 14): never a valid reading.
    rig.set_state(10, 0, 0, 0x7FDFD)
    attempts = 1 + CONFIG.retries.read
    reading = rig.bus.read()
    assert reading.stale and np.isnan(reading.joint_pos).all() and reading.attempts == attempts
    assert reading.error is not None
    assert reading.error.startswith("implausible (f0_top, id 10: 800.") and "rad outside [-0.98, 0.98]" in reading.error
    assert rig.bus.comm_errors["implausible"] == attempts and rig.bus.comm_errors["corrupt"] == 0


def test_plausible_ranges_are_the_limits_plus_the_margin_and_256_turns_for_an_encoder() -> None:
    j = CONFIG.task_spec().reset.copy()
    p = np.zeros(1)
    assert CODEC.implausible(j, p) is None
    for k, joint in enumerate(CONFIG.joints):
        for inside, outside in ((joint.high_rad + JOINT_PLAUSIBLE_MARGIN_RAD - 1e-9,
                                 joint.high_rad + JOINT_PLAUSIBLE_MARGIN_RAD + 1e-9),
                                (joint.low_rad - JOINT_PLAUSIBLE_MARGIN_RAD + 1e-9,
                                 joint.low_rad - JOINT_PLAUSIBLE_MARGIN_RAD - 1e-9)):
            q = j.copy()
            q[k] = inside
            assert CODEC.implausible(q, p) is None
            q[k] = outside
            problem = CODEC.implausible(q, p)
            assert problem is not None and problem.startswith(f"{joint.name}, id {joint.id}: ")
        q = j.copy()
        q[k] = np.nan
        assert CODEC.implausible(q, p) is not None
    # The valve's encoder (scale 1, offset 0): Present Position within +-1,048,575 ticks, 2048 ticks being 0 rad.
    low, high = (-1_048_575 - 2048) * RAD_PER_TICK, (1_048_575 - 2048) * RAD_PER_TICK
    assert CODEC.implausible(j, np.array([low + 1e-6])) is None
    assert CODEC.implausible(j, np.array([high - 1e-6])) is None
    assert CODEC.implausible(j, np.array([high + 1e-3])) == (
        f"valve, id 50: {high + 1e-3:.6g} rad outside [{low:.6g}, {high:.6g}]")


def test_the_mock_rejects_an_implausible_reading_alike() -> None:
    clock = FakeClock()
    with MockBus(CONFIG, clock=clock) as mock:
        mock.connect()
        assert mock.read().ok
        mock.q[2] = CONFIG.joints[2].high_rad + 2 * JOINT_PLAUSIBLE_MARGIN_RAD  # pushed far past its limit
        reading = mock.read()
        assert reading.stale and reading.error is not None and reading.error.startswith("implausible (f0_bot, id 12: ")
        assert mock.comm_errors["implausible"] == 1 + CONFIG.retries.read


def test_torque_on_sets_the_goal_from_a_checked_reading_clamped_into_the_limits(rig: Rig) -> None:
    k = 0  # f0_top: limit ticks about 2048 +- 312
    servo = rig.chain._by_id[CONFIG.joints[k].id]
    high = int(CODEC.tick_high[k])
    rig.bus.torque(False)
    servo.set(Register.GOAL_POSITION, 2048)
    beyond = high + round(0.2 / RAD_PER_TICK)  # past the limit, inside the plausible margin
    rig.set_state(CONFIG.joints[k].id, 0, 0, beyond)
    rig.bus.torque(True)
    # The servo refuses a goal outside its limits (and would keep 2048); the bus sends the nearest one inside.
    assert servo.get(Register.GOAL_POSITION) == high
    assert servo.torque_on

    rig.bus.torque(False)
    rig.set_state(CONFIG.joints[k].id, 0, 0, 0x7FDFD)  # a reading nobody may take a goal from
    with pytest.raises(BusError, match=r"cannot read the present positions .*implausible \(f0_top, id 10"):
        rig.bus.torque(True)
    assert not servo.torque_on and servo.get(Register.GOAL_POSITION) == high


# --- fuzzing (deterministic) -------------------------------------------------------------------------------
@FUZZ
@given(st.binary(max_size=300), st.lists(st.integers(0, 252), min_size=1, max_size=12, unique=True),
       st.integers(0, 12))
def test_fuzz_the_fast_parser_never_raises_on_any_bytes(data: bytes, ids: list[int], length: int) -> None:
    result = parse_fast_sync_status(data, ids, length)
    assert [s.servo_id for s in result] == ids
    assert all(len(s.data) == (length if s.failure is None else 0) for s in result)


_damage = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(1, 255)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("cut"), st.integers(0, 10_000), st.just(0)),
)
"""What a line does to bytes in flight (the sender's CRC stays what it was)."""


def _apply(packet: bytes, damage: tuple[str, int, int]) -> bytes:
    kind, at, value = damage
    if not packet:
        return packet
    out = bytearray(packet)
    at %= len(out)
    if kind == "flip":
        out[at] ^= value
    elif kind == "insert":
        out.insert(at, value)
    elif kind == "delete":
        del out[at]
    else:
        del out[at:]
    return bytes(out)


# Data bytes drawn mostly from the stuffing pattern, so replies are full of FF FF FD.
_data = st.lists(st.sampled_from([0x00, 0xFD, 0xFF, 0xFF, 0x08, 0xFB]), min_size=STATE_BLOCK_SIZE,
                 max_size=STATE_BLOCK_SIZE).map(bytes)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 252), st.sampled_from([0, 0x80, 0x01]), _data), min_size=1, max_size=10,
                unique_by=lambda t: t[0]),
       st.booleans(), st.lists(_damage, max_size=3))
def test_fuzz_a_damaged_fast_reply_never_yields_a_wrong_value(
        segments: list[tuple[int, int, bytes]], stuffed: bool, damage: list[tuple[str, int, int]]) -> None:
    packet = encode_fast_sync_status([(e, i, d) for i, e, d in segments])
    if stuffed:  # a sender that stuffs, as a regular status packet is
        packet = stuffed_like_the_old_emulator(packet)
    for d in damage:
        packet = _apply(packet, d)
    ids = [i for i, _, _ in segments]
    result = parse_fast_sync_status(packet, ids, STATE_BLOCK_SIZE)
    for (servo_id, error, data), got in zip(segments, result, strict=True):
        assert got.servo_id == servo_id
        if got.failure is None:  # whatever survived is exactly what was sent
            assert (got.error, got.data) == (error, data)
    if not damage and not stuffed:
        assert all(s.failure is None for s in result)


@FUZZ
@given(st.lists(st.one_of(st.binary(max_size=40), st.sampled_from([b"\xff\xff\xfd\x00", b"\xff\xff\xfd\xfd",
                                                                  b"\x03\x00", b"\xff\xff"])), max_size=20))
def test_fuzz_the_packet_decoder_never_raises_on_any_bytes(pieces: list[bytes]) -> None:
    decoder = PacketDecoder()
    for piece in pieces:
        for p in decoder.feed(piece):
            assert len(p.raw) >= 10 and p.raw[:4] == b"\xff\xff\xfd\x00"
    assert decoder.pending <= sum(len(x) for x in pieces)


_instruction = st.tuples(st.integers(0, 0xFE), st.sampled_from([0x01, 0x02, 0x03, 0x55, 0x82, 0x83, 0x8A]),
                         st.lists(st.sampled_from([0x00, 0xFD, 0xFF, 0xFF, 0x12]), max_size=24).map(bytes))


@FUZZ
@given(st.lists(_instruction, min_size=1, max_size=6), st.lists(_damage, max_size=2),
       st.binary(max_size=20), st.lists(st.integers(1, 40), min_size=1, max_size=8))
def test_fuzz_the_packet_decoder_returns_only_packets_that_were_sent(
        sent: list[tuple[int, int, bytes]], damage: list[tuple[str, int, int]], noise: bytes,
        chunks: list[int]) -> None:
    stream = noise + b"".join(encode_instruction(i, inst, params) for i, inst, params in sent)
    for d in damage:
        stream = _apply(stream, d)
    decoder = PacketDecoder()
    packets = []
    pos = 0
    k = 0
    while pos < len(stream):  # fed in the chunks a serial port hands out
        step = chunks[k % len(chunks)]
        packets += decoder.feed(stream[pos:pos + step])
        pos += step
        k += 1
    originals = {(i, inst, params) for i, inst, params in sent}
    for p in packets:
        if p.crc_ok:  # a packet a servo would act on is one that was sent, unstuffed exactly
            assert (p.id, p.instruction, p.params) in originals
    if not damage and not noise:
        assert [(p.id, p.instruction, p.params) for p in packets] == sent
