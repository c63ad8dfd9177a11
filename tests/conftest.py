"""Fixtures shared by the test files."""

from __future__ import annotations

import os

# MuJoCo picks its OpenGL backend when it is first imported, and a test file may import it before `sim` (which
# chooses EGL): headless rendering must be chosen here, before any test module loads.
os.environ.setdefault("MUJOCO_GL", "egl")

from collections.abc import Callable, Iterator
from typing import Any

import gymnasium as gym
import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    """The real robot of the bring-up suite (``tests/test_bringup.py``): ``pytest -m hardware --robot YAML --port
    /dev/ttyUSB0``. Without ``--port`` its real-robot variant skips; its emulator variant runs in every default run."""
    group = parser.getgroup("s2r robot", "the robot of the hardware bring-up suite (tests/test_bringup.py)")
    group.addoption("--robot", metavar="YAML", default=None,
                    help="hardware config of the robot under test, a file or a shipped name (default: dclaw)")
    group.addoption("--port", metavar="PATH", default=None,
                    help="serial port of the real robot: runs the bring-up suite's hardware variant on it "
                    "(select it with -m hardware)")


@pytest.fixture
def make_env() -> Iterator[Callable[..., gym.Env]]:
    """``make_env(env_id, engine, **kwargs)``: a fresh ``gym.make`` env, closed after the test; a PyBullet one skips
    the test where PyBullet is not installed."""
    envs: list[gym.Env] = []

    def make(env_id: str, engine: str, **kwargs: Any) -> gym.Env:
        if engine == "pybullet":
            pytest.importorskip("pybullet")
        env = gym.make(env_id, engine=engine, **kwargs)
        envs.append(env)
        return env

    yield make
    for env in envs:
        env.close()
