"""The IMU's serial protocol, its reader, the in-process mock IMU, the emulator's IMU pty and the IMU faults."""

from __future__ import annotations

import math
import os
import struct
import tty

import numpy as np
import pytest
import yaml

from robot.bus import PortLost
from robot.config import ImuConfig
from robot.emulator.faults import faults_from_mapping, parse_faults
from robot.emulator.imu import EmulatedImu
from robot.emulator.reality import RealityConfig
from robot.imu.mock import MockImuStream
from robot.imu.mounting import sensor_to_torso, torso_to_sensor
from robot.imu.protocol import (
    BODY_BYTES,
    FRAME_BYTES,
    SYNC,
    FrameDecoder,
    FrameError,
    crc16_ccitt,
    decode_frame,
    encode_frame,
)
from robot.imu.reader import ImuCounters, ImuReader, SerialByteSource
from s2r.core.errors import UserError
from sim.rotations import quat_from_rotvec, quat_from_yaw, quat_mul, rotate
from sim.state import RobotState

IMU = ImuConfig(port="auto", baud=460800, rate_hz=200.0, frame_version=1, max_tilt_rad=0.785, max_silence_s=0.25,
                mounting_quat=(1.0, 0.0, 0.0, 0.0))
TILTED = quat_from_rotvec([0.3, -0.2, 0.1])
SPIN = np.array([0.5, -1.25, 2.0])


class FakeClock:
    """Time that moves only when told to (s)."""

    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def frames(seqs: list[int], quat: np.ndarray = TILTED, angvel: np.ndarray = SPIN) -> list[bytes]:
    return [encode_frame(s, 1000 * s, quat, angvel) for s in seqs]


def with_crc(body: bytes) -> bytes:
    """SYNC + body (version .. payload) + its CRC: a frame whose CRC holds whatever the body says."""
    crc = crc16_ccitt(body)
    return SYNC + body + bytes((crc & 0xFF, crc >> 8))


def test_crc_is_ccitt_false() -> None:
    assert crc16_ccitt(b"123456789") == 0x29B1
    assert crc16_ccitt(b"6789", crc16_ccitt(b"12345")) == 0x29B1


def test_frame_layout_and_round_trip() -> None:
    frame = encode_frame(70000, 2**32 + 5, TILTED, SPIN)
    assert len(frame) == FRAME_BYTES[1] == 40
    assert frame[:2] == SYNC and frame[2] == 1 and frame[3] == BODY_BYTES[1] == 34
    assert struct.unpack_from("<HI", frame, 4) == (70000 % 65536, 5)
    assert int.from_bytes(frame[-2:], "little") == crc16_ccitt(frame[2:-2])
    f = decode_frame(frame)
    assert (f.sequence, f.timestamp_us, f.version) == (70000 % 65536, 5, 1)
    np.testing.assert_allclose(f.quat, TILTED, atol=1e-7)
    np.testing.assert_allclose(f.angvel, SPIN.astype(np.float32), rtol=0, atol=0)


def test_decoder_finds_frames_in_any_chunking_after_garbage() -> None:
    garbage = b"\x00\xa5\x13\xa5"
    stream = garbage + b"".join(frames(list(range(5))))
    for size in (1, 3, 7, 40, 41, len(stream)):
        dec = FrameDecoder()
        got = [f for k in range(0, len(stream), size) for f in dec.feed(stream[k:k + size])]
        assert [f.sequence for f in got] == [0, 1, 2, 3, 4]
        assert dec.counters.bytes_skipped == len(garbage) and dec.counters.total_corrupt == 0


def test_a_bad_checksum_is_rejected_counted_and_the_next_frame_still_read() -> None:
    good = frames([1, 2, 3])
    bad = bytearray(good[1])
    bad[20] ^= 0x01
    dec = FrameDecoder()
    got = dec.feed(good[0] + bytes(bad) + good[2])
    assert [f.sequence for f in got] == [1, 3]
    assert dec.counters.corrupt["crc"] == 1 and dec.counters.total_corrupt == 1
    assert dec.counters.gaps == 1 and dec.counters.frames_missed == 1  # the lost frame shows as a gap too
    with pytest.raises(FrameError) as info:
        decode_frame(bytes(bad))
    assert info.value.kind == "crc"


