"""``s2r train-perception`` and ``s2r eval-perception``: a valve-angle estimator from the task camera's images;
``s2r train-pixels``: a policy learned end to end from them. torch is loaded only inside the two that train."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from policies.perception_config import AngleNetConfig, PerceptionTrainConfig, PhotometricConfig
from policies.pixels_config import PixelsSacConfig
from s2r import api, cliargs
from s2r.core.errors import ParameterError
from s2r.core.extras import require_torch
from sim.engines import ENGINES

TRAIN_DEFAULTS = api.PerceptionTrainJob(out=Path())
EVAL_DEFAULTS = api.PerceptionEvalJob(model="")
DEFAULT_VISUAL = "randomization/configs/dclaw_visual.yaml"
"""The visual randomization the README's commands train under."""


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train-perception``, ``join-perception``, ``eval-perception`` and ``train-pixels``."""
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
    t.add_argument("--standardize", action=argparse.BooleanOptionalAction, default=net.standardize,
                   help="scale each image to zero mean and unit spread inside the network, so exposure and light "
                   "strength do not matter")
    t.add_argument("--shift", type=int, default=TRAIN_DEFAULTS.train.shift, metavar="PX",
                   help="DrQ's random shift of the training images, in pixels each way (0: none)")
    t.add_argument("--photometric", action=argparse.BooleanOptionalAction,
                   default=TRAIN_DEFAULTS.train.photometric is not None,
                   help="re-expose every training batch as another camera under another light would see it (gain, "
                   "tint, gamma, saturation, contrast, offset, blur, noise: policies.perception_config."
                   "PhotometricConfig)")
    t.add_argument("--randomize", metavar="FILE", action="append", default=[], help="visual parameter distribution "
                   f"of the images (e.g. {DEFAULT_VISUAL}); repeat it to draw several files' parameters together; "
                   "without it every image shows the nominal scene")
    t.add_argument("--engine", choices=ENGINES, default=TRAIN_DEFAULTS.engine, help="engine that renders the images")
    t.add_argument("--seed", type=cliargs.seed, default=TRAIN_DEFAULTS.seed,
                   help="seed of the images and of training")
    t.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    cliargs.add_json_flag(t, "the files written, render and train times, the training error and the export check")
    t.set_defaults(func=_train)

    j = sub.add_parser(
        "join-perception",
        help="read several train-perception networks together, each on five views of the frame, as one ONNX file",
        description="Join the networks of RUN directories (train-perception outputs for the same camera and training "
        "distribution; train them with other --seed values) into one estimator: each network reads the frame and "
        "copies of it moved --shift pixels left, right, up and down, and the angle is read from the mean of all their "
        "unit directions. Writes FILE.onnx, the same contract as train-perception's (input 'frames', "
        "outputs 'angle' and 'cos_sin'), after onnxruntime and PyTorch agree on rendered and random frames.",
    )
    j.add_argument("runs", nargs="+", metavar="RUN", help="train-perception output directories")
    j.add_argument("--out", required=True, metavar="FILE.onnx", help="the estimator file to write (its directory is "
                   "created if missing)")
    j.add_argument("--shift", type=int, default=api.PerceptionJoinJob.shift, metavar="PX",
                   help="pixels each shifted view moves (0: the frame only)")
    cliargs.add_json_flag(j, "the file written, the networks and views, and the export check")
    j.set_defaults(func=_join)

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
    register_pixels(sub)


def register_pixels(sub: argparse._SubParsersAction) -> None:
    """Add ``train-pixels``."""
    cfg = PixelsSacConfig()
    p = sub.add_parser(
        "train-pixels",
        help="learn a D'Claw turn policy end to end from the top camera (SAC with DrQ's shift, a state critic)",
        description="Learn a policy of the camera env (the top camera's image, the joint readings, the last action "
        "and the goal; no valve angle) end to end: CrossQ's SAC whose actor reads the image through strided "
        "convolutions and a spatial soft-argmax, with DrQ's random shift on its training images, and whose twin "
        "critics read the simulator's state (an asymmetric actor-critic; only training has that state). A linear "
        "read-out of the image features is trained on the valve's (cos, sin) alongside. Writes DIR/best.pt and "
        "DIR/last.pt (read back with torch.load(weights_only=True)) and DIR/metrics.jsonl (one line per "
        "evaluation), then evaluates the best policy over --final-episodes episodes. CPU-bound: the convolutions "
        "take most of each update.",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write the run into (created if missing)")
    p.add_argument("--task", default=cfg.task, help="the camera env (s2r/DClawTurnPixels-v0, "
                   "s2r/DClawTurnPixelsRandom-v0)")
    p.add_argument("--engine", choices=ENGINES, default=cfg.engine, help="physics engine and renderer")
    p.add_argument("--steps", type=int, default=cfg.steps, metavar="N", help="environment steps")
    p.add_argument("--seed", type=cliargs.seed, default=cfg.seed, help="seed of the episodes, networks and batches")
    p.add_argument("--warmup-steps", type=int, default=cfg.warmup_steps, metavar="N",
                   help="uniformly random steps before the first update")
    p.add_argument("--batch-size", type=int, default=cfg.batch_size, metavar="B", help="transitions per critic update")
    p.add_argument("--actor-batch-size", type=int, default=cfg.actor_batch_size, metavar="B",
                   help="of those, the transitions the actor's update reads")
    p.add_argument("--shift", type=int, default=cfg.shift, metavar="PX",
                   help="DrQ's random shift of the actor's training images, in pixels each way (0: none)")
    p.add_argument("--aux-weight", type=float, default=cfg.aux_weight, metavar="W",
                   help="weight of the image features' valve (cos, sin) read-out loss (0: none)")
    p.add_argument("--eval-interval", type=int, default=cfg.eval_interval, metavar="N",
                   help="steps between evaluations")
    p.add_argument("--eval-episodes", type=int, default=cfg.eval_episodes, metavar="N",
                   help="episodes per evaluation")
    p.add_argument("--final-episodes", type=int, default=cfg.final_episodes, metavar="N",
                   help="episodes of the best policy's final evaluation")
    p.add_argument("--threads", type=int, default=cfg.threads, metavar="T", help="torch threads")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    cliargs.add_json_flag(p, "the learning curve, the files written, the training and update times, the final "
                          "evaluation")
    p.set_defaults(func=_train_pixels)


def _train_pixels(args: argparse.Namespace) -> int:
    """``s2r train-pixels``: :func:`s2r.api.train_pixels`."""
    try:
        cfg = PixelsSacConfig(task=args.task, engine=args.engine, steps=args.steps, seed=args.seed,
                              warmup_steps=args.warmup_steps, batch_size=args.batch_size,
                              actor_batch_size=args.actor_batch_size, shift=args.shift, aux_weight=args.aux_weight,
                              eval_interval=args.eval_interval, eval_episodes=args.eval_episodes,
                              final_episodes=args.final_episodes, threads=args.threads)
        job = api.PixelsTrainJob(out=Path(args.out), config=cfg)
    except ParameterError as exc:
        raise cliargs.flag_error(exc, args) from None
    require_torch("s2r train-pixels")
    result = api.train_pixels(job, progress=None if args.quiet else lambda text: print(text, file=sys.stderr))
    final = result.final
    cliargs.print_result(args.json, result.to_json(), [
        f"{cfg.steps} steps of {cfg.task} in {result.train_s:.0f} s ({result.update_ms:.0f} ms per update); best "
        f"policy at step {result.best_step}: success {final['success_rate']:.2f} over {final['episodes']} episodes",
        f"wrote {result.best} and {result.last}"])
    return 0


def _note_skipped(skipped: tuple[str, ...], engine: str) -> None:
    if skipped:
        print(f"note: the {engine} engine cannot render {', '.join(skipped)}; left out of the images",
              file=sys.stderr)


def _train(args: argparse.Namespace) -> int:
    """``s2r train-perception``: :func:`s2r.api.train_perception`."""
    try:
        cfg = PerceptionTrainConfig(epochs=args.epochs, batch_size=args.batch_size, shift=args.shift,
                                    photometric=PhotometricConfig() if args.photometric else None,
                                    net=AngleNetConfig(channels=tuple(args.channels), hidden=args.hidden,
                                                       symmetry=args.symmetry, standardize=args.standardize))
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


def _join(args: argparse.Namespace) -> int:
    """``s2r join-perception``: :func:`s2r.api.join_perception`."""
    try:
        job = api.PerceptionJoinJob(runs=tuple(Path(r) for r in args.runs), out=Path(args.out), shift=args.shift)
    except ParameterError as exc:
        raise cliargs.flag_error(exc, args) from None
    require_torch("s2r join-perception")
    result = api.join_perception(job)
    cliargs.print_result(args.json, result.to_json(), [
        f"wrote {result.onnx}: {result.networks} network(s) x {result.views} view(s) of each frame (onnxruntime "
        f"within {result.max_onnx_diff_rad:.1e} rad of PyTorch)"])
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
