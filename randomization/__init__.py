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
    from randomization.adapt import AdaptConfig as AdaptConfig
    from randomization.adapt import AdaptResult as AdaptResult
    from randomization.distributions import ParameterDistribution as ParameterDistribution
    from randomization.distributions import load_distribution as load_distribution
    from randomization.distributions import save_distribution as save_distribution
    from randomization.distributions import task_param_specs as task_param_specs
    from randomization.epopt import EpoptConfig as EpoptConfig
    from randomization.parallel import ExecutorConfig as ExecutorConfig
    from randomization.simlogs import SimLogConfig as SimLogConfig
    from randomization.simlogs import record_sim_logs as record_sim_logs
    from randomization.sweep import GridAxis as GridAxis
    from randomization.sweep import SweepResult as SweepResult
    from randomization.sweep import parse_grid_axis as parse_grid_axis
    from randomization.sweep import run_sweep as run_sweep
    from randomization.wrapper import RandomizedEnv as RandomizedEnv

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
__getattr__, __dir__, __all__ = lazy_exports(__name__, _PUBLIC)
