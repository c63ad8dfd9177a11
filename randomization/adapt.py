"""Source-distribution adaptation (EPOpt, Rajeswaran et al. 2016): fit the simulator's parameter
distribution to logged real trajectories by iterated importance sampling.

Iteration k draws M parameter samples from a sampling distribution q_k (q_1 is the prior) and
scores each by the log-likelihood L_k of the logged transitions (:mod:`randomization.likelihood`).
Every sample drawn so far is then weighted by  w ∝ prior(p) / q(p) * exp(beta_k * L_k(p)),  where q
is the equal mixture of q_1 .. q_k (the "deterministic mixture" of adaptive multiple importance
sampling: no simulation is thrown away, and as q >= prior / k no ratio exceeds k), and a Gaussian
(weighted mean and covariance, variance floored) is fitted that, slightly widened, becomes q_{k+1}.
The sampling Gaussians live in normal-score coordinates of the prior (:class:`NormalScores`). The
weights point at prior × likelihood^beta whatever the q_k are: an unlucky fit in one iteration is
corrected by the prior ratio in the next instead of compounding.

Noise scale. L_k is Gaussian per state dimension with std sigma_{k,d} fitted as the RMS one-step
residual at the centre of q_k (the prior's mean in round 1, then the last fit), floored at sensor
resolution. It shrinks as the estimate improves, so late rounds score with the noise the data show
at the estimate. Holding sigma fixed within a round keeps log L_k a sum of squared residuals: near
the optimum a quadratic, so L_k^beta is close to Gaussian and a Gaussian fits it. (A noise std fitted
per sample instead, the profile likelihood, turns L^beta into a power law |p - p*|^(-N beta) with
tails far too heavy for a Gaussian fit; tried, it stalled.)

Tempering (beta_k in (0, 1]). With a few hundred transitions the log-likelihood spans thousands of
nats across the prior, so untempered weights put everything on the single best sample: the fitted
covariance collapses onto one point, i.e. fake precision, and a parameter the data say nothing about
collapses with it. beta_k is therefore the largest value (up to 1) that keeps the effective sample
size at ``ess_fraction`` × M (of all pooled samples). The target prior × L^beta is a tempered ("power") posterior: for
beta < 1 it is wider than the exact posterior by about 1/sqrt(beta), a deliberate overstatement of
the uncertainty that also absorbs model error (the simulator is never exactly the robot); the beta of
every round is reported. A parameter the likelihood is flat in gets weights that do not depend on
it, so its weighted mean and spread stay the prior's: the posterior says "not identified" by
looking like the prior. The variance floor (``min_std_fraction`` × the prior's std) only keeps the
fitted Gaussian proper.

What is identified from what (D'Claw, five episodes of ``s2r deploy scripted:excite``, the shipped prior
``randomization/configs/dclaw.yaml``, the default :class:`AdaptConfig`; measured on emulated claws whose values
the tests did not tune on, ``tests/test_sysid.py``). The logs hold joint and valve positions and velocities
at the 10 Hz control rate, so what the one-step replay sees is how far each period's command step and the
load carry the joints and the valve:

- ``finger_kp``: the servos' tracking error under the changing gravity and contact loads of the slow sweeps;
- ``finger_damping``: how much of each period's command step the joints complete (with ``finger_kp``);
- ``tip_friction``: how far a fingertip drags a spoke before it slips, in every contact with the valve;
- ``valve_damping``: how fast the valve slows once a finger lets it go (the multi-sine's sweeps pass through
  the valve and turn it; the valve is moved by finger contact only, so logs that never touch it, such as
  a policy holding still, leave its parameters at the prior);
- ``action_latency`` is narrowed too, but to the robot's effective delay, which includes the bus's time for
  the write and the read; it is not the reality file's ``action_latency`` and is not checked against it;
- ``valve_frictionloss``, ``valve_mass`` and ``finger_mass_scale`` change the 10 Hz readings too little
  (next to the other parameters' effects) to be pinned down by five episodes: their posteriors stay close
  to the prior. :data:`IDENTIFIED_BY_EXCITATION` lists the identified ones.

What made five episodes enough was the number of rounds more than the choice of motions. With 5 rounds of
100 samples the servo gain's posterior mean was 16-17 % off and its std 2-3x narrower than the prior's, from
either excitation or random actions (simulated logs; 3 rounds of 32 gave 3.35 +- 0.75 for a true 2.6 on the
emulator). With 12 rounds of 60 (the defaults), five episodes of ``scripted:random`` on one emulated claw
(finger_kp 2.6) identified the same four parameters as ``scripted:excite`` did. ``scripted:excite`` is still
the motion to log: smooth, inside the limits, reproducible, every joint on frequencies of its own, and it
covers the joints' ranges by design rather than by chance (see :mod:`sim.tasks.excitation`).

Output: a randomization YAML (:mod:`randomization.distributions`) with the fitted joint Gaussian
(the last round's weighted mean and covariance in the parameters' own units), truncated at each
parameter's allowed range, plus the prior's marginals of parameters the one-step likelihood cannot
see (observation noise, control jitter) copied unchanged; a JSON report; a plot. The report's
posterior moments are those of the truncated Gaussian, i.e. of what training will draw; for a
parameter pressed against a bound (a latency near 0) they sit slightly inside the fitted mean.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from randomization.distributions import (
    JointGaussian,
    ParameterDistribution,
    joint_gaussian,
    save_distribution,
    task_param_specs,
    task_spec_name,
)
from randomization.likelihood import (
    LIKELIHOOD_PARAM_KINDS_ENV,
    NoiseFloor,
    ReplaySetup,
    evaluate_sample,
    fit_noise_std,
    gaussian_log_likelihood,
    load_logged_episodes,
    state_dim_names,
    thin_transitions,
)
from randomization.parallel import Executor, ExecutorConfig, open_executor
from s2r.core.atomicio import write_bytes_atomic, write_text_atomic
from s2r.core.errors import ParameterError, UserError
from s2r.core.trajlog import OnSkip
from sim import make_task, resolve_env_id
from sim.engines.base import ParamSpec
from sim.tasks.spec import FloatArray, TaskSpec

BETA_GRID = np.concatenate([[0.0], np.logspace(-12.0, 0.0, 121)])
"""Tempering exponents tried before bisection (-): 0 and ten per decade from 1e-12 to 1."""
BETA_BISECTION_STEPS = 40
"""Bisection steps (in log beta) between two neighbouring grid points."""
PLOT_DRAWS = 20_000
"""Draws per distribution for the prior/posterior histograms."""
PRIOR_EDGE_FRACTION = 0.05
"""A posterior mean this close to a bound of the prior's support (as a fraction of its width) is *at the prior's
edge*: the data pull the parameter beyond what the prior allows (see :func:`prior_edges`)."""
PRIOR_EDGE_NARROWING = 3.0
"""... when the posterior std is also this many times narrower than the prior's (a confident pull, not a flat
likelihood that left the parameter wherever the prior put it)."""
IDENTIFIED_BY_EXCITATION = ("finger_kp", "finger_damping", "tip_friction", "valve_damping")
"""The D'Claw parameters that five ``scripted:excite`` episodes identify (posterior mean within 10 % of the
truth and std at least 3x narrower than ``randomization/configs/dclaw.yaml``'s; see the module docstring)."""


