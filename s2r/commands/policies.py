"""``s2r train`` and ``s2r eval``. Heavy imports (torch, gymnasium) happen inside the commands."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from policies.config import ALGOS, CONFIG_NAME, TrainConfig, config_from_mapping, load_config_file, parse_overrides
from policies.finetune_config import FinetuneConfig
from randomization.distributions import combine_distributions, load_distribution
from robot.controller import SAFETY_STOP_KINDS
from s2r import api, cliargs
from s2r.commands.robot import StopRequest, add_view_argument, deploy_exit_code, goal_arg
from s2r.core.errors import ParameterError, UserError
from s2r.core.extras import require_torch
from s2r.policy_files import POLICY_FILES
from sim.env import POSITION_SOURCES

DEFAULT_EVAL_EPISODES = 50


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train``, ``finetune`` and ``eval``."""
    defaults = FinetuneConfig(run_dir=Path(), robot=Path())
    p = sub.add_parser(
        "train",
        help="train a policy in simulation (CrossQ by default; SAC, TD3 or DDPG)",
        description=(
            "Train a policy with CrossQ (Soft Actor-Critic with batch-renormalized critics; or plain SAC, TD3, or "
            "DDPG) into a run directory: config.yaml, metrics.jsonl, "
            "tensorboard/, last.pt, best.pt, replay.pt, learning_curve.png. Ctrl-C saves last.pt and exits; "
            "--resume continues from it. Precedence: defaults < the run's config.yaml (with --resume) < "
            "--config FILE < --task/--engine/--algo/--steps/--seed < --set."
        ),
    )
    p.add_argument("--task", help="short task name (dclaw-turn) or any gymnasium id with Box spaces (Pendulum-v1)")
    p.add_argument("--engine", help="physics engine of s2r tasks: mujoco (default) or pybullet")
    p.add_argument("--algo", choices=ALGOS, help="learner (default crossq; sac, td3 and ddpg stay selectable)")
    p.add_argument("--config", metavar="FILE", help="YAML file of config fields (see policies/config.py)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config field, e.g. --set batch_size=512 --set hidden=[128,128]; repeatable",
    )
    p.add_argument("--randomize", metavar="FILE", action="append", help="train under this per-episode parameter "
                   "distribution (e.g. randomization/configs/dclaw.yaml); repeat it to draw the parameters of several "
                   "files together (dclaw.yaml's physics and dclaw_visual.yaml's rendering); the run keeps a copy "
                   "in config.yaml")
    p.add_argument("--epopt-eps", type=float, metavar="EPS", help="EPOpt: keep the worst EPS fraction of probed "
                   "models as the hard set the next episodes are collected in (needs --randomize; e.g. 0.1)")
    p.add_argument("--epopt-models", type=int, metavar="N", help="EPOpt: models probed per iteration (default: 20)")
    p.add_argument("--epopt-warmup", type=int, metavar="K", help="EPOpt: first K iterations keep every model "
                   "(epsilon = 1; default: 5)")
    p.add_argument("--steps", type=int, help="environment steps in total (default: 150000)")
    p.add_argument("--seed", type=cliargs.seed, help="random seed (default: 0)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to create (or continue)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    cliargs.add_json_flag(p, "run_dir, steps, episodes, interrupted, reached_success, train_time_s and the last "
                          "evaluation")
    p.set_defaults(func=_train)

    f = sub.add_parser(
        "finetune",
        help="continue a run's learner (CrossQ, SAC, TD3 or DDPG) on the robot (or its emulator) from its deployed "
        "policy",
        description="Fine-tune the policy s2r export/deploy take from RUN_DIR (best.pt, else last.pt), or the "
        "checkpoint CHECKPOINT of a run, on the robot, "
        "through the real-time controller with the safety filter on. The deployed policy (the incumbent) is "
        "measured first; then rounds of exploration episodes (gradient steps between episodes on half-real, "
        "half-simulation batches, the critics warmed up on real transitions before the actor moves) and a "
        "measurement of the round's candidate. A candidate replaces the incumbent only when Fisher's exact test, "
        "one-sided, finds it better at --confidence; policy.onnx is always the incumbent. Writes "
        "RUN_DIR/finetune/ (logs/, last.pt, policy.onnx, onnx/, candidates/, finetune.json); --resume continues "
        "after a crash with every completed episode.",
    )
    f.add_argument("run_dir", metavar="RUN_DIR|CHECKPOINT", help="the training run to continue (its best.pt, else "
                   "last.pt, with the learner's state and replay), or the checkpoint of it that was deployed "
                   "(RUN_DIR/last.pt)")
    f.add_argument("--robot", required=True, metavar="FILE", help="hardware config, e.g. hardware_configs/dclaw.yaml")
    f.add_argument("--driver", choices=("emulator", "dynamixel", "mock"), default="emulator",
                   help="the robot: a physics-backed servo emulator started here, the real servos, or a mock bus")
    f.add_argument("--port", help="serial device (or an emulator's pty) instead of the config's")
    f.add_argument("--reality", metavar="FILE", help="reality of the emulator this run starts")
    f.add_argument("--lockstep", action="store_true", help="run the emulator this run starts in simulated time "
                   "(deterministic for a seed, faster than real time); the default is real time")
    f.add_argument("--episodes", type=int, required=True,
                   help="real episodes in total, of every kind (across resumes)")
    f.add_argument("--out", metavar="DIR", help="directory to write logs/, last.pt, policy.onnx, onnx/, candidates/ "
                   "and finetune.json into (default: RUN_DIR/finetune)")
    f.add_argument("--resume", action="store_true", help="continue the run in --out (with the same schedule)")
    f.add_argument("--updates-per-step", type=float, default=defaults.updates_per_step,
                   help="gradient steps per real transition of an exploration episode")
    f.add_argument("--critic-warmup", type=int, default=defaults.critic_warmup,
                   help="critic-only gradient steps before the actor's first")
    f.add_argument("--sim-fraction", type=float, default=defaults.sim_fraction,
                   help="share of each batch from the simulation replay (0 = real only)")
    f.add_argument("--incumbent-episodes", type=int, default=defaults.incumbent_episodes,
                   help="episodes measuring the deployed policy first")
    f.add_argument("--explore-episodes", type=int, default=defaults.explore_episodes,
                   help="exploration episodes per round")
    f.add_argument("--gate-episodes", type=int, default=defaults.gate_episodes,
                   help="episodes measuring each round's candidate (per look)")
    f.add_argument("--reeval-episodes", type=int, default=defaults.reeval_episodes,
                   help="episodes measuring the incumbent again each round")
    f.add_argument("--gate-looks", type=int, default=defaults.gate_looks,
                   help="looks a comparison may take: a candidate ahead of the incumbent that did not pass is "
                   "measured again (--gate-episodes more of each), each look at the confidence split over the looks")
    f.add_argument("--confidence", type=float, default=defaults.confidence,
                   help="confidence of the test a candidate must pass")
    f.add_argument("--seed", type=cliargs.seed, default=0, help="seed of the episodes' starts and goals, the "
                   "exploration and the exports' checks")
    goal = f.add_mutually_exclusive_group()
    goal.add_argument("--goal", type=goal_arg, metavar="NAME=VALUE[,...]",
                      help="the goal of every episode, as s2r deploy --goal (the claw: target=1.57, the valve angle "
                      "in rad); default: the task draws each episode's goal. A goal-conditioned run replays its "
                      "episodes with hindsight goals, as it trained")
    goal.add_argument("--goal-schedule", metavar="FILE.yaml",
                      help="one goal per episode, in order, as s2r deploy --goal-schedule; at least --episodes goals")
    f.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    add_view_argument(f)
    f.set_defaults(func=_finetune)

    e = sub.add_parser(
        "eval",
        help="evaluate a trained policy with deterministic actions",
        description="Run deterministic (mean-action) episodes of POLICY (an ONNX file, a checkpoint, or a run "
        "directory's best.pt, else last.pt), seeded SEED, SEED+1, ...",
    )
    e.add_argument("path", metavar="POLICY", help=POLICY_FILES)
    e.add_argument("--episodes", type=int, default=DEFAULT_EVAL_EPISODES, help="episodes to run")
    e.add_argument("--engine", help="physics engine (default: the one trained on)")
    e.add_argument("--seed", type=cliargs.seed, default=0, help="seed of the first episode")
    e.add_argument("--perception", metavar="MODEL", help="a valve-angle estimator (`s2r train-perception`'s "
                   "perception.onnx): run POLICY, a D'Claw turn state policy, behind it on the task's camera env "
                   "(s2r/DClawTurnPixels-v0, ...), whose observation has no valve angle")
    e.add_argument("--randomize", metavar="FILE", action="append", default=[], help="parameter distribution drawn "
                   "for every episode (repeat to combine files), e.g. randomization/configs/dclaw_visual.yaml")
    e.add_argument("--position-source", choices=POSITION_SOURCES, help="a walk's observed position: truth (the "
                   "simulator's, as motion capture gives it) or odometry (leg odometry on the readings, as a robot "
                   "without motion capture measures it; success is judged on the truth). Default: the one trained "
                   "with")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=_eval)


