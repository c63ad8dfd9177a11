"""What an ONNX export is asked for and what it reports: :class:`ExportConfig`, :class:`ExportResult` and
:class:`VerificationError`, importable without torch (the exporters, :mod:`export.onnx_export` and
:mod:`export.sb3_export`, need it; ``s2r.api`` and the command line name these types before loading torch)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from export.metadata import PolicyMetadata
from s2r.core.errors import UserError

MIN_OPSET = 17
DEFAULT_OPSET = 20
"""The opset torch 2.13's dynamo exporter emits by default."""
MIN_VERIFY_SAMPLES = 1000
MAX_ABS_DIFF = 1e-5
"""Largest allowed difference between the PyTorch and onnxruntime actions (action units), beyond what float32
rounding alone allows (:data:`FLOAT32_ALLOWANCE`)."""
FLOAT32_ALLOWANCE = 4.0
"""Factor on the network's own float32 rounding r (PyTorch float32 against float64) added to the tolerance.
onnxruntime's kernels sum in another order: on the wide random probes a goal-claw policy (CrossQ, 150k steps) had
r = 1.0e-5, onnxruntime's actions lay 2.2 r from float64 and 2.8 r from PyTorch's. A factor 4 leaves room for
that and is still far below what a wrong graph gives (one output bias moved by 1e-3 fails: tests/test_export.py).
"""


@dataclass(frozen=True)
class ExportConfig:
    """How to export and verify."""

    samples: int = 2000
    """Observations run through both PyTorch and onnxruntime (at least :data:`MIN_VERIFY_SAMPLES`)."""
    rollout_fraction: float = 0.5
    """Share of the samples taken from simulated rollouts of the policy; the rest are random."""
    tolerance: float = MAX_ABS_DIFF
    """Largest allowed max-abs difference between the two runtimes (action units), beyond float32 rounding."""
    float32_allowance: float = FLOAT32_ALLOWANCE
    """Factor on the network's own float32 rounding added to ``tolerance`` (0: the bare tolerance)."""
    opset: int = DEFAULT_OPSET
    """ONNX opset of the default domain (at least :data:`MIN_OPSET`)."""
    seed: int = 0
    """Seed of the random observations and of the rollouts' resets."""

    def validated(self) -> ExportConfig:
        """``self``, or :class:`UserError` naming the bad field."""
        if self.samples < MIN_VERIFY_SAMPLES:
            raise UserError(f"samples must be at least {MIN_VERIFY_SAMPLES}, got {self.samples}")
        if not 0.0 <= self.rollout_fraction <= 1.0:
            raise UserError(f"rollout_fraction must be in [0, 1], got {self.rollout_fraction}")
        if not 0.0 < self.tolerance <= MAX_ABS_DIFF:
            raise UserError(f"tolerance must be in (0, {MAX_ABS_DIFF}], got {self.tolerance}")
        if not (math.isfinite(self.float32_allowance) and self.float32_allowance >= 0.0):
            raise UserError(f"float32_allowance must be a finite number >= 0, got {self.float32_allowance}")
        if self.opset < MIN_OPSET:
            raise UserError(f"opset must be at least {MIN_OPSET}, got {self.opset}")
        return self


@dataclass(frozen=True)
class Verification:
    """PyTorch vs onnxruntime on the same observations."""

    samples: int
    """Observations compared."""
    random_samples: int
    """Of which drawn at random from the observation space."""
    rollout_samples: int
    """Of which seen in rollouts of the policy."""
    rollout_episodes: int
    """Episodes (started or finished) the rollout samples came from."""
    max_abs_diff: float
    """Largest difference over all samples, the batched and the one-at-a-time runs (action units)."""
    max_abs_diff_batch: float
    """Largest difference when all samples run as one batch."""
    max_abs_diff_single: float
    """Largest difference when each sample runs alone (batch 1, as on the robot)."""
    tolerance: float
    """The configured limit (action units), before the float32 allowance."""
    float32_rounding: float
    """Largest difference between PyTorch's float32 actions and the same network run in float64 over the same
    samples: how far float32 rounding alone moves this network's actions (action units)."""
    limit: float
    """The limit ``max_abs_diff`` had to stay under: ``tolerance`` plus the configured ``float32_allowance`` times
    ``float32_rounding``."""
    passed: bool
    """Whether ``max_abs_diff <= limit`` (and every action is finite)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ExportResult:
    """What ``export_policy`` wrote."""

    path: Path
    """The ONNX file."""
    checkpoint: Path | None
    """The checkpoint (or other model file, e.g. a Stable-Baselines3 zip) exported; ``None`` for a module given
    without one (:func:`export_module`)."""
    metadata: PolicyMetadata
    """The metadata written into the file."""
    verification: Verification
    """The check that let the file be written."""
    opset: int
    """Opset of the default domain."""
    ir_version: int
    """ONNX IR version of the file."""
    export_s: float
    """Wall time of the whole export and verification (s)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "path": str(self.path),
            "checkpoint": None if self.checkpoint is None else str(self.checkpoint),
            "env_id": self.metadata.env_id,
            "action_output": self.metadata.action_output,
            "opset": self.opset,
            "ir_version": self.ir_version,
            "export_s": round(self.export_s, 3),
            "verification": self.verification.to_dict(),
        }


class VerificationError(UserError):
    """The exported graph disagrees with PyTorch; no file was written."""

    def __init__(self, message: str, verification: Verification) -> None:
        super().__init__(message)
        self.verification = verification
