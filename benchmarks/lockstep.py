"""How much faster than real time the lock-step emulator runs deployments: the claw and the quadruped.

For each robot a lock-step emulator is started (``open_robot(..., OpenOptions(lockstep=True))``), the bus connects,
and the controller runs scripted episodes at the shipped config exactly as ``s2r deploy --lockstep`` does (the claw
``scripted:random``, the quadruped ``scripted:hold``: random legs tip it over). Simulated time is the emulator's
clock; wall time is ``time.perf_counter``. ``x_real_time`` is simulated time over wall time for the episodes
(resets included, the emulator's start and connect not); ``x_real_time_with_start`` includes them. The host's
load is part of the measurement (``load_average_1min``): compare runs side by side. The last stdout line is one
JSON object.

Usage: python benchmarks/lockstep.py [--quick] [--episodes N] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
QUICK_EPISODES = 2
FULL_EPISODES = 6
ROBOTS = {"claw": ("dclaw.yaml", "random"), "quadruped": ("dkitty.yaml", "hold")}
"""Benchmark name -> (hardware config, scripted policy)."""


def run_robot(config_file: str, policy_name: str, episodes: int, seed: int) -> dict[str, Any]:
    from robot.config import load_config
    from robot.controller import Controller, ControllerSettings
    from robot.hardware import OpenOptions, open_robot
    from robot.runner import run_episodes, run_info
    from s2r.core.trajlog import TrajectoryWriter
    from s2r.policy_files import load_policy
    from sim import resolve_env_id
    from sim.tasks import make_task

    config = load_config(ROOT / "hardware_configs" / config_file)
    spec = config.task_spec()
    policy = load_policy(f"scripted:{policy_name}", spec=spec, seed=seed, limits=(config.low, config.high))
    task = make_task(resolve_env_id(config.task))
    log = logging.getLogger("benchmarks.lockstep")
    log.addHandler(logging.NullHandler())
    log.propagate = False
    w0 = time.perf_counter()
    with open_robot(config, "emulator", OpenOptions(lockstep=True)) as io, tempfile.TemporaryDirectory() as logs:
        io.bus.connect()
        ctrl = Controller(policy.act, io.bus, task, config, settings=io.controller_settings(ControllerSettings()),
                          logger=log, imu=io.imu, placer=io.placer, clock=io.clock, sleep=io.sleep)
        w1, t1 = time.perf_counter(), io.clock()
        summary = run_episodes(ctrl, TrajectoryWriter(logs, run_info(config, "emulator", spec.episode_steps)),
                               episodes, np.random.default_rng(seed))
        w2, t2 = time.perf_counter(), io.clock()
    sim_s, wall_s = t2 - t1, w2 - w1
    return {
        "config": f"hardware_configs/{config_file}",
        "policy": policy.description,
        "episodes": summary.episodes,
        "stop_kind": summary.stop_kind,
        "control_period_s": config.control_period_s,
        "cycles": summary.loop["cycles"],
        "simulated_s": round(sim_s, 3),
        "wall_s": round(wall_s, 3),
        "start_and_connect_wall_s": round(w1 - w0, 3),
        "x_real_time": round(sim_s / wall_s, 2),
        "x_real_time_with_start": round(t2 / (w2 - w0), 2),
        "wall_ms_per_cycle": round(1e3 * wall_s / max(1, summary.loop["cycles"]), 3),
        "comm_errors": summary.comm_errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_EPISODES} episodes per robot")
    parser.add_argument("--episodes", type=int, help=f"episodes per robot (default {FULL_EPISODES})")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    episodes = args.episodes or (QUICK_EPISODES if args.quick else FULL_EPISODES)
    results: dict[str, Any] = {}
    for name, (config_file, policy) in ROBOTS.items():
        results[name] = r = run_robot(config_file, policy, episodes, args.seed)
        print(f"{name}: {r['simulated_s']:.1f} s simulated in {r['wall_s']:.2f} s wall = {r['x_real_time']:.1f}x real "
              f"time ({r['wall_ms_per_cycle']:.2f} ms per {r['control_period_s'] * 1e3:.0f} ms cycle; "
              f"{r['comm_errors']} comm errors; {r['stop_kind']})")
    print(json.dumps({
        "benchmark": "lockstep",
        "episodes_per_robot": episodes,
        "seed": args.seed,
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        **results,
    }))


if __name__ == "__main__":
    main()
