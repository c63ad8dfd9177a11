"""``s2r emulate``: the device path on the first stdout line, served until SIGINT/SIGTERM, exit 0."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
from pathlib import Path

import dynamixel_sdk as sdk
import pytest

from robot.dynamixel.bus import TunedPortHandler
from s2r.commands import emulator as cli

ROOT = Path(__file__).resolve().parents[1]
ROBOT = str(ROOT / "hardware_configs" / "dclaw.yaml")
PING_LATENCY_TIMER_S = 0.1
"""The one ping's latency timer (s), so a packet timeout of about 200 ms: the test counts exactly one instruction,
so it cannot retry, and a busy VM has woken the emulator tens of ms late."""


def test_register_adds_emulate() -> None:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["emulate", "--robot", ROBOT, "--faults", "drop=0.1"])
    assert args.func is cli.run and args.faults == "drop=0.1" and args.reality is None


def stop_for_stats(proc: subprocess.Popen[str], sig: signal.Signals) -> dict[str, float]:
    """Stop a running ``s2r emulate`` with ``sig``; its counters, once it exited 0 (killed if it does not exit)."""
    proc.send_signal(sig)
    try:
        _out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    stats: dict[str, float] = json.loads(err.strip().splitlines()[-1])["emulator_stats"]
    return stats


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serves_on_the_printed_path_until_a_signal(sig: signal.Signals, tmp_path: Path) -> None:
    reality = tmp_path / "reality.yaml"
    reality.write_text("params: {valve_damping: 0.1}\nwire_time: false\n")
    proc = subprocess.Popen([sys.executable, "-m", "s2r.commands.emulator", "--robot", ROBOT,
                             "--reality", str(reality), "--faults", "seed=2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        path = proc.stdout.readline().strip()
        assert path.startswith("/dev/pts/")
        port = TunedPortHandler(path, PING_LATENCY_TIMER_S)
        assert port.openPort() and port.setBaudRate(1_000_000)
        model, result, _ = sdk.PacketHandler(2.0).ping(port, 50)
        port.closePort()
        assert (model, result) == (1020, sdk.COMM_SUCCESS)
    finally:
        stats = stop_for_stats(proc, sig)
    assert stats["instructions"] == 1 and stats["replies"] == 1
    # the claw's config has a camera section, but only a deployment's own emulator streams it (and only on request)
    assert not any(key.startswith("camera") for key in stats), stats


def test_bad_arguments_exit_2_with_the_reason(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "s2r.commands.emulator", "--robot", ROBOT, "--faults", "drop=2"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "drop must be a probability" in done.stderr and done.stdout == ""
    reality = tmp_path / "r.yaml"
    reality.write_text("params: {finger_kpp: 3}\n")
    done = subprocess.run([sys.executable, "-m", "s2r.commands.emulator", "--robot", ROBOT, "--reality", str(reality)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "unknown parameter params.finger_kpp" in done.stderr


def test_lockstep_prints_its_time_socket_and_serves_one_client_after_another() -> None:
    from lockstep_emulator import FACTORY_RETURN_DELAY_S

    from robot.config import load_config
    from robot.emulator.lockstep import LockstepPortHandler, connect_clock

    config = load_config(ROBOT)
    proc = subprocess.Popen([sys.executable, "-m", "s2r.commands.emulator", "--robot", ROBOT, "--lockstep"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        path, socket_path = proc.stdout.readline().strip(), proc.stdout.readline().strip()
        assert path.startswith("/dev/pts/") and socket_path.endswith(".sock")
        for _ in range(2):  # a client that hangs up leaves the emulator waiting for the next
            clock = connect_clock(socket_path)
            port = LockstepPortHandler(path, config.latency_timer_s, FACTORY_RETURN_DELAY_S, clock)
            assert port.openPort() and port.setBaudRate(config.baud)
            t0 = clock.now()
            model, result, _ = sdk.PacketHandler(2.0).ping(port, 50)  # at the shipped latency timer
            assert (model, result) == (1020, sdk.COMM_SUCCESS) and clock.now() > t0
            port.closePort()
            clock.close()
    finally:
        stats = stop_for_stats(proc, signal.SIGTERM)
    assert stats["instructions"] == 2 and stats["replies"] == 2 and stats["physics_lag_s"] == 0.0
