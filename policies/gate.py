"""When a fine-tuned candidate may replace the deployed policy: the test, the episode schedule, the bookkeeping.

**The test.** Fisher's exact test, one-sided: the candidate replaces the incumbent only when, given the
successes of both on robot episodes, the p-value of "the candidate succeeds no more often than the incumbent" is
at most ``1 - confidence``. The default confidence is **0.95**: a candidate that is in truth no better than the
incumbent replaces it with probability at most 5 % per comparison, whatever the two success rates are (the test
conditions on the total successes, so it is exact, and conservative, at small counts: 0 of 10 against 4 of 10
gives p = 0.043, 3 of 10 against 10 of 10 p = 0.0015). Across ``R`` comparisons of a fine-tuning run the chance
that any of them replaces the incumbent by a policy that is no better is at most ``R * (1 - confidence)`` (the
union bound; ``s2r finetune`` reports it).

**The schedule.** Episodes run in a fixed order, the same for any total, so a resumed run (even with a larger
``--episodes``) continues it: ``incumbent_episodes`` deterministic episodes of the deployed policy first, then
rounds of ``explore_episodes`` exploration episodes (learning between them), ``reeval_episodes`` more episodes of
the incumbent, and ``gate_episodes`` episodes of the candidate (the learner's deterministic policy, frozen at
the round's first candidate episode). The decision comes after a round's last candidate episode; a round cut
short by the episode budget decides nothing.

Everything here is pure: :class:`Gate` is fed each episode's outcome, live or replayed from the logs.
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
    replaced: bool
    """Whether the candidate became the incumbent (``p_value <= 1 - confidence``)."""


def decide(round_: int, cand_successes: int, cand_episodes: int, incumbent: str, inc_successes: int,
           inc_episodes: int, confidence: float = DEFAULT_CONFIDENCE) -> Decision:
    """Compare a candidate with the incumbent: replace when the one-sided test rejects at ``confidence``."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    p = fisher_one_sided_p(cand_successes, cand_episodes, inc_successes, inc_episodes)
    # A tiny tolerance: 1 - 0.95 is 0.050000000000000044 in floats, and an exact p of 0.05 must pass.
    return Decision(round_, cand_successes, cand_episodes, incumbent, inc_successes, inc_episodes, p, confidence,
                    p <= (1.0 - confidence) * (1.0 + 1e-12))


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
    """The order of a fine-tuning run's episodes (see the module docstring)."""

    incumbent_episodes: int = 10
    """Deterministic episodes of the deployed policy before the first round."""
    explore_episodes: int = 4
    """Exploration episodes (stochastic policy, updates between episodes) per round."""
    gate_episodes: int = 10
    """Deterministic episodes of each round's candidate."""
    reeval_episodes: int = 0
    """More episodes of the incumbent per round (its count grows), before the candidate's."""

    def __post_init__(self) -> None:
        for name in ("incumbent_episodes", "explore_episodes", "gate_episodes"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.reeval_episodes < 0:
            raise UserError(f"reeval_episodes must be >= 0, got {self.reeval_episodes}")

    @property
    def round_length(self) -> int:
        return self.explore_episodes + self.reeval_episodes + self.gate_episodes

    def kind(self, episode: int) -> tuple[EpisodeKind, int]:
        """``(kind, round)`` of episode ``episode`` (0-based); round 0 is the first incumbent evaluation."""
        if episode < 0:
            raise ValueError(f"episode index must be >= 0, got {episode}")
        if episode < self.incumbent_episodes:
            return EVAL_INCUMBENT, 0
        j = episode - self.incumbent_episodes
        round_, pos = j // self.round_length + 1, j % self.round_length
        if pos < self.explore_episodes:
            return EXPLORE, round_
        if pos < self.explore_episodes + self.reeval_episodes:
            return EVAL_INCUMBENT, round_
        return EVAL_CANDIDATE, round_

    def decides_after(self, episode: int) -> bool:
        """Whether the gate decides after episode ``episode`` (its round's last candidate episode)."""
        return episode >= self.incumbent_episodes and (episode - self.incumbent_episodes + 1) % self.round_length == 0

    def rounds_decided(self, episodes: int) -> int:
        """Comparisons a run of ``episodes`` episodes makes."""
        return max(0, episodes - self.incumbent_episodes) // self.round_length


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
    history: list[dict[str, Any]] = field(default_factory=list)
    """One entry per episode: index, kind, round, success, counted, and the incumbent's record after it."""

    @property
    def incumbent_success_rate(self) -> float | None:
        return self.incumbent_successes / self.incumbent_episodes if self.incumbent_episodes else None

    def record(self, episode: int, success: bool, counted: bool = True) -> Decision | None:
        """Episode ``episode``'s outcome (``counted=False``: it was cut short by a requested stop, which says
        nothing about the policy); returns the decision when the round ends with it."""
        if episode != len(self.history):
            raise ValueError(f"episode {episode} recorded after {len(self.history)} episodes")
        kind, round_ = self.schedule.kind(episode)
        if counted and kind == EVAL_INCUMBENT:
            self.incumbent_successes += int(success)
            self.incumbent_episodes += 1
        elif counted and kind == EVAL_CANDIDATE:
            self.candidate_successes += int(success)
            self.candidate_episodes += 1
        decision = None
        if self.schedule.decides_after(episode):
            decision = decide(round_, self.candidate_successes, self.candidate_episodes, self.incumbent,
                              self.incumbent_successes, self.incumbent_episodes, self.confidence)
            self.decisions.append(decision)
            if decision.replaced:
                # The candidate's own episodes are its record from now on (an optimistic one, since it was chosen
                # for them: that makes the next replacement harder, not easier).
                self.incumbent = f"round {round_}"
                self.incumbent_successes, self.incumbent_episodes = self.candidate_successes, self.candidate_episodes
            self.candidate_successes = self.candidate_episodes = 0
        self.history.append({
            "episode": episode, "kind": kind, "round": round_, "success": bool(success), "counted": counted,
            "incumbent": self.incumbent, "incumbent_success_rate": self.incumbent_success_rate,
            "incumbent_episodes": self.incumbent_episodes,
            **({} if decision is None else {"decision": asdict(decision)}),
        })
        return decision

    def summary(self) -> dict[str, Any]:
        """The test, its confidence and every decision, for ``finetune.json``."""
        return {
            "test": TEST_NAME,
            "confidence": self.confidence,
            "comparisons": len(self.decisions),
            "false_replacement_bound": min(1.0, len(self.decisions) * (1.0 - self.confidence)),
            "schedule": asdict(self.schedule),
            "incumbent": self.incumbent,
            "incumbent_successes": self.incumbent_successes,
            "incumbent_episodes": self.incumbent_episodes,
            "incumbent_success_rate": self.incumbent_success_rate,
            "decisions": [asdict(d) for d in self.decisions],
        }
