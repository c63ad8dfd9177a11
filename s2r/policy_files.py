"""Load a policy from whatever file the user names: the glue between the command line and the packages.

This lives in ``s2r`` (the command-line layer) rather than in ``sim`` so that ``sim`` never imports
``policies`` or ``export``: dependencies point one way.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from s2r.errors import UserError

Policy = Callable[[np.ndarray], np.ndarray]


def _import_attr(module: str, attr: str, purpose: str) -> Any:
    """``module.attr``, imported on demand; a missing module or name is a ``UserError`` saying what needed it."""
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"{purpose} needs {module}.{attr}, which is not available: {exc}") from exc


def load_policy_file(path: Path) -> Policy:
    """A policy from ``path``: ``.onnx`` through ``export.OnnxPolicy``, anything else (a checkpoint file or a
    training run directory) through ``policies.checkpoint.load_policy``."""
    if not path.exists():
        raise UserError(f"policy {str(path)!r} does not exist (expected a checkpoint, run directory or .onnx file)")
    if path.suffix.lower() == ".onnx":
        onnx_policy = _import_attr("export", "OnnxPolicy", f"running the ONNX policy {str(path)!r}")
        policy: Policy = onnx_policy(path)
        return policy
    load_policy = _import_attr("policies.checkpoint", "load_policy", f"loading the checkpoint {str(path)!r}")
    loaded: Policy = load_policy(path)
    return loaded
