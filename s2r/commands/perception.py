"""``s2r train-perception`` and ``s2r eval-perception``: a valve-angle estimator from the task camera's images.
torch is loaded only inside ``train-perception``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from policies.perception_config import AngleNetConfig, PerceptionTrainConfig
from s2r import api, cliargs
from s2r.core.errors import ParameterError
from s2r.core.extras import require_torch
from sim.engines import ENGINES

TRAIN_DEFAULTS = api.PerceptionTrainJob(out=Path())
EVAL_DEFAULTS = api.PerceptionEvalJob(model="")
DEFAULT_VISUAL = "randomization/configs/dclaw_visual.yaml"
"""The visual randomization the README's commands train under."""


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train-perception`` and ``eval-perception``."""
    net = AngleNetConfig()
    t = sub.add_parser(
        "train-perception",
        help="train a CNN that reads the valve angle from one top-camera image (D'Claw turn), export it to ONNX",
        description="Render --samples images of the D'Claw valve-turn task's top camera, each of a random scene "
        "(valve angle uniform in [-pi, pi), fingers near their reset pose or anywhere in their ranges) with visual "
        "parameters drawn from the --randomize files, labelled with the simulator's valve angle; train a small CNN "
        f"(convolutions, spatial soft-argmax, MLP to cos/sin) on them; write DIR/{api.PERCEPTION_CHECKPOINT} (the "
        f"weights, read back with torch.load(weights_only=True)) and DIR/{api.PERCEPTION_ONNX}: input 'frames' "
        "(uint8, batch x H x W x 3 RGB), outputs 'angle' (rad) and 'cos_sin', metadata recording the camera and the "
        "training distribution; onnxruntime and PyTorch are compared before the file appears. Visual parameters "
        "the engine cannot render (distractors on PyBullet) are left out with a note.",
    )
    t.add_argument("--out", required=True, metavar="DIR", help="directory to write the checkpoint and the ONNX file "
                   "into (created if missing)")
    t.add_argument("--samples", type=int, default=TRAIN_DEFAULTS.samples, metavar="N", help="training images")
    t.add_argument("--epochs", type=int, default=TRAIN_DEFAULTS.train.epochs, metavar="E",
                   help="passes over the images")
    t.add_argument("--batch-size", type=int, default=TRAIN_DEFAULTS.train.batch_size, metavar="B",
                   help="images per gradient step")
    t.add_argument("--channels", type=int, nargs="+", default=list(net.channels), metavar="C",
                   help="output channels of each convolution (the first two halve the image)")
    t.add_argument("--hidden", type=int, default=net.hidden, metavar="H", help="units of the MLP's hidden layers")
    t.add_argument("--symmetry", type=int, default=net.symmetry, metavar="K",
                   help="the valve's rotational symmetry, its spoke count: the network also reads K times the angle, "
                   "which every spoke shows alike, and the marked spoke only picks among the K candidates (1: read "
                   "the angle directly)")
    t.add_argument("--randomize", metavar="FILE", action="append", default=[], help="visual parameter distribution "
                   f"of the images (e.g. {DEFAULT_VISUAL}); repeat it to draw several files' parameters together; "
                   "without it every image shows the nominal scene")
    t.add_argument("--engine", choices=ENGINES, default=TRAIN_DEFAULTS.engine, help="engine that renders the images")
    t.add_argument("--seed", type=cliargs.seed, default=TRAIN_DEFAULTS.seed,
                   help="seed of the images and of training")
    t.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    cliargs.add_json_flag(t, "the files written, render and train times, the training error and the export check")
    t.set_defaults(func=_train)

    e = sub.add_parser(
        "eval-perception",
        help="measure a valve-angle estimator (train-perception's ONNX file) on held-out renders",
        description="Render --samples held-out images (drawn apart from any training set, whatever the seed) of "
        "random scenes and report the median, 95th percentile and largest absolute error of MODEL.onnx's valve "
        "angle against the simulator's, in degrees (wrapped: 359 deg off is 1 deg off). Runs on the base install "
        "(onnxruntime, no torch). Visual parameters the engine cannot render (distractors on PyBullet) are left out "
        "with a note.",
    )
    e.add_argument("model", metavar="MODEL.onnx", help="the estimator (train-perception's perception.onnx)")
    e.add_argument("--engine", choices=ENGINES, default=EVAL_DEFAULTS.engine, help="engine that renders the images")
    e.add_argument("--randomize", metavar="FILE", action="append", help="visual parameter distribution of the images "
                   "(repeatable; default: the distribution the model was trained on, from its metadata; 'none': the "
                   "nominal scene)")
    e.add_argument("--samples", type=int, default=EVAL_DEFAULTS.samples, metavar="N", help="images to render")
    e.add_argument("--seed", type=cliargs.seed, default=EVAL_DEFAULTS.seed, help="seed of the images")
    cliargs.add_json_flag(e, "the median, p95 and largest error in degrees, and what was rendered")
    e.set_defaults(func=_eval)


def _note_skipped(skipped: tuple[str, ...], engine: str) -> None:
    if skipped:
        print(f"note: the {engine} engine cannot render {', '.join(skipped)}; left out of the images",
              file=sys.stderr)


def _train(args: argparse.Namespace) -> int:
    """``s2r train-perception``: :func:`s2r.api.train_perception`."""
    try:
        cfg = PerceptionTrainConfig(epochs=args.epochs, batch_size=args.batch_size,
                                    net=AngleNetConfig(channels=tuple(args.channels), hidden=args.hidden,
                                                       symmetry=args.symmetry))
        job = api.PerceptionTrainJob(out=Path(args.out), samples=args.samples, engine=args.engine,
                                     randomize=tuple(args.randomize), seed=args.seed, train=cfg)
    except ParameterError as exc:
        raise cliargs.flag_error(exc, args) from None
    require_torch("s2r train-perception")
    result = api.train_perception(job, progress=None if args.quiet else lambda text: print(text, file=sys.stderr))
    _note_skipped(result.skipped_params, args.engine)
    cliargs.print_result(args.json, result.to_json(), [
        f"trained on {result.samples} images ({args.engine}, rendered in {result.render_time_s:.0f} s) for "
        f"{result.epochs} epochs in {result.train_time_s:.0f} s; training error median "
        f"{result.train_error_deg[0]:.2f} deg, p95 {result.train_error_deg[1]:.2f} deg",
        f"wrote {result.checkpoint} and {result.onnx} (onnxruntime within {result.max_onnx_diff_rad:.1e} rad of "
        "PyTorch)"])
    return 0


def _eval(args: argparse.Namespace) -> int:
    """``s2r eval-perception``: :func:`s2r.api.evaluate_perception`."""
    randomize = None if args.randomize is None else tuple(f for f in args.randomize if f != "none")
    try:
        job = api.PerceptionEvalJob(model=args.model, samples=args.samples, engine=args.engine, randomize=randomize,
                                    seed=args.seed)
    except ParameterError as exc:
        raise cliargs.flag_error(exc, args) from None
    result = api.evaluate_perception(job)
    _note_skipped(result.skipped_params, args.engine)
    cliargs.print_result(args.json, result.to_json(), [
        f"{result.model} on {result.samples} held-out {result.engine} images (randomization: {result.randomization}, "
        f"seed {result.seed}): angle error median {result.median_error_deg:.2f} deg, p95 {result.p95_error_deg:.2f} "
        f"deg, max {result.max_error_deg:.1f} deg"])
    return 0
