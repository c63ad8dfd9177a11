"""Lock-step (``robot.emulator.lockstep``): simulated time only the client moves, bytes still through dynamixel-sdk.

Deterministic (the same seed gives identical logs, also with both cores busy, faults included), time on the wire
accounted exactly in simulated time (a reply's wire time and return delay; a missing reply's packet timeout), the
physics and the IMU advanced by exactly the time that passes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dynamixel_sdk as sdk
import numpy as np
import pytest
from lockstep_emulator import FACTORY_RETURN_DELAY_S, lockstep_port

from robot.bus import BusError
from robot.config import load_config
from robot.dynamixel.timing import packet_timeout_s
from robot.dynamixel.units import wire_time_s
from robot.emulator import Emulator, parse_faults
from robot.emulator.lockstep import TIMEOUT_MARGIN_S, LockstepClock
from robot.hardware import OpenOptions, open_robot
from s2r.cli import main as s2r_main
from s2r.core.trajlog import read_episodes

ROOT = Path(__file__).resolve().parents[1]
CLAW_PATH = ROOT / "hardware_configs" / "dclaw.yaml"
KITTY_PATH = ROOT / "hardware_configs" / "dkitty.yaml"
CLAW = load_config(CLAW_PATH)
PH = sdk.PacketHandler(2.0)
PING_BYTES, PING_STATUS_BYTES = 10, 14
"""A PING instruction and its status packet (model number, firmware version) (bytes, e-manual protocol 2.0)."""
SDK_PING_WAIT_BYTES = 11
"""The status bytes dynamixel-sdk's packet timeout of a PING counts (a status packet without parameters)."""


