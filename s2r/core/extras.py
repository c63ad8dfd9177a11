"""Optional dependencies: a missing one is named together with the extra that installs it."""

from __future__ import annotations

import importlib.util


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
