"""``s2r params`` and ``s2r render``: inspect a simulated task's named parameters, record a rollout as a GIF."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym

from s2r import cliargs
from s2r.core.errors import UserError, did_you_mean
from s2r.core.extras import MissingExtra
from s2r.policy_files import POLICY_FILES, load_policy
from sim import TASK_IDS, resolve_env_id, time_limit
from sim.engines import ENGINES
from sim.env import SimEnv
from sim.render import FrameOptions, random_policy, rollout_frames, sim_env, write_gif

DEFAULT_RENDER_WIDTH_PX = 320
DEFAULT_RENDER_HEIGHT_PX = 240


# --- tasks and envs ------------------------------------------------------------------------------
def known_tasks() -> dict[str, str]:
    """Every task the command line accepts: ``{name: gymnasium id}``, short names first, then bare ids."""
    named = dict(TASK_IDS)
    for env_id in gym.registry:
        if env_id.startswith("s2r/") and env_id not in named.values():
            named[env_id] = env_id
    return named


def resolve_task(task: str) -> str:
    """The gymnasium id for a short task name or an s2r id; anything else is a ``UserError`` listing the tasks."""
    env_id = resolve_env_id(task)
    if env_id.startswith("s2r/") and env_id in gym.registry:
        return env_id
    known = known_tasks()
    listing = ", ".join(name if name == i else f"{name} ({i})" for name, i in known.items())
    raise UserError(f"unknown task {task!r}{did_you_mean(task, known)}; known tasks: {listing}")


def make_sim_env(env_id: str, engine: str, **kwargs: Any) -> gym.Env:
    """``gym.make`` for one of our tasks; an engine whose code cannot be imported is a ``UserError``.

    A missing optional dependency stays a :class:`~s2r.core.extras.MissingExtra`, which names the extra to install.
    """
    try:
        return gym.make(env_id, engine=engine, **kwargs, max_episode_steps=time_limit(env_id, kwargs))
    except MissingExtra:
        raise
    except ImportError as exc:
        raise UserError(f"the {engine} engine cannot be loaded: {exc}") from exc


# --- s2r params ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class EngineAvailability:
    """Whether an engine could be built for the task, and why not."""

    name: str
    """Engine id."""
    available: bool
    """True when the env was built on this engine."""
    reason: str | None
    """Why it could not be built (a missing extra names the ``pip install`` that fixes it)."""


def _finite_or_none(v: float) -> float | None:
    """JSON has no infinity: an unbounded limit is written as ``null``."""
    return v if math.isfinite(v) else None


def describe_params(env_id: str, engines: Sequence[str], *, strict: bool) -> dict[str, Any]:
    """Every named parameter of ``env_id`` with its description and per-engine support.

    With ``strict`` an engine that cannot be built raises; otherwise it is reported unavailable.
    """
    availability: list[EngineAvailability] = []
    built: dict[str, SimEnv] = {}
    envs: list[gym.Env] = []
    try:
        for name in engines:
            try:
                env = make_sim_env(env_id, name)
            except (MissingExtra, UserError) as exc:
                if strict:
                    raise
                availability.append(EngineAvailability(name, False, str(exc)))
                continue
            envs.append(env)
            built[name] = sim_env(env)
            availability.append(EngineAvailability(name, True, None))
        if not built:
            reasons = "; ".join(f"{a.name}: {a.reason}" for a in availability)
            raise UserError(f"no engine could be built for {env_id}: {reasons}")
        params = next(iter(built.values())).params
        rows = []
        for pname in params.names():
            spec = params.spec(pname)
            rows.append(
                {
                    "name": pname,
                    "unit": spec.unit,
                    "nominal": spec.nominal,
                    "low": _finite_or_none(spec.low),
                    "high": _finite_or_none(spec.high),
                    "kind": spec.kind,
                    "applied_by": "env" if spec.is_env_level else "engine",
                    "visual": spec.is_visual,
                    "doc": spec.doc,
                    "supported": {
                        a.name: built[a.name].params.supported(pname) if a.available else None for a in availability
                    },
                }
            )
    finally:
        for env in envs:
            env.close()
    return {
        "task": env_id,
        "engines": {a.name: {"available": a.available, "reason": a.reason} for a in availability},
        "params": rows,
    }


def _fmt_range(low: float | None, high: float | None) -> str:
    lo = f"{low:g}" if low is not None else "-inf"
    hi = f"{high:g}]" if high is not None else "inf)"
    return f"[{lo}, {hi}"


def format_params_table(report: dict[str, Any]) -> str:
    """The ``s2r params`` report as an aligned text table, with a note per unavailable engine."""
    engines = list(report["engines"])
    header = ["name", "unit", "nominal", "range", *engines, "description"]
    lines = [header]
    for row in report["params"]:
        support = []
        for e in engines:
            s = row["supported"][e]
            support.append("n/a" if s is None else ("yes" if s else "no"))
        lines.append(
            [row["name"], row["unit"], f"{row['nominal']:g}", _fmt_range(row["low"], row["high"]), *support, row["doc"]]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    out = [f"task {report['task']}"]
    for line in lines:
        out.append("  ".join(cell.ljust(w) for cell, w in zip(line[:-1], widths, strict=True)) + "  " + line[-1])
    for e, status in report["engines"].items():
        if not status["available"]:
            out.append(f"n/a: the {e} engine is unavailable: {status['reason']}")
    return "\n".join(out)


def cmd_params(args: argparse.Namespace) -> int:
    env_id = resolve_task(args.task)
    engines = (args.engine,) if args.engine else ENGINES
    report = describe_params(env_id, engines, strict=args.engine is not None)
    print(json.dumps(report) if args.json else format_params_table(report))
    return 0


# --- s2r render ----------------------------------------------------------------------------------
def cmd_render(args: argparse.Namespace) -> int:
    env_id = resolve_task(args.task)
    out = Path(args.out)
    if out.suffix.lower() != ".gif":
        raise UserError(f"--out {str(out)!r} must name a .gif file")
    if args.episodes < 1:
        raise UserError(f"--episodes must be at least 1, got {args.episodes}")
    options = FrameOptions(width=args.width, height=args.height, camera=args.camera, inset=args.inset)
    policy = load_policy(args.policy).act if args.policy else None
    env = make_sim_env(env_id, args.engine)
    try:
        if policy is None:
            policy = random_policy(env.action_space, args.seed)
        rollout = rollout_frames(env, policy, episodes=args.episodes, seed=args.seed, options=options)
    finally:
        env.close()
    write_gif(rollout.frames, out, rollout.frame_period)
    returns = ", ".join(f"{r:.1f}" for r in rollout.returns)
    summary = {"out": str(out), "frames": len(rollout.frames), "width": options.width, "height": options.height,
               "frame_period_s": float(rollout.frame_period), "env_id": env_id, "engine": args.engine,
               "policy": args.policy, "seed": args.seed, "episodes": len(rollout.returns),
               "returns": [float(r) for r in rollout.returns], "successes": int(sum(rollout.successes))}
    cliargs.print_result(args.json, summary, [
        f"wrote {out}: {len(rollout.frames)} frames of {options.width}x{options.height} px, "
        f"{rollout.frame_period:g} s each; {args.engine}, {len(rollout.returns)} episode(s), "
        f"returns [{returns}], {sum(rollout.successes)} successful"
    ])
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``params`` and ``render`` to the ``s2r`` command line."""
    tasks = ", ".join(TASK_IDS)
    p = sub.add_parser(
        "params",
        help="list a task's named physical parameters and which engines apply them",
        description="List every named parameter of a task: unit, nominal value, allowed range and engine support.",
    )
    p.add_argument("task", help=f"s2r task: a short name ({tasks}) or its gymnasium id (s2r/...)")
    p.add_argument("--engine", choices=ENGINES, help="only this engine (default: every engine)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=cmd_params)

    r = sub.add_parser(
        "render",
        help="roll a policy (or random actions) out and save an animated GIF",
        description="Roll out POLICY (or seeded random actions) in simulation and write the frames as a GIF, one "
        "frame per control period.",
    )
    cliargs.add_renamed_argument(r, "policy", old="--policy", nargs="?", metavar="POLICY",
                                 help=f"{POLICY_FILES} (default: seeded uniform random actions)")
    r.add_argument("--task", required=True, help=f"s2r task: a short name ({tasks}) or its gymnasium id (s2r/...)")
    r.add_argument("--engine", choices=ENGINES, default="mujoco", help="physics engine")
    r.add_argument("--seed", type=cliargs.seed, default=0, help="seed of the first reset and of the random actions")
    r.add_argument("--episodes", type=int, default=1, help="episodes to record")
    r.add_argument("--width", type=int, default=DEFAULT_RENDER_WIDTH_PX, help="frame width in pixels")
    r.add_argument("--height", type=int, default=DEFAULT_RENDER_HEIGHT_PX, help="frame height in pixels")
    r.add_argument("--camera", help="named camera of the scene (default: the engine's free view)")
    r.add_argument("--inset", metavar="CAMERA",
                   help="also show what this task camera sees (e.g. the claw's top), in the frame's corner")
    r.add_argument("--out", required=True, metavar="FILE.gif", help="animated GIF to write")
    cliargs.add_json_flag(r, "the file, its frames and size, the episodes' returns and successes")
    r.set_defaults(func=cmd_render)