@contextmanager
def busy_cores() -> Iterator[None]:
    """Every core kept busy by processes of their own while the block runs (at most two)."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
               for _ in range(min(2, os.cpu_count() or 1))]
    try:
        yield
    finally:
        for p in burners:
            p.kill()
            p.wait()


def deploy(logs: Path, robot: Path, *extra: str) -> int:
    policy = "scripted:random" if robot == CLAW_PATH else "scripted:hold"  # random legs tip the quadruped over
    return s2r_main(["deploy", policy, "--robot", str(robot), "--driver", "emulator", "--lockstep",
                     "--episodes", "2", "--episode-steps", "12", "--seed", "5", "--log-dir", str(logs), *extra])


def assert_same_logs(a: Path, b: Path) -> int:
    """Every array and meta of every episode identical; the number of episodes."""
    first, second = list(read_episodes(a)), list(read_episodes(b))
    assert len(first) == len(second) > 0
    for x, y in zip(first, second, strict=True):
        assert sorted(x.arrays) == sorted(y.arrays)
        for key in x.arrays:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)
        assert x.meta == y.meta
    return len(first)


@pytest.mark.parametrize("robot", [CLAW_PATH, KITTY_PATH], ids=["claw", "quadruped"])
def test_the_same_seed_gives_identical_logs_on_an_idle_and_a_busy_machine(robot: Path, tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert deploy(tmp_path / "idle", robot, "--json") == 0
    with busy_cores():
        assert deploy(tmp_path / "busy", robot, "--json") == 0
    assert assert_same_logs(tmp_path / "idle", tmp_path / "busy") == 2
    out = capsys.readouterr().out.strip().splitlines()
    for line in (out[0], out[-1]):  # no fault injected: no comm error of any kind, at connect and shutdown too
        assert '"comm_errors": 0,' in line and '"comm_errors_at_connect": 0' in line
        assert '"comm_errors_at_shutdown": 0' in line


def test_injected_faults_are_reproducible(tmp_path: Path) -> None:
    faults = "drop=0.02,crc=0.01,silent=31@2s,seed=4"
    codes = [deploy(tmp_path / "first", CLAW_PATH, "--faults", faults)]
    with busy_cores():
        codes.append(deploy(tmp_path / "second", CLAW_PATH, "--faults", faults))
    assert codes[0] == codes[1]
    assert assert_same_logs(tmp_path / "first", tmp_path / "second") >= 1
    errors = sum(int(ep["comm_errors"].sum()) + ep.meta["reset_comm_errors"]
                 for ep in read_episodes(tmp_path / "first"))
    assert errors > 0  # the faults did strike


def test_time_on_the_wire_is_simulated_time() -> None:
    with Emulator(CLAW, lockstep=True) as emu:
        clock = emu.clock
        port = lockstep_port(emu, CLAW)
        try:
            t0 = clock.now()
            model, result, _ = PH.ping(port, 10)
            assert (model, result) == (1020, sdk.COMM_SUCCESS)
            # the instruction, the servo's (factory) return delay, its status packet: nothing else
            expected = wire_time_s(PING_BYTES, CLAW.baud) + FACTORY_RETURN_DELAY_S + wire_time_s(PING_STATUS_BYTES,
                                                                                                  CLAW.baud)
            assert clock.now() - t0 == pytest.approx(expected, abs=1e-9)
            t0 = clock.now()
            _, result, _ = PH.ping(port, 99)  # nobody: the packet timeout passes, in simulated time only
            assert result == sdk.COMM_RX_TIMEOUT
            timeout = packet_timeout_s(CLAW.baud, SDK_PING_WAIT_BYTES, CLAW.latency_timer_s, port.reply_delays_s)
            assert clock.now() - t0 == pytest.approx(timeout + TIMEOUT_MARGIN_S, abs=1e-9)
        finally:
            port.closePort()


def test_a_late_reply_times_out_and_is_drained_in_simulated_time() -> None:
    with open_robot(CLAW, "emulator", OpenOptions(faults=parse_faults("late=1:20ms,seed=1"), lockstep=True)) as io:
        bus = io.bus
        with pytest.raises(BusError, match=r"f0_top, id 10: no answer to PING \(timeout\)"):
            bus.connect()  # every reply 20 ms late: past the 4 ms packet timeout, every time
        counts = bus.comm_errors
        # each late reply was drained before the retry: timeouts only, never a late reply taken for the next one
        assert counts["timeout"] == len(CLAW.all_ids) * (1 + CLAW.retries.connect)
        assert sum(counts.values()) == counts["timeout"]


def test_the_physics_advances_by_exactly_the_time_that_passes() -> None:
    with Emulator(CLAW, lockstep=True) as emu:
        clock: LockstepClock = emu.clock
        steps0, t0 = emu.stats()["physics_steps"], clock.now()
        for _ in range(7):
            clock.sleep(CLAW.control_period_s)
        dt = 0.0025
        assert clock.now() - t0 == pytest.approx(7 * CLAW.control_period_s, abs=1e-9)
        assert emu.stats()["physics_steps"] - steps0 == round(7 * CLAW.control_period_s / dt)


def test_the_imu_streams_exactly_its_rate_in_simulated_time() -> None:
    kitty = load_config(KITTY_PATH)
    assert kitty.imu is not None
    with open_robot(kitty, "emulator", OpenOptions(lockstep=True)) as io:
        assert io.imu is not None
        period = kitty.imu.frame_period_s
        for t in (1.0, 1.5):
            io.sleep(t - io.clock())
            sample = io.imu.poll()
            counters = io.imu.counters
            # one frame every 5 ms from power-on (t = 0), none lost, the newest at most a period old
            assert sample is not None and abs(counters.received - (t / period + 1)) <= 1
            assert counters.gaps == 0 and counters.total_rejected == 0 and counters.received == sample.sequence + 1
            assert t - period - 1e-9 <= sample.device_time_s <= t and sample.receive_time == t


def test_lockstep_needs_a_simulated_robot() -> None:
    from s2r.core.errors import UserError

    with pytest.raises(UserError, match="the dynamixel driver runs in real time"):
        open_robot(CLAW, "dynamixel", OpenOptions(lockstep=True))
    with pytest.raises(UserError, match="the mock has its own simulated time"):
        open_robot(CLAW, "mock", OpenOptions(lockstep=True, clock_socket="/tmp/nothing.sock"))
    with open_robot(CLAW, "mock", OpenOptions(lockstep=True)) as io:  # the mock's lock-step: a clock only sleeps move
        assert io.lockstep and io.clock() == 0.0
        io.sleep(0.25)
        assert io.clock() == 0.25
    with pytest.raises(UserError, match=r"^clock_socket needs port: an emulator started here is driven directly$"):
        open_robot(CLAW, "emulator", OpenOptions(lockstep=True, clock_socket="/tmp/nothing.sock"))
    with pytest.raises(UserError, match="cannot connect to the lock-step emulator's time socket"):
        open_robot(CLAW, "emulator",
                   OpenOptions(port="/dev/null", lockstep=True, clock_socket="/nonexistent/clock.sock"))


def test_a_client_that_breaks_the_protocol_ends_only_its_own_session() -> None:
    """`s2r emulate --lockstep` serves one client after another: a malformed request ends that client's session
    (counted), and the next client starts from a clean line at the present simulated time."""
    from multiprocessing import Pipe

    from robot.emulator.faults import NO_FAULTS
    from robot.emulator.reality import NOMINAL_REALITY
    from robot.emulator.server import build_server
    from robot.simtime import SimTime

    time_ = SimTime()
    server = build_server(CLAW, NOMINAL_REALITY, NO_FAULTS, clock=time_)
    server.open()
    try:
        client, end = Pipe()
        client.send(("advance", 0.05, 0, False))
        client.send(("advance", "soon", 0, False))  # not a time
        server.serve_lockstep(time_, end)  # returns: the session is over, the emulator is not
        assert client.recv() == ("at", 0.05, 0, 0, 0)
        assert server.stats()["lockstep_protocol_errors"] == 1
        client, end = Pipe()
        client.send(("advance", 0.1, 0, False))
        client.close()  # the session ends when the client goes away, after its request
        server.serve_lockstep(time_, end)
        assert time_.t == pytest.approx(0.1)
    finally:
        server.close()
