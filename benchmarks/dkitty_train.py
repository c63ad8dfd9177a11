"""D'Kitty training: steps and wall-clock time to a policy, its simulation success, and the same policy deployed.

Trains SAC on ``dkitty-stand`` (or ``dkitty-walk``) from the shipped config ``policies/configs/dkitty_<task>.yaml``
into ``--runs DIR/<task>`` (a finished run with the same config is reused, so the expensive part can run in the
background with ``s2r train`` first; ``--run DIR`` takes any finished run as it is), exports ``best.pt`` to ONNX,
evaluates the ONNX policy over 50 simulation episodes, and with ``--deploy N`` runs it for N episodes on the servo
emulator (``s2r deploy`` in its own process as a user runs it; MuJoCo-backed with the nominal reality unless
``--reality FILE`` says otherwise, e.g. ``hardware_configs/reality/dkitty_pybullet_gap.yaml``; ``--lockstep`` in
simulated time). The walk deploys once per position source (``SOURCES``): motion capture, which the emulator serves
from its physics, and leg odometry, which drifts. Its success is reported twice: as the robot judges it (on the
position it measures) and on the emulator's physics (``true_success_rate``), which is what the goal compares. A fall
is a safety stop; the measurement counts that episode as failed and starts ``s2r deploy`` again, as an operator who
puts the robot back would (:func:`deploy_until`).
Goals: stand >= 0.9 success in simulation, walk >= 0.7, and the deployed policy within 15 points of its simulation
success.

A slow benchmark (hours of CPU for the full budget), not part of the test suite. ``--quick`` trains a tiny
policy for a thousand steps and deploys it for one episode: it checks the pipeline end to end in under a
minute; its numbers mean nothing.

Usage: python benchmarks/dkitty_train.py [--quick] [--task stand|walk] [--runs DIR | --run DIR] [--steps N]
       [--episodes K] [--deploy N] [--lockstep] [--reality FILE] [--randomize FILE]
The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from export.onnx_policy import OnnxPolicy
from policies.envs import make_env
from sim.rollout import to_env_action
from sim.rotations import tilt

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "hardware_configs"
SOURCES = {"stand": {"none": CONFIGS / "dkitty.yaml"},
           "walk": {"mocap": CONFIGS / "dkitty_walk.yaml", "odometry": CONFIGS / "dkitty_walk_odometry.yaml"}}
"""Each task's robot per position source: the stand needs none; the walk deploys with each."""
GOALS = {"stand": 0.9, "walk": 0.7}
"""Simulation success each task must reach (fraction of evaluation episodes)."""
DEPLOY_GAP_POINTS = 0.15
"""Largest difference between deployed and simulation success (fraction)."""
QUICK = {"steps": 1_000, "hidden": [32, 32], "batch_size": 64, "warmup_steps": 300, "eval_episodes": 1,
         "eval_interval": 500}
EVAL_SEED = 10_000
"""First seed of the final evaluation, away from the training evaluations' seeds."""


def trained_run(run_dir: Path, fields: dict[str, Any]) -> dict[str, Any]:
    """Train into ``run_dir`` unless a finished run with the same fields is there; steps and time either way."""
    from policies.config import config_from_mapping
    from policies.train import train
    from s2r.core.yamlfile import read_yaml_file

    saved = run_dir / "config.yaml"
    metrics = run_dir / "metrics.jsonl"
    if saved.is_file() and metrics.is_file():
        old = read_yaml_file(saved, "saved training config")
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        last = max((r["step"] for r in rows), default=0)
        if any(old.get(k) != v for k, v in fields.items()) or last < fields["steps"]:
            raise SystemExit(f"{run_dir} holds a different or unfinished run; move it away, resume it with "
                             f"`s2r train --out {run_dir} --resume`, or pick another --runs")
        timed = [r["time_s"] for r in rows if r.get("time_s") is not None]
        print(f"reusing {run_dir} ({last} steps)", flush=True)
        return {"reused": True, "steps": last, "train_time_s": timed[-1] if timed else None}
    print(f"training {fields['steps']} steps into {run_dir}", flush=True)
    summary = train(config_from_mapping(fields), run_dir, progress=False)
    return {"reused": False, "steps": summary["steps"], "train_time_s": summary["train_time_s"]}


