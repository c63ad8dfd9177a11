"""Distributions over a task's named simulator parameters, read from and written to YAML.

The YAML names the task and gives each parameter a distribution; a parameter named nowhere keeps its
nominal value. ``s2r params TASK`` lists the names, units and allowed ranges::

    task: dclaw-turn
    parameters:                      # independent marginals, one per parameter
      valve_damping: {dist: log_uniform, low: 0.02, high: 0.2}
      finger_kp: {dist: uniform, low: 2.0, high: 6.0}
      tip_friction: {dist: normal, mean: 1.0, std: 0.1}
      valve_mass: {dist: truncated_normal, mean: 0.08, std: 0.01, low: 0.06, high: 0.1}
    joint:                           # optional: one joint Gaussian over parameters not listed above
      names: [finger_damping, finger_mass_scale]
      mean: [0.1, 1.0]
      cov: [[0.0004, 0.0], [0.0, 0.01]]
      low: [0.0, 0.05]               # optional truncation; default each parameter's allowed range
      high: [.inf, 20.0]

Every drawn value lies inside its parameter's allowed range (``ParamSpec.low``/``high``), so it can
always be applied: ``normal`` and the joint Gaussian are truncated to that range (draws outside are
redrawn and densities renormalized), and the bounds of ``uniform``, ``log_uniform`` and
``truncated_normal`` must lie inside it. Values are in each parameter's SI unit.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import yaml

from s2r.core.atomicio import write_text_atomic
from s2r.core.errors import UserError, did_you_mean
from s2r.core.fields import Fields
from s2r.core.resources import shipped_file
from s2r.core.yamlfile import read_yaml_file
from sim import TASK_IDS, make_task, resolve_env_id
from sim.engines.base import ParamSpec
from sim.tasks.base import Task
from sim.tasks.spec import FloatArray

_STD_NORMAL = NormalDist()
LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
MIN_RANGE_MASS = 1e-9
"""Smallest probability a Gaussian may put inside its truncation range (-); less means the range misses it."""
JOINT_MC_DRAWS = 20_000
"""Draws used to estimate a truncated joint Gaussian's in-range mass and moments (deterministic seed)."""
_JOINT_MC_SEED = 20240607
MAX_REJECTION_ROUNDS = 1000
"""Rounds of redrawing out-of-range joint samples before giving up."""
DIST_KINDS = ("uniform", "log_uniform", "normal", "truncated_normal")


def _phi(z: float) -> float:
    """Standard normal density, 0 at +-inf."""
    return 0.0 if math.isinf(z) else math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def _cdf(z: float) -> float:
    return _STD_NORMAL.cdf(z) if math.isfinite(z) else (0.0 if z < 0 else 1.0)


_ERFC = np.vectorize(math.erfc, otypes=[np.float64])
_INV_CDF = np.vectorize(_STD_NORMAL.inv_cdf, otypes=[np.float64])
SMALLEST_TAIL = 1e-300
"""Smallest tail probability passed to the inverse normal CDF (-)."""


def normal_cdf(z: FloatArray) -> FloatArray:
    """Standard normal CDF, elementwise (accurate in the lower tail)."""
    return np.asarray(0.5 * _ERFC(-np.asarray(z, dtype=np.float64) / math.sqrt(2.0)))


def normal_ppf(p: FloatArray) -> FloatArray:
    """Inverse standard normal CDF, elementwise, for p in (0, 1)."""
    return np.asarray(_INV_CDF(np.clip(np.asarray(p, dtype=np.float64), SMALLEST_TAIL, 1.0 - 1e-16)))


def _tails(x: FloatArray, lower: FloatArray, upper: FloatArray) -> FloatArray:
    """Normal scores from lower-tail and upper-tail probabilities, each used where it is the small one."""
    return np.where(lower <= upper, normal_ppf(lower), -normal_ppf(upper))


def _from_tails(z: FloatArray, inv_lower: Any, inv_upper: Any) -> FloatArray:
    """Values for normal scores ``z`` through the inverse lower-tail (z <= 0) or upper-tail (z > 0) map."""
    z = np.asarray(z, dtype=np.float64)
    small = normal_cdf(-np.abs(z))
    return np.where(z <= 0, inv_lower(small), inv_upper(small))


