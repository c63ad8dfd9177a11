"""Ports and buses on a lock-step emulator (``robot.emulator.lockstep``), for tests that drive the emulator without
measuring real time: they run at the shipped config's timeouts and watchdog limits, in simulated time, whatever
the host's load."""

from __future__ import annotations

from typing import Any

from robot.config import RobotConfig
from robot.dynamixel.bus import DynamixelBus
from robot.dynamixel.control_table import SPEC, Register
from robot.dynamixel.units import S_PER_RETURN_DELAY_UNIT
from robot.emulator import Emulator
from robot.emulator.lockstep import LockstepPortHandler

FACTORY_RETURN_DELAY_S = SPEC[Register.RETURN_DELAY_TIME].default * S_PER_RETURN_DELAY_UNIT
"""Return Delay Time of a servo as shipped (s): a raw port's test never sets it, as the bus does at connect."""


def lockstep_port(emu: Emulator, config: RobotConfig) -> LockstepPortHandler:
    """An open raw port on a lock-step emulator, at the config's latency timer; a sync read waits for every servo's
    factory return delay."""
    port = LockstepPortHandler(emu.port, config.latency_timer_s, len(config.all_ids) * FACTORY_RETURN_DELAY_S,
                               emu.clock)
    assert port.openPort() and port.setBaudRate(config.baud)
    return port


def lockstep_bus(config: RobotConfig, emu: Emulator, **kwargs: Any) -> DynamixelBus:
    """A bus on a lock-step emulator, on its clock (``kwargs`` as for :class:`DynamixelBus`)."""
    port = LockstepPortHandler(emu.port, config.latency_timer_s, len(config.all_ids) * config.return_delay_s,
                               emu.clock)
    return DynamixelBus(config, emu.port, port_handler=port, clock=emu.clock.now, sleep=emu.clock.sleep, **kwargs)
