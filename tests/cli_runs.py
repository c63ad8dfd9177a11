"""What the command-line tests that train a tiny run and drive a robot quickly share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from s2r.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY_TRAIN = ["--set", "hidden=[32,32]", "--set", "batch_size=32", "--set", "eval_episodes=1", "--set", "threads=1",
              "--set", "warmup_steps=100", "--quiet"]
"""`s2r train` flags for a run that only has to exist: small networks, one evaluation episode, no progress bar."""
FAST_PERIOD_S = 0.02
"""The tests' robot control period (s): the tasks' 0.1 s would make every episode take seconds."""


def train_tiny(task: str, out: Path) -> Path:
    """A 300-step ``s2r train`` run of ``task`` with ``TINY_TRAIN`` in ``out``; its path."""
    assert main(["train", "--task", task, "--steps", "300", "--out", str(out), *TINY_TRAIN]) == 0
    return out


def fast_robot_config(robot: str, directory: Path, **overrides: Any) -> Path:
    """A copy of ``hardware_configs/<robot>.yaml`` in ``directory`` running at ``FAST_PERIOD_S``, with ``overrides``
    applied on top; its path."""
    data = yaml.safe_load((ROOT / "hardware_configs" / f"{robot}.yaml").read_text())
    data.update({"control_period_s": FAST_PERIOD_S, "control_period_override": True, **overrides})
    path = directory / f"{robot}-fast.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
