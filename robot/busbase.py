"""What the Dynamixel bus and the mock bus share behind the :class:`robot.bus.Bus` protocol: the failure counters,
the torque flag, the driven passive joints, servo names and the connected check. Each bus sets the attributes
declared here in its ``__init__`` and implements the servo traffic itself."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import cast

from robot.bus import Bus, BusCounters, BusError, CounterBook, passive_driven_block, torque_disabled_block
from robot.config import RobotConfig


class ServoBusBase(ABC):
    """The bookkeeping half of a servo bus; subclasses provide :meth:`torque` and the passive-servo switches."""

    config: RobotConfig
    _book: CounterBook
    _names: dict[int, str]
    """Servo id -> joint or encoder name."""
    _driving: set[str]
    """Passive joints whose servo is driven now (inside :meth:`passive_driven`)."""
    _connected: bool
    _torque: bool
    """Whether the joints' torque is on (as :meth:`torque` last set it)."""

    @property
    def comm_errors(self) -> Mapping[str, int]:
        return dict(self._book.comm_errors)

    @property
    def counters(self) -> BusCounters:
        return self._book.snapshot()

    @property
    def torque_enabled(self) -> bool:
        return self._torque

    @abstractmethod
    def torque(self, enabled: bool) -> None:
        """Switch the joints' torque (each bus writes its own registers)."""

    def torque_disabled(self) -> AbstractContextManager[None]:
        return torque_disabled_block(cast("Bus", self))  # every subclass is a Bus

    @property
    def passive_driving(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.config.encoders if e.name in self._driving)

    def passive_driven(self, *names: str) -> AbstractContextManager[None]:
        return passive_driven_block(self.config, names, self._driving, self._enable_passive, self._disable_passive)

    @abstractmethod
    def _enable_passive(self, names: tuple[str, ...]) -> None:
        """Drive the servos of the passive joints ``names``."""

    @abstractmethod
    def _disable_passive(self, names: tuple[str, ...]) -> None:
        """Release the servos of the passive joints ``names``."""

    def _connected_already(self, torque_on: bool) -> bool:
        """The start of ``connect``: on a connected bus only turn torque on if asked (and it is off)."""
        if not self._connected:
            return False
        if torque_on and not self._torque:
            self.torque(True)
        return True

    def _id_of(self, name: str) -> int:
        for i, n in self._names.items():
            if n == name:
                return i
        raise KeyError(f"no joint or encoder named {name!r}; known: {', '.join(self._names.values())}")

    def _require_connected(self) -> None:
        if not self._connected:
            raise BusError("the bus is not connected; call connect() first")
