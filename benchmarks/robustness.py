"""Robustness of nominal, randomized and EPOpt-epsilon training at an equal step budget.

Three SAC runs on ``dclaw-turn`` with the same seed and number of environment steps:

- ``nominal``: the nominal simulation only;
- ``randomized``: per-episode draws from ``randomization/configs/dclaw.yaml``;
- ``epopt``: the same distribution with EPOpt-epsilon hard-model mining (``randomization/epopt.py``).

Each run's ``best.pt`` is then swept over a grid of two physics parameters (default valve damping x
finger actuator gain, 5 x 5 = 25 cells, the same episode seeds in every cell; every other parameter
nominal). Reported per method: mean success over the cells and the mean success of the worst 10 % of
cells (the EPOpt paper's robustness view), plus the sweep files (JSON and heatmap PNG). The goal is
EPOpt's worst-10 % >= randomization's >= nominal's.

Runs already in ``--runs DIR/<method>`` with the requested step budget are reused, so the expensive part
(training, ~25 min per method at 100k steps on one core) can be done once, e.g. with ``s2r train`` in the
background, and the sweep repeated. ``--quick`` trains three tiny policies for a few thousand steps and
sweeps a 3 x 3 grid: it checks the pipeline end to end in under a minute; its numbers mean nothing.

Run directories: ``nominal``, ``random`` and ``epopt-EPS-N-W`` (one per ``--epopt EPS:N:W``; the first is the
one the goal checks, more are reported next to it).

Usage: python benchmarks/robustness.py [--quick] [--runs DIR] [--steps N] [--grid NAME=LO:HI:N]... [--episodes K]
       [--workers W] [--seed S] [--epopt EPS:N:W]...
The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTION = ROOT / "randomization" / "configs" / "dclaw.yaml"
DEFAULT_GRID = ("valve_damping=0.01:0.25:5", "finger_kp=2:6:5")
QUICK_GRID = ("valve_damping=0.01:0.25:3", "finger_kp=2:6:3")
DEFAULT_STEPS = 100_000
QUICK_STEPS = 1_500
DEFAULT_EPOPT = ("0.3:20:38",)
"""EPOpt settings EPS:MODELS:WARMUP of the full run: the worst 30 % of 20 models per iteration (1,600 steps with the
focus phase), after 38 iterations (61k steps, once the task is learned under randomization) with epsilon = 1."""
QUICK_EPOPT = ("0.25:4:1",)
QUICK_NET = {"hidden": [32, 32], "batch_size": 64, "eval_episodes": 2, "warmup_steps": 500}


@dataclass(frozen=True)
class Method:
    """One training recipe of the comparison."""

    label: str
    """Name in the output (``nominal``, ``randomized``, ``epopt`` or ``epopt EPS:N:W``)."""
    run_name: str
    """Run directory inside ``--runs``."""
    randomized: bool
    """Trains under the default distribution."""
    epopt: tuple[float, int, int] | None = None
    """EPOpt's (eps, models, warm-up iterations), or ``None``."""


def parse_epopt(text: str) -> tuple[float, int, int]:
    try:
        eps, n, warm = text.split(":")
        return float(eps), int(n), int(warm)
    except ValueError:
        raise SystemExit(f"--epopt {text!r} must be EPS:MODELS:WARMUP, e.g. 0.3:20:38") from None


def methods(epopts: tuple[str, ...]) -> list[Method]:
    out = [Method("nominal", "nominal", False), Method("randomized", "random", True)]
    for k, text in enumerate(epopts):
        eps, n, warm = parse_epopt(text)
        out.append(Method("epopt" if k == 0 else f"epopt {text}", f"epopt-{eps:g}-{n}-{warm}", True, (eps, n, warm)))
    return out


def method_config(method: Method, steps: int, seed: int, quick: bool) -> dict[str, Any]:
    """The training config fields of one method."""
    from randomization.distributions import load_distribution

    fields: dict[str, Any] = {"task": "dclaw-turn", "steps": steps, "seed": seed}
    if quick:
        fields.update(QUICK_NET)
    if method.randomized:
        fields["randomize"] = load_distribution(DISTRIBUTION, task="dclaw-turn").to_yaml_dict()
    if method.epopt is not None:
        fields.update(dict(zip(("epopt_eps", "epopt_models", "epopt_warmup"), method.epopt, strict=True)))
    return fields


