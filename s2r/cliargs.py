"""Argument types shared by the packages' command lines (``type=`` of ``argparse``)."""

from __future__ import annotations

import argparse


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
