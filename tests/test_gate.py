"""The fine-tuning gate (:mod:`policies.gate`): Fisher's exact test, its level, the episode schedule, and the
incumbent kept or replaced as a fake robot's episodes come in."""

from __future__ import annotations

import math

import numpy as np
import pytest

from policies.gate import (
    Gate,
    Schedule,
    decide,
    fisher_one_sided_p,
    per_look_confidence,
    worth_another_look,
)
from s2r.core.errors import UserError


def test_fisher_p_values_are_the_textbook_ones() -> None:
    # Fisher's tea tasting: 4 cups of each kind; all 4 right has p = 1/70, 3 right p = 17/70.
    assert fisher_one_sided_p(4, 4, 0, 4) == pytest.approx(1 / 70, rel=1e-12)
    assert fisher_one_sided_p(3, 4, 1, 4) == pytest.approx(17 / 70, rel=1e-12)
    # 4/10 against 0/10: C(16,10) / C(20,10) = 8008 / 184756 (only the observed table is as extreme).
    assert fisher_one_sided_p(4, 10, 0, 10) == pytest.approx(8008 / 184756, rel=1e-12)
    assert fisher_one_sided_p(0, 10, 7, 10) == 1.0  # a worse candidate
    assert fisher_one_sided_p(5, 10, 5, 10) > 0.5


@pytest.mark.parametrize(("n_cand", "n_inc"), [(10, 10), (10, 20), (4, 4)])
def test_a_candidate_no_better_than_the_incumbent_passes_at_most_5_percent_of_the_time(n_cand: int,
                                                                                   n_inc: int) -> None:
    """The exact chance of a replacement when both succeed at rate p, over every outcome of both measurements."""
    def binom(n: int, p: float) -> np.ndarray:
        return np.array([math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(n + 1)])

    worst = 0.0
    for p in np.linspace(0.0, 1.0, 41):
        pc, pi = binom(n_cand, p), binom(n_inc, p)
        chance = sum(pc[x] * pi[y] for x in range(n_cand + 1) for y in range(n_inc + 1)
                     if decide(1, x, n_cand, "deployed", y, n_inc, 0.95).replaced)
        worst = max(worst, chance)
    assert worst <= 0.05
    assert worst > 0.0  # the test does replace sometimes: a level of 0 would mean it never can


def test_decide_replaces_exactly_when_p_is_within_one_minus_confidence() -> None:
    better = decide(2, 4, 10, "deployed", 0, 10, 0.95)
    assert better.replaced and better.p_value == pytest.approx(0.0433, abs=1e-4) and better.round == 2
    assert not decide(2, 4, 10, "deployed", 0, 10, 0.99).replaced
    assert not decide(1, 10, 10, "deployed", 6, 8).replaced  # 1.00 against 0.75 is not yet evidence
    with pytest.raises(ValueError, match="successes of"):
        fisher_one_sided_p(11, 10, 0, 10)
    with pytest.raises(ValueError, match="confidence"):
        decide(1, 1, 1, "deployed", 0, 1, 1.0)


def test_the_schedule_is_the_same_for_any_total_and_decides_after_each_round() -> None:
    s = Schedule(incumbent_episodes=2, explore_episodes=2, gate_episodes=3, reeval_episodes=1)
    kinds = [s.kind(k) for k in range(14)]
    assert kinds == [("eval-incumbent", 0)] * 2 + [("explore", 1)] * 2 + [("eval-incumbent", 1)] \
        + [("eval-candidate", 1)] * 3 + [("explore", 2)] * 2 + [("eval-incumbent", 2)] + [("eval-candidate", 2)] * 3
    assert [k for k in range(14) if s.decides_after(k)] == [7, 13]
    assert s.rounds_decided(13) == 1 and s.rounds_decided(14) == 2
    with pytest.raises(UserError, match="gate_episodes must be at least 1"):
        Schedule(gate_episodes=0)


def _run(gate: Gate, episodes: int, p_incumbent: float, p_candidate: float, seed: int) -> None:
    """A fake robot: each episode succeeds with its policy's rate (exploration at the candidate's)."""
    rng = np.random.default_rng(seed)
    for k in range(len(gate.history), episodes):
        kind, _ = gate.schedule.kind(k)
        p = p_incumbent if kind == "eval-incumbent" and gate.incumbent == "deployed" else p_candidate
        gate.record(k, bool(rng.random() < p))


