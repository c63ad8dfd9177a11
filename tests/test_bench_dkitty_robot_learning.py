"""``benchmarks/dkitty_robot_learning.py``: which policies the gate put in service, and how each measured over every
episode that measured it, not only the ones it passed with."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from policies.gate import Gate, Schedule

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "dkitty_robot_learning.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dkitty_robot_learning", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


T, F = True, False


def run_gate(episodes: list[list[bool]]) -> dict[str, Any]:
    """The summary of a gate of 2 incumbent, 1 exploration and 4 gate episodes per look, 3 looks (each at 98.3 %),
    fed the deployed policy's two failures and then each list's outcomes in order (every episode the gate plans,
    exploration included)."""
    gate = Gate(Schedule(incumbent_episodes=2, explore_episodes=1, gate_episodes=4, reeval_episodes=0,
                         gate_looks=3))
    for k, success in enumerate([F, F] + [s for look in episodes for s in look]):
        gate.record(k, success)
    return gate.summary()


ROUND_1_IN_SERVICE = [
    [F, T, T, T, T],              # round 1: explore, then 4/4 against 0/2 (p = 0.067): ahead, a second look
    [F, F, F, F, T, T, T, F],     # the deployed policy 0/6, round 1 7/8 (p = 0.002): in service on 7 of 8
]


def test_a_policy_in_service_is_reported_as_it_measured_since_it_passed(bench: ModuleType) -> None:
    summary = run_gate([
        *ROUND_1_IN_SERVICE,
        [F, F, F, F, F],          # round 2: 0/4, behind: one look
        [F, T, T, T, T],          # round 3: 4/4 against 7/8, ahead: a second look
        [T, F, F, F, T, T, T, T],  # round 1 8/12, round 3 8/8 (p = 0.10): a third look
        [F, F],                   # its first two episodes of round 1: 8/14, no decision yet
    ])
    assert [d["replaced"] for d in summary["decisions"]] == [F, T, F, F, F]
    curve = [{"round": k, "robot_min": 1.5 * k} for k in range(4)]
    assert bench.in_service(summary, curve) == [
        {"round": 1, "robot_min": 1.5, "passed_with": "7/8", "measured_last": "8/14", "success": 0.571}]


def test_a_replaced_policy_keeps_its_count_from_the_last_look_that_measured_it(bench: ModuleType) -> None:
    summary = run_gate([
        *ROUND_1_IN_SERVICE,
        [F, T, T, T, T],          # round 2: 4/4 against 7/8, ahead: a second look
        [T, F, F, F, T, T, T, T],  # round 1 8/12, round 2 8/8 (p = 0.10): a third look
        [F, F, F, F, T, T, T, T],  # round 1 8/16, round 2 12/12 (p = 0.004): in service
    ])
    assert [d["replaced"] for d in summary["decisions"]] == [F, T, F, F, T]
    served = bench.in_service(summary, [{"round": k, "robot_min": float(k)} for k in range(3)])
    assert [(r["round"], r["robot_min"], r["passed_with"], r["measured_last"]) for r in served] == [
        (1, 1.0, "7/8", "8/16"), (2, 2.0, "12/12", "12/12")]
