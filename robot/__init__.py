"""Real-time controller, Dynamixel bus, servo emulator and in-process mock (the hardware path)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from s2r.core.lazy import lazy_exports

if TYPE_CHECKING:
    from robot.bus import Bus as Bus
    from robot.bus import BusError as BusError
    from robot.config import RobotConfig as RobotConfig
    from robot.config import load_config as load_config
    from robot.controller import Controller as Controller
    from robot.controller import ControllerSettings as ControllerSettings
    from robot.emulator import Emulator as Emulator
    from robot.emulator import load_reality as load_reality
    from robot.hardware import OpenOptions as OpenOptions
    from robot.hardware import RobotIO as RobotIO
    from robot.hardware import open_robot as open_robot
    from robot.mock import MockBus as MockBus
    from robot.runner import RunSummary as RunSummary
    from robot.runner import run_episodes as run_episodes

_PUBLIC: dict[str, tuple[str, ...]] = {
    "config": ("RobotConfig", "load_config"),
    "controller": ("Controller", "ControllerSettings"),
    "hardware": ("OpenOptions", "RobotIO", "open_robot"),
    "runner": ("RunSummary", "run_episodes"),
    "bus": ("Bus", "BusError"),
    "mock": ("MockBus",),
    "emulator": ("Emulator", "load_reality"),
}
"""Where each public name lives, imported on first use: ``import robot`` loads neither the simulator nor the servo
SDK."""
__getattr__, __dir__, __all__ = lazy_exports(__name__, _PUBLIC)
