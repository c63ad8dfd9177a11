"""Real-time controller, Dynamixel bus, servo emulator and in-process mock (the hardware path)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from s2r.core.lazy import lazy_exports

if TYPE_CHECKING:
    from robot.bus import Bus, BusError
    from robot.config import RobotConfig, load_config
    from robot.controller import Controller, ControllerSettings
    from robot.emulator import Emulator, load_reality
    from robot.hardware import RobotIO, open_robot
    from robot.mock import MockBus
    from robot.runner import RunSummary, run_episodes

__all__ = [
    "Bus",
    "BusError",
    "Controller",
    "ControllerSettings",
    "Emulator",
    "MockBus",
    "RobotConfig",
    "RobotIO",
    "RunSummary",
    "load_config",
    "load_reality",
    "open_robot",
    "run_episodes",
]
_PUBLIC: dict[str, tuple[str, ...]] = {
    "config": ("RobotConfig", "load_config"),
    "controller": ("Controller", "ControllerSettings"),
    "hardware": ("RobotIO", "open_robot"),
    "runner": ("RunSummary", "run_episodes"),
    "bus": ("Bus", "BusError"),
    "mock": ("MockBus",),
    "emulator": ("Emulator", "load_reality"),
}
"""Where each public name lives, imported on first use: ``import robot`` loads neither the simulator nor the servo
SDK."""
__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