# --- univariate marginals ------------------------------------------------------------------------
@dataclass(frozen=True)
class Uniform:
    """Uniform on [low, high] (the parameter's unit)."""

    low: float
    """Lower bound."""
    high: float
    """Upper bound, above ``low``."""

    def sample(self, rng: np.random.Generator, n: int) -> FloatArray:
        return rng.uniform(self.low, self.high, n)

    def log_pdf(self, x: FloatArray) -> FloatArray:
        inside = (x >= self.low) & (x <= self.high)
        return np.where(inside, -math.log(self.high - self.low), -np.inf)

    def to_normal(self, x: FloatArray) -> FloatArray:
        """The standard-normal score of ``x`` (its quantile mapped through the inverse normal CDF)."""
        w = self.high - self.low
        return _tails(x, (np.asarray(x) - self.low) / w, (self.high - np.asarray(x)) / w)

    def from_normal(self, z: FloatArray) -> FloatArray:
        """Inverse of :meth:`to_normal`."""
        w = self.high - self.low
        return _from_tails(z, lambda p: self.low + p * w, lambda p: self.high - p * w)

    @property
    def mean(self) -> float:
        return 0.5 * (self.low + self.high)

    @property
    def std(self) -> float:
        return (self.high - self.low) / math.sqrt(12.0)

    def to_yaml(self) -> dict[str, Any]:
        return {"dist": "uniform", "low": self.low, "high": self.high}


@dataclass(frozen=True)
class LogUniform:
    """Log-uniform on [low, high] with 0 < low: every factor of the range is equally likely."""

    low: float
    """Lower bound, positive."""
    high: float
    """Upper bound, above ``low``."""

    def sample(self, rng: np.random.Generator, n: int) -> FloatArray:
        return np.exp(rng.uniform(math.log(self.low), math.log(self.high), n))

    def log_pdf(self, x: FloatArray) -> FloatArray:
        inside = (x >= self.low) & (x <= self.high)
        log_width = math.log(math.log(self.high / self.low))
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(inside, -np.log(np.where(inside, x, 1.0)) - log_width, -np.inf)

    def to_normal(self, x: FloatArray) -> FloatArray:
        """The standard-normal score of ``x`` (its quantile mapped through the inverse normal CDF)."""
        w = math.log(self.high / self.low)
        lx = np.log(np.clip(np.asarray(x, dtype=np.float64), self.low, self.high))
        return _tails(x, (lx - math.log(self.low)) / w, (math.log(self.high) - lx) / w)

    def from_normal(self, z: FloatArray) -> FloatArray:
        """Inverse of :meth:`to_normal`."""
        ratio = self.high / self.low
        return _from_tails(z, lambda p: self.low * ratio**p, lambda p: self.high / ratio**p)

    @property
    def mean(self) -> float:
        return (self.high - self.low) / math.log(self.high / self.low)

    @property
    def std(self) -> float:
        second = (self.high**2 - self.low**2) / (2.0 * math.log(self.high / self.low))
        return math.sqrt(max(second - self.mean**2, 0.0))

    def to_yaml(self) -> dict[str, Any]:
        return {"dist": "log_uniform", "low": self.low, "high": self.high}


