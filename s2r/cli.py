"""The ``s2r`` command line: thin argument parsing over the packages.

Each package that offers commands has a ``cli`` module with ``register(subparsers)``, which adds its
subcommands and sets ``func`` (returning the exit code) on each.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from s2r import __version__, cliargs
from s2r.core.errors import UserError
from s2r.core.extras import MissingExtra

COMMAND_MODULES = (
    "s2r.commands.sim",
    "s2r.commands.policies",
    "s2r.commands.randomization",
    "s2r.commands.export",
    "s2r.commands.perception",
    "s2r.commands.emulator",
    "s2r.commands.robot",
    "s2r.commands.calibrate",
    "s2r.demo",
)
"""Modules whose ``register`` adds subcommands, in ``s2r --help`` order."""
PATH_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError)
"""Errors of a path given on the command line (an output directory that is a file, a port one may not open): the
user's to fix, so a one-line message and exit 2, not a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = cliargs.Parser(
        prog="s2r",
        description="s2r: train a control policy in simulation, run it on the robot.",
    )
    parser.add_argument("--version", action="version", version=f"s2r {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except (UserError, MissingExtra, *PATH_ERRORS) as exc:
        print(f"s2r {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