def test_a_worse_candidate_never_replaces_the_incumbent() -> None:
    schedule = Schedule(incumbent_episodes=10, explore_episodes=2, gate_episodes=10)
    for seed in range(20):
        gate = Gate(schedule)
        _run(gate, 10 + 3 * 12, p_incumbent=0.75, p_candidate=0.3, seed=seed)
        assert len(gate.decisions) == 3
        assert gate.incumbent == "deployed", f"seed {seed}: {gate.decisions}"
    assert gate.history[-1]["incumbent_episodes"] == 10


def test_a_clearly_better_candidate_replaces_the_incumbent_and_its_episodes_become_the_record() -> None:
    gate = Gate(Schedule(incumbent_episodes=10, explore_episodes=2, gate_episodes=10))
    _run(gate, 22, p_incumbent=0.0, p_candidate=1.0, seed=0)
    (decision,) = gate.decisions
    assert decision.replaced and (decision.candidate_successes, decision.incumbent_successes) == (10, 0)
    assert gate.incumbent == "round 1" and (gate.incumbent_successes, gate.incumbent_episodes) == (10, 10)
    last = gate.history[-1]
    assert last["incumbent"] == "round 1" and last["incumbent_success_rate"] == 1.0 and last["decision"]["replaced"]
    assert [h["kind"] for h in gate.history[9:13]] == ["eval-incumbent", "explore", "explore", "eval-candidate"]
    assert gate.history[9]["incumbent_success_rate"] == 0.0 and gate.history[9]["incumbent_episodes"] == 10
    summary = gate.summary()
    assert summary["confidence"] == 0.95 and "Fisher" in summary["test"] and summary["comparisons"] == 1


def test_an_episode_a_person_stopped_is_not_counted() -> None:
    gate = Gate(Schedule(incumbent_episodes=2, explore_episodes=1, gate_episodes=1))
    gate.record(0, False, counted=False)
    gate.record(1, True)
    assert (gate.incumbent_successes, gate.incumbent_episodes) == (1, 1)
    assert gate.history[0]["counted"] is False and gate.history[0]["incumbent_episodes"] == 0
    with pytest.raises(ValueError, match="recorded after"):
        gate.record(3, True)


@pytest.mark.parametrize("rate", [0.5, 0.85, 0.95])
def test_two_looks_at_the_split_confidence_keep_the_five_percent_level(rate: float) -> None:
    # The exact chance that a candidate no better than the incumbent (both succeed at `rate`) replaces it when the
    # comparison looks at 20 episodes each and, while the candidate is ahead without passing, at 20 more each.
    n, confidence = 20, per_look_confidence(0.95, 2)
    assert confidence == pytest.approx(0.975)
    pmf = [math.comb(n, k) * rate ** k * (1 - rate) ** (n - k) for k in range(n + 1)]
    passes = 0.0
    for c1 in range(n + 1):
        for i1 in range(n + 1):
            first = decide(0, c1, n, "deployed", i1, n, confidence)
            weight = pmf[c1] * pmf[i1]
            if first.replaced:
                passes += weight
            elif worth_another_look(first):
                passes += weight * sum(pmf[c2] * pmf[i2] for c2 in range(n + 1) for i2 in range(n + 1)
                                       if decide(0, c1 + c2, 2 * n, "deployed", i1 + i2, 2 * n, confidence).replaced)
    assert passes <= 0.05
    with pytest.raises(ValueError, match="looks must be at least 1"):
        per_look_confidence(0.95, 0)


def test_another_look_only_for_a_candidate_ahead_that_did_not_pass() -> None:
    assert worth_another_look(decide(0, 20, 20, "deployed", 17, 20, 0.975))
    assert not worth_another_look(decide(0, 17, 20, "deployed", 17, 20, 0.975))  # level
    assert not worth_another_look(decide(0, 20, 20, "deployed", 12, 20, 0.975))  # passed
    assert not worth_another_look(decide(0, 0, 0, "deployed", 12, 20, 0.975))  # no episodes