@dataclass(frozen=True)
class TruncatedNormal:
    """A Gaussian restricted to [low, high] and renormalized.

    ``normal`` in YAML is this with the parameter's allowed range as bounds (``explicit_bounds`` False,
    so the bounds are not written back); ``truncated_normal`` gives its own bounds.
    """

    loc: float
    """Mean of the untruncated Gaussian."""
    scale: float
    """Standard deviation of the untruncated Gaussian, positive."""
    low: float = -math.inf
    """Lower truncation bound."""
    high: float = math.inf
    """Upper truncation bound, above ``low``."""
    explicit_bounds: bool = True
    """Whether the bounds came from the YAML (``truncated_normal``) or from the allowed range (``normal``)."""

    @property
    def _ab(self) -> tuple[float, float]:
        return (self.low - self.loc) / self.scale, (self.high - self.loc) / self.scale

    @property
    def mass(self) -> float:
        """Probability of the untruncated Gaussian inside [low, high]."""
        a, b = self._ab
        # Upper tail through the mirror image keeps precision when both bounds lie far above the mean.
        return _cdf(-a) - _cdf(-b) if a > 0 else _cdf(b) - _cdf(a)

    def sample(self, rng: np.random.Generator, n: int) -> FloatArray:
        return self.from_normal(rng.standard_normal(n))

    def to_normal(self, x: FloatArray) -> FloatArray:
        """The standard-normal score of ``x`` (its quantile mapped through the inverse normal CDF)."""
        a, b = self._ab
        u = (np.asarray(x, dtype=np.float64) - self.loc) / self.scale
        m = self.mass
        lower = (normal_cdf(u) - _cdf(a)) / m
        upper = (normal_cdf(-u) - _cdf(-b)) / m
        return _tails(x, np.clip(lower, 0.0, 1.0), np.clip(upper, 0.0, 1.0))

    def from_normal(self, z: FloatArray) -> FloatArray:
        """Inverse of :meth:`to_normal` (inverse-CDF sampling when ``z`` is standard normal)."""
        a, b = self._ab
        m = self.mass
        x = _from_tails(
            z,
            lambda p: self.loc + self.scale * normal_ppf(_cdf(a) + p * m),
            lambda p: self.loc - self.scale * normal_ppf(_cdf(-b) + p * m),
        )
        return np.clip(x, self.low, self.high)

    def log_pdf(self, x: FloatArray) -> FloatArray:
        z = (np.asarray(x, dtype=np.float64) - self.loc) / self.scale
        inside = (x >= self.low) & (x <= self.high)
        lp = -0.5 * z * z - LOG_SQRT_2PI - math.log(self.scale) - math.log(self.mass)
        return np.where(inside, lp, -np.inf)

    @property
    def mean(self) -> float:
        a, b = self._ab
        return self.loc + self.scale * (_phi(a) - _phi(b)) / self.mass

    @property
    def std(self) -> float:
        a, b = self._ab
        z = self.mass
        pa = a * _phi(a) if math.isfinite(a) else 0.0
        pb = b * _phi(b) if math.isfinite(b) else 0.0
        ratio = (_phi(a) - _phi(b)) / z
        return self.scale * math.sqrt(max(1.0 + (pa - pb) / z - ratio * ratio, 0.0))

    def to_yaml(self) -> dict[str, Any]:
        if not self.explicit_bounds:
            return {"dist": "normal", "mean": self.loc, "std": self.scale}
        return {"dist": "truncated_normal", "mean": self.loc, "std": self.scale, "low": self.low, "high": self.high}


Marginal = Uniform | LogUniform | TruncatedNormal


# --- joint Gaussian ------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class JointGaussian:
    """A multivariate Gaussian over several parameters, truncated to a box and renormalized."""

    names: tuple[str, ...]
    """Parameters, in the order of ``mean`` and the rows and columns of ``cov``."""
    loc: FloatArray
    """Mean of the untruncated Gaussian (each parameter's unit)."""
    cov: FloatArray
    """Covariance, symmetric positive definite."""
    low: FloatArray
    """Lower truncation bound per parameter (``-inf`` for none)."""
    high: FloatArray
    """Upper truncation bound per parameter (``inf`` for none)."""

    @cached_property
    def _chol(self) -> FloatArray:
        # Only validated covariances get here (see :func:`joint_gaussian`), so the factorization exists.
        return np.asarray(np.linalg.cholesky(self.cov), dtype=np.float64)

    @property
    def truncated(self) -> bool:
        """Whether any bound is finite."""
        return bool(np.isfinite(self.low).any() or np.isfinite(self.high).any())

    def _inside(self, x: FloatArray) -> np.ndarray:
        return np.all((x >= self.low) & (x <= self.high), axis=-1)

    def _raw(self, rng: np.random.Generator, n: int) -> FloatArray:
        return self.loc + rng.standard_normal((n, len(self.names))) @ self._chol.T

    @cached_property
    def _moments(self) -> tuple[float, FloatArray, FloatArray]:
        """In-range mass, mean and std; from a fixed-seed batch of draws when truncated, so repeatable."""
        if not self.truncated:
            return 1.0, self.loc.copy(), np.sqrt(np.diag(self.cov))
        draws = self._raw(np.random.default_rng(_JOINT_MC_SEED), JOINT_MC_DRAWS)
        keep = draws[self._inside(draws)]
        if len(keep) == 0:
            nan = np.full(len(self.names), np.nan)
            return 0.0, nan, nan
        return len(keep) / JOINT_MC_DRAWS, keep.mean(axis=0), keep.std(axis=0)

    @property
    def mass(self) -> float:
        """Probability of the untruncated Gaussian inside the bounds (Monte Carlo when truncated)."""
        return self._moments[0]

    def sample(self, rng: np.random.Generator, n: int) -> FloatArray:
        """``n`` draws inside the bounds, shape (n, len(names))."""
        out = np.empty((0, len(self.names)))
        for _ in range(MAX_REJECTION_ROUNDS):
            draws = self._raw(rng, max(2 * (n - len(out)), 16))
            out = np.concatenate([out, draws[self._inside(draws)]])
            if len(out) >= n:
                return out[:n]
        raise UserError(
            f"the joint Gaussian over {', '.join(self.names)} has almost no probability inside its bounds; "
            "move its mean into the allowed ranges"
        )

    def log_pdf(self, x: FloatArray) -> FloatArray:
        """Log density of rows of ``x`` (shape (n, len(names))), renormalized for the truncation."""
        diff = np.atleast_2d(np.asarray(x, dtype=np.float64)) - self.loc
        sol = np.linalg.solve(self._chol, diff.T).T
        log_det = 2.0 * float(np.log(np.diag(self._chol)).sum())
        lp = -0.5 * (sol**2).sum(axis=1) - len(self.names) * LOG_SQRT_2PI - 0.5 * log_det - math.log(self.mass)
        return np.where(self._inside(diff + self.loc), lp, -np.inf)

    @property
    def mean(self) -> FloatArray:
        """Mean of the truncated distribution per parameter."""
        return self._moments[1]

    @property
    def std(self) -> FloatArray:
        """Standard deviation of the truncated distribution per parameter."""
        return self._moments[2]

    def to_yaml(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "mean": [float(v) for v in self.loc],
            "cov": [[float(v) for v in row] for row in self.cov],
            "low": [float(v) for v in self.low],
            "high": [float(v) for v in self.high],
        }


