"""Export a trained valve-angle estimator (:class:`policies.perception.AngleNet`, or several read together,
:class:`policies.perception.AngleEnsemble`) to ONNX, verified before it appears.

The graph is the whole network, preprocessing included: input ``frames`` uint8 ``(batch, H, W, 3)`` (dynamic batch),
outputs ``angle`` ``(batch,)`` (rad) and ``cos_sin`` ``(batch, 2)``; the metadata is
:class:`export.perception_model.PerceptionMetadata`. The file is written under a temporary name, run through
onnxruntime on the given frames and on random ones, compared with PyTorch, and renamed into place only when they agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from numpy.typing import NDArray

from export.config import DEFAULT_OPSET
from export.onnx_export import torch_to_onnx
from export.perception_model import (
    INPUT_NAME,
    OUTPUT_ANGLE,
    OUTPUT_COS_SIN,
    OnnxAngleEstimator,
    PerceptionMetadata,
)
from policies.perception import AngleEnsemble, AngleNet, predict_angles
from s2r.core.atomicio import atomic_path
from s2r.core.errors import UserError
from sim.tasks.actions import wrap_angle

MAX_ANGLE_DIFF_RAD = 1e-4
"""Largest |onnx - torch| angle (rad, wrapped) an export may show."""
MAX_COS_SIN_DIFF = 1e-5
"""Largest |onnx - torch| of the unit direction."""
RANDOM_FRAMES = 16
"""Frames of uniform random pixels verified besides the given ones (inputs far from any render)."""


@dataclass(frozen=True)
class PerceptionVerification:
    """onnxruntime against PyTorch on the same frames."""

    frames: int
    """Frames compared."""
    max_angle_diff_rad: float
    """Largest wrapped angle difference (rad)."""
    max_cos_sin_diff: float
    """Largest difference of the unit direction."""

    @property
    def passed(self) -> bool:
        return self.max_angle_diff_rad <= MAX_ANGLE_DIFF_RAD and self.max_cos_sin_diff <= MAX_COS_SIN_DIFF




def verify_estimator(model: AngleNet | AngleEnsemble, estimator: OnnxAngleEstimator,
                     frames: NDArray[np.uint8]) -> PerceptionVerification:
    """Compare ``estimator`` (the ONNX file) with ``model`` on ``frames``."""
    angle_t, cos_sin_t = predict_angles(model, frames)
    angle_o, cos_sin_o = estimator.predict(frames)
    return PerceptionVerification(
        len(frames), float(np.max(np.abs(wrap_angle(angle_o.astype(np.float64) - angle_t)))),
        float(np.max(np.abs(cos_sin_o.astype(np.float64) - cos_sin_t))))


def export_estimator(model: AngleNet | AngleEnsemble, out_path: str | Path, metadata: PerceptionMetadata,
                     frames: NDArray[np.uint8], seed: int = 0,
                     opset: int = DEFAULT_OPSET) -> PerceptionVerification:
    """Write ``model`` (eval mode) to ``out_path`` with ``metadata``, after onnxruntime and PyTorch agree on
    ``frames`` and on :data:`RANDOM_FRAMES` random ones; otherwise a ``UserError`` and nothing written."""
    out = Path(out_path)
    if out.suffix.lower() != ".onnx":
        raise UserError(f"output {str(out)!r} must end in .onnx")
    model.eval()
    example = (torch.zeros(2, model.height, model.width, 3, dtype=torch.uint8),)
    proto = torch_to_onnx(model, example, [INPUT_NAME], [OUTPUT_ANGLE, OUTPUT_COS_SIN], opset, "the angle estimator",
                          metadata.to_props(), "s2r train-perception")
    noise = np.random.default_rng(seed).integers(0, 256, (RANDOM_FRAMES, model.height, model.width, 3), np.uint8)
    check = np.concatenate([np.asarray(frames, dtype=np.uint8), noise])
    with atomic_path(out) as tmp:
        onnx.save(proto, str(tmp))
        verification = verify_estimator(model, OnnxAngleEstimator(tmp), check)
        if not verification.passed:
            raise UserError(f"export of the angle estimator failed verification: onnxruntime and PyTorch differ by "
                            f"up to {verification.max_angle_diff_rad:.3g} rad (limit {MAX_ANGLE_DIFF_RAD:g}) and "
                            f"{verification.max_cos_sin_diff:.3g} in (cos, sin) (limit {MAX_COS_SIN_DIFF:g}) over "
                            f"{verification.frames} frames; no file was written")
    return verification
