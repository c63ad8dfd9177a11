"""Frames per second of the task cameras, rendered offscreen on the CPU by MuJoCo and PyBullet.

For each task camera of the claw (``top``, 84 x 84): the valve is set to a new angle before every frame (so no
engine can reuse a frame), and the time of ``render_camera`` alone is measured over ``--frames`` frames after a
warm-up. MuJoCo renders through ``MUJOCO_GL`` (default ``egl``: Mesa's llvmpipe on a machine without a GPU), with
``LP_NUM_THREADS=1`` (one rasterizer thread) unless the environment sets it; PyBullet through its TinyRenderer,
single-threaded. The goal: >= 500 fps at 84 x 84 on one core with MuJoCo (``goals``). Other jobs on the machine
slow every wall-clock number: the load average is reported next to them, and ``fps_per_cpu_second`` (frames over
the process's CPU time) is what a core of its own would give. The last stdout line is one JSON object.

With ``--visual`` each camera is measured twice more, through :meth:`sim.env.SimEnv.render_camera` at nominal
visual parameters and under a fresh draw of ``randomization/configs/dclaw_visual.yaml`` every
``VISUAL_FRAMES_PER_DRAW`` frames (PyBullet without the distractors, which it cannot draw): the cost of visual
randomization, pixel effects included.

Usage: python benchmarks/render_fps.py [--quick] [--frames N] [--visual]
"""

from __future__ import annotations

import argparse
import json
import os

# One llvmpipe thread: the goal is per core, and Mesa reads this when the first GL context is made.
os.environ.setdefault("LP_NUM_THREADS", "1")

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from randomization.distributions import ParameterDistribution, load_distribution
from s2r.core.resources import shipped_file
from sim.engines import make_engine
from sim.engines.base import MUJOCO_ONLY_KINDS
from sim.env import SimEnv
from sim.tasks.dclaw_turn import DClawTurn

GOAL_FPS = 500.0
"""MuJoCo frames per second at the task's resolution on one core."""
TIMESTEP_S = 0.0025
WARMUP_FRAMES = 10
VISUAL_FRAMES_PER_DRAW = 10
"""Frames rendered per draw of the visual parameters (an episode's frames share one draw)."""


def time_renders(frames: int, prepare: Callable[[int, float], None],
                 render: Callable[[], np.ndarray]) -> dict[str, Any]:
    """Time ``render()`` alone over ``frames`` frames after ``WARMUP_FRAMES`` untimed ones; before each, the untimed
    ``prepare(i, angle)`` sets frame ``i``'s scene with the valve at ``angle`` (a new angle every frame, so no
    engine can reuse one)."""
    elapsed = cpu = 0.0
    image = np.zeros(0)
    for i, angle in enumerate(np.linspace(-np.pi, np.pi, frames + WARMUP_FRAMES)):
        prepare(i, float(angle))
        t0, c0 = time.perf_counter(), time.process_time()
        image = render()
        if i >= WARMUP_FRAMES:
            elapsed += time.perf_counter() - t0
            cpu += time.process_time() - c0
    # fps per CPU second: what a core of its own would give, on a machine where other jobs take turns on the cores.
    return {"fps": round(frames / elapsed, 1), "ms_per_frame": round(1e3 * elapsed / frames, 3),
            "fps_per_cpu_second": round(frames / cpu, 1), "shape": list(image.shape), "frames": frames}


def fps(engine_name: str, camera: str, frames: int) -> dict[str, Any]:
    """Frames per second of the engine's own ``render_camera``."""
    task = DClawTurn()
    engine = make_engine(engine_name, task, TIMESTEP_S)
    try:
        return time_renders(frames, lambda i, angle: engine.reset(task.spec.reset, np.array([angle])),
                            lambda: engine.render_camera(camera))
    finally:
        engine.close()


def visual_fps(engine_name: str, camera: str, frames: int, randomized: bool) -> dict[str, Any]:
    """Frames per second of ``SimEnv.render_camera``: nominal visual parameters, or a new draw every
    ``VISUAL_FRAMES_PER_DRAW`` frames (the draw's cost, which happens once per episode, is not timed)."""
    env = SimEnv(DClawTurn(), engine=engine_name)
    dist = load_distribution(shipped_file("randomization.configs", "dclaw_visual.yaml"))
    if engine_name != "mujoco":
        dist = ParameterDistribution(dist.task, {k: m for k, m in dist.marginals.items()
                                                 if env.params.spec(k).kind not in MUJOCO_ONLY_KINDS})
    rng = np.random.default_rng(0)
    env.reset(seed=0)

    def prepare(i: int, angle: float) -> None:
        if randomized and i % VISUAL_FRAMES_PER_DRAW == 0:
            env.params.assign(dist.sample(rng))
        env.engine.reset(env.spec_.reset, np.array([angle]))

    try:
        return time_renders(frames, prepare, lambda: env.render_camera(camera))
    finally:
        env.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames (under a minute)")
    parser.add_argument("--frames", type=int, default=None, help="frames measured per engine and camera")
    parser.add_argument("--visual", action="store_true",
                        help="also measure through the env with visual randomization off and on")
    args = parser.parse_args()
    frames = args.frames or (200 if args.quick else 2000)
    results: dict[str, Any] = {}
    for cam in DClawTurn().spec.cameras:
        for engine in ("mujoco", "pybullet"):
            r = fps(engine, cam.name, frames)
            results[f"{engine}/{cam.name}"] = r
            print(f"{engine:9s} {cam.name} {cam.width}x{cam.height}: {r['fps']:8.1f} fps wall, "
                  f"{r['fps_per_cpu_second']:8.1f} per CPU second")
            if args.visual:
                for label, on in (("visual_off", False), ("visual_on", True)):
                    r = visual_fps(engine, cam.name, frames, on)
                    results[f"{engine}/{cam.name}/{label}"] = r
                    print(f"{engine:9s} {cam.name} {label:10s}: {r['fps']:8.1f} fps wall, "
                          f"{r['fps_per_cpu_second']:8.1f} per CPU second")
    mujoco_fps = min(v["fps"] for k, v in results.items() if k.startswith("mujoco/") and k.count("/") == 1)
    print(json.dumps({
        "benchmark": "render_fps",
        "mujoco_gl": os.environ.get("MUJOCO_GL", "egl"),
        "lp_num_threads": os.environ["LP_NUM_THREADS"],
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "cpu_count": os.cpu_count(),
        "results": results,
        "goals": {"mujoco_fps_at_task_resolution": GOAL_FPS, "met": mujoco_fps >= GOAL_FPS},
    }))


if __name__ == "__main__":
    main()
