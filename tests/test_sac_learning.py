"""Learning checks (slow): SAC solves Pendulum-v1 within 15k environment steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies.config import config_from_mapping
from policies.train import train

PENDULUM_SOLVED_RETURN = -200.0
"""Mean deterministic return over 10 episodes that counts as solved (the issue's threshold)."""


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_sac_solves_pendulum_within_15k_steps(tmp_path: Path) -> None:
    cfg = config_from_mapping(
        {"task": "Pendulum-v1", "algo": "sac", "steps": 15_000, "seed": 0, "eval_interval": 1000, "eval_episodes": 10}
    )
    summary = train(cfg, tmp_path / "pendulum", progress=False)
    assert summary["steps"] == 15_000
    evals = [r for r in _rows(tmp_path / "pendulum" / "metrics.jsonl") if r["kind"] == "eval"]
    best = max(r["return_mean"] for r in evals)
    assert best >= PENDULUM_SOLVED_RETURN, [round(r["return_mean"]) for r in evals]


def _rows(path: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines()]
