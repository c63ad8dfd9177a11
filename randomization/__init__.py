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
