"""Argument types shared by the packages' command lines (``type=`` of ``argparse``), the mapping of a library's
parameter errors onto their flags, and the ``--json`` flag of the commands that produce a result."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from s2r.core.errors import ParameterError, UserError


def seed(text: str) -> int:
    """A ``--seed`` value: an integer >= 0, as numpy's and gymnasium's seeding require (a negative one ended in a
    traceback from deep inside a run)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0 (numpy refuses a negative seed), got {value}")
    return value


def flag_error(exc: ParameterError, args: argparse.Namespace, flags: Mapping[str, str] | None = None) -> UserError:
    """``exc`` naming the flag its parameter came from (``--out``), when the command has that flag or ``flags`` maps
    it (``{"axes": "--grid"}``); unchanged otherwise (a parameter of a library object the command built itself).
    Another parameter the message names keeps its bare name unless the command has a flag for it too."""
    known = {*vars(args), *(flags or {})}
    if exc.parameter not in known:
        return exc
    bare = {name: name for name in exc.mentions if name not in known}
    return exc.as_flag(flags={**bare, **(flags or {})})


def add_json_flag(parser: argparse.ArgumentParser, what: str) -> None:
    """``--json`` on a command that produces a result: it then prints ``what`` as one JSON object, the only line on
    stdout, instead of its text (progress and warnings stay on stderr). See :func:`print_result`."""
    parser.add_argument("--json", action="store_true", help=f"print one JSON object ({what}) instead of the text, "
                        "the only line on stdout")


def print_result(as_json: bool, result: Mapping[str, Any], lines: Iterable[str]) -> None:
    """A command's result on stdout: ``result`` as one JSON line with ``as_json`` (``--json``), else its text
    ``lines``; flushed either way."""
    if as_json:
        print(json.dumps(result))
    else:
        for line in lines:
            print(line)
    sys.stdout.flush()
