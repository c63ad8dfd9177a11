"""Robustness sweeps (``s2r sweep``): a policy's success rate over a grid of physics parameter values.

The figure of EPOpt (Rajeswaran et al. 2016) that shows how far a policy's competence reaches: one
or two named parameters (:mod:`sim.params`) are stepped over an evenly spaced grid, every other
parameter stays nominal, and each cell runs the same deterministic episodes (seeds ``seed`` ..
``seed + K - 1``) so that cells differ only in the parameter values. Values are applied from the
nominal model at every episode (:class:`~sim.params.ParameterSet`), so no cell inherits anything
from the one a worker ran before it.

Episodes run on :mod:`randomization.parallel` (in this process, local worker processes or Ray); each
item is one (cell, seed) episode and results come back in item order, so the outcome does not depend
on the backend or the worker count. Results are summarized by :func:`robustness_summary` (mean
success over cells and the mean of the worst 10 % of cells) and written as ``sweep.json`` and a
heatmap ``sweep.png`` (:func:`write_sweep`).

The policy and the episode loop are those of ``s2r eval`` (:func:`s2r.policy_files.load_policy`,
:func:`sim.rollout.run_episodes`), so the nominal cell of a sweep reproduces ``s2r eval`` on the
same seeds.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

import sim  # noqa: F401  (registers the s2r/ ids)
from randomization.distributions import task_param_specs
from randomization.parallel import EpisodeRequest, ExecutorConfig, open_executor
from s2r.core.atomicio import write_bytes_atomic, write_text_atomic
from s2r.core.errors import ParameterError, UserError
from s2r.core.extras import MissingExtra
from sim import resolve_env_id, time_limit
from sim.engines import ENGINES, ParamSpec
from sim.env import SimEnv
from sim.rollout import Policy, run_episodes

"""float32 observation -> normalized action in [-1, 1]."""

SWEEP_FORMAT = "s2r-sweep"
SWEEP_VERSION = 1
JSON_NAME = "sweep.json"
PNG_NAME = "sweep.png"
MAX_AXES = 2
"""A sweep is a line (one axis) or a heatmap (two axes)."""
WORST_FRACTION_DENOMINATOR = 10
"""The worst-cells figure averages the lowest ``ceil(cells / 10)`` success rates (10 % of the cells)."""
EPISODES_PER_WORKER_PER_WAVE = 8
"""Cells are handed to parallel workers in waves of about this many episodes per worker: a wave ends with
a progress report per cell, and a larger wave leaves workers idle for a smaller share of its tail."""
MAX_ANNOTATED_CELLS_PER_AXIS = 25
"""Beyond this many values on an axis the numbers in the cells would overlap; only the colours are drawn."""
MAX_TICKS_PER_AXIS = 15
"""At most this many labelled ticks per axis, so that the labels stay legible."""
_ANNOTATION_DARK_BELOW = 0.6
"""Cells whose success rate is below this are dark in the colour map and get white text."""
_GRID_RE = re.compile(r"^\s*([^=\s]+)\s*=\s*([^:]*):([^:]*):([^:]*)\s*$")


# --- the grid ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GridAxis:
    """One swept parameter: ``n`` evenly spaced values from ``lo`` to ``hi`` (both included)."""

    name: str
    """Parameter name (see ``s2r params TASK``)."""
    lo: float
    """First value (the parameter's unit)."""
    hi: float
    """Last value (the parameter's unit); equal to ``lo`` when ``n`` is 1."""
    n: int
    """Number of values, at least 1."""

    def __post_init__(self) -> None:
        where = f"grid axis {self.text()}"
        if not self.name:
            raise UserError(f"{where}: the parameter name is empty; expected NAME=LO:HI:N")
        if not (math.isfinite(self.lo) and math.isfinite(self.hi)):
            raise UserError(f"{where}: LO and HI must be finite numbers")
        if self.n < 1:
            raise UserError(f"{where}: N must be at least 1, got {self.n}")
        if self.lo > self.hi:
            raise UserError(f"{where}: LO ({self.lo:g}) is greater than HI ({self.hi:g}); expected LO <= HI")
        if self.n == 1 and self.lo != self.hi:
            raise UserError(f"{where}: N=1 gives a single value, so LO and HI must be equal "
                            f"(got {self.lo:g} and {self.hi:g}); use N >= 2 for a range")

    def text(self) -> str:
        """The axis as ``NAME=LO:HI:N``, as given on the command line."""
        return f"{self.name}={self.lo:g}:{self.hi:g}:{self.n}"

    def values(self) -> tuple[float, ...]:
        """The ``n`` values, ``lo`` first and ``hi`` exactly last."""
        return tuple(float(v) for v in np.linspace(self.lo, self.hi, self.n))


def parse_grid_axis(text: str) -> GridAxis:
    """``NAME=LO:HI:N`` (``--grid``) as a :class:`GridAxis`; anything else is a :class:`UserError`."""
    example = "e.g. valve_damping=0.01:0.3:5"
    m = _GRID_RE.match(text)
    if m is None:
        raise UserError(f"grid axis {text!r} must look like NAME=LO:HI:N, {example}")
    name, lo_text, hi_text, n_text = (g.strip() for g in m.groups())
    try:
        lo, hi = float(lo_text), float(hi_text)
    except ValueError:
        raise UserError(f"grid axis {text!r}: LO ({lo_text!r}) and HI ({hi_text!r}) must be numbers, "
                        f"{example}") from None
    try:
        n = int(n_text)
    except ValueError:
        raise UserError(f"grid axis {text!r}: N ({n_text!r}) must be a whole number of values, {example}") from None
    return GridAxis(name, lo, hi, n)


def check_axis_count(axes: Sequence[GridAxis]) -> None:
    """A sweep is a line or a heatmap: 1 or 2 axes over different parameters (:class:`UserError` otherwise)."""
    if not 1 <= len(axes) <= MAX_AXES:
        raise ParameterError("axes", f"must be 1 or {MAX_AXES} grid axes (NAME=LO:HI:N each), got {len(axes)}")
    names = [a.name for a in axes]
    if len(set(names)) != len(names):
        raise UserError(f"grid axes must name different parameters, got {', '.join(names)}")


def check_axes(axes: Sequence[GridAxis], specs: Sequence[ParamSpec], env_id: str) -> tuple[ParamSpec, ...]:
    """The spec of each axis after checking the grid against ``env_id``'s parameters (:class:`UserError`)."""
    check_axis_count(axes)
    by_name = {s.name: s for s in specs}
    out = []
    for axis in axes:
        spec = by_name.get(axis.name)
        if spec is None:
            raise UserError(f"grid axis {axis.text()}: unknown parameter {axis.name!r} for {env_id}; valid "
                            f"names: {', '.join(by_name)} (see `s2r params {env_id}`)")
        for which, v in (("LO", axis.lo), ("HI", axis.hi)):
            if v < spec.low or v > spec.high:
                raise UserError(f"grid axis {axis.text()}: {which} = {v:g} is outside the valid range of "
                                f"{spec.name}, [{spec.low:g}, {spec.high:g}] {spec.unit}")
        out.append(spec)
    return tuple(out)


def grid_cells(axes: Sequence[GridAxis]) -> list[tuple[tuple[int, ...], dict[str, float]]]:
    """Every cell as ``(index, {name: value})``, row-major: the first axis varies slowest."""
    values = [a.values() for a in axes]
    return [
        (index, {a.name: values[k][i] for k, (a, i) in enumerate(zip(axes, index, strict=True))})
        for index in itertools.product(*(range(a.n) for a in axes))
    ]


# --- the summary -------------------------------------------------------------------------------------------
def worst_cell_count(cells: int) -> int:
    """How many cells the worst-10 % figure averages: ``ceil(cells / 10)``, at least 1."""
    # Integer arithmetic: ceil(0.1 * 30) is 4 in floating point.
    return max(1, -(-cells // WORST_FRACTION_DENOMINATOR))


def robustness_summary(success_rates: Iterable[float]) -> dict[str, Any]:
    """Mean success over cells and the mean of the worst 10 % of cells (the lowest ``ceil(cells / 10)``).

    Returns ``{"cells", "mean_success", "worst10_success", "worst10_cells"}``; rates must be finite and in
    [0, 1] (``ValueError`` otherwise, or for no cells).
    """
    rates = np.asarray(list(success_rates), dtype=np.float64)
    if rates.ndim != 1 or rates.size == 0:
        raise ValueError(f"robustness_summary needs a non-empty list of success rates, got shape {rates.shape}")
    if not np.all(np.isfinite(rates)) or rates.min() < 0.0 or rates.max() > 1.0:
        raise ValueError(f"success rates must be finite and within [0, 1], got {rates.tolist()}")
    k = worst_cell_count(rates.size)
    return {
        "cells": int(rates.size),
        "mean_success": float(rates.mean()),
        "worst10_success": float(np.sort(rates)[:k].mean()),
        "worst10_cells": k,
    }


# --- the policy --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PolicySource:
    """A policy file and the environment it was trained on."""

    path: str
    """The file itself (for a run directory: its ``best.pt``, else ``last.pt``)."""
    kind: str
    """``checkpoint`` or ``onnx``."""
    env_id: str | None
    """Gymnasium id trained on; ``None`` for an ONNX file without s2r metadata."""
    engine: str
    """Physics engine trained on (``mujoco`` when unknown)."""
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Extra ``gym.make`` keyword arguments trained with."""
    obs_size: int = 0
    """Observation length the policy takes."""
    action_size: int = 0
    """Action length the policy returns (normalized whatever the file's output, as ``load_policy`` gives it)."""


class LoadedPolicy(Protocol):
    """What a sweep reads of a loaded policy file (:class:`s2r.policy_files.LoadedPolicy` is one)."""

    @property
    def act(self) -> Policy: ...
    @property
    def path(self) -> Path | None: ...
    @property
    def kind(self) -> str: ...
    @property
    def env_id(self) -> str | None: ...
    @property
    def engine(self) -> str: ...
    @property
    def env_kwargs(self) -> Mapping[str, Any]: ...
    @property
    def obs_size(self) -> int | None: ...
    @property
    def action_size(self) -> int | None: ...


PolicyLoader = Callable[[str], LoadedPolicy]
"""Loads a policy file (checkpoint, run directory or ``.onnx``); bad input is a UserError. The application passes
:func:`s2r.policy_files.load_policy`: loading policy files needs the learners and the exporter, which sit above
this package. Workers receive it pickled, so it must be a module-level function."""


def resolve_policy(path: str | Path, load_policy: PolicyLoader) -> PolicySource:
    """Read what ``path`` (checkpoint, run directory or ``.onnx``) is and was trained on; bad input is a UserError."""
    loaded = load_policy(str(path))
    return PolicySource(str(loaded.path), loaded.kind, loaded.env_id, loaded.engine, dict(loaded.env_kwargs),
                        loaded.obs_size or 0, loaded.action_size or 0)


def _load_policy(source: PolicySource, load_policy: PolicyLoader) -> Policy:
    return load_policy(source.path).act


# --- the workers -------------------------------------------------------------------------------------------
def make_sweep_env(env_id: str, engine: str, env_kwargs: Mapping[str, Any]) -> tuple[gym.Env, SimEnv]:
    """The env (with gymnasium's wrappers, as ``s2r eval`` makes it) and the :class:`SimEnv` inside it."""
    if engine not in ENGINES:
        raise UserError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    try:
        env = gym.make(env_id, engine=engine, **dict(env_kwargs),
                       max_episode_steps=time_limit(env_id, env_kwargs))
    except MissingExtra:
        raise
    except ImportError as exc:
        raise UserError(f"the {engine} engine cannot be loaded: {exc}") from exc
    except (gym.error.Error, TypeError, ValueError) as exc:
        raise UserError(f"cannot make environment {env_id!r} on {engine}: {exc}") from exc
    inner = env.unwrapped
    if not isinstance(inner, SimEnv):
        env.close()
        raise UserError(f"a sweep needs an s2r simulated task with named parameters, {env_id!r} is not one")
    return env, inner


@dataclass
class SweepWorker:
    """One worker's env and policy."""

    env: gym.Env
    """The env episodes run in."""
    sim: SimEnv
    """The simulated env inside ``env``, whose parameters are set."""
    policy: Policy
    """Observation -> normalized action."""

    def apply(self, values: Mapping[str, float]) -> None:
        """Set ``values`` from the nominal model and every other parameter back to nominal."""
        self.sim.params.assign(values)

    def close(self) -> None:
        self.env.close()


@dataclass(frozen=True)
class SweepSetup:
    """Builds a :class:`SweepWorker` in each worker (picklable: it carries paths and names only)."""

    source: PolicySource
    """The policy to load."""
    env_id: str
    """Gymnasium id of the env to sweep."""
    engine: str
    """Physics engine."""
    load_policy: PolicyLoader
    """Loads ``source`` in the worker."""

    def __call__(self) -> SweepWorker:
        env, inner = make_sweep_env(self.env_id, self.engine, self.source.env_kwargs)
        try:
            return SweepWorker(env, inner, _load_policy(self.source, self.load_policy))
        except BaseException:
            env.close()
            raise


@dataclass(frozen=True)
class EpisodeOutcome:
    """What one episode of a cell gave."""

    episode_return: float
    """Sum of rewards."""
    success: bool
    """The task's success at the last step."""


def run_policy_episode(worker: SweepWorker, request: EpisodeRequest) -> EpisodeOutcome:
    """One deterministic policy episode seeded ``request.seed`` with ``request.params`` applied from nominal."""
    worker.apply(request.params)
    stats = run_episodes(worker.policy, worker.env, 1, request.seed)
    success = stats["successes"][0]
    if success is None:
        raise UserError("the env reports no success (info['success']); a sweep measures success rates")
    return EpisodeOutcome(float(stats["returns"][0]), bool(success))


# --- the sweep ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepAxis:
    """A swept parameter as the result reports it."""

    name: str
    """Parameter name."""
    unit: str
    """Its SI unit (``-`` for a dimensionless scale)."""
    nominal: float
    """Its value in the unperturbed model."""
    values: tuple[float, ...]
    """The grid values, in order."""


@dataclass(frozen=True)
class CellResult:
    """The episodes of one grid cell."""

    index: tuple[int, ...]
    """Position of the cell: one index per axis."""
    params: Mapping[str, float]
    """The swept parameters' values in this cell (every other parameter is nominal)."""
    success_rate: float
    """Fraction of episodes that ended in success."""
    return_mean: float
    """Mean episode return."""
    return_std: float
    """Standard deviation of the episode returns (population, as ``s2r eval`` reports it)."""
    episodes: int
    """Episodes run."""


@dataclass(frozen=True)
class SweepResult:
    """A finished sweep (:func:`run_sweep`)."""

    policy: str
    """The policy file evaluated."""
    policy_kind: str
    """``checkpoint`` or ``onnx``."""
    env_id: str
    """Gymnasium id of the env."""
    engine: str
    """Physics engine."""
    axes: tuple[SweepAxis, ...]
    """The swept parameters (1 or 2), the first varying slowest over :attr:`cells`."""
    cells: tuple[CellResult, ...]
    """Every cell, row-major."""
    seeds: tuple[int, ...]
    """The episode seeds, the same in every cell."""
    summary: Mapping[str, Any]
    """:func:`robustness_summary` of the cells' success rates."""
    wall_time_s: float
    """Time the episodes took, workers' start included (s)."""
    workers: int
    """Workers the episodes ran on."""

    def success_grid(self) -> np.ndarray:
        """Success rates shaped ``[len(axes[0].values)]`` or ``[len(axes[0].values), len(axes[1].values)]``."""
        return np.array([c.success_rate for c in self.cells]).reshape([len(a.values) for a in self.axes])

    def to_json(self) -> dict[str, Any]:
        """The plain data written as ``sweep.json``."""
        return {
            "format": SWEEP_FORMAT,
            "version": SWEEP_VERSION,
            "policy": self.policy,
            "policy_kind": self.policy_kind,
            "env_id": self.env_id,
            "engine": self.engine,
            "episodes": len(self.seeds),
            "seeds": list(self.seeds),
            "axes": [{"name": a.name, "unit": a.unit, "nominal": a.nominal, "values": list(a.values)}
                     for a in self.axes],
            "cells": [{"index": list(c.index), "params": dict(c.params), "success_rate": c.success_rate,
                       "return_mean": c.return_mean, "return_std": c.return_std, "episodes": c.episodes}
                      for c in self.cells],
            "summary": {**self.summary, "wall_time_s": self.wall_time_s},
            "workers": self.workers,
        }


ProgressCallback = Callable[[str], None]
"""Called with one line per finished cell (see :func:`describe_cell`)."""


def _cells_per_wave(workers: int, episodes: int) -> int:
    if workers == 1:
        return 1  # one process has no idle workers to lose at the end of a wave
    return max(1, math.ceil(EPISODES_PER_WORKER_PER_WAVE * workers / episodes))


def _cell_result(index: tuple[int, ...], params: dict[str, float], outcomes: Sequence[EpisodeOutcome]) -> CellResult:
    returns = np.array([o.episode_return for o in outcomes], dtype=np.float64)
    return CellResult(index, params, float(np.mean([o.success for o in outcomes])), float(returns.mean()),
                      float(returns.std()), len(outcomes))


def run_sweep(
    policy_path: str | Path,
    grid: Sequence[GridAxis | str],
    episodes: int,
    *,
    load_policy: PolicyLoader,
    engine: str | None = None,
    task: str | None = None,
    seed: int = 0,
    executor_config: ExecutorConfig | None = None,
    progress: ProgressCallback | None = None,
) -> SweepResult:
    """Evaluate the policy at ``policy_path`` in every cell of ``grid`` for ``episodes`` episodes each.

    ``grid`` holds 1 or 2 axes, as :class:`GridAxis` or ``NAME=LO:HI:N`` text. ``engine`` and ``task``
    default to what the policy was trained on. Episodes are seeded ``seed`` .. ``seed + episodes - 1`` in
    every cell. ``executor_config`` (default: this process only) says where episodes run; workers beyond
    the number of episodes are not started. Every input is checked before any worker starts. ``load_policy`` reads
    the policy file (here and in each worker).
    """
    if episodes < 1:
        raise ParameterError("episodes", f"must be at least 1, got {episodes}", "sweep")
    axes = [parse_grid_axis(a) if isinstance(a, str) else a for a in grid]
    check_axis_count(axes)  # before the policy is loaded: the cheapest mistake to report
    source = resolve_policy(policy_path, load_policy)
    if task is None and source.env_id is None:
        raise ParameterError("task", f"is needed: {source.path!r} carries no s2r metadata naming its task")
    env_id = resolve_env_id(task) if task is not None else str(source.env_id)
    specs = check_axes(axes, task_param_specs(env_id), env_id)
    engine = engine or source.engine
    setup = SweepSetup(source, env_id, engine, load_policy)
    _check_env(setup, axes)

    seeds = tuple(range(seed, seed + episodes))
    sweep_axes = tuple(SweepAxis(s.name, s.unit, s.nominal, a.values()) for a, s in zip(axes, specs, strict=True))
    cells = grid_cells(axes)
    config = executor_config or ExecutorConfig()
    # Each worker pays for its own env and policy, so none is started that would get no episode.
    config = replace(config, workers=min(config.workers, len(cells) * episodes))
    results: list[CellResult] = []
    start = time.perf_counter()
    with open_executor(setup, config) as ex:
        workers = ex.workers
        wave = _cells_per_wave(workers, episodes)
        for first in range(0, len(cells), wave):
            batch = cells[first:first + wave]
            requests = [EpisodeRequest(seed=s, params=params) for _, params in batch for s in seeds]
            outcomes = ex.map(run_policy_episode, requests)
            for k, (index, params) in enumerate(batch):
                cell = _cell_result(index, params, outcomes[k * episodes:(k + 1) * episodes])
                results.append(cell)
                if progress is not None:
                    progress(f"[{len(results)}/{len(cells)}] {describe_cell(cell, sweep_axes)}")
    wall = time.perf_counter() - start
    return SweepResult(
        policy=source.path, policy_kind=source.kind, env_id=env_id, engine=engine,
        axes=sweep_axes, cells=tuple(results), seeds=seeds, summary=robustness_summary(c.success_rate for c in results),
        wall_time_s=wall, workers=workers,
    )


def _check_env(setup: SweepSetup, axes: Sequence[GridAxis]) -> None:
    """Build the env once here, so that a mismatch is reported in this process rather than by a dead worker."""
    env, inner = make_sweep_env(setup.env_id, setup.engine, setup.source.env_kwargs)
    try:
        for axis in axes:
            if not inner.params.supported(axis.name):
                raise ParameterError("engine", f"{setup.engine!r} does not support parameter {axis.name!r} (grid axis "
                                     f"{axis.text()}); sweep it with another {{engine}}")
        obs = inner.observation_space.shape
        act = inner.action_space.shape
        if obs != (setup.source.obs_size,) or act != (setup.source.action_size,):
            raise UserError(f"policy {setup.source.path!r} takes {setup.source.obs_size} observations and gives "
                            f"{setup.source.action_size} actions, but {setup.env_id} has {obs[0] if obs else '?'} "
                            f"and {act[0] if act else '?'}; sweep it on the task it was trained for")
    finally:
        env.close()


# --- output ------------------------------------------------------------------------------------------------
def default_out_dir(policy: str | Path, axes: Sequence[GridAxis]) -> Path:
    """``RUN_DIR/sweep_NAME[_NAME2]`` for a run directory, ``DIR/STEM_sweep_NAME[_NAME2]`` beside a policy file.

    The parameter names are part of the directory so that sweeps over different parameters do not overwrite
    each other.
    """
    p = Path(policy)
    names = "_".join(a.name for a in axes)
    if p.is_dir():
        return p / f"sweep_{names}"
    return p.parent / f"{p.stem}_sweep_{names}"


def check_out_dir(out: str | Path) -> Path:
    """``out`` as a directory to write into; an existing file there is a :class:`UserError`."""
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise UserError(f"sweep output {str(p)!r} is a file; expected a directory (created if missing) for "
                        f"{JSON_NAME} and {PNG_NAME}")
    return p


def _param_label(axis: SweepAxis) -> str:
    return axis.name if axis.unit == "-" else f"{axis.name} ({axis.unit})"


def _ticks(values: Sequence[float]) -> tuple[list[int], list[str]]:
    step = max(1, math.ceil(len(values) / MAX_TICKS_PER_AXIS))
    positions = list(range(0, len(values), step))
    return positions, [f"{values[i]:.3g}" for i in positions]


def plot_sweep_png(result: SweepResult) -> bytes:
    """PNG heatmap of success rate per cell (a one-row heatmap for one axis), colour scale 0..1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_axis = result.axes[0]
    y_axis = result.axes[1] if len(result.axes) > 1 else None
    # Rows of the image are the second axis, columns the first: the first --grid reads along x.
    rates = result.success_grid().reshape(len(x_axis.values), -1).T
    rows, cols = rates.shape
    width = min(16.0, max(5.0, 0.7 * cols + 2.5))
    height = min(12.0, max(2.6, 0.55 * rows + 2.0)) if y_axis is not None else 2.8
    fig, ax = plt.subplots(figsize=(width, height))
    image = ax.imshow(rates, origin="lower", aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0,
                      interpolation="nearest")
    bar = fig.colorbar(image, ax=ax)
    bar.set_label("success rate")
    positions, labels = _ticks(x_axis.values)
    ax.set_xticks(positions, labels)
    ax.set_xlabel(_param_label(x_axis))
    if y_axis is not None:
        positions, labels = _ticks(y_axis.values)
        ax.set_yticks(positions, labels)
        ax.set_ylabel(_param_label(y_axis))
    else:
        ax.set_yticks([])
    if cols <= MAX_ANNOTATED_CELLS_PER_AXIS and rows <= MAX_ANNOTATED_CELLS_PER_AXIS:
        size = 9 if max(rows, cols) <= 10 else 7
        for r in range(rows):
            for c in range(cols):
                v = float(rates[r, c])
                ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=size,
                        color="white" if v < _ANNOTATION_DARK_BELOW else "black")
    s = result.summary
    # A run's files are all best.pt or last.pt: the run directory is what tells one sweep from another.
    name = "/".join(Path(result.policy).parts[-2:])
    ax.set_title(f"{name} on {result.env_id} [{result.engine}]\n"
                 f"success rate, {len(result.seeds)} episodes per cell; mean {s['mean_success']:.2f}, "
                 f"worst 10% of cells {s['worst10_success']:.2f}", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def write_sweep(result: SweepResult, out: str | Path) -> tuple[Path, Path]:
    """Write ``sweep.json`` and ``sweep.png`` into the directory ``out``, each atomically; returns their paths."""
    directory = check_out_dir(out)
    json_path, png_path = directory / JSON_NAME, directory / PNG_NAME
    write_text_atomic(json_path, json.dumps(result.to_json(), indent=2) + "\n")
    write_bytes_atomic(png_path, plot_sweep_png(result))
    return json_path, png_path


def describe_cell(cell: CellResult, axes: Sequence[SweepAxis]) -> str:
    """One line for a finished cell: its parameter values with units, success rate and return."""
    where = ", ".join(f"{a.name}={cell.params[a.name]:.4g}" + ("" if a.unit == "-" else f" {a.unit}") for a in axes)
    return (f"{where}: success {cell.success_rate:.2f}, return {cell.return_mean:.2f} ± {cell.return_std:.2f} "
            f"({cell.episodes} episodes)")