@dataclass(frozen=True)
class AdaptConfig:
    """Knobs of the importance-sampling loop."""

    iterations: int = 12
    """Sampling-and-fitting rounds K. Each round narrows the sampling distribution by a bounded factor (the
    tempering keeps the effective sample size), so a likelihood far narrower than the prior takes rounds
    more than samples: 12 rounds of 60 (720 simulations) identify the claw from five episodes, where 5 rounds
    of 100 (500) left the servo gain 16 % off with a std under 3x narrower than the prior's."""
    samples: int = 60
    """Parameter samples M per round."""
    seed: int = 0
    """Seed of the parameter draws."""
    ess_fraction: float = 0.3
    """Effective sample size kept by tempering, as a fraction of M (0, 1]."""
    min_std_fraction: float = 0.01
    """Variance floor: no posterior std below this fraction of the prior's std (-)."""
    proposal_inflation: float = 1.5
    """Variance factor on a fitted Gaussian used as the next sampling distribution: a proposal a little
    wider than its target keeps the prior/sampling ratios bounded (-, >= 1)."""
    noise_floor: NoiseFloor = field(default_factory=NoiseFloor)
    """Smallest fitted noise std per state dimension."""
    max_transitions: int | None = None
    """Score at most this many transitions, evenly spread over the logs (``None``: all); bounds the cost
    of one likelihood evaluation, which is one simulated control period per transition."""

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise UserError(f"iterations must be at least 1, got {self.iterations}")
        if self.samples < 2:
            raise UserError(f"samples must be at least 2, got {self.samples}")
        if not 0.0 < self.ess_fraction <= 1.0:
            raise UserError(f"ess_fraction must be in (0, 1], got {self.ess_fraction}")
        if not 1.0 <= self.proposal_inflation < math.inf:
            raise UserError(f"proposal_inflation must be a finite number >= 1, got {self.proposal_inflation}")
        if self.max_transitions is not None and self.max_transitions < 1:
            raise UserError(f"max_transitions must be at least 1, got {self.max_transitions}")
        if not 0.0 < self.min_std_fraction < math.inf:
            raise UserError(f"min_std_fraction must be a finite number above 0, got {self.min_std_fraction}")
        if self.seed < 0:
            raise UserError(f"seed must be >= 0 (numpy refuses a negative seed), got {self.seed}")