def test_a_bad_length_or_version_is_rejected_and_counted() -> None:
    good = frames([1, 2, 3, 4])
    short_body = bytes((1, 33)) + good[1][4:-3]  # length 33 with a CRC that holds: still not a version-1 frame
    unknown = bytes((9, 34)) + good[2][4:-2]
    dec = FrameDecoder()
    got = dec.feed(good[0] + with_crc(short_body) + with_crc(unknown) + good[3])
    assert [f.sequence for f in got] == [1, 4]
    assert dec.counters.corrupt["length"] == 1 and dec.counters.corrupt["version"] == 1
    for raw, kind in ((with_crc(short_body), "length"), (good[0][:-1], "length"), (with_crc(unknown), "version")):
        with pytest.raises(FrameError) as info:
            decode_frame(raw)
        assert info.value.kind == kind


def test_non_finite_or_non_unit_values_are_rejected_even_with_a_good_crc() -> None:
    nan_quat = encode_frame(1, 0, np.array([math.nan, 0, 0, 0]), SPIN)
    long_quat = encode_frame(2, 0, np.array([2.0, 0, 0, 0]), SPIN)
    inf_gyro = encode_frame(3, 0, TILTED, np.array([0.0, math.inf, 0.0]))
    dec = FrameDecoder()
    assert dec.feed(nan_quat + long_quat + inf_gyro + frames([4])[0])[0].sequence == 4
    assert dec.counters.corrupt["invalid"] == 3


def test_sequence_gaps_duplicates_and_wrap() -> None:
    dec = FrameDecoder()
    got = dec.feed(b"".join(frames([65533, 65534, 65535, 0, 1, 5, 5, 6])))
    assert [f.sequence for f in got] == [65533, 65534, 65535, 0, 1, 5, 6]
    c = dec.counters
    assert (c.gaps, c.frames_missed, c.duplicates, c.frames) == (1, 3, 1, 7)


def test_imu_counters_log_their_changes_and_describe_themselves() -> None:
    before = ImuCounters(received=10, rejected={"crc": 1}, gaps=1, missed=2, duplicates=1, read_errors=0)
    after = ImuCounters(received=25, rejected={"crc": 4, "length": 1}, gaps=2, missed=5, duplicates=1,
                        bytes_skipped=9, read_errors=1, last_receive_time=3.5)
    assert after.since(before) == {"frames": 15, "gaps": 1, "frames_missed": 3, "duplicates": 0, "read_errors": 1,
                                   "corrupt_crc": 3, "corrupt_length": 1, "corrupt_version": 0, "corrupt_invalid": 0}
    assert list(after.since(before))[:5] == ["frames", "gaps", "frames_missed", "duplicates", "read_errors"]
    assert before.describe() == "10 frames, 1 corrupt (crc 1), 1 gaps (2 frames missed)"
    assert after.describe() == "25 frames, 5 corrupt (crc 4, length 1), 2 gaps (5 frames missed), 1 read errors"
    assert after.total_rejected == 5 and after.age(4.0) == 0.5 and before.age(4.0) == math.inf


def test_mounting_round_trip_and_meaning() -> None:
    mount = quat_from_yaw(math.pi / 2)  # IMU x axis along the torso's y
    q_s, w_s = torso_to_sensor(TILTED, SPIN, mount)
    q_b, w_b = sensor_to_torso(q_s, w_s, mount)
    np.testing.assert_allclose(q_b, TILTED, atol=1e-12)
    np.testing.assert_allclose(w_b, SPIN, atol=1e-12)
    # A vector along the sensor's x axis is the torso's y axis, in the world either way.
    np.testing.assert_allclose(rotate(q_s, [1, 0, 0]), rotate(TILTED, [0, 1, 0]), atol=1e-12)


