"""The bring-up suite: what to check on a robot before anything runs on it, in order: every servo answers PING with the
config's model, connecting leaves every EEPROM setting (limits, modes, neutral homing) as the config implies, the
torque switches on and off as reported by the servos, each joint makes one gentle move and comes back, and a forced
safety stop leaves the torque off.

Every test runs twice, on one robot per module: ``emulator`` (an emulated robot in lock-step, started here: part of
every default run, so CI runs the suite) and ``robot`` (marked ``hardware``, so only ``-m hardware`` selects it):
``pytest -m hardware --robot hardware_configs/dclaw.yaml --port /dev/ttyUSB0``. Without ``--port`` the real-robot
variant skips, saying so. ``--robot`` picks the config for both (default: dclaw). The real robot must be free to move
a little: each joint goes :data:`GENTLE_STEP_RAD` towards the middle of its range and back.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest

from robot.config import RobotConfig, load_config
from robot.controller import Controller, ControllerSettings
from robot.dynamixel.bus import DynamixelBus
from robot.hardware import OpenOptions, RobotIO, open_robot
from sim import resolve_env_id
from sim.tasks import make_task

GENTLE_STEP_RAD = 0.08
"""How far each joint moves in the gentle-move test (rad, about 4.6 deg), towards the middle of its range: little
enough to stay clear of what the robot stands among (the claw's raised fingers touch the valve about 0.1 rad down)."""
GENTLE_SPEED_RAD_S = 0.3
"""How fast the gentle move's goal travels (rad/s): about 0.5 s each way."""
SETTLE_S = 0.5
"""Hold after each ramp before the joint is read (s)."""
REACHED_RAD = 0.05
"""How close the moved joint must come to its goal (rad): the position loop's sag under the finger's weight is a few
ticks; a servo that does not follow is off by the whole step, one turning the wrong way by twice it."""
ON_ITS_BACK = np.array([0.0, 0.0, 0.3, 0.0, 1.0, 0.0, 0.0])
"""Where the emulated legged robot is brought up: torso 0.3 m up, turned half a turn about its x axis (position (m),
quaternion (w, x, y, z)); it drops onto its back with its legs in the air."""
TARGETS = [pytest.param("emulator", id="emulator"), pytest.param("robot", id="robot", marks=pytest.mark.hardware)]


@pytest.fixture(scope="module", params=TARGETS)
def robot(request: pytest.FixtureRequest) -> Iterator[RobotIO]:
    """The robot under test, not yet connected: an emulator started here (lock-step), or the real one on ``--port``;
    closed (torque off) after the module."""
    config = load_config(request.config.getoption("--robot") or "dclaw")
    if request.param == "robot":
        port = request.config.getoption("--port")
        if port is None:
            pytest.skip("the real-robot bring-up needs the robot's serial port: pytest -m hardware --robot YAML "
                        "--port /dev/ttyUSB0")
        io = open_robot(config, "dynamixel", OpenOptions(port=port))
    else:
        io = open_robot(config, "emulator", OpenOptions(lockstep=True))
        if config.imu is not None and io.placer is not None:
            # A legged robot is brought up on a stand, legs free; the emulated one lies on its back, legs up.
            io.bus.connect(torque_on=False)
            start = io.bus.read()
            assert start.ok, start.error
            io.placer.place(start.joint_pos, start.passive_pos, ON_ITS_BACK)
    with io:
        yield io


def _bus(robot: RobotIO) -> DynamixelBus:
    assert isinstance(robot.bus, DynamixelBus)
    return robot.bus


def _config(robot: RobotIO) -> RobotConfig:
    return robot.bus.config


def test_every_servo_answers_ping_with_the_configured_model(robot: RobotIO) -> None:
    config = _config(robot)
    models = _bus(robot).ping_models()
    wrong = {name: model for name, model in models.items() if model != config.servo.model_number}
    assert not wrong, (f"expected every servo to answer as model {config.servo.model_number} ({config.servo.name}); "
                       f"these did not (None: no answer): {wrong}")


def test_connecting_leaves_every_eeprom_setting_as_configured(robot: RobotIO) -> None:
    bus = _bus(robot)
    bus.connect(torque_on=False)
    assert bus.settings_mismatches() == []
    assert not robot.bus.hardware_errors(), "servos report hardware errors"


def test_torque_goes_on_and_off_as_the_servos_report(robot: RobotIO) -> None:
    bus, config = robot.bus, _config(robot)
    bus.connect(torque_on=False)
    bus.torque(True)
    status = bus.torque_status()
    assert all(status[n] for n in config.joint_names) and not any(status[e.name] for e in config.encoders), status
    with bus.torque_disabled():
        assert not any(bus.torque_status().values())
    assert all(bus.torque_status()[n] for n in config.joint_names)
    bus.torque(False)
    assert not any(bus.torque_status().values())


def _ramp(robot: RobotIO, command: np.ndarray, k: int, goal: float) -> np.ndarray:
    """Move joint ``k``'s goal to ``goal`` at :data:`GENTLE_SPEED_RAD_S`, one write per control period, then hold for
    :data:`SETTLE_S`; returns the last command."""
    period = _config(robot).control_period_s
    step = GENTLE_SPEED_RAD_S * period
    cmd = command.copy()
    while cmd[k] != goal:
        cmd[k] = goal if abs(goal - cmd[k]) <= step else cmd[k] + math.copysign(step, goal - cmd[k])
        robot.bus.write(cmd)
        robot.sleep(period)
    for _ in range(math.ceil(SETTLE_S / period)):
        robot.bus.write(cmd)
        robot.sleep(period)
    return cmd


def test_each_joint_makes_one_gentle_move_and_comes_back(robot: RobotIO) -> None:
    bus, config = robot.bus, _config(robot)
    bus.connect(torque_on=True)
    try:
        start = bus.read()
        assert start.ok, start.error
        command = np.clip(start.joint_pos, config.low, config.high)
        for k, name in enumerate(config.joint_names):
            toward_middle = math.copysign(GENTLE_STEP_RAD, (config.low[k] + config.high[k]) / 2 - command[k])
            goal = float(np.clip(command[k] + toward_middle, config.low[k], config.high[k]))
            before = bus.read()
            moved = _ramp(robot, command, k, goal)
            reading = bus.read()
            assert before.ok and reading.ok, before.error or reading.error
            assert abs(reading.joint_pos[k] - goal) <= REACHED_RAD, (f"{name} reached {reading.joint_pos[k]:.3f} rad, "
                                                                     f"goal {goal:.3f}")
            # A servo wired to another joint's ID moves that joint instead: the one that moved most must be this one.
            shift = np.abs(reading.joint_pos - before.joint_pos)
            shifts = dict(zip(config.joint_names, np.round(shift, 3), strict=True))
            assert int(np.argmax(shift)) == k, f"moving {name} moved others more: {shifts}"
            command = _ramp(robot, moved, k, float(command[k]))
            back = bus.read()
            assert back.ok and abs(back.joint_pos[k] - command[k]) <= REACHED_RAD, f"{name} did not come back"
    finally:
        bus.torque(False)


def test_a_forced_safety_stop_turns_the_torque_off(robot: RobotIO) -> None:
    """A policy that only outputs NaN: the controller holds, stops for it within a few cycles (a safety stop), and
    the servos then report their torque off."""
    bus, config = robot.bus, _config(robot)
    if config.imu is not None and robot.placer is not None:
        now = bus.read()  # the emulated legged robot back on its feet: on its back it would stop for the tilt
        robot.placer.place(now.joint_pos, now.passive_pos, None)
        if robot.imu is not None:  # frames from before the placement still wait in the line: read them off
            robot.sleep(0.1)
            robot.imu.poll()
    bus.connect()
    task = replace(make_task(resolve_env_id(config.task)), spec=config.task_spec())  # type: ignore[type-var]
    settings = robot.controller_settings(ControllerSettings(episode_steps=20))
    controller = Controller(lambda obs: np.full(config.task_spec().n_joints, np.nan), bus, task, config,
                            settings=settings, clock=robot.clock, sleep=robot.sleep, imu=robot.imu,
                            placer=robot.placer)
    result = controller.episode(np.random.default_rng(0))
    assert result.stop is not None and result.stop.kind == "safety", result.stop
    assert "NaN or infinite" in result.stop.reason
    assert controller.shutdown(result.stop)
    assert not any(bus.torque_status().values())