# --- a distribution over a task's parameters ------------------------------------------------------
@dataclass(frozen=True)
class ParameterDistribution:
    """Independent marginals plus at most one joint Gaussian over a task's named parameters."""

    task: str
    """Task whose parameters these are (e.g. ``"dclaw-turn"``)."""
    marginals: Mapping[str, Marginal]
    """One independent distribution per parameter."""
    joint: JointGaussian | None = None
    """A joint Gaussian over further parameters, or ``None``."""

    def names(self) -> tuple[str, ...]:
        """Every randomized parameter: the marginals in order, then the joint Gaussian's."""
        return (*self.marginals, *(self.joint.names if self.joint else ()))

    def sample_array(self, rng: np.random.Generator, n: int) -> FloatArray:
        """``n`` draws, shape (n, len(names())), columns in ``names()`` order."""
        cols = [m.sample(rng, n) for m in self.marginals.values()]
        parts = [np.stack(cols, axis=1)] if cols else []
        if self.joint is not None:
            parts.append(self.joint.sample(rng, n))
        return np.concatenate(parts, axis=1) if parts else np.zeros((n, 0))

    def sample(self, rng: np.random.Generator) -> dict[str, float]:
        """One draw as ``{name: value}``."""
        row = self.sample_array(rng, 1)[0]
        return {name: float(v) for name, v in zip(self.names(), row, strict=True)}

    def log_pdf(self, x: FloatArray) -> FloatArray:
        """Log density of rows of ``x`` (columns in ``names()`` order); ``-inf`` outside the support."""
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        total = np.zeros(len(x))
        for i, m in enumerate(self.marginals.values()):
            total = total + m.log_pdf(x[:, i])
        if self.joint is not None:
            total = total + self.joint.log_pdf(x[:, len(self.marginals):])
        return total

    def moments(self) -> dict[str, tuple[float, float]]:
        """``{name: (mean, std)}`` of every randomized parameter."""
        out = {name: (float(m.mean), float(m.std)) for name, m in self.marginals.items()}
        if self.joint is not None:
            for name, mu, sd in zip(self.joint.names, self.joint.mean, self.joint.std, strict=True):
                out[name] = (float(mu), float(sd))
        return out

    def marginal(self, name: str) -> Marginal:
        """``name``'s own distribution: its marginal, or the joint Gaussian's one-dimensional block."""
        if name in self.marginals:
            return self.marginals[name]
        if self.joint is None or name not in self.joint.names:
            raise KeyError(f"{name!r} is not randomized here (it has {', '.join(self.names()) or 'nothing'})")
        i = self.joint.names.index(name)
        return TruncatedNormal(float(self.joint.loc[i]), math.sqrt(float(self.joint.cov[i, i])),
                               float(self.joint.low[i]), float(self.joint.high[i]))

    def with_prior_for(self, prior: ParameterDistribution, names: Sequence[str]) -> ParameterDistribution:
        """This distribution with ``names`` back on ``prior``'s distributions of them; the joint Gaussian keeps
        the other parameters' block of its mean and covariance (their marginal, ignoring the truncation of the
        dropped ones)."""
        joint = self.joint
        if joint is not None:
            keep = [i for i, n in enumerate(joint.names) if n not in names]
            joint = None if not keep else JointGaussian(
                tuple(joint.names[i] for i in keep), joint.loc[keep], joint.cov[np.ix_(keep, keep)],
                joint.low[keep], joint.high[keep])
        marginals = {n: m for n, m in self.marginals.items() if n not in names}
        return ParameterDistribution(self.task, {**marginals, **{n: prior.marginal(n) for n in names}}, joint)

    def support(self) -> dict[str, tuple[float, float]]:
        """``{name: (low, high)}``: where each randomized parameter can be drawn (infinite where unbounded)."""
        out = {name: (float(getattr(m, "low", -math.inf)), float(getattr(m, "high", math.inf)))
               for name, m in self.marginals.items()}
        if self.joint is not None:
            for name, lo, hi in zip(self.joint.names, self.joint.low, self.joint.high, strict=True):
                out[name] = (float(lo), float(hi))
        return out

    def to_yaml_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"task": self.task, "parameters": {n: m.to_yaml() for n, m in self.marginals.items()}}
        if self.joint is not None:
            data["joint"] = self.joint.to_yaml()
        return data


