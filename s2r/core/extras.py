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
