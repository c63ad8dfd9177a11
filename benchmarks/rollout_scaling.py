"""Rollout throughput (environment steps per second) with 1 and 2 workers, locally and on Ray.

Each worker builds its env once; episodes of seeded random actions on the claw turn task are mapped
over the workers (``randomization.parallel``). Worker start-up is excluded: every backend first runs
one warm-up episode per worker. "1 worker" locally is the in-process executor (no inter-process
traffic), the honest baseline. Ray runs on a local instance of 2 CPUs when ray is installed.

Prints one JSON object as the last line; ``ratio`` is local 2-worker over 1-worker throughput
(goal >= 1.7 on a machine with 2 free cores). ``effective_cores`` (worker CPU seconds per wall
second) and the load average show whether the cores were free: on a shared machine a low ratio with
about one effective core for two workers means the CPU was taken, not that the workers waited.

    python benchmarks/rollout_scaling.py [--quick] [--episodes N]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from typing import Any

from randomization.parallel import EnvSetup, EpisodeRequest, ExecutorConfig, open_executor, run_random_episode

GOAL_RATIO = 1.7
ENV_ID = "s2r/DClawTurnFixed-v0"
FULL_EPISODES = 200
QUICK_EPISODES = 40
WARMUP_SEED = 1_000_000
"""Seeds of the warm-up episodes, apart from the measured ones."""


def measure(config: ExecutorConfig, episodes: int) -> dict[str, Any]:
    """Steps per second over ``episodes`` random episodes on ``config``'s workers (start-up excluded)."""
    setup = EnvSetup(ENV_ID)
    with open_executor(setup, config) as ex:
        ex.map(run_random_episode, [EpisodeRequest(seed=WARMUP_SEED + i) for i in range(ex.workers)])
        start = time.perf_counter()
        stats = ex.map(run_random_episode, [EpisodeRequest(seed=i) for i in range(episodes)])
        wall = time.perf_counter() - start
    steps = sum(s.steps for s in stats)
    cpu = sum(s.cpu_seconds for s in stats)
    # CPU seconds the workers got per wall second: 2 workers on a machine with 2 free cores get ~2.
    return {"workers": config.workers, "episodes": episodes, "steps": steps, "seconds": round(wall, 3),
            "steps_per_s": round(steps / wall, 1), "worker_cpu_s": round(cpu, 3),
            "effective_cores": round(cpu / wall, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_EPISODES} episodes per measurement")
    parser.add_argument("--episodes", type=int, help=f"episodes per measurement (default {FULL_EPISODES})")
    parser.add_argument("--no-ray", action="store_true", help="skip Ray even when it is installed")
    args = parser.parse_args()
    episodes = args.episodes or (QUICK_EPISODES if args.quick else FULL_EPISODES)
    load_before = os.getloadavg()[0]

    local = {n: measure(ExecutorConfig(workers=n), episodes) for n in (1, 2)}
    for n, r in local.items():
        print(f"local {n} worker(s): {r['steps_per_s']:.0f} steps/s ({r['steps']} steps in {r['seconds']} s, "
              f"{r['effective_cores']} cores' worth of CPU)")
    ratio = local[2]["steps_per_s"] / local[1]["steps_per_s"]

    ray_result: dict[str, Any] | None = None
    ray_note = "ray not installed (pip install 's2r[ray]')"
    if not args.no_ray and importlib.util.find_spec("ray") is not None:
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            runs = {n: measure(ExecutorConfig(workers=n, ray="auto"), episodes) for n in (1, 2)}
        finally:
            ray.shutdown()
        for n, r in runs.items():
            print(f"ray   {n} worker(s): {r['steps_per_s']:.0f} steps/s ({r['steps']} steps in {r['seconds']} s, "
                  f"{r['effective_cores']} cores' worth of CPU)")
        ray_result = {"1": runs[1], "2": runs[2], "ratio": round(runs[2]["steps_per_s"] / runs[1]["steps_per_s"], 3)}
        ray_note = "local Ray instance, 2 CPUs"
    elif args.no_ray:
        ray_note = "skipped (--no-ray)"

    print(json.dumps({
        "benchmark": "rollout_scaling",
        "env": ENV_ID,
        "cpus": os.cpu_count(),
        "load_average_1min_before": round(load_before, 2),
        "episodes_per_measurement": episodes,
        "local": {"1": local[1], "2": local[2]},
        "ray": ray_result,
        "ray_note": ray_note,
        "ratio": round(ratio, 3),
        "goal_ratio": GOAL_RATIO,
        "meets_goal": ratio >= GOAL_RATIO,
    }))


if __name__ == "__main__":
    main()
