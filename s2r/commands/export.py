"""``s2r export``: a checkpoint's deterministic policy to a verified ONNX file. Heavy imports happen in the command."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from s2r.core.extras import require_torch

DEFAULT_SAMPLES = 2000


def register(sub: Any) -> None:
    """Add ``export``."""
    p = sub.add_parser(
        "export",
        help="export a trained policy to ONNX (normalization, actor and action mapping in one graph)",
        description="Export the deterministic actor (tanh of the mean) of a checkpoint, or of a run directory's "
        "best.pt (else last.pt), with its observation normalization to ONNX: input 'obs' (float32, batch x O), "
        "output 'action'. For s2r tasks the action is the normalized action in [-1, 1]; for other gymnasium "
        "envs it is mapped onto the env's action bounds. The file records the task, observation layout, joint "
        "names, control period and training provenance. Before the file appears, PyTorch and onnxruntime run "
        "the same observations (random and from rollouts of the policy); a difference above 1e-5 fails the "
        "export and writes nothing.",
    )
    p.add_argument("path", metavar="RUN_DIR|CHECKPOINT",
                   help="a training run directory (its best.pt, else last.pt) or a checkpoint (.pt): what the ONNX "
                   "file is made from")
    p.add_argument("--out", metavar="FILE.onnx", help="ONNX file to write (default: policy.onnx in the run "
                   "directory, or beside the checkpoint file)")
    p.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, metavar="N",
                   help="observations to verify with, at least 1000")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (the summary) alone, without the text line before it")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    """``s2r export``; returns the exit code."""
    require_torch("s2r export")
    from export.onnx_export import ExportConfig, VerificationError, export_policy

    try:
        result = export_policy(args.path, args.out, ExportConfig(samples=args.samples))
    except VerificationError as exc:
        print(json.dumps({"path": None, "verification": exc.verification.to_dict()}))
        sys.stdout.flush()
        raise
    summary = result.to_dict()
    if not args.json:
        v = result.verification
        meta = result.metadata
        print(f"wrote {result.path} from {result.checkpoint} ({meta.algo}, step {meta.training_steps}, "
              f"{meta.env_id}, {meta.action_output} actions); verified on {v.samples} observations "
              f"({v.random_samples} random, {v.rollout_samples} from {v.rollout_episodes} rollout episodes): "
              f"max |onnx - torch| = {v.max_abs_diff:.2e} <= {v.tolerance:g}")
    print(json.dumps(summary))
    sys.stdout.flush()
    return 0
