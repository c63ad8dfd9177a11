"""ONNX export of trained actors and the onnxruntime policy the robot runs.

``import export`` stays light (no torch, no onnxruntime): :class:`OnnxPolicy` and
:func:`evaluate_onnx` are imported on first use; the exporter lives in :mod:`export.onnx_export`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from export.onnx_policy import OnnxPolicy, evaluate_onnx

__all__ = ["OnnxPolicy", "evaluate_onnx"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from export import onnx_policy

        return getattr(onnx_policy, name)
    raise AttributeError(f"module 'export' has no attribute {name!r}")
