"""ONNX export of trained actors and the onnxruntime policy the robot runs.

``import export`` stays light (no torch, no onnxruntime): :class:`OnnxPolicy` and :func:`export_module` are
imported on first use. The exporters live in :mod:`export.onnx_export` (s2r checkpoints, and any torch actor with
``export_module``) and :mod:`export.sb3_export` (Stable-Baselines3 models). Commands load and evaluate a policy
file through :mod:`s2r.policy_files`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from export.onnx_export import ObsNorm, export_module
    from export.onnx_policy import OnnxPolicy

__all__ = ["ObsNorm", "OnnxPolicy", "export_module"]


def __getattr__(name: str) -> Any:
    # Imported on first use: torch and onnxruntime load only when one of these is asked for.
    if name == "OnnxPolicy":
        from export import onnx_policy

        return onnx_policy.OnnxPolicy
    if name in ("ObsNorm", "export_module"):
        from export import onnx_export

        return getattr(onnx_export, name)
    raise AttributeError(f"module 'export' has no attribute {name!r}")
