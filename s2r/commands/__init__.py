"""The ``s2r`` subcommands, one module per group; each has ``register(subparsers)`` (see :mod:`s2r.cli`)."""
