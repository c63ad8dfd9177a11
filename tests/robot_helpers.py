"""What the robot-side tests share: a clock that only sleeping moves, and shipped hardware configs with fields
changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

from robot.config import RobotConfig, config_from_mapping
from sim.tasks.spec import FloatArray


class FakeClock:
    """Time that moves only when slept in or advanced (s): a loop on it runs in zero wall time."""

    def __init__(self, t0: float = 1000.0) -> None:
        self.t = t0

    def __call__(self) -> float:
        return self.t

    def sleep(self, dt: float) -> None:
        self.t += max(0.0, dt)


class FakeCommands:
    """The command half of ``robot.resets.ResetIO`` that the fake robots of the reset tests share: the command in
    force and whether a reset has written one. A subclass records what it needs by extending :meth:`write`."""

    def __init__(self, command: FloatArray) -> None:
        self._command = np.array(command, dtype=np.float64)
        self._commanded = False

    def end_cycle(self) -> None:
        pass

    @property
    def command(self) -> FloatArray:
        return self._command

    @property
    def commanded(self) -> bool:
        return self._commanded

    def start_from(self, command: FloatArray) -> None:
        self._command = command

    def write(self, command: FloatArray) -> None:
        self._command = command
        self._commanded = True


def config_data(path: Path) -> dict[str, Any]:
    """A hardware config file's mapping, to change and load."""
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def with_changes(data: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``data`` with dotted fields set in place (``"imu.max_silence_s": 1.0``; a value of ``...`` deletes the
    field); returns it."""
    for dotted, value in changes.items():
        *parents, key = dotted.split(".")
        node = data
        for p in parents:
            node = node[p]
        if value is ...:
            del node[key]
        else:
            node[key] = value
    return data


def changed_config(path: Path, changes: dict[str, Any], source: str = "test config") -> RobotConfig:
    """The config file at ``path`` with dotted fields set (:func:`with_changes`), loaded as from ``source``."""
    return config_from_mapping(with_changes(config_data(path), changes), source=source)