# --- tasks ---------------------------------------------------------------------------------------
def _task(task: str) -> Task:
    """The task given by short name or gymnasium id; unknown is a ``UserError`` listing the known ones."""
    try:
        return make_task(resolve_env_id(task))
    except KeyError:
        raise UserError(f"unknown task {task!r}{did_you_mean(task, TASK_IDS)}; known tasks: {', '.join(TASK_IDS)}"
                        ) from None


def task_param_specs(task: str) -> tuple[ParamSpec, ...]:
    """The named parameters of a task given by short name or gymnasium id; unknown is a ``UserError``."""
    return tuple(_task(task).param_specs())


def task_spec_name(task: str) -> str:
    """The task spec's name (shared by a task's variants), e.g. ``dclaw-turn`` for ``dclaw-turn-random``."""
    return _task(task).spec.name


# --- parsing and validation ----------------------------------------------------------------------
def _check_bounds(node: Fields, low_key: str, high_key: str, low: float, high: float, spec: ParamSpec) -> None:
    """``low`` below ``high`` and both inside ``spec``'s allowed range; errors name ``node``'s fields."""
    if not low < high:
        node.fail(high_key, f"above {low_key} ({low:g})", high)
    allowed = f"inside the allowed range of {spec.name}, [{spec.low:g}, {spec.high:g}] {spec.unit}"
    if low < spec.low:
        node.fail(low_key, allowed, low)
    if high > spec.high:
        node.fail(high_key, allowed, high)


def _known(node: Fields, key: str, name: str, specs: Mapping[str, ParamSpec], task: str) -> None:
    if name not in specs:
        node.refuse(key, f"names an unknown parameter {name!r}{f' of task {task!r}' if task else ''}"
                    f"{did_you_mean(name, specs)}; known parameters: {', '.join(specs)}")


CENTRE = "a finite number (the centre of the Gaussian)"
STD = "a positive standard deviation"


