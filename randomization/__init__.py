"""Domain randomization and source-distribution adaptation over a task's named simulator parameters.

Modules (imported on demand, so that importing one does not load the simulator for the others):

- :mod:`randomization.distributions`: uniform, log-uniform, (truncated) normal and joint-Gaussian
  distributions, read from and written to YAML and validated against the task's parameters.
- :mod:`randomization.wrapper`: :class:`~randomization.wrapper.RandomizedEnv`, new values every episode.
- :mod:`randomization.likelihood` and :mod:`randomization.adapt`: fit a distribution to trajectory logs
  (``s2r adapt``).
- :mod:`randomization.simlogs`: trajectory logs recorded in simulation (``s2r simlogs``).
- :mod:`randomization.parallel`: simulations on local worker processes or a Ray cluster.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from s2r.core.lazy import lazy_exports

if TYPE_CHECKING:
    from randomization.adapt import AdaptConfig, AdaptResult
    from randomization.distributions import (
        ParameterDistribution,
        load_distribution,
        save_distribution,
        task_param_specs,
    )
    from randomization.epopt import EpoptConfig
    from randomization.parallel import ExecutorConfig
    from randomization.simlogs import SimLogConfig, record_sim_logs
    from randomization.sweep import GridAxis, SweepResult, parse_grid_axis, run_sweep
    from randomization.wrapper import RandomizedEnv

__all__ = [
    "AdaptConfig",
    "AdaptResult",
    "EpoptConfig",
    "ExecutorConfig",
    "GridAxis",
    "ParameterDistribution",
    "RandomizedEnv",
    "SimLogConfig",
    "SweepResult",
    "load_distribution",
    "parse_grid_axis",
    "record_sim_logs",
    "run_sweep",
    "save_distribution",
    "task_param_specs",
]
_PUBLIC: dict[str, tuple[str, ...]] = {
    "distributions": ("ParameterDistribution", "load_distribution", "save_distribution", "task_param_specs"),
    "wrapper": ("RandomizedEnv",),
    "epopt": ("EpoptConfig",),
    "adapt": ("AdaptConfig", "AdaptResult"),
    "sweep": ("GridAxis", "SweepResult", "parse_grid_axis", "run_sweep"),
    "simlogs": ("SimLogConfig", "record_sim_logs"),
    "parallel": ("ExecutorConfig",),
}
"""Where each public name lives, imported on first use. The adaptation itself: :func:`s2r.api.adapt` (or
:func:`randomization.adapt.adapt`)."""
__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