def sim_as_the_robot_judges(onnx: Path, episodes: int, seed: int) -> dict[str, Any]:
    """The policy in simulation (seeds ``seed, seed + 1, ...``, as the evaluation), judged as the robot judges it: the
    controller ends an episode whose torso passes the task's tilt bound (a fall), so such an episode fails here
    whatever its end. Also counts those episodes. The walk's simulation ends at the same bound now (the task's
    ``terminated``), so this equals the plain success rate; it checks that the two rules agree."""
    policy = OnnxPolicy(onnx)
    if policy.info is None:
        raise SystemExit(f"{onnx}: no s2r metadata naming its environment")
    env = make_env(policy.info.env_id, policy.info.engine or "mujoco", dict(policy.info.env_kwargs) or None)
    sim_env = env.unwrapped
    bound = float(sim_env.task.spec.extras["max_tilt_rad"])  # type: ignore[attr-defined]
    low, high = np.asarray(env.action_space.low), np.asarray(env.action_space.high)  # type: ignore[attr-defined]
    passed = kept = 0
    try:
        for i in range(episodes):
            obs, info = env.reset(seed=seed + i)
            most = 0.0
            while True:
                action = policy.act(np.asarray(obs, dtype=np.float32))
                obs, _, terminated, truncated, info = env.step(to_env_action(action, low, high))
                most = max(most, tilt(sim_env.read().base_quat))  # type: ignore[attr-defined]
                if terminated or truncated:
                    break
            passed += most > bound
            kept += bool(info.get("success")) and most <= bound
    finally:
        env.close()
    return {"episodes": episodes, "passed_tilt_bound": passed, "success_rate_within_tilt_bound": kept / episodes,
            "tilt_bound_rad": bound}


MAX_FALLS = 10
"""Falls after which the deployment measurement gives up (each one ends an ``s2r deploy``)."""