def _parse_marginal(node: Fields, spec: ParamSpec) -> Marginal:
    kind = node.choice("dist", DIST_KINDS)
    if kind in ("uniform", "log_uniform"):
        node.only("dist", "low", "high")
        # A uniform draw needs a finite width: numpy overflows on an infinite one.
        finite = f"a finite number ({kind} draws between two finite bounds)"
        low, high = node.number("low", expected=finite), node.number("high", expected=finite)
        _check_bounds(node, "low", "high", low, high, spec)
        if kind == "uniform":
            return Uniform(low, high)
        if low <= 0.0:
            node.fail("low", "a number > 0 (log_uniform draws every factor of the range equally often)", low)
        return LogUniform(low, high)
    if kind == "normal":
        node.only("dist", "mean", "std")
        mean = node.number("mean", expected=CENTRE)
        dist = TruncatedNormal(mean, _positive_std(node), spec.low, spec.high, explicit_bounds=False)
    else:
        node.only("dist", "mean", "std", "low", "high")
        # An infinite bound is a one-sided truncation, which the truncated normal handles; the mean is not.
        low, high = node.number("low", finite=False), node.number("high", finite=False)
        _check_bounds(node, "low", "high", low, high, spec)
        dist = TruncatedNormal(node.number("mean", expected=CENTRE), _positive_std(node), low, high)
    if dist.mass < MIN_RANGE_MASS:
        node.fail("mean", f"a mean that leaves the Gaussian some probability inside [{dist.low:g}, {dist.high:g}] "
                  "(it has almost none there)", dist.loc)
    return dist


def _positive_std(node: Fields) -> float:
    std = node.number("std", expected=STD)
    if std <= 0.0:
        node.fail("std", STD, std)
    return std


def _joint(node: Fields, specs: Mapping[str, ParamSpec], task: str = "", taken: Sequence[str] = ()) -> JointGaussian:
    """The joint Gaussian of ``node`` (names, mean, cov, optional low, high) over parameters of ``specs``, none
    of them in ``taken`` (those with their own marginal)."""
    node.only("names", "mean", "cov", "low", "high")
    names = node.strings("names", what="parameter names")
    for i, name in enumerate(names):
        _known(node, f"names[{i}]", name, specs, task)
    dup = sorted({n for n in names if n in taken or names.count(n) > 1})
    if dup:
        node.refuse("names", f"repeats {', '.join(dup)}: each parameter appears once across parameters and joint")
    n = len(names)
    mean = node.numbers("mean", n, expected=f"a list of {n} finite numbers (the centre of the Gaussian)")
    c = np.array(node.matrix("cov", n, n))
    scale = float(np.max(np.abs(c))) or 1.0
    if not np.allclose(c, c.T, rtol=1e-9, atol=1e-12 * scale):
        node.fail("cov", "a symmetric matrix", c.tolist())
    c = 0.5 * c + 0.5 * c.T  # halved first: c + c.T overflows for entries near the largest float
    smallest = float(np.linalg.eigvalsh(c).min())
    if smallest <= 0.0:
        node.fail("cov", f"positive definite (a covariance with positive variances; its smallest eigenvalue is "
                  f"{smallest:g})", c.tolist())
    specs_in = [specs[name] for name in names]
    lo = [s.low for s in specs_in] if node.raw("low") is None else node.numbers("low", n, finite=False)
    hi = [s.high for s in specs_in] if node.raw("high") is None else node.numbers("high", n, finite=False)
    for i, s in enumerate(specs_in):
        _check_bounds(node, f"low[{i}]", f"high[{i}]", float(lo[i]), float(hi[i]), s)
    node.done()
    dist = JointGaussian(names, np.array(mean), c, np.array(lo, dtype=np.float64), np.array(hi, dtype=np.float64))
    if dist.mass < MIN_RANGE_MASS:
        node.fail("mean", "a mean that leaves the Gaussian some probability inside its bounds (it has almost none "
                  "there; move it into the allowed ranges)", list(mean))
    return dist


def _listed(value: Any) -> Any:
    """``value`` with numpy arrays as lists (of Python floats), as YAML gives it."""
    return np.asarray(value, dtype=np.float64).tolist() if isinstance(value, np.ndarray) else value


def joint_gaussian(
    names: Sequence[str], mean: Any, cov: Any, specs: Mapping[str, ParamSpec],
    low: Any = None, high: Any = None, where: str = "joint",
) -> JointGaussian:
    """A validated joint Gaussian; bad shapes, a non-positive-definite ``cov`` or bad bounds are ``UserError``
    naming ``where`` and the field (``mean``, ``cov``, ``low[1]``)."""
    data = {"names": list(names), "mean": _listed(mean), "cov": _listed(cov), "low": _listed(low),
            "high": _listed(high)}
    return _joint(Fields(data, "", where), specs)


