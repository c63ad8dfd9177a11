"""Simulation speed per engine: env steps/s, raw physics steps/s and the share of an env step spent outside physics.

For each engine: the full gymnasium env with seeded uniform random actions (resetting at episode end), and the
engine's own ``step(1)`` loop alone. The env overhead is

    (time per env step - substeps x time per physics step) / time per env step,

i.e. the share of an env step spent in the action mapping, observation, reward and Python glue. Step counts
are sized per engine from a short pilot run to a time budget; every timing is the best of several repeats,
which filters out other processes on a shared machine. The last line of stdout is one JSON object with
everything measured.

Usage: python benchmarks/sim_speed.py [--quick] [--task dclaw-turn]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from s2r.commands.sim import make_sim_env, resolve_task
from s2r.core.errors import UserError
from s2r.core.extras import MissingExtra
from sim.engines import ENGINES
from sim.render import sim_env


@dataclass(frozen=True)
class BenchConfig:
    """How much to run. Step counts are sized per engine from a short pilot so each repeat takes about
    ``seconds_per_repeat``: a fast engine gets many steps, a slow one stays within the time budget."""

    seconds_per_repeat: float
    """Target wall time of one timed repeat of one measurement (s)."""
    repeats: int
    """Timed repeats; the fastest counts."""
    min_env_steps: int = 100
    """Fewest env steps per repeat, however slow the engine."""
    min_physics_steps: int = 2_000
    """Fewest raw physics steps per repeat."""
    pilot_env_steps: int = 20
    """Untimed env steps first (first-touch allocations, caches); they also size the timed runs."""


QUICK = BenchConfig(seconds_per_repeat=1.0, repeats=3)
FULL = BenchConfig(seconds_per_repeat=5.0, repeats=5)
SEED = 0


@dataclass(frozen=True)
class EngineSpeed:
    """What was measured on one engine."""

    substeps: int
    """Physics steps per control period."""
    physics_timestep_s: float
    """Physics step (s)."""
    control_period_s: float
    """Simulated time per env step (s)."""
    env_step_s: float
    """Wall time per env step, best repeat (s)."""
    env_steps_per_s: float
    """Env steps per wall-clock second."""
    physics_step_s: float
    """Wall time per raw physics step, best repeat (s)."""
    physics_steps_per_s: float
    """Raw physics steps per wall-clock second."""
    env_steps: int
    """Env steps per timed repeat."""
    physics_steps: int
    """Raw physics steps per timed repeat."""
    env_overhead_ratio: float
    """Share of an env step not spent in the physics substeps."""
    realtime_factor: float
    """Simulated seconds per wall-clock second through the env."""


def _time_env(env: Any, actions: np.ndarray) -> float:
    """Wall seconds to run ``actions`` through ``env``, resetting at episode end."""
    start = time.perf_counter()
    for a in actions:
        _, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            env.reset()
    return time.perf_counter() - start


def _time_physics(engine: Any, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        engine.step(1)
    return time.perf_counter() - start


def measure(env_id: str, engine: str, cfg: BenchConfig) -> EngineSpeed:
    """Time one engine on ``env_id``."""
    env = make_sim_env(env_id, engine)
    try:
        inner = sim_env(env)
        rng = np.random.default_rng(SEED)
        env.reset(seed=SEED)
        shape = env.action_space.shape or ()
        pilot_s = _time_env(env, rng.uniform(-1.0, 1.0, (cfg.pilot_env_steps, *shape)).astype(np.float32))
        n_env = max(cfg.min_env_steps, round(cfg.seconds_per_repeat / (pilot_s / cfg.pilot_env_steps)))
        actions = rng.uniform(-1.0, 1.0, (n_env, *shape)).astype(np.float32)
        env_s = min(_time_env(env, actions) for _ in range(cfg.repeats)) / n_env

        # The raw loop runs from the reset pose holding the reset command: the same scene, no env code at all.
        env.reset(seed=SEED)
        eng = inner.engine
        eng.set_command(inner.spec_.reset)
        n_phys = max(cfg.min_physics_steps, round(cfg.seconds_per_repeat / (env_s / inner.substeps)))
        phys_s = min(_time_physics(eng, n_phys) for _ in range(cfg.repeats)) / n_phys
        period = inner.spec_.control_period
        return EngineSpeed(
            substeps=inner.substeps,
            physics_timestep_s=eng.timestep,
            control_period_s=period,
            env_step_s=env_s,
            env_steps_per_s=1.0 / env_s,
            physics_step_s=phys_s,
            physics_steps_per_s=1.0 / phys_s,
            env_steps=n_env,
            physics_steps=n_phys,
            env_overhead_ratio=(env_s - inner.substeps * phys_s) / env_s,
            realtime_factor=period / env_s,
        )
    finally:
        env.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (well under a minute)")
    parser.add_argument("--task", default="dclaw-turn", help="task name or gymnasium id (default: dclaw-turn)")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    try:
        env_id = resolve_task(args.task)
    except UserError as exc:
        print(f"sim_speed: error: {exc}", file=sys.stderr)
        return 2

    engines: dict[str, dict[str, Any]] = {}
    for name in ENGINES:
        try:
            speed = measure(env_id, name, cfg)
        except (MissingExtra, UserError) as exc:
            print(f"{name}: unavailable: {exc}")
            engines[name] = {"available": False, "reason": str(exc)}
            continue
        print(
            f"{name}: {speed.env_steps_per_s:,.0f} env steps/s ({speed.realtime_factor:.1f}x real time), "
            f"{speed.physics_steps_per_s:,.0f} physics steps/s, {speed.substeps} substeps of "
            f"{speed.physics_timestep_s * 1e3:g} ms, env overhead {speed.env_overhead_ratio:.1%}"
        )
        engines[name] = {"available": True, **asdict(speed)}
    result = {
        "benchmark": "sim_speed",
        "task": env_id,
        "quick": args.quick,
        "seconds_per_repeat": cfg.seconds_per_repeat,
        "repeats": cfg.repeats,
        "timing": "best of repeats",
        "engines": engines,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
