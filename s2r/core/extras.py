"""Optional dependencies: a missing one is named together with the extra that installs it."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from collections.abc import Iterator


class MissingExtra(ImportError):
    """An optional dependency is not installed."""


def require(module: str, *, extra: str, purpose: str) -> None:
    """Raise :class:`MissingExtra` naming ``extra`` when ``module`` cannot be imported."""
    if importlib.util.find_spec(module) is None:
        raise MissingExtra(
            f"{purpose} needs the Python package {module!r}, which is not installed; "
            f"install it with: pip install 's2r[{extra}]'"
        )


def require_torch(purpose: str) -> None:
    """Raise :class:`MissingExtra` unless torch (the ``train`` extra: training, export, fine-tuning) is installed.

    The base install deploys ONNX files and runs the emulator without it, as on a robot's own computer.
    """
    require("torch", extra="train", purpose=purpose)


@contextlib.contextmanager
def quiet_native_output() -> Iterator[None]:
    """The process's standard output and error (file descriptors 1 and 2, so C code's ``printf`` too) go nowhere
    inside; Python exceptions still propagate.

    For importing an extension that prints a banner (PyBullet's "pybullet build time: ..." on stderr), which would
    otherwise land in every command's output.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 1)
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)
