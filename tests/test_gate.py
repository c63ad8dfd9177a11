"""The fine-tuning gate (:mod:`policies.gate`): Fisher's exact test, its level, the episode schedule, and the
incumbent kept or replaced as a fake robot's episodes come in."""

from __future__ import annotations

import math

import numpy as np
import pytest

from policies.gate import (
    EpisodeKind,
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


def _kinds(gate: Gate, outcomes: list[bool]) -> list[tuple[EpisodeKind, int]]:
    """The (kind, round) of each next episode as the gate plans them, fed ``outcomes`` in order."""
    kinds = []
    for success in outcomes:
        kinds.append(gate.next_kind())
        gate.record(len(gate.history), success)
    return kinds


def test_with_one_look_the_order_is_fixed_and_a_decision_ends_each_round() -> None:
    s = Schedule(incumbent_episodes=2, explore_episodes=2, gate_episodes=3, reeval_episodes=1)
    for outcomes in ([False] * 14, [True] * 14, [k % 3 == 0 for k in range(14)]):
        gate = Gate(s)
        kinds = _kinds(gate, outcomes)
        assert kinds == [("eval-incumbent", 0)] * 2 + [("explore", 1)] * 2 + [("eval-incumbent", 1)] \
            + [("eval-candidate", 1)] * 3 + [("explore", 2)] * 2 + [("eval-incumbent", 2)] \
            + [("eval-candidate", 2)] * 3
        assert [h["episode"] for h in gate.history if "decision" in h] == [7, 13]
        assert gate.summary()["comparisons"] == 2 and gate.look_confidence == 0.95
    with pytest.raises(UserError, match="gate_episodes must be at least 1"):
        Schedule(gate_episodes=0)
    with pytest.raises(UserError, match="gate_looks must be at least 1"):
        Schedule(gate_looks=0)


def test_a_candidate_ahead_without_passing_gets_another_look_with_the_incumbent() -> None:
    # 8 of 10 against 5 of 10 is ahead but no evidence; with three looks each tests at 1 - 0.05 / 3.
    gate = Gate(Schedule(incumbent_episodes=10, explore_episodes=1, gate_episodes=10, gate_looks=3))
    assert gate.look_confidence == pytest.approx(1 - 0.05 / 3)
    outcomes = [k < 5 for k in range(10)] + [False] + [k < 8 for k in range(10)]
    kinds = _kinds(gate, outcomes)
    (first,) = gate.decisions
    assert (first.look, first.replaced, first.round) == (1, False, 1) and kinds[-1] == ("eval-candidate", 1)
    assert gate.next_kind() == ("eval-incumbent", 1)  # the second look: the incumbent's 10, then the candidate's
    kinds = _kinds(gate, [k < 5 for k in range(10)] + [k < 8 for k in range(10)])
    assert kinds == [("eval-incumbent", 1)] * 10 + [("eval-candidate", 1)] * 10
    second = gate.decisions[-1]
    assert (second.look, second.candidate_successes, second.candidate_episodes) == (2, 16, 20)
    assert (second.incumbent_successes, second.incumbent_episodes) == (10, 20) and not second.replaced
    assert second.p_value == pytest.approx(fisher_one_sided_p(16, 20, 10, 20))
    kinds = _kinds(gate, [k < 5 for k in range(10)] + [k < 8 for k in range(10)])
    third = gate.decisions[-1]
    assert (third.look, third.candidate_successes, third.incumbent_successes) == (3, 24, 15)
    assert third.p_value <= 0.05 / 3 and third.replaced  # 24 of 30 against 15 of 30: p = 0.015
    assert gate.incumbent == "round 1" and (gate.incumbent_successes, gate.incumbent_episodes) == (24, 30)
    assert gate.next_kind() == ("explore", 2)
    summary = gate.summary()
    assert (summary["comparisons"], summary["looks"]) == (1, 3)
    assert summary["false_replacement_bound"] == pytest.approx(0.05)


@pytest.mark.parametrize(("cand", "inc"), [(10, 0), (5, 5), (3, 6)])
def test_a_candidate_that_passes_or_is_not_ahead_ends_its_round_at_the_first_look(cand: int, inc: int) -> None:
    gate = Gate(Schedule(incumbent_episodes=10, explore_episodes=1, gate_episodes=10, gate_looks=3))
    _kinds(gate, [k < inc for k in range(10)] + [False] + [k < cand for k in range(10)])
    assert len(gate.decisions) == 1 and gate.next_kind() == ("explore", 2)
    assert gate.incumbent == ("round 1" if cand == 10 else "deployed")


@pytest.mark.parametrize("looks", [2, 3])
@pytest.mark.parametrize("rate", [0.3, 0.5, 0.8])
def test_a_no_better_candidate_passes_some_look_at_most_5_percent_of_the_time(looks: int, rate: float) -> None:
    """The exact chance over every outcome of every look, both policies succeeding at ``rate``, the looks as the
    gate takes them (10 episodes each per look, the candidate's looks at ``Gate.look_confidence``)."""
    n = 10
    gate = Gate(Schedule(gate_episodes=n, gate_looks=looks))
    pmf = np.array([math.comb(n, k) * rate ** k * (1 - rate) ** (n - k) for k in range(n + 1)])
    alive = {(0, 0): 1.0}  # (candidate successes, incumbent successes) of comparisons still looking, and their chance
    passes = 0.0
    for look in range(1, looks + 1):
        nxt: dict[tuple[int, int], float] = {}
        for (c0, i0), w in alive.items():
            for c in range(n + 1):
                for i in range(n + 1):
                    d = decide(1, c0 + c, look * n, "deployed", i0 + i, look * n, gate.look_confidence, look)
                    chance = w * pmf[c] * pmf[i]
                    if d.replaced:
                        passes += chance
                    elif worth_another_look(d):
                        nxt[(c0 + c, i0 + i)] = nxt.get((c0 + c, i0 + i), 0.0) + chance
        alive = nxt
    assert 0.0 < passes <= 0.05


def _run(gate: Gate, episodes: int, p_incumbent: float, p_candidate: float, seed: int) -> None:
    """A fake robot: each episode succeeds with its policy's rate (exploration at the candidate's)."""
    rng = np.random.default_rng(seed)
    for k in range(len(gate.history), episodes):
        kind, _ = gate.next_kind()
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
