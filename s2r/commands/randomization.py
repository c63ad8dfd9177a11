"""``s2r adapt`` (fit a randomization distribution to trajectory logs), ``s2r simlogs`` (record
simulated logs in the robot's log format) and ``s2r sweep`` (success rate over a parameter grid)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from randomization.distributions import task_param_specs
from randomization.simlogs import Policy, SimLogConfig, record_sim_logs
from s2r import cliargs
from s2r.api import AdaptConfig, AdaptJob, ExecutorConfig, SweepJob, adapt, sweep
from s2r.core.errors import ParameterError, UserError
from s2r.core.trajlog import SkipLog
from s2r.policy_files import POLICY_FILES, load_policy
from sim import TASK_IDS
from sim.engines import ENGINES


def _workers_default() -> int:
    return max(1, os.cpu_count() or 1)


def cmd_adapt(args: argparse.Namespace) -> int:
    """``s2r adapt``: :func:`s2r.api.adapt`."""
    try:
        config = AdaptConfig(
            iterations=args.iterations, samples=args.samples, seed=args.seed, ess_fraction=args.ess_fraction,
            max_transitions=args.max_transitions,
        )
        job = AdaptJob(task=args.task, prior=Path(args.prior), log_dir=Path(args.log_dir), out=Path(args.out),
                       engine=args.engine, config=config, executor=ExecutorConfig(workers=args.workers, ray=args.ray),
                       strict=args.strict)
        run = adapt(job, on_skip=SkipLog("s2r adapt"))
    except ParameterError as exc:
        raise cliargs.flag_error(exc, args) from None
    if args.json:
        _warn_adapt(run.warning)
        print(json.dumps(run.to_json()))
        sys.stdout.flush()
        return 0
    result = run.result
    units = {s.name: s.unit for s in task_param_specs(args.task)}
    print(f"adapted {len(result.names)} parameter(s) to {result.episodes} episode(s), "
          f"{result.transitions} transitions; final beta {result.iterations[-1].beta:.3g}, "
          f"ESS {result.iterations[-1].ess:.1f} of {result.iterations[-1].pooled} pooled samples")
    for n in (*result.names, *result.passed_through):
        (pm, ps), (qm, qs) = result.prior_moments[n], result.posterior_moments[n]
        note = "" if n in result.names else "  (not informed by the logs; prior kept)"
        print(f"  {n:20s} prior {pm:.4g} ± {ps:.3g}  ->  posterior {qm:.4g} ± {qs:.3g} {units[n]}{note}")
    _warn_adapt(run.warning)
    print("wrote " + ", ".join(str(p) for p in (run.yaml, run.json, run.png)))
    return 0


def _warn_adapt(warning: str | None) -> None:
    if warning is not None:
        print(f"s2r adapt: warning: {warning}", file=sys.stderr)


def _parse_param(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise UserError(f"--param {text!r} must look like NAME=VALUE, e.g. valve_damping=0.15")
    try:
        return name.strip(), float(value)
    except ValueError:
        raise UserError(f"--param {text!r}: {value!r} is not a number") from None


def cmd_simlogs(args: argparse.Namespace) -> int:
    params = dict(_parse_param(p) for p in args.param)
    config = SimLogConfig(task=args.task, engine=args.engine, params=params, episodes=args.episodes, seed=args.seed,
                          position_noise_std=args.position_noise, velocity_noise_std=args.velocity_noise)
    if args.policy == "scripted":
        record_sim_logs(args.log_dir, config, "scripted")
    elif args.policy == "random":
        record_sim_logs(args.log_dir, config, "random")
    elif args.policy == "excite":
        record_sim_logs(args.log_dir, config, "excite")
    else:
        policy: Policy = load_policy(args.policy).act
        record_sim_logs(args.log_dir, config, policy)
    summary = {"out": str(args.log_dir), "episodes": args.episodes, "task": args.task, "policy": args.policy,
               "engine": args.engine, "seed": args.seed, "params": params,
               "position_noise_std": args.position_noise, "velocity_noise_std": args.velocity_noise}
    cliargs.print_result(args.json, summary,
                         [f"wrote {args.episodes} episode(s) of {args.task} ({args.policy}) to {args.log_dir}"])
    return 0


def _progress_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cmd_sweep(args: argparse.Namespace) -> int:
    """``s2r sweep``: :func:`s2r.api.sweep`, one line per finished cell on stderr."""
    try:
        job = SweepJob(args.policy, tuple(args.grid), episodes=args.episodes, engine=args.engine, task=args.task,
                       out=Path(args.out) if args.out else None, seed=args.seed,
                       executor=ExecutorConfig(workers=args.workers, ray=args.ray))
        run = sweep(job, progress=_progress_line)
    except ParameterError as exc:
        raise cliargs.flag_error(exc, args, {"axes": "--grid"}) from None
    if args.json:
        print(json.dumps(run.to_json()))
    else:
        result = run.result
        s = result.summary
        print(f"{result.policy} on {result.env_id} [{result.engine}]: {s['cells']} cells x {args.episodes} "
              f"episodes in {result.wall_time_s:.1f} s on {result.workers} worker(s)")
        print(f"  success: mean {s['mean_success']:.3f}, worst 10% of cells ({s['worst10_cells']}) "
              f"{s['worst10_success']:.3f}")
        print(f"wrote {run.json}, {run.png}")
    sys.stdout.flush()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``adapt``, ``simlogs`` and ``sweep`` to the ``s2r`` command line."""
    tasks = ", ".join(TASK_IDS)
    defaults = AdaptConfig()
    sim_defaults = SimLogConfig()
    a = sub.add_parser(
        "adapt",
        help="fit a parameter distribution to trajectory logs (source-distribution adaptation)",
        description="Fit the simulator's parameter distribution to logged trajectories by iterated, tempered "
                    "importance sampling; writes a randomization YAML (usable with --randomize), a JSON report "
                    "and a PNG of prior vs posterior beside it.",
    )
    a.add_argument("--task", required=True, help=f"task name ({tasks})")
    a.add_argument("--prior", required=True,
                   help="randomization YAML to start from, e.g. randomization/configs/dclaw.yaml")
    cliargs.add_renamed_argument(a, "--log-dir", old="--logs", required=True, metavar="DIR",
                                 help="trajectory log directory to read (run.json + episode_*.npz), written by "
                                 "s2r deploy or s2r simlogs")
    a.add_argument("--out", required=True, metavar="FILE.yaml", help="posterior randomization YAML to write; its "
                   "JSON report and PNG plot are written beside it (FILE.json, FILE.png)")
    a.add_argument("--iterations", type=int, default=defaults.iterations, help="sampling-and-fitting rounds")
    a.add_argument("--samples", type=int, default=defaults.samples, help="parameter samples per round")
    a.add_argument("--engine", choices=ENGINES, default="mujoco", help="physics engine for the replay")
    a.add_argument("--seed", type=cliargs.seed, default=defaults.seed, help="seed of the parameter draws")
    a.add_argument("--workers", type=int, default=_workers_default(),
                   help="local worker processes (default: one per CPU; 1 runs in this process), or Ray actors")
    a.add_argument("--ray", metavar="auto|ADDRESS", help="run the simulations on a Ray cluster (needs s2r[ray])")
    a.add_argument("--ess-fraction", type=float, default=defaults.ess_fraction,
                   help="effective sample size kept by tempering, as a fraction of --samples")
    a.add_argument("--max-transitions", type=int, help="score at most this many logged transitions (default: all)")
    a.add_argument("--strict", action="store_true",
                   help="fail on the first damaged episode file instead of skipping it with a warning")
    cliargs.add_json_flag(a, "the files written, prior and posterior per parameter, episodes, transitions, final "
                          "beta and ESS, the prior-edge warning")
    a.set_defaults(func=cmd_adapt)

    s = sub.add_parser(
        "simlogs",
        help="record simulated episodes in the robot's trajectory-log format",
        description="Roll POLICY (the scripted valve-turning stroke, random actions, the excitation multi-sine, or "
                    "a policy file) out in simulation with given parameter values and write the episodes as a "
                    "trajectory log into --log-dir.",
    )
    cliargs.add_renamed_argument(s, "policy", old="--policy", nargs="?", default="scripted", metavar="POLICY",
                                 help="'scripted' (the default: the valve-turning stroke), 'random', 'excite' (the "
                                 f"multi-sine of `s2r deploy scripted:excite`), or {POLICY_FILES}")
    s.add_argument("--task", required=True, help=f"task name ({tasks})")
    cliargs.add_renamed_argument(s, "--log-dir", old="--out", required=True, metavar="DIR",
                                 help="trajectory log directory to write (or to append episodes to)")
    s.add_argument("--episodes", type=int, default=sim_defaults.episodes, help="episodes to record")
    s.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="a parameter value of the simulated robot (repeatable); others stay nominal")
    s.add_argument("--engine", choices=ENGINES, default="mujoco", help="physics engine")
    s.add_argument("--seed", type=cliargs.seed, default=0, help="seed of the resets, random actions and sensor noise")
    s.add_argument("--position-noise", type=float, default=sim_defaults.position_noise_std,
                   help="std of the noise on logged angles (rad)")
    s.add_argument("--velocity-noise", type=float, default=sim_defaults.velocity_noise_std,
                   help="std of the noise on logged velocities (rad/s)")
    cliargs.add_json_flag(s, "the log directory, episodes, task, policy, engine, seed, parameter values and noise")
    s.set_defaults(func=cmd_simlogs)

    w = sub.add_parser(
        "sweep",
        help="success rate of a policy over a grid of physics parameter values (robustness heatmap)",
        description="Evaluate a policy with deterministic actions in every cell of a grid over one or two named "
                    "parameters (see `s2r params TASK`; the others stay nominal), K episodes per cell seeded "
                    "SEED..SEED+K-1 in every cell. Writes sweep.json (per-cell success rate and return, mean "
                    "success and the mean of the worst 10% of cells) and sweep.png (heatmap) into --out.",
    )
    w.add_argument("policy", metavar="POLICY", help=POLICY_FILES)
    w.add_argument("--grid", action="append", default=[], metavar="NAME=LO:HI:N",
                   help="N evenly spaced values of parameter NAME from LO to HI, in its SI unit; give it once "
                        "(a line) or twice (a heatmap), e.g. --grid valve_damping=0.01:0.3:5")
    w.add_argument("--episodes", type=int, required=True, metavar="K", help="episodes per cell")
    w.add_argument("--engine", choices=ENGINES, help="physics engine (default: the one trained on)")
    w.add_argument("--task", help=f"task to sweep on (default: the one trained on; {tasks})")
    w.add_argument("--out", metavar="DIR",
                   help="directory to write sweep.json and sweep.png into (default: sweep_NAME[_NAME2] inside a "
                        "run directory, or STEM_sweep_NAME[_NAME2] beside a policy file)")
    w.add_argument("--workers", type=int, default=_workers_default(),
                   help="local worker processes (default: one per CPU; 1 runs in this process), or Ray actors")
    w.add_argument("--ray", metavar="auto|ADDRESS", help="run the episodes on a Ray cluster (needs s2r[ray])")
    w.add_argument("--seed", type=cliargs.seed, default=0, help="seed of the first episode of every cell")
    w.add_argument("--json", action="store_true", help="print the summary as one JSON object, last on stdout")
    w.set_defaults(func=cmd_sweep)