def _train(args: argparse.Namespace) -> int:
    """``s2r train``: the config from the flags (see the command's description for their precedence), then
    :func:`s2r.api.train`."""
    require_torch("s2r train")
    out = Path(args.out)
    base = TrainConfig()
    if args.resume:
        saved = out / CONFIG_NAME
        if not saved.is_file():
            raise UserError(f"cannot resume: {str(saved)!r} does not exist")
        base = load_config_file(saved)
    if args.config:
        base = load_config_file(args.config, base)
    names = ("task", "engine", "algo", "steps", "seed", "epopt_eps", "epopt_models", "epopt_warmup")
    flags = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    try:
        overrides = parse_overrides(args.set)
    except ParameterError as exc:
        raise cliargs.flag_error(exc, args, {"overrides": "--set"}) from None
    if args.randomize:
        task = overrides.get("task") or flags.get("task") or base.task
        flags["randomize"] = combine_distributions(
            [load_distribution(path, task=task) for path in args.randomize]).to_yaml_dict()
    try:
        cfg = config_from_mapping({**flags, **overrides}, base)
        summary = api.train(cfg, out, resume=args.resume, progress=not args.quiet).to_json()
    except ParameterError as exc:
        raise cliargs.flag_error(exc, args) from None
    cliargs.print_result(args.json, summary, _train_summary_lines(summary))
    return 0