def test_reader_keeps_the_newest_sample_with_its_receive_time_in_the_torso_frame() -> None:
    clock = FakeClock()
    mounted = ImuConfig(**{**IMU.__dict__, "mounting_quat": tuple(quat_from_yaw(math.pi / 2))})
    stream = MockImuStream(mounted, clock=clock, quat=TILTED, angvel=SPIN)
    reader = ImuReader(stream, mounted, clock=clock)
    first = reader.poll()
    assert first is not None and first.sequence == 0 and first.receive_time == clock.t
    clock.t += 0.1
    sample = reader.poll()
    assert sample is not None and sample.sequence == 20 and sample.receive_time == clock.t
    np.testing.assert_allclose(sample.quat, TILTED, atol=1e-6)
    np.testing.assert_allclose(sample.angvel, SPIN, atol=1e-5)
    assert sample.device_time_s == pytest.approx(100.1, abs=1e-6)
    assert reader.counters.received == 21 and reader.counters.gaps == 0
    assert reader.poll() is sample  # nothing new: the same sample, no younger
    assert reader.counters.age(clock.t + 0.05) == pytest.approx(0.05)


def test_reader_undoes_the_timestamp_wrap() -> None:
    class Lines:
        def __init__(self, chunks: list[bytes]) -> None:
            self.chunks = chunks

        def read(self) -> bytes:
            return self.chunks.pop(0) if self.chunks else b""

        def close(self) -> None:
            pass

    near_end = 2**32 - 1000
    reader = ImuReader(Lines([encode_frame(0, near_end, TILTED, SPIN) + encode_frame(1, 4000, TILTED, SPIN)]), IMU)
    sample = reader.poll()
    assert sample is not None and sample.device_time_s == pytest.approx((2**32 + 4000) * 1e-6)


def test_a_failing_line_is_counted_and_raised_as_a_lost_port() -> None:
    class Broken:
        def read(self) -> bytes:
            raise OSError("EIO")

        def close(self) -> None:
            pass

    reader = ImuReader(Broken(), IMU)
    with pytest.raises(PortLost, match="EIO"):
        reader.poll()
    assert reader.counters.read_errors == 1
    with pytest.raises(PortLost):  # it does not come back
        reader.poll()


def test_serial_source_on_a_pty_discards_what_came_before_it_opened() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        os.write(master, b"".join(frames([1, 2])))  # old samples, before the reader opened
        source = SerialByteSource(os.ttyname(slave), IMU.baud)
        reader = ImuReader(source, IMU)
        assert reader.poll() is None
        os.write(master, b"".join(frames([3, 4])))
        sample = reader.poll()
        assert sample is not None and sample.sequence == 4 and reader.counters.received == 2
        reader.close()
        reader.close()
    finally:
        os.close(master)
        os.close(slave)
    with pytest.raises(UserError, match="cannot open the IMU's serial port"):
        SerialByteSource("/dev/does-not-exist", IMU.baud)


def test_mock_faults_corrupt_drop_and_silence() -> None:
    clock = FakeClock(0.0)
    stream = MockImuStream(IMU, clock=clock, faults=parse_faults("imu_corrupt=0.2,imu_drop=0.1,imu_silent@1s,seed=4"))
    reader = ImuReader(stream, IMU, clock=clock)
    for _ in range(10):
        clock.t += 0.1
        reader.poll()
    c = reader.counters
    assert c.rejected["crc"] > 10 and c.gaps > 10
    assert c.received + c.rejected["crc"] == stream.frames_sent < 200  # frames 0..199 were due before 1 s; some dropped
    last = reader.latest
    assert last is not None and last.receive_time <= 1.0 + 1e-9
    for _ in range(5):
        clock.t += 0.1
        reader.poll()
    assert reader.latest is last and reader.counters.received == c.received  # silent from 1 s on


def test_mock_silence_by_cycle_and_a_reader_that_fell_behind() -> None:
    clock = FakeClock(0.0)
    cycles = [0]
    stream = MockImuStream(IMU, clock=clock, faults=parse_faults("imu_silent@3cycles"), cycle=lambda: cycles[0])
    reader = ImuReader(stream, IMU, clock=clock)
    reader.poll()
    clock.t = 10.0  # 2000 more frames due: a 4 KiB buffer keeps the newest 102
    reader.poll()
    assert reader.counters.received == 103 and reader.counters.gaps == 1 and reader.counters.missed == 1898
    cycles[0] = 3
    clock.t += 0.1
    before = reader.counters.received
    reader.poll()
    assert reader.counters.received == before


