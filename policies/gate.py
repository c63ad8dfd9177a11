"""When a fine-tuned candidate may replace the deployed policy: the test, the episode schedule, the bookkeeping.

**The test.** Fisher's exact test, one-sided: the candidate replaces the incumbent only when, given the
successes of both on robot episodes, the p-value of "the candidate succeeds no more often than the incumbent" is
at most ``1 - confidence``. The default confidence is **0.95**: a candidate that is in truth no better than the
incumbent replaces it with probability at most 5 % per comparison, whatever the two success rates are (the test
conditions on the total successes, so it is exact, and conservative, at small counts: 0 of 10 against 4 of 10
gives p = 0.043, 3 of 10 against 10 of 10 p = 0.0015). Across ``R`` comparisons of a fine-tuning run the chance
that any of them replaces the incumbent by a policy that is no better is at most ``R * (1 - confidence)`` (the
union bound; ``s2r finetune`` reports it).

**The schedule.** ``incumbent_episodes`` deterministic episodes of the deployed policy first, then rounds of
``explore_episodes`` exploration episodes (learning between them), ``reeval_episodes`` more episodes of the
incumbent, and ``gate_episodes`` episodes of the candidate (the learner's deterministic policy, frozen at the
round's first candidate episode): the comparison's first look. With ``gate_looks`` above 1, a candidate that is
ahead of the incumbent without passing gets another look, ``gate_episodes`` more episodes of the incumbent and then
of the candidate, up to ``gate_looks`` looks; each look tests all of the comparison's episodes at
:func:`per_look_confidence`, so the comparison as a whole keeps ``confidence``. Extra episodes thus go only to the
candidates that may be better, where 10 episodes each cannot tell 8 of 10 from 5 of 10. A round ends with its
comparison; a round cut short by the episode budget decides nothing.

The order depends only on the outcomes before it, so replaying a run's logged outcomes (a resume, even with a
larger ``--episodes``) gives the same order. Everything here is pure: :class:`Gate` is fed each episode's outcome,
live or replayed from the logs, and says what the next episode is (:meth:`Gate.next_kind`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any, Literal

from s2r.core.errors import UserError

DEFAULT_CONFIDENCE = 0.95
"""Confidence of the one-sided test a candidate must pass (1 - the chance a no-better one passes)."""
TEST_NAME = "Fisher's exact test, one-sided (candidate success rate > incumbent's)"

EpisodeKind = Literal["eval-incumbent", "explore", "eval-candidate"]
EVAL_INCUMBENT: EpisodeKind = "eval-incumbent"
EXPLORE: EpisodeKind = "explore"
EVAL_CANDIDATE: EpisodeKind = "eval-candidate"


def fisher_one_sided_p(cand_successes: int, cand_episodes: int, inc_successes: int, inc_episodes: int) -> float:
    """The one-sided p-value of Fisher's exact test for "the candidate's success rate is above the incumbent's".

    Given the total successes ``K`` of the ``N`` episodes, the candidate's successes are hypergeometric under
    equal rates; the p-value is the chance of the candidate scoring at least what it scored,
    ``sum_{k >= x} C(K, k) C(N - K, n - k) / C(N, n)`` (computed exactly, then rounded to a float)."""
    for name, s, n in (("candidate", cand_successes, cand_episodes), ("incumbent", inc_successes, inc_episodes)):
        if n < 0 or not 0 <= s <= n:
            raise ValueError(f"{name}: {s} successes of {n} episodes is not a count (need 0 <= successes <= episodes)")
    n, total = cand_episodes, cand_episodes + inc_episodes
    k_total = cand_successes + inc_successes
    tail = sum(math.comb(k_total, k) * math.comb(total - k_total, n - k)
               for k in range(cand_successes, min(k_total, n) + 1))
    return float(Fraction(tail, math.comb(total, n)))


@dataclass(frozen=True)
class Decision:
    """One comparison of a candidate with the incumbent."""

    round: int
    """Fine-tuning round of the candidate (1, 2, ...)."""
    candidate_successes: int
    candidate_episodes: int
    incumbent: str
    """Which policy the incumbent was (``deployed`` or ``round N``)."""
    incumbent_successes: int
    incumbent_episodes: int
    p_value: float
    """One-sided p-value of :func:`fisher_one_sided_p`."""
    confidence: float
    """The confidence this look tested at (the run's, split over its looks: :func:`per_look_confidence`)."""
    replaced: bool
    """Whether the candidate became the incumbent (``p_value <= 1 - confidence``)."""
    look: int = 1
    """Which look of the round's comparison this is (1, 2, ...; more than 1 only with ``gate_looks``)."""


def decide(round_: int, cand_successes: int, cand_episodes: int, incumbent: str, inc_successes: int,
           inc_episodes: int, confidence: float = DEFAULT_CONFIDENCE, look: int = 1) -> Decision:
    """Compare a candidate with the incumbent: replace when the one-sided test rejects at ``confidence``."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    p = fisher_one_sided_p(cand_successes, cand_episodes, inc_successes, inc_episodes)
    # A tiny tolerance: 1 - 0.95 is 0.050000000000000044 in floats, and an exact p of 0.05 must pass.
    return Decision(round_, cand_successes, cand_episodes, incumbent, inc_successes, inc_episodes, p, confidence,
                    p <= (1.0 - confidence) * (1.0 + 1e-12), look)


def per_look_confidence(confidence: float, looks: int) -> float:
    """The confidence each of ``looks`` tests of one comparison runs at, so that the comparison as a whole keeps
    ``confidence``: Bonferroni's split of the error, ``1 - (1 - confidence) / looks``. A no-better candidate then
    passes some look with probability at most ``1 - confidence`` (the union bound over the looks), however the
    looks' episodes overlap."""
    if looks < 1:
        raise ValueError(f"looks must be at least 1, got {looks}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return 1.0 - (1.0 - confidence) / looks


def worth_another_look(decision: Decision) -> bool:
    """Whether more episodes of both could still let the candidate pass: it did not pass, and it succeeded more
    often than the incumbent. A candidate level with or behind the incumbent stops the comparison (stopping for
    futility can only lower the chance that a no-better candidate passes)."""
    if decision.replaced or not decision.candidate_episodes or not decision.incumbent_episodes:
        return False
    return (decision.candidate_successes / decision.candidate_episodes
            > decision.incumbent_successes / decision.incumbent_episodes)


@dataclass(frozen=True)
class Schedule:
    """The shape of a fine-tuning run's episodes (see the module docstring)."""

    incumbent_episodes: int = 10
    """Deterministic episodes of the deployed policy before the first round."""
    explore_episodes: int = 4
    """Exploration episodes (stochastic policy, updates between episodes) per round."""
    gate_episodes: int = 10
    """Deterministic episodes of each round's candidate per look (and of the incumbent in each look after the
    first)."""
    reeval_episodes: int = 0
    """More episodes of the incumbent per round (its count grows), before the candidate's."""
    gate_looks: int = 1
    """Looks a comparison may take: a candidate ahead of the incumbent that did not pass is measured again, with
    the incumbent, up to this many times, each look at :func:`per_look_confidence` (1: one look, as before)."""

    def __post_init__(self) -> None:
        for name in ("incumbent_episodes", "explore_episodes", "gate_episodes", "gate_looks"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.reeval_episodes < 0:
            raise UserError(f"reeval_episodes must be >= 0, got {self.reeval_episodes}")

    def round_plan(self) -> list[EpisodeKind]:
        """A round's episodes up to its first look's decision."""
        return ([EXPLORE] * self.explore_episodes + [EVAL_INCUMBENT] * self.reeval_episodes
                + [EVAL_CANDIDATE] * self.gate_episodes)

    def look_plan(self) -> list[EpisodeKind]:
        """Another look's episodes: the incumbent's, then the candidate's."""
        return [EVAL_INCUMBENT] * self.gate_episodes + [EVAL_CANDIDATE] * self.gate_episodes


@dataclass
class Gate:
    """The incumbent and its measured success, fed one episode at a time (:meth:`record`)."""

    schedule: Schedule
    confidence: float = DEFAULT_CONFIDENCE
    incumbent: str = "deployed"
    """``deployed`` (the policy fine-tuning started from) or ``round N`` (that round's candidate)."""
    incumbent_successes: int = 0
    incumbent_episodes: int = 0
    candidate_successes: int = 0
    candidate_episodes: int = 0
    decisions: list[Decision] = field(default_factory=list)
    """Every look's test, in order."""
    history: list[dict[str, Any]] = field(default_factory=list)
    """One entry per episode: index, kind, round, success, counted, and the incumbent's record after it."""
    round: int = field(default=0, init=False)
    """The round under way (0: the deployed policy's first measurement)."""
    look: int = field(default=0, init=False)
    """The looks the round's comparison has taken."""
    plan: list[EpisodeKind] = field(default_factory=list, init=False)
    """The kinds of the episodes still to come before the round's next decision."""

    def __post_init__(self) -> None:
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")
        if self.history:
            raise ValueError("a gate starts with no episodes: feed a run's episodes to record() in order")
        self.plan = [EVAL_INCUMBENT] * self.schedule.incumbent_episodes

    @property
    def incumbent_success_rate(self) -> float | None:
        return self.incumbent_successes / self.incumbent_episodes if self.incumbent_episodes else None

    @property
    def look_confidence(self) -> float:
        """The confidence each look tests at: the run's, split over ``gate_looks`` (:func:`per_look_confidence`)."""
        return per_look_confidence(self.confidence, self.schedule.gate_looks)

    def next_kind(self) -> tuple[EpisodeKind, int]:
        """``(kind, round)`` of the next episode (episode ``len(history)``)."""
        return self.plan[0], self.round

    def record(self, episode: int, success: bool, counted: bool = True) -> Decision | None:
        """Episode ``episode``'s outcome (``counted=False``: it was cut short by a requested stop, which says
        nothing about the policy); returns the decision when a look ends with it."""
        if episode != len(self.history):
            raise ValueError(f"episode {episode} recorded after {len(self.history)} episodes")
        kind, round_ = self.next_kind()
        self.plan.pop(0)
        if counted and kind == EVAL_INCUMBENT:
            self.incumbent_successes += int(success)
            self.incumbent_episodes += 1
        elif counted and kind == EVAL_CANDIDATE:
            self.candidate_successes += int(success)
            self.candidate_episodes += 1
        decision = None
        if not self.plan and kind == EVAL_CANDIDATE:
            self.look += 1
            decision = decide(round_, self.candidate_successes, self.candidate_episodes, self.incumbent,
                              self.incumbent_successes, self.incumbent_episodes, self.look_confidence, self.look)
            self.decisions.append(decision)
            if decision.replaced:
                # The candidate's own episodes are its record from now on (an optimistic one, since it was chosen
                # for them: that makes the next replacement harder, not easier).
                self.incumbent = f"round {round_}"
                self.incumbent_successes, self.incumbent_episodes = self.candidate_successes, self.candidate_episodes
            elif self.look < self.schedule.gate_looks and worth_another_look(decision):
                self.plan = self.schedule.look_plan()
        if not self.plan:  # the round (or the deployed policy's first measurement) is over: the next one starts
            self.round, self.look = self.round + 1, 0
            self.candidate_successes = self.candidate_episodes = 0
            self.plan = self.schedule.round_plan()
        self.history.append({
            "episode": episode, "kind": kind, "round": round_, "success": bool(success), "counted": counted,
            "incumbent": self.incumbent, "incumbent_success_rate": self.incumbent_success_rate,
            "incumbent_episodes": self.incumbent_episodes,
            **({} if decision is None else {"decision": asdict(decision)}),
        })
        return decision

    def summary(self) -> dict[str, Any]:
        """The test, its confidence and every decision, for ``finetune.json``."""
        comparisons = len({d.round for d in self.decisions})
        return {
            "test": TEST_NAME,
            "confidence": self.confidence,
            "comparisons": comparisons,
            "looks": len(self.decisions),
            "look_confidence": self.look_confidence,
            "false_replacement_bound": min(1.0, comparisons * (1.0 - self.confidence)),
            "schedule": asdict(self.schedule),
            "incumbent": self.incumbent,
            "incumbent_successes": self.incumbent_successes,
            "incumbent_episodes": self.incumbent_episodes,
            "incumbent_success_rate": self.incumbent_success_rate,
            "decisions": [asdict(d) for d in self.decisions],
        }