@dataclass(frozen=True)
class IterationReport:
    """What one round of sampling and fitting gave."""

    iteration: int
    """1-based round."""
    beta: float
    """Tempering exponent on the likelihood."""
    ess: float
    """Effective sample size of the weights (out of ``pooled``)."""
    samples: int
    """Samples drawn this round."""
    pooled: int
    """Samples of all rounds so far, all of which are weighted."""
    log_likelihood: dict[str, float]
    """max, median and min of this round's finite log-likelihoods, and how many were finite."""
    noise_std: dict[str, float]
    """Noise std per state dimension used this round (rad or rad/s)."""
    mean: dict[str, float]
    """Fitted mean per parameter."""
    std: dict[str, float]
    """Fitted std per parameter."""


@dataclass(frozen=True)
class AdaptResult:
    """The posterior and how it was reached."""

    names: tuple[str, ...]
    """Adapted parameters, in the order of ``mean`` and ``cov``."""
    mean: FloatArray
    """Posterior mean (untruncated Gaussian)."""
    cov: FloatArray
    """Posterior covariance."""
    posterior: ParameterDistribution
    """The output distribution (joint Gaussian plus passed-through marginals)."""
    prior_moments: dict[str, tuple[float, float]]
    """Prior (mean, std) per parameter."""
    posterior_moments: dict[str, tuple[float, float]]
    """Posterior (mean, std) per parameter, of the truncated Gaussian."""
    passed_through: tuple[str, ...]
    """Prior parameters the likelihood cannot see, copied unchanged."""
    iterations: tuple[IterationReport, ...]
    """One report per round."""
    noise_std: dict[str, float]
    """Fitted noise std per state dimension at the posterior mean (rad or rad/s)."""
    log_likelihood_at_mean: float
    """Log-likelihood at the posterior mean."""
    transitions: int
    """Transitions scored per evaluation."""
    transitions_available: int
    """Usable transitions in the logs."""
    episodes: int
    """Logged episodes used."""
    prior_edges: dict[str, str] = field(default_factory=dict)
    """Adapted parameters whose posterior is at the prior's edge (``"low"`` or ``"high"``); see
    :func:`prior_edges`."""


