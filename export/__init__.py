"""ONNX export of trained actors and the onnxruntime policy the robot runs.

``import export`` stays light (no torch, no onnxruntime): the public names are imported from their modules on first
use. The exporters live in :mod:`export.onnx_export` (s2r checkpoints, and any torch actor with ``export_module``)
and :mod:`export.sb3_export` (Stable-Baselines3 models), their configuration and results in :mod:`export.config`
(no torch). Commands load and evaluate a policy file through :mod:`s2r.policy_files`; a script exports with
:func:`s2r.api.export`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from s2r.core.lazy import lazy_exports

if TYPE_CHECKING:
    from export.config import ExportConfig as ExportConfig
    from export.config import ExportResult as ExportResult
    from export.config import Verification as Verification
    from export.config import VerificationError as VerificationError
    from export.metadata import PolicyMetadata as PolicyMetadata
    from export.onnx_export import ObsNorm as ObsNorm
    from export.onnx_export import export_module as export_module
    from export.onnx_export import export_policy as export_policy
    from export.onnx_policy import OnnxPolicy as OnnxPolicy
    from export.sb3_export import export_sb3 as export_sb3

_PUBLIC: dict[str, tuple[str, ...]] = {
    "config": ("ExportConfig", "ExportResult", "Verification", "VerificationError"),
    "metadata": ("PolicyMetadata",),
    "onnx_policy": ("OnnxPolicy",),
    "onnx_export": ("ObsNorm", "export_module", "export_policy"),
    "sb3_export": ("export_sb3",),
}
"""Where each public name lives, imported on first use: torch loads only for ``ObsNorm`` and the exporters,
onnxruntime for them and ``OnnxPolicy``."""
__getattr__, __dir__, __all__ = lazy_exports(__name__, _PUBLIC)
