"""ONNX export of trained actors and the onnxruntime policy the robot runs.

``import export`` stays light (no torch, no onnxruntime): :class:`OnnxPolicy` is imported on first use; the
exporter lives in :mod:`export.onnx_export`. Commands load and evaluate a policy file through
:mod:`s2r.policy_files`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from export.onnx_policy import OnnxPolicy

__all__ = ["OnnxPolicy"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from export import onnx_policy

        return getattr(onnx_policy, name)
    raise AttributeError(f"module 'export' has no attribute {name!r}")