def prior_edges(prior: ParameterDistribution, posterior_moments: dict[str, tuple[float, float]],
                names: Sequence[str], specs: dict[str, ParamSpec]) -> dict[str, str]:
    """The parameters whose posterior sits confidently at a bound of the prior's support, ``{name: "low" |
    "high"}``.

    Such a posterior is not an identification: the likelihood keeps rising past the bound, so the simulator
    explains the robot better with a value the prior rules out, or with none at all (another engine's contacts,
    an unmodelled effect); the prior then clips it. A bound that is the parameter's own physical limit (a
    latency of 0) is not a prior's edge and is never flagged."""
    support = prior.support()
    prior_mom = prior.moments()
    out: dict[str, str] = {}
    for n in names:
        lo, hi = support[n]
        if not (math.isfinite(lo) and math.isfinite(hi)):
            continue
        (qm, qs), ps = posterior_moments[n], prior_mom[n][1]
        if qs * PRIOR_EDGE_NARROWING > ps:
            continue
        edge = PRIOR_EDGE_FRACTION * (hi - lo)
        if qm - lo <= edge and lo > specs[n].low:
            out[n] = "low"
        elif hi - qm <= edge and hi < specs[n].high:
            out[n] = "high"
    return out


NOT_A_QUANTITY_KINDS = frozenset({"terrain_seed"})
"""Kinds that pick a pattern rather than measure something: a Gaussian posterior over them means nothing (nearby
seeds are unrelated terrains), so the adaptation passes them through."""


def adaptable(spec: ParamSpec) -> bool:
    """Whether the one-step replay likelihood depends on a parameter of this kind, as a quantity."""
    if spec.kind in NOT_A_QUANTITY_KINDS or spec.is_visual:  # images are not in the logged transitions
        return False
    return not spec.is_env_level or spec.kind in LIKELIHOOD_PARAM_KINDS_ENV