def trained_run(method: str, run_dir: Path, fields: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """``run_dir``'s best checkpoint, training it first unless a finished run with the same budget is there."""
    from policies.config import config_from_mapping
    from policies.train import train
    from s2r.core.yamlfile import read_yaml_file

    best = run_dir / "best.pt"
    saved = run_dir / "config.yaml"
    if best.is_file() and saved.is_file():
        old = read_yaml_file(saved, "saved training config")
        same = all(old.get(k) == v for k, v in fields.items() if k != "randomize")
        if same and (old.get("randomize") is None) == (fields.get("randomize") is None):
            rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
            last = max((r["step"] for r in rows), default=0)
            if last >= fields["steps"]:
                print(f"{method}: reusing {run_dir} ({last} steps)", flush=True)
                timed = [r["time_s"] for r in rows if r.get("time_s") is not None]
                return best, {"reused": True, "train_time_s": timed[-1] if timed else None}
        raise SystemExit(f"{run_dir} holds a different or unfinished run; move it away or pick another --runs")
    print(f"{method}: training {fields['steps']} steps into {run_dir}", flush=True)
    summary = train(config_from_mapping(fields), run_dir, progress=False)
    return best, {"reused": False, "train_time_s": summary["train_time_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny runs and a 3 x 3 grid (< 1 min)")
    parser.add_argument("--runs", type=Path, help="directory of the three runs (default runs/robust, quick: "
                        "runs/robust-quick)")
    parser.add_argument("--steps", type=int, help=f"environment steps per method (default {DEFAULT_STEPS})")
    parser.add_argument("--grid", action="append", help="NAME=LO:HI:N, twice (default "
                        f"{' '.join(DEFAULT_GRID)})")
    parser.add_argument("--episodes", type=int, help="episodes per cell (default 10, quick 2)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="sweep worker processes")
    parser.add_argument("--seed", type=int, default=0, help="training seed (sweeps use episode seeds 1000..)")
    parser.add_argument("--epopt", action="append", metavar="EPS:N:W", help="EPOpt settings (repeatable; the first "
                        f"is the one the goal checks; default {DEFAULT_EPOPT[0]})")
    args = parser.parse_args()

    from randomization.parallel import ExecutorConfig
    from randomization.sweep import run_sweep, write_sweep
    from s2r.policy_files import load_policy

    steps = args.steps or (QUICK_STEPS if args.quick else DEFAULT_STEPS)
    runs = args.runs or ROOT / "runs" / ("robust-quick" if args.quick else "robust")
    grid = tuple(args.grid or (QUICK_GRID if args.quick else DEFAULT_GRID))
    episodes = args.episodes or (2 if args.quick else 10)
    t0 = time.perf_counter()
    out: dict[str, Any] = {"benchmark": "robustness", "quick": args.quick, "task": "dclaw-turn", "steps": steps,
                           "seed": args.seed, "grid": list(grid), "episodes_per_cell": episodes,
                           "load_average_start": [round(x, 2) for x in os.getloadavg()], "methods": {}}
    for method in methods(tuple(args.epopt or (QUICK_EPOPT if args.quick else DEFAULT_EPOPT))):
        fields = method_config(method, steps, args.seed, args.quick)
        best, info = trained_run(method.label, runs / method.run_name, fields)
        result = run_sweep(best, grid, episodes, load_policy=load_policy, seed=1000,
                           executor_config=ExecutorConfig(workers=args.workers))
        json_path, png_path = write_sweep(result, runs / method.run_name / "sweep")
        s = result.summary
        print(f"{method.label}: mean success {s['mean_success']:.3f}, worst 10 % of cells {s['worst10_success']:.3f} "
              f"({s['cells']} cells) -> {png_path}", flush=True)
        out["methods"][method.label] = {
            **info, "checkpoint": str(best), "mean_success": s["mean_success"], "worst10_success": s["worst10_success"],
            "cells": s["cells"], "worst10_cells": s["worst10_cells"], "sweep_json": str(json_path),
            "heatmap": str(png_path), "sweep_time_s": round(result.wall_time_s, 1),
            **({"epopt": dict(zip(("eps", "models", "warmup_iterations"), method.epopt, strict=True))}
               if method.epopt else {})}
    m = out["methods"]
    out["goal_epopt_ge_randomized_ge_nominal_worst10"] = (
        m["epopt"]["worst10_success"] >= m["randomized"]["worst10_success"] >= m["nominal"]["worst10_success"])
    out["wall_time_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
