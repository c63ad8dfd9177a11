"""Argument types shared by the packages' command lines (``type=`` of ``argparse``), and the mapping of a library's
parameter errors onto their flags."""

from __future__ import annotations

import argparse
from collections.abc import Mapping

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