def _finetune(args: argparse.Namespace) -> int:
    """``s2r finetune``: :func:`s2r.api.finetune` with SIGINT/SIGTERM as its stop request."""
    require_torch("s2r finetune")
    try:
        cfg = FinetuneConfig(run_dir=Path(args.run_dir), robot=Path(args.robot), driver=args.driver, port=args.port,
                             reality=Path(args.reality) if args.reality else None, lockstep=args.lockstep,
                             episodes=args.episodes,
                             out=Path(args.out) if args.out else None, updates_per_step=args.updates_per_step,
                             critic_warmup=args.critic_warmup, sim_fraction=args.sim_fraction, seed=args.seed,
                             resume=args.resume, incumbent_episodes=args.incumbent_episodes,
                             explore_episodes=args.explore_episodes, gate_episodes=args.gate_episodes,
                             reeval_episodes=args.reeval_episodes, gate_looks=args.gate_looks,
                             confidence=args.confidence, goal=args.goal,
                             goal_schedule=Path(args.goal_schedule) if args.goal_schedule else None)
    except ParameterError as exc:
        raise cliargs.flag_error(exc, args) from None
    request = StopRequest()
    previous = {s: signal.signal(s, request.handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        summary = api.finetune(cfg, should_stop=request.poll, progress=not args.quiet, view=args.view)
    except ParameterError as exc:
        raise cliargs.flag_error(exc, args) from None
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    if args.json:
        print(json.dumps(summary.to_json()))
    else:
        gate = summary.gate
        rate = "-" if summary.success_rate is None else f"{summary.success_rate:.2f}"
        replaced = sum(d["replaced"] for d in gate["decisions"])
        print(f"fine-tuned {summary.episodes_done} episodes in total ({len(summary.episodes)} this run): incumbent "
              f"{gate['incumbent']} with success {rate} over {gate['incumbent_episodes']} robot episodes; "
              f"{gate['comparisons']} candidates tested in {gate['looks']} looks ({gate['confidence']:g} "
              f"confidence), {replaced} replaced "
              f"it; longest update pause {summary.update_time_s_max:.2f} s between episodes; "
              f"policy {summary.policy}; stop: {summary.stop_kind} {summary.stop_reason}".rstrip())
    if summary.stop_kind in SAFETY_STOP_KINDS:
        print(f"s2r finetune: {summary.stop_kind.replace('_', ' ')} stop: {summary.stop_reason}", file=sys.stderr)
    if not summary.torque_off:
        print("s2r finetune: the torque-off was NOT confirmed: the servos may still be powered", file=sys.stderr)
    return deploy_exit_code(summary.stop_kind, summary.torque_off)  # as s2r deploy: 3, 4, or 5


def _train_summary_lines(summary: dict[str, Any]) -> list[str]:
    """``s2r train``'s text for the summary ``train()`` returns."""
    run_dir = summary["run_dir"]
    if summary["interrupted"]:
        lines = [f"interrupted at step {summary['steps']}; saved {run_dir}/last.pt (continue with --resume)"]
    else:
        reached = " (stop_success reached)" if summary.get("reached_success") else ""
        lines = [f"trained {summary['steps']} steps ({summary['episodes']} episodes) in "
                 f"{summary['train_time_s']:.0f} s{reached}"]
    ev = summary.get("eval")
    if ev:
        lines.append(f"last evaluation: {_describe(ev)}")
    lines.append(f"run directory: {run_dir}")
    return lines


def _describe(ev: dict[str, Any]) -> str:
    text = f"return {ev['return_mean']:.2f} ± {ev['return_std']:.2f} over {ev['episodes']} episodes"
    if ev.get("success_rate") is not None:
        text += f", success {ev['success_rate']:.2f}"
    if ev.get("terminated"):
        text += f", {ev['terminated']} ended by the task before the time limit"
    return text


def _eval(args: argparse.Namespace) -> int:
    """``s2r eval``: :func:`s2r.api.evaluate`. An ONNX file runs through ``OnnxPolicy``, the same policy object the
    robot controller runs."""
    try:
        result = api.evaluate(api.EvalJob(args.path, episodes=args.episodes, seed=args.seed, engine=args.engine,
                                          perception=args.perception, randomize=tuple(args.randomize),
                                          position_source=args.position_source))
    except ParameterError as exc:
        raise cliargs.flag_error(exc, args) from None
    ev = asdict(result.evaluation)
    onnx = result.kind == "onnx"
    if args.json:
        where = {"policy": args.path} if onnx else {"checkpoint": str(result.path)}
        print(json.dumps({**ev, **where, "env_id": result.env_id, "engine": result.engine, "step": result.step,
                          "perception": result.perception, "randomize": list(result.randomize),
                          "position_source": result.position_source}))
    else:
        what = f"onnx, {result.algo}" if onnx else result.algo
        via = "" if result.perception is None else f" behind {result.perception}"
        drawn = "".join(f", randomized by {p}" for p in result.randomize)
        if result.position_source is not None:
            drawn += f", position from {result.position_source}"
        print(f"{args.path if onnx else result.path} ({what}, step {result.step}){via} on {result.env_id} "
              f"[{result.engine}]{drawn}, seeds {args.seed}..{args.seed + args.episodes - 1}:")
        print(f"  {_describe(ev)}")
    sys.stdout.flush()
    return 0