def test_emulated_imu_streams_the_torso_through_the_mounting_on_a_pty() -> None:
    mounted = ImuConfig(**{**IMU.__dict__, "mounting_quat": tuple(quat_from_yaw(math.pi))})
    state = RobotState(0.0, np.zeros(12), np.zeros(12), np.zeros(0), np.zeros(0), base_quat=TILTED, base_angvel=SPIN)
    imu = EmulatedImu(mounted, lambda: state, RealityConfig(), parse_faults("imu_corrupt=0.5,seed=1"), t_start=0.0,
                      cycle=lambda: 0)
    path = imu.open()
    try:
        reader = ImuReader(SerialByteSource(path, mounted.baud), mounted)
        for t in np.arange(0.0, 0.1, 0.001):
            imu.serve(float(t))
        imu.serve(0.5025)  # a late wake-up: one frame for the 80 missed due times
        sample = reader.poll()
        assert sample is not None
        np.testing.assert_allclose(sample.quat, TILTED, atol=1e-6)
        np.testing.assert_allclose(sample.angvel, SPIN, atol=1e-5)
        c = reader.counters
        assert imu.stats["imu_frames"] == 21 and imu.stats["imu_frames_merged"] == 80
        assert c.received + c.rejected["crc"] == 21 and c.rejected["crc"] == imu.stats["imu_corrupted"] > 0
        reader.close()
    finally:
        imu.close()


def test_imu_noise_from_reality_perturbs_the_frames() -> None:
    state = RobotState(0.0, np.zeros(12), np.zeros(12), np.zeros(0), np.zeros(0), base_quat=TILTED, base_angvel=SPIN)
    noisy = RealityConfig(imu_orientation_noise_std_rad=0.05, imu_angvel_noise_std_rad_s=0.1)
    imu = EmulatedImu(IMU, lambda: state, noisy, parse_faults("none"), t_start=0.0, cycle=lambda: 0)
    path = imu.open()
    try:
        reader = ImuReader(SerialByteSource(path, IMU.baud), IMU)
        errors, spins = [], []
        for t in np.arange(0.0, 0.5, IMU.frame_period_s):
            imu.serve(float(t))
            sample = reader.poll()
            assert sample is not None
            rel = quat_mul(np.array([TILTED[0], *-TILTED[1:]]), sample.quat)
            errors.append(2 * math.asin(min(1.0, float(np.linalg.norm(rel[1:])))))
            spins.append(sample.angvel - SPIN)
        assert 0.02 < float(np.mean(errors)) < 0.2
        assert float(np.std(spins)) == pytest.approx(0.1, rel=0.3)
        reader.close()
    finally:
        imu.close()


def test_imu_fault_spec_syntax() -> None:
    spec = parse_faults("imu_silent@2s,imu_corrupt=0.05,imu_drop=0.01,drop=0.1,seed=3")
    assert (spec.imu_silent_at_s, spec.imu_silent_at_cycle, spec.imu_corrupt, spec.imu_drop) == (2.0, None, 0.05, 0.01)
    assert spec.any_imu and parse_faults(spec.describe()) == spec
    assert parse_faults("imu_silent@20cycles").imu_silent_at_cycle == 20
    assert not parse_faults("drop=0.1").any_imu
    with pytest.raises(UserError, match="imu_silent@WHEN"):
        parse_faults("imu_silent=2s")
    with pytest.raises(UserError, match="imu_silent time must be a duration"):
        parse_faults("imu_silent@soon")
    with pytest.raises(UserError, match="imu_corrupt must be a probability"):
        parse_faults("imu_corrupt=1.5")
    data = yaml.safe_load("imu_silent: {at_cycle: 7}\nimu_corrupt: 0.2\nseed: 1")
    assert faults_from_mapping(data) == parse_faults("imu_silent@7cycles,imu_corrupt=0.2,seed=1")
    with pytest.raises(UserError, match="imu_silent must be"):
        faults_from_mapping({"imu_silent": {"at_s": 1, "at_cycle": 2}})