def split_prior(prior: ParameterDistribution, specs: dict[str, ParamSpec]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(adapted, passed through) names of ``prior``; a joint block must be entirely adaptable."""
    adapted = tuple(n for n in prior.names() if adaptable(specs[n]))
    passed = tuple(n for n in prior.names() if not adaptable(specs[n]))
    if prior.joint is not None:
        blind = [n for n in prior.joint.names if not adaptable(specs[n])]
        if blind:
            raise UserError(f"the prior's joint Gaussian includes {', '.join(blind)}, which logged transitions "
                            "cannot inform; give those parameters their own marginal distribution")
    if not adapted:
        raise UserError("the prior randomizes no parameter that logged transitions can inform "
                        f"(it has {', '.join(prior.names()) or 'none'})")
    return adapted, passed


def effective_sample_size(log_w: FloatArray) -> float:
    """Kish's ESS, (sum w)^2 / sum w^2, of unnormalized log-weights."""
    finite = np.isfinite(log_w)
    if not finite.any():
        return 0.0
    w = np.exp(log_w[finite] - log_w[finite].max())
    return float(w.sum() ** 2 / (w**2).sum())


def choose_beta(log_ratio: FloatArray, log_lik: FloatArray, target_ess: float) -> float:
    """The largest beta in [0, 1] with ESS(``log_ratio + beta * log_lik``) >= ``target_ess``, on the
    falling side of the ESS curve.

    ESS is low at beta = 0 too when the sampling distribution is narrower than the prior (the target
    is then the prior, which it cannot cover), rises to a peak where the target matches it, and falls
    as the target narrows past it. The search starts at the peak; if even the peak misses the target
    ESS, the peak is the best there is.
    """
    ll = np.where(np.isfinite(log_lik), log_lik, -np.inf)

    def ess(beta: float) -> float:
        return effective_sample_size(log_ratio + beta * ll)

    values = np.array([ess(b) for b in BETA_GRID])
    peak = int(np.argmax(values))
    if values[peak] < target_ess:
        return float(BETA_GRID[peak])
    i = peak
    while i + 1 < len(BETA_GRID) and values[i + 1] >= target_ess:
        i += 1
    if i + 1 == len(BETA_GRID):
        return float(BETA_GRID[i])
    lo, hi = max(float(BETA_GRID[i]), 1e-300), float(BETA_GRID[i + 1])
    for _ in range(BETA_BISECTION_STEPS):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if ess(mid) >= target_ess else (lo, mid)
    return lo


def weighted_gaussian(x: FloatArray, log_w: FloatArray, min_var: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Weighted mean and covariance of rows of ``x``; the variances are floored at ``min_var``."""
    w = np.exp(log_w - log_w[np.isfinite(log_w)].max())
    w = np.where(np.isfinite(log_w), w, 0.0)
    w = w / w.sum()
    mean = w @ x
    d = x - mean
    # Reliability weights: divide by 1 - sum w^2 so a few heavy samples do not understate the spread.
    denom = max(1.0 - float((w**2).sum()), 1e-12)
    cov = (d * w[:, None]).T @ d / denom
    cov = 0.5 * (cov + cov.T)
    # Floor the spread along every eigen-direction as well as on the diagonal, so the result stays
    # positive definite even when the weighted samples lie on a line.
    scale = np.sqrt(min_var)
    corr_like = cov / np.outer(scale, scale)
    vals, vecs = np.linalg.eigh(corr_like)
    corr_like = (vecs * np.maximum(vals, 1.0)) @ vecs.T
    cov = corr_like * np.outer(scale, scale)
    return mean, 0.5 * (cov + cov.T)


def _ll_stats(ll: FloatArray) -> dict[str, float]:
    f = ll[np.isfinite(ll)]
    if len(f) == 0:
        return {"max": -math.inf, "median": -math.inf, "min": -math.inf, "finite": 0.0}
    return {"max": float(f.max()), "median": float(np.median(f)), "min": float(f.min()), "finite": float(len(f))}


def prior_marginal(prior: ParameterDistribution, names: Sequence[str]) -> ParameterDistribution:
    """The prior over ``names`` only (a joint block is kept whole: it is all in ``names`` or all out)."""
    joint = prior.joint if prior.joint is not None and prior.joint.names[0] in names else None
    return ParameterDistribution(prior.task, {n: m for n, m in prior.marginals.items() if n in names}, joint)


class NormalScores:
    """Coordinates in which each independent prior marginal is a standard normal (its normal score).

    The sampling Gaussians live here. A parameter the data cannot identify then has a posterior that
    *is* a standard normal in its coordinate, which a Gaussian fits exactly, so its prior/sampling
    ratio stays near 1 instead of adding weight noise with every such parameter (in the parameters'
    own units a Gaussian fitted to, say, a uniform prior leaves ratios that vary threefold per
    parameter). Samples never leave a marginal's support. A joint-Gaussian block of the prior is
    already Gaussian and keeps its own coordinates.
    """

    def __init__(self, prior: ParameterDistribution) -> None:
        self.prior = prior
        self.k = len(prior.marginals)
        joint = prior.joint
        inf = np.full(self.k, np.inf)
        self.low = np.concatenate([-inf, joint.low if joint else []])
        self.high = np.concatenate([inf, joint.high if joint else []])
        self.std = np.concatenate([np.ones(self.k), joint.std if joint else []])

    def to_z(self, x: FloatArray) -> FloatArray:
        z = np.array(x, dtype=np.float64, copy=True)
        for i, m in enumerate(self.prior.marginals.values()):
            z[:, i] = m.to_normal(x[:, i])
        return z

    def to_x(self, z: FloatArray) -> FloatArray:
        x = np.array(z, dtype=np.float64, copy=True)
        for i, m in enumerate(self.prior.marginals.values()):
            x[:, i] = m.from_normal(z[:, i])
        return x

    def log_prior(self, z: FloatArray) -> FloatArray:
        """Log prior density in these coordinates."""
        lp = -0.5 * (z[:, : self.k] ** 2).sum(axis=1) - self.k * 0.5 * math.log(2.0 * math.pi)
        if self.prior.joint is not None:
            lp = lp + self.prior.joint.log_pdf(z[:, self.k:])
        return lp


def pooled_log_ratio(scores: NormalScores, proposals: Sequence[JointGaussian], z: FloatArray) -> FloatArray:
    """log prior(z) - log q(z), with q the equal mixture of every round's sampling distribution.

    Samples of all rounds are weighted together as draws from that mixture (the "deterministic
    mixture" of adaptive multiple importance sampling): nothing simulated is thrown away, late
    rounds see many more samples than one round draws, and since q >= prior / rounds the ratio can
    never exceed the number of rounds.
    """
    log_prior = scores.log_prior(z)
    parts = [log_prior, *(p.log_pdf(z) for p in proposals)]
    log_q = np.logaddexp.reduce(np.stack(parts), axis=0) - math.log(len(parts))
    return np.where(np.isfinite(log_prior), log_prior - log_q, -np.inf)


def run_adaptation(
    prior: ParameterDistribution,
    evaluate: Callable[[list[dict[str, float]]], list[FloatArray]],
    spec: TaskSpec,
    config: AdaptConfig,
    transitions: int,
    episodes: int,
) -> AdaptResult:
    """The importance-sampling loop; ``evaluate`` maps parameter dicts to per-dimension mean square
    residuals (e.g. on an executor)."""
    specs = {s.name: s for s in task_param_specs(prior.task)}
    adapted, passed = split_prior(prior, specs)
    prior_a = prior_marginal(prior, adapted)
    names = prior_a.names()
    scores = NormalScores(prior_a)
    prior_mom = prior.moments()
    prior_std = np.array([prior_mom[n][1] for n in names])
    if not np.all(prior_std > 0):
        raise UserError("every adapted parameter needs a prior with a positive spread")
    min_var = (config.min_std_fraction * prior_std) ** 2
    min_var_z = (config.min_std_fraction * scores.std) ** 2
    floor = config.noise_floor.per_dimension(spec)
    dims = state_dim_names(spec)
    rng = np.random.default_rng(config.seed)
    target_ess = config.ess_fraction * config.samples

    def as_dict(row: FloatArray) -> dict[str, float]:
        return {n: float(v) for n, v in zip(names, row, strict=True)}

    proposals: list[JointGaussian] = []  # the fitted Gaussians; round 1 samples the prior itself
    zs: list[FloatArray] = []
    xs: list[FloatArray] = []
    mss: list[FloatArray] = []
    centre = np.array([prior_mom[n][0] for n in names])
    reports: list[IterationReport] = []
    mean = cov = np.zeros(0)
    for k in range(1, config.iterations + 1):
        if not proposals:
            x = prior_a.sample_array(rng, config.samples)
            z = scores.to_z(x)
        else:
            z = proposals[-1].sample(rng, config.samples)
            x = scores.to_x(z)
        # The centre rides along in the same batch, so it costs one evaluation, in parallel.
        ms = np.array(evaluate([*(as_dict(row) for row in x), as_dict(centre)]))
        ms_new, ms_centre = ms[:-1], ms[-1]
        if not np.isfinite(ms_new).all(axis=1).any():
            raise UserError("the simulation failed (non-finite states) at every parameter sample; "
                            "check that the logs match the task and that the prior's ranges are physical")
        zs.append(z)
        xs.append(x)
        mss.append(ms_new)
        z_all, x_all, ms_all = np.concatenate(zs), np.concatenate(xs), np.concatenate(mss)
        if not np.all(np.isfinite(ms_centre)):
            # The centre blew up: take the noise from the best-predicted sample instead.
            ms_centre = ms_all[np.nanargmin(ms_all.sum(axis=1))]
        sigma = fit_noise_std(ms_centre, floor)
        ll = gaussian_log_likelihood(ms_all, transitions, sigma)
        log_ratio = pooled_log_ratio(scores, proposals, z_all)
        beta = choose_beta(log_ratio, ll, target_ess)
        log_w = log_ratio + beta * ll
        mean, cov = weighted_gaussian(x_all, log_w, min_var)
        std = np.sqrt(np.diag(cov))
        reports.append(IterationReport(
            iteration=k, beta=beta, ess=effective_sample_size(log_w), samples=config.samples, pooled=len(z_all),
            log_likelihood=_ll_stats(ll[-config.samples:]),
            noise_std={d: float(v) for d, v in zip(dims, sigma, strict=True)},
            mean={n: float(v) for n, v in zip(names, mean, strict=True)},
            std={n: float(v) for n, v in zip(names, std, strict=True)},
        ))
        mean_z, cov_z = weighted_gaussian(z_all, log_w, min_var_z)
        proposals.append(JointGaussian(names, mean_z, config.proposal_inflation * cov_z, scores.low, scores.high))
        centre = scores.to_x(mean_z[None, :])[0]

    posterior_joint: JointGaussian = joint_gaussian(list(names), mean, cov, specs, where="posterior")
    posterior = ParameterDistribution(prior.task, {n: prior.marginals[n] for n in passed}, posterior_joint)
    ms_mean = evaluate([as_dict(posterior_joint.mean)])[0]
    sigma = fit_noise_std(ms_mean, floor)
    posterior_moments = posterior.moments()
    return AdaptResult(
        names=names, mean=mean, cov=cov, posterior=posterior,
        prior_moments={n: prior_mom[n] for n in prior.names()},
        posterior_moments=posterior_moments,
        passed_through=passed, iterations=tuple(reports),
        noise_std={d: float(v) for d, v in zip(dims, sigma, strict=True)},
        log_likelihood_at_mean=float(gaussian_log_likelihood(ms_mean, transitions, sigma)),
        transitions=transitions, transitions_available=transitions, episodes=episodes,
        prior_edges=prior_edges(prior, posterior_moments, names, specs),
    )


def adapt(
    prior: ParameterDistribution,
    logs: str | os.PathLike[str],
    config: AdaptConfig,
    *,
    task: str = "dclaw-turn",
    engine: str = "mujoco",
    executor: ExecutorConfig | None = None,
    strict: bool = False,
    on_skip: OnSkip | None = None,
) -> AdaptResult:
    """Adapt ``prior`` to the trajectory logs in ``logs`` (checked against ``task``); see the module doc.

    A damaged episode file is skipped and reported to ``on_skip``, or with ``strict`` is an error.
    """
    env_id = resolve_env_id(task)
    try:
        the_task = make_task(env_id)
    except KeyError:
        raise UserError(f"unknown task {task!r}") from None
    spec = the_task.spec
    specs = {s.name: s for s in task_param_specs(task)}
    if task_spec_name(prior.task) != spec.name:
        raise UserError(f"the prior is a distribution for task {prior.task!r}, not {task!r}")
    split_prior(prior, specs)
    info, episodes = load_logged_episodes(logs, spec, the_task, strict=strict, on_skip=on_skip)
    available = sum(int(e.usable.sum()) for e in episodes)
    if config.max_transitions is not None:
        episodes = thin_transitions(episodes, config.max_transitions)
    setup = ReplaySetup(env_id, engine, info.control_period, tuple(episodes))
    transitions = sum(int(e.usable.sum()) for e in episodes)
    with open_executor(setup, executor or ExecutorConfig()) as ex:
        result = run_adaptation(prior, _batch_evaluator(ex), spec, config, transitions, len(episodes))
    return replace(result, transitions_available=available)


def _batch_evaluator(ex: Executor[Any]) -> Callable[[list[dict[str, float]]], list[FloatArray]]:
    def evaluate(batch: list[dict[str, float]]) -> list[FloatArray]:
        return ex.map(evaluate_sample, batch)

    return evaluate


# --- outputs -------------------------------------------------------------------------------------
def edge_warning(result: AdaptResult) -> str | None:
    """A sentence on the parameters at the prior's edge, or ``None``."""
    if not result.prior_edges:
        return None
    listed = ", ".join(f"{n} (at its {side} bound)" for n, side in result.prior_edges.items())
    return (f"{listed}: the logs pull these past the prior, which clips them, so the posterior is not an "
            "identification. The simulator cannot explain the robot inside the prior: check the model and the "
            "logs (another engine's contacts, an unmodelled effect, a wrong calibration), or widen the prior if "
            "the value is plausible.")


def result_json(result: AdaptResult, specs: dict[str, ParamSpec], extra: dict[str, Any]) -> dict[str, Any]:
    """The JSON report: prior and posterior per parameter, per-iteration ESS and likelihoods, noise scale."""
    params = {}
    for n in (*result.names, *result.passed_through):
        pm, ps = result.prior_moments[n]
        qm, qs = result.posterior_moments[n]
        params[n] = {
            "unit": specs[n].unit, "nominal": specs[n].nominal, "adapted": n in result.names,
            "prior_mean": pm, "prior_std": ps, "posterior_mean": qm, "posterior_std": qs,
            "posterior_std_over_prior": qs / ps if ps > 0 else None,
            "at_prior_edge": result.prior_edges.get(n),
        }
    return {
        **extra,
        "episodes": result.episodes,
        "transitions": result.transitions,
        "transitions_available": result.transitions_available,
        "parameters": params,
        "passed_through": {
            "names": list(result.passed_through),
            "why": "one-step replay of logged states does not depend on observation noise or control jitter "
                   "(the logged period is replayed as it happened); their prior is kept",
        },
        "posterior_gaussian": {
            "names": list(result.names), "mean": result.mean.tolist(), "cov": result.cov.tolist(),
        },
        "at_prior_edge": edge_warning(result),
        "iterations": [asdict(r) for r in result.iterations],
        "final_beta": result.iterations[-1].beta,
        "noise_model": "independent Gaussian per state dimension on the next state; each round's std is the "
                       "RMS one-step residual at that round's centre (prior mean, then the last fit), floored "
                       "at sensor resolution",
        "noise_std_at_posterior_mean": result.noise_std,
        "log_likelihood_at_posterior_mean": result.log_likelihood_at_mean,
    }


def plot_png(prior: ParameterDistribution, result: AdaptResult, specs: dict[str, ParamSpec], seed: int = 0) -> bytes:
    """PNG of prior vs posterior histograms per adapted parameter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = result.names
    rng = np.random.default_rng(seed)
    prior_a = prior_marginal(prior, names)
    prior_draws = prior_a.sample_array(rng, PLOT_DRAWS)
    post_names = result.posterior.names()
    post_draws = result.posterior.sample_array(rng, PLOT_DRAWS)
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, n in zip(axes.flat, names, strict=False):
        pv = prior_draws[:, prior_a.names().index(n)]
        qv = post_draws[:, post_names.index(n)]
        lo, hi = float(min(pv.min(), qv.min())), float(max(pv.max(), qv.max()))
        bins = np.linspace(lo, hi, 60) if hi > lo else 10
        ax.hist(pv, bins=bins, density=True, histtype="step", color="tab:gray", linewidth=1.5,
                label=f"prior {result.prior_moments[n][0]:.4g} ± {result.prior_moments[n][1]:.2g}")
        ax.hist(qv, bins=bins, density=True, alpha=0.6, color="tab:blue",
                label=f"posterior {result.posterior_moments[n][0]:.4g} ± {result.posterior_moments[n][1]:.2g}")
        ax.set_title(n)
        ax.set_xlabel(specs[n].unit)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(f"prior vs posterior ({result.episodes} episodes, {result.transitions} transitions, "
                 f"final beta {result.iterations[-1].beta:.3g})", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def output_paths(out: str | os.PathLike[str]) -> tuple[Path, Path, Path]:
    """(YAML, JSON, PNG) paths for ``--out`` (a ``.yaml``/``.yml`` file)."""
    p = Path(out)
    if p.suffix.lower() not in (".yaml", ".yml"):
        raise ParameterError("out", f"{str(p)!r} must name a .yaml file (the JSON and PNG are written beside it)")
    return p, p.with_suffix(".json"), p.with_suffix(".png")


def write_outputs(
    prior: ParameterDistribution, result: AdaptResult, out: str | os.PathLike[str], extra: dict[str, Any],
) -> tuple[Path, Path, Path]:
    """Write the posterior YAML, the JSON report and the plot, each atomically; returns their paths."""
    yaml_path, json_path, png_path = output_paths(out)
    specs = {s.name: s for s in task_param_specs(prior.task)}
    header = (
        f"Written by s2r adapt from {extra.get('logs', 'logs')} ({result.episodes} episodes).\n"
        f"Posterior after {len(result.iterations)} iterations, final tempering beta "
        f"{result.iterations[-1].beta:.3g}; report in {json_path.name}."
    )
    save_distribution(result.posterior, yaml_path, header)
    report = result_json(result, specs, extra)
    write_text_atomic(json_path, json.dumps(report, indent=2, allow_nan=True) + "\n")
    write_bytes_atomic(png_path, plot_png(prior, result, specs))
    return yaml_path, json_path, png_path