def deploy(policy: Path, robot: Path, episodes: int, log_dir: Path, lockstep: bool,
           reality: str | None, seed: int = EVAL_SEED) -> dict[str, Any]:
    """``s2r deploy`` of ``policy`` on a fresh emulator of ``robot`` (``reality``, or the nominal one); its JSON
    summary."""
    cmd = [sys.executable, "-m", "s2r.cli", "deploy", str(policy), "--robot", str(robot), "--driver", "emulator",
           "--episodes", str(episodes), "--log-dir", str(log_dir), "--seed", str(seed), "--json",
           *(["--lockstep"] if lockstep else []), *(["--reality", reality] if reality else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode not in (0, 3) or not lines:
        raise SystemExit(f"s2r deploy failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def deploy_until(policy: Path, robot: Path, episodes: int, log_root: Path, lockstep: bool,
                 reality: str | None, seed: int = EVAL_SEED) -> dict[str, Any]:
    """Deploy until ``episodes`` episodes have ended, as an operator would: a fall (the safety stop on the torso's
    tilt) fails the episode it ends, the robot is put back and ``s2r deploy`` starts again with the next seed (from
    ``seed``). Any other stop ends the measurement. Success rates are over the ended episodes, falls included."""
    parts: list[dict[str, Any]] = []
    ended = falls = 0
    fell = False
    successes = true_successes = 0.0
    returns = 0.0
    while ended < episodes:
        part = deploy(policy, robot, episodes - ended, log_root / f"part{len(parts)}", lockstep, reality,
                      seed=seed + ended)
        parts.append(part)
        done = int(part["episodes"])
        successes += (part["success_rate"] or 0.0) * done
        true_successes += (part["true_success_rate"] or 0.0) * done
        returns += (part["return_mean"] or 0.0) * done
        ended += done
        fell = part["stop_kind"] == "safety" and str(part["stop_reason"]).startswith("tilt")
        if not fell:
            break
        falls += 1
        ended += 1
        if falls >= MAX_FALLS:
            break
    last = parts[-1]
    judged = any(p["true_success_rate"] is not None for p in parts)
    return {"episodes": ended, "falls": falls, "complete_episodes": ended - falls,
            "success_rate": successes / ended if ended else None,
            "true_success_rate": true_successes / ended if ended and judged else None,
            "return_mean_of_complete": returns / (ended - falls) if ended > falls else None,
            "stop_kind": last["stop_kind"], "stop_reason": last["stop_reason"],
            "completed": ended >= episodes and (last["stop_kind"] == "completed" or fell)}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny run and one deployed episode (< 1 min)")
    parser.add_argument("--task", choices=sorted(GOALS), default="stand", help="which D'Kitty task (default stand)")
    parser.add_argument("--runs", type=Path, help="directory of the run (default runs/dkitty, quick: "
                        "runs/dkitty-quick)")
    parser.add_argument("--steps", type=int, help="environment steps (default: the shipped config's)")
    parser.add_argument("--episodes", type=int, help="simulation evaluation episodes (default 50, quick 2)")
    parser.add_argument("--run", type=Path, help="a finished run to export and measure as it is (no training)")
    parser.add_argument("--deploy", type=int, help="episodes on the emulator (default 0, quick 1), per position "
                        "source for the walk")
    parser.add_argument("--lockstep", action="store_true", help="deploy on the lock-step emulator (simulated time)")
    parser.add_argument("--reality", metavar="FILE", help="the emulated robot's reality (default: the nominal one)")
    parser.add_argument("--deploy-seed", type=int, default=EVAL_SEED, help=f"seed of the first deployed episode "
                        f"(default {EVAL_SEED}, the simulation evaluation's)")
    parser.add_argument("--sources", nargs="+", help="the walk's position sources to deploy with (default: all of "
                        f"{', '.join(SOURCES['walk'])})")
    parser.add_argument("--randomize", metavar="FILE", help="train under this parameter distribution (e.g. "
                        "randomization/configs/dkitty.yaml); the evaluations stay nominal")
    args = parser.parse_args()

    from export.onnx_export import ExportConfig, export_policy
    from s2r.core.yamlfile import read_yaml_file
    from s2r.policy_files import evaluate_policy_file

    shipped = ROOT / "policies" / "configs" / f"dkitty_{args.task}.yaml"
    fields: dict[str, Any] = read_yaml_file(shipped, "training config")
    if args.quick:
        fields.update(QUICK)
    if args.steps:
        fields["steps"] = args.steps
    if args.randomize:
        from randomization.distributions import load_distribution

        fields["randomize"] = load_distribution(args.randomize, task=fields["task"]).to_yaml_dict()
    runs = args.runs or ROOT / "runs" / ("dkitty-quick" if args.quick else "dkitty")
    episodes = args.episodes or (2 if args.quick else 50)
    deploy_episodes = args.deploy if args.deploy is not None else (1 if args.quick else 0)
    t0 = time.perf_counter()
    out: dict[str, Any] = {"benchmark": "dkitty_train", "quick": args.quick, "task": f"dkitty-{args.task}",
                           "randomize": args.randomize,
                           "seed": fields.get("seed", 0), "cpus": os.cpu_count(),
                           "load_average_start": [round(x, 2) for x in os.getloadavg()]}
    if args.run is not None:
        if not (args.run / "best.pt").is_file():
            raise SystemExit(f"--run {args.run}: no best.pt there; expected a finished run directory")
        run_dir = args.run
        saved = read_yaml_file(run_dir / "config.yaml", "saved training config")
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
        out["train"] = {"reused": True, "run": str(run_dir), "algo": saved.get("algo"),
                        "steps": max((r["step"] for r in rows), default=0)}
        out["seed"] = saved.get("seed", 0)
    else:
        run_dir = runs / args.task
        out["train"] = trained_run(run_dir, fields)
    onnx = export_policy(run_dir / "best.pt", run_dir / "policy.onnx", ExportConfig()).path
    sim = evaluate_policy_file(onnx, episodes, EVAL_SEED)
    out["sim"] = {k: sim[k] for k in ("episodes", "success_rate", "return_mean", "return_std")}
    if args.task == "walk":
        out["sim"]["as_the_robot_judges"] = sim_as_the_robot_judges(onnx, episodes, EVAL_SEED)
    out["goal_sim_success"] = GOALS[args.task]
    out["sim_goal_met"] = sim["success_rate"] >= GOALS[args.task]
    print(f"simulation: success {sim['success_rate']:.2f} over {episodes} episodes "
          f"(goal {GOALS[args.task]:.2f})", flush=True)
    out["robot"] = {}
    sources = SOURCES[args.task]
    for name in args.sources or ():
        if name not in sources:
            raise SystemExit(f"--sources: {name!r} is not a position source of the {args.task} robot "
                             f"(one of {', '.join(sources)})")
    chosen = {k: v for k, v in sources.items() if deploy_episodes and (not args.sources or k in args.sources)}
    for source, robot_config in chosen.items():
        t_deploy = time.perf_counter()
        where = f"deploy-{source}-{Path(args.reality).stem if args.reality else 'nominal'}-{args.deploy_seed}"
        robot = deploy_until(onnx, robot_config, deploy_episodes, run_dir / where, args.lockstep, args.reality,
                             args.deploy_seed)
        # The emulator's physics judges: the robot's own judgement is only as good as its position source.
        judged = robot["true_success_rate"] if robot["true_success_rate"] is not None else robot["success_rate"]
        gap = abs((judged or 0.0) - sim["success_rate"])
        out["robot"][source] = {
            **robot, "lockstep": args.lockstep, "reality": args.reality, "gap_points": round(100 * gap, 1),
            "goal_met": robot["completed"] and gap <= DEPLOY_GAP_POINTS + 1e-9,
            "wall_time_s": round(time.perf_counter() - t_deploy, 1)}
        print(f"emulated robot ({source}): success {judged or 0.0:.2f} on the physics, "
              f"{robot['success_rate'] or 0.0:.2f} as the robot judged it, over {robot['episodes']} episodes "
              f"({robot['falls']} ended by a fall; {robot['stop_kind']}), {100 * gap:.0f} points from simulation",
              flush=True)
    out["wall_time_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
