"""``s2r export``: a checkpoint's (or a Stable-Baselines3 model's) deterministic policy to a verified ONNX file.
Heavy imports happen in the command."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from export.config import ExportConfig, VerificationError
from export.sb3_files import ACTIVATIONS
from s2r.api import ExportJob, PixelsExportJob, Sb3Model, export, export_pixels, export_pixels_run, pixels_run
from s2r.core.errors import UserError
from s2r.core.extras import require_torch
from sim.engines import ENGINES

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
        "export and writes nothing. "
        "With --from-sb3 MODEL.zip the policy comes from Stable-Baselines3 instead (SAC, TD3/DDPG, sb3-contrib "
        "CrossQ; MlpPolicy) and --task names the environment it trained on; the file is the same contract. "
        "Trust boundary: the zip and the VecNormalize file are never unpickled as they are. The weights load with "
        "torch.load(weights_only=True) (tensors only); the pickled entries of the zip's data are only parsed "
        "(pickletools), never run; the VecNormalize pickle is read by an unpickler that builds numpy arrays and "
        "inert records of the SB3/gymnasium objects in it and refuses to import anything else (os.system, any "
        "class). Still convert only files you would train with: the weights decide what the robot does.",
    )
    p.add_argument("path", metavar="RUN_DIR|CHECKPOINT", nargs="?",
                   help="a training run directory (its best.pt, else last.pt) or a checkpoint (.pt): what the ONNX "
                   "file is made from (not with --from-sb3); with --perception also an exported state policy (.onnx)")
    p.add_argument("--from-sb3", metavar="MODEL.zip", dest="from_sb3",
                   help="export a Stable-Baselines3 model saved with model.save (SAC, TD3, DDPG or sb3-contrib "
                   "CrossQ with MlpPolicy) instead of an s2r checkpoint; needs --task")
    p.add_argument("--vecnormalize", metavar="STATS.pkl",
                   help="with --from-sb3: the VecNormalize statistics the model trained with (VecNormalize.save); "
                   "its observation normalization goes into the graph. Read with a restricted unpickler that "
                   "refuses anything but numpy arrays and VecNormalize's own records")
    p.add_argument("--task", help="with --from-sb3: the environment the model trained on, an s2r task "
                   "(dclaw-turn) or a gymnasium id (Pendulum-v1)")
    p.add_argument("--engine", choices=ENGINES, default="mujoco",
                   help="with --from-sb3: the physics engine of an s2r task")
    p.add_argument("--activation", choices=sorted(ACTIVATIONS.values()),
                   help="with --from-sb3: the actor's hidden activation, when the zip does not say (default: read "
                   "from the zip's policy_kwargs, else SB3's relu)")
    p.add_argument("--out", metavar="FILE.onnx", help="ONNX file to write (default: policy.onnx in the run "
                   "directory, or beside the checkpoint file; with --from-sb3 the zip's name with .onnx)")
    p.add_argument("--perception", metavar="MODEL.onnx",
                   help="join the state policy (an exported .onnx file, or what is exported first) and this "
                   "valve-angle estimator (s2r train-perception's perception.onnx) into one camera policy: inputs "
                   "'image' (uint8, batch x H x W x 3), 'joint_pos', 'last_action', 'goal'; outputs 'action' and "
                   "'angle' (the estimate). Written (default: the state policy file's name with _pixels.onnx) only "
                   "when onnxruntime running it gives the actions of the state policy behind the estimator, on the "
                   "camera env's observations and random ones; no torch for an .onnx state policy")
    p.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, metavar="N",
                   help="observations to verify with, at least 1000")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (the summary) alone, without the text line before it")
    p.set_defaults(func=run_export)


def _check_flags(args: argparse.Namespace) -> None:
    if args.from_sb3 is not None:
        if args.path is not None:
            raise UserError(f"give either a checkpoint ({args.path!r}) or --from-sb3, not both")
        if not args.task:
            raise UserError("--from-sb3 needs --task: the s2r task or gymnasium id the model trained on")
        return
    if args.path is None:
        raise UserError("s2r export needs a run directory or checkpoint, or --from-sb3 MODEL.zip --task TASK")
    if Path(args.path).suffix.lower() == ".onnx" and args.perception is None:
        raise UserError(f"{args.path!r} is exported already; an .onnx file is exported again only with --perception "
                        "(into a camera policy)")
    given = [f for f, v in (("--vecnormalize", args.vecnormalize), ("--task", args.task),
                            ("--activation", args.activation)) if v is not None]
    if given:
        raise UserError(f"{', '.join(given)} only go{'es' if len(given) == 1 else ''} with --from-sb3 (a checkpoint "
                        "records its task and normalization)")


def run_export(args: argparse.Namespace) -> int:
    """``s2r export``: :func:`s2r.api.export` (with ``--perception`` :func:`s2r.api.export_pixels`); returns the exit
    code."""
    _check_flags(args)
    config = ExportConfig(samples=args.samples)
    source: Path | Sb3Model
    if args.from_sb3 is not None:
        source = Sb3Model(Path(args.from_sb3), args.task, Path(args.vecnormalize) if args.vecnormalize else None,
                          args.engine, args.activation)
    else:
        source = Path(args.path)
    if args.perception is not None:
        return _run_export_pixels(args, source, config)
    require_torch("s2r export")
    checkpoint = pixels_run(source)
    if checkpoint is not None:
        return _run_export_pixels_run(args, checkpoint, config)
    try:
        result = export(ExportJob(source, Path(args.out) if args.out else None, config))
    except VerificationError as exc:
        print(json.dumps({"path": None, "verification": exc.verification.to_dict()}))
        sys.stdout.flush()
        raise
    summary = result.to_dict()
    if not args.json:
        v = result.verification
        meta = result.metadata
        made = meta.provenance
        print(f"wrote {result.path} from {result.checkpoint} ({made.algo}, step {made.training_steps}, "
              f"{meta.env_id}, {meta.action_output} actions); verified on {v.samples} observations "
              f"({v.random_samples} random, {v.rollout_samples} from {v.rollout_episodes} rollout episodes): "
              f"max |onnx - torch| = {v.max_abs_diff:.2e} <= {v.limit:.2g} ({v.tolerance:g} + float32 rounding)")
    print(json.dumps(summary))
    sys.stdout.flush()
    return 0


def _run_export_pixels(args: argparse.Namespace, source: Path | Sb3Model, config: ExportConfig) -> int:
    if not (isinstance(source, Path) and source.suffix.lower() == ".onnx"):
        require_torch("s2r export")
    try:
        result = export_pixels(PixelsExportJob(source, Path(args.perception), Path(args.out) if args.out else None,
                                               config))
    except VerificationError as exc:
        print(json.dumps({"path": None, "verification": exc.verification.to_dict()}))
        sys.stdout.flush()
        raise
    if not args.json:
        v = result.pixels.verification
        print(f"wrote {result.pixels.path} ({result.pixels.env_id}: {result.state_policy} behind {args.perception}); "
              f"verified on {v.rollout_observations + v.random_observations} observations ({v.random_observations} "
              f"random): max |action - modular policy's| = {v.max_action_diff:.2e} <= {v.action_limit:g}, "
              f"max |angle - estimator's| = {v.max_angle_diff_rad:.2e} rad")
    print(json.dumps(result.to_dict()))
    sys.stdout.flush()
    return 0


def _run_export_pixels_run(args: argparse.Namespace, checkpoint: Path, config: ExportConfig) -> int:
    made = export_pixels_run(checkpoint, Path(args.out) if args.out else None, config.seed)
    v = made.verification
    if not args.json:
        print(f"wrote {made.path} ({made.env_id}, end to end from {checkpoint}); verified on "
              f"{v.rollout_observations + v.random_observations} observations ({v.random_observations} random): max "
              f"|onnx - torch| = {v.max_action_diff:.2e} <= {v.action_limit:g} in the action, "
              f"{v.max_angle_diff_rad:.2e} rad in the angle")
    print(json.dumps({"path": str(made.path), "env_id": made.env_id, "checkpoint": str(checkpoint),
                      "verification": v.to_dict()}))
    sys.stdout.flush()
    return 0
