"""Dynamixel protocol 2.0: control table, units, calibration, packet codec and the SDK-based bus.

Servo ticks and register units never leave this package: everything it hands out is in SI units.
``DynamixelBus`` is imported lazily so that the config (which needs the control table) can be loaded
without importing the bus, which itself needs the config.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DynamixelBus", "TunedPortHandler"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from robot.dynamixel import bus

        return getattr(bus, name)
    raise AttributeError(f"module 'robot.dynamixel' has no attribute {name!r}")