def parse_distribution(data: Any, where: str = "distribution", task: str | None = None) -> ParameterDistribution:
    """A validated distribution from parsed YAML; ``where`` (e.g. the file) starts every error message, which
    names the dotted field (``parameters.finger_kp.low``).

    With ``task``, the YAML's task must have the same parameters (the same task spec).
    """
    root = Fields(data, "", where)
    root.only("task", "parameters", "joint")
    file_task = root.text("task")
    try:
        specs = {s.name: s for s in task_param_specs(file_task)}
    except UserError:
        root.fail("task", f"a known task (one of {', '.join(TASK_IDS)})", file_task)
    if task is not None and task_spec_name(task) != task_spec_name(file_task):
        # Tasks of one robot share its parameters (dkitty-stand and dkitty-walk): a file written for one
        # serves the other; a file for another robot does not.
        theirs = {s.name for s in task_param_specs(task)}
        if theirs != set(specs):
            root.refuse("task", f"is {file_task!r}, whose parameters differ from those of {task!r} (the task "
                        "this distribution is for)")
    params = root.child("parameters", optional=True)
    marginals: dict[str, Marginal] = {}
    for name in params.keys():
        _known(params, name, name, specs, file_task)
        marginals[name] = _parse_marginal(params.child(name), specs[name])
    joint = None if root.raw("joint") is None else _joint(root.child("joint"), specs, file_task, tuple(marginals))
    if not marginals and joint is None:
        # An empty file trained on the nominal model without a word; training on nominal is leaving
        # the distribution out, not an empty one.
        root.refuse("parameters", f"must name at least one parameter (or give joint, a Gaussian over some); known "
                    f"parameters of {file_task!r}: {', '.join(specs)}")
    root.done()
    return ParameterDistribution(file_task, marginals, joint)


def combine_distributions(dists: Sequence[ParameterDistribution]) -> ParameterDistribution:
    """One distribution drawing every parameter of ``dists`` (e.g. ``dclaw.yaml``'s physics and
    ``dclaw_visual.yaml``'s rendering), independently of each other; they must be for tasks with the same
    parameters, name each parameter at most once across them, and hold at most one joint Gaussian between them."""
    if not dists:
        raise UserError("no randomization distributions to combine")
    first = dists[0]
    marginals: dict[str, Marginal] = {}
    joint: JointGaussian | None = None
    seen: set[str] = set()
    for d in dists:
        if task_spec_name(d.task) != task_spec_name(first.task):
            raise UserError(f"randomization files for different tasks cannot be combined: {first.task!r} and "
                            f"{d.task!r}")
        both = sorted(seen & set(d.names()))
        if both:
            raise UserError(f"randomization files to combine name {', '.join(both)} more than once; give each "
                            "parameter in one file only")
        seen |= set(d.names())
        marginals.update(d.marginals)
        if d.joint is not None:
            if joint is not None:
                raise UserError("randomization files to combine hold two joint Gaussians; merge them into one")
            joint = d.joint
    return ParameterDistribution(first.task, marginals, joint)


def load_distribution(path: str | os.PathLike[str], task: str | None = None) -> ParameterDistribution:
    """Read and validate a randomization YAML; every problem is a ``UserError`` naming the file and field."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"randomization file {str(p)!r} does not exist")
    data = read_yaml_file(p, "randomization file")
    return parse_distribution(data, str(p), task)


def dump_distribution_yaml(dist: ParameterDistribution, header: str = "") -> str:
    """YAML text that :func:`load_distribution` reads back into ``dist``; ``header`` becomes comment lines."""
    body = yaml.safe_dump(dist.to_yaml_dict(), sort_keys=False, default_flow_style=None, width=120)
    comments = "".join(f"# {line}\n".replace("# \n", "#\n") for line in header.splitlines())
    return comments + body


def save_distribution(dist: ParameterDistribution, path: str | os.PathLike[str], header: str = "") -> None:
    """Write ``dist`` as randomization YAML, atomically."""
    write_text_atomic(path, dump_distribution_yaml(dist, header))


CONFIGS = "randomization.configs"
"""The package of the default randomization files (``<robot>.yaml``)."""


def default_config(task: str) -> Path:
    """The shipped randomization file for a task (``configs/<robot>.yaml``)."""
    robot = _task(task).spec.robot
    try:
        return shipped_file(CONFIGS, f"{robot}.yaml")
    except UserError as exc:
        raise UserError(f"no default randomization file for task {task!r}: {exc}") from None
