"""Learning on the quadruped: robot minutes to a stated success with ``s2r finetune`` on the emulated D'Kitty.

``--task stand`` (default) or ``walk``. Two starts (``--start``):

* ``scratch``: an actor that never learned (a run of 1,000 uniformly random simulation steps and no update), trained
  on robot data only (``--sim-fraction 0``), as SAC learned to walk on a real Minitaur (Haarnoja et al. 2019);
* a run directory: a simulation run's deployed policy, with half of each batch from its simulation replay.

The robot is the lock-step emulator with ``--reality`` (default: the PyBullet-gap robot, not the training simulator)
and the recovery reset (``ROBOTS``: ``hardware_configs/dkitty_recovery.yaml``, and for the walk
``dkitty_walk_recovery.yaml`` with motion capture): a fall ends an episode and the robot rights itself and stands
up. A robot that lands on its back cannot: three failed resets in a row stop the run safely. The benchmark then
counts a person's intervention and resumes (``s2r finetune --resume``: a fresh emulator, the robot put down on its
feet), at most ``MAX_INTERVENTIONS`` times.

Robot time is every logged episode's control steps times its control period plus its reset's duration, from the
episode logs (a failed reset's few seconds are not logged, and not counted). The learning curve is one row per
round: robot minutes at its end, the round's candidate's success on its gate episodes, over all its looks (for the
walk also the mean distance it covered towards the target, judged on the emulator's physics), and the incumbent's
(the policy in service's) measured success. ``--looks`` is ``s2r finetune --gate-looks``: a candidate ahead of the
incumbent without passing is measured again, with the incumbent. Reported: the robot minutes to the first candidate
at or above ``--target`` on its gate episodes; each policy put in service (``in_service``), with its success when it
passed and over all the episodes measuring it since; the robot minutes to the first policy in service at or above
``--target`` over all of those; and the wall time.

A slow benchmark (tens of minutes per run), not part of the test suite. ``--quick`` fine-tunes from scratch for a
few episodes: it checks the pipeline end to end in about a minute; its numbers mean nothing.

Usage: python benchmarks/dkitty_robot_learning.py [--quick] [--task stand|walk] [--start scratch|RUN_DIR] [--out DIR]
       [--episodes N] [--explore K] [--gate K] [--looks L] [--reality FILE] [--robot FILE] [--target P] [--seed S]
The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from s2r.core.trajlog import read_episodes

ROOT = Path(__file__).resolve().parents[1]
ROBOTS = {"stand": ROOT / "hardware_configs" / "dkitty_recovery.yaml",
          "walk": ROOT / "hardware_configs" / "dkitty_walk_recovery.yaml"}
GAP_REALITY = ROOT / "hardware_configs" / "reality" / "dkitty_pybullet_gap.yaml"
SCRATCH_STEPS = 1_000
"""Uniformly random simulation steps of the untrained run: the learner's state and nothing learned."""
MAX_INTERVENTIONS = 100
"""Times a person may put the robot back on its feet before the measurement gives up."""
MAX_RESTARTS = 5
"""Times an operator may restart the run after the watchdog stopped it (the emulator's physics gave readings outside
every range) before the measurement gives up."""
EXIT_OK, EXIT_SAFETY_STOP = 0, 3
QUICK = {"episodes": 4, "explore": 1, "gate": 1, "incumbent": 1}


def scratch_run(task: str, run_dir: Path, seed: int) -> Path:
    """An untrained run of ``task`` in ``run_dir`` (made once): its actor and learner state, before any update."""
    if not (run_dir / "last.pt").is_file():
        config = ROOT / "policies" / "configs" / f"dkitty_{task}.yaml"
        cmd = [sys.executable, "-m", "s2r.cli", "train", "--config", str(config), "--seed", str(seed), "--out",
               str(run_dir), "--set", f"steps={SCRATCH_STEPS}", "--set", f"warmup_steps={SCRATCH_STEPS}",
               "--set", "threads=1", "--set", "eval_episodes=1", "--json"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != EXIT_OK:
            raise SystemExit(f"s2r train failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}")
    return run_dir


def finetune(start: Path, out: Path, flags: list[str], resume: bool) -> dict[str, Any]:
    """One ``s2r finetune`` process; its JSON summary (a safety stop is a result, not a failure)."""
    cmd = [sys.executable, "-m", "s2r.cli", "finetune", str(start), "--out", str(out), *flags, "--json", "--quiet",
           *(["--resume"] if resume else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode not in (EXIT_OK, EXIT_SAFETY_STOP) or not lines:
        raise SystemExit(f"s2r finetune failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def needs_a_person(summary: dict[str, Any]) -> bool:
    """Whether the run stopped because the robot could not right itself (on its back)."""
    return summary["stop_kind"] == "safety" and "failed resets in a row" in str(summary["stop_reason"])


def watchdog_stop(summary: dict[str, Any]) -> bool:
    """Whether the watchdog stopped the run (implausible or missing readings): an operator checks the robot and
    resumes, and the benchmark reports each such restart with its reason."""
    return summary["stop_kind"] == "safety" and str(summary["stop_reason"]).startswith("watchdog:")


def walked_m(meta: Mapping[str, Any]) -> float | None:
    """How far the torso came towards the walk's target (m), on the emulator's physics in the episode's frame: the
    start's distance (the task's drawn start, about 2 m) less the end's; ``None`` without the truth or a goal."""
    truth, goal = meta.get("truth"), meta.get("goal") or {}
    if truth is None or "target_x" not in goal:
        return None
    target = np.array([goal["target_x"], goal["target_y"]])
    return float(np.linalg.norm(target) - np.linalg.norm(target - np.asarray(truth["base_pos"][:2])))


def learning_curve(out: Path) -> tuple[list[dict[str, Any]], float]:
    """One row per round (robot minutes at its end, the candidate's gate success and walked distance, the incumbent's
    measured success then) from the episode logs and ``finetune.json``'s history, and the total robot time (s)."""
    history = json.loads((out / "finetune.json").read_text())["history"]
    incumbent_rate = {int(h["episode"]): h["incumbent_success_rate"] for h in history}
    robot_s = 0.0
    rounds: dict[int, dict[str, Any]] = {}
    for ep in sorted(read_episodes(out / "logs"), key=lambda e: int(e.meta["index"])):
        m = ep.meta
        robot_s += int(m["steps"]) * float(m["control_period"]) + float(m.get("reset_duration_s") or 0.0)
        k = int(m["finetune"]["round"])
        row = rounds.setdefault(k, {"round": k, "explore": 0, "gate": [], "walked": []})
        if m["finetune"]["kind"] == "explore":
            row["explore"] += 1
        elif m["finetune"]["kind"] == "eval-candidate":
            row["gate"].append(bool(m["success"]))
            walked = walked_m(m)
            # a fall ends the episode before the truth is asked: it walked no nearer than where it fell, count 0
            row["walked"].append(walked if walked is not None else 0.0)
        row["robot_min"] = round(robot_s / 60.0, 2)
        row["incumbent_success_rate"] = incumbent_rate.get(int(m["index"]))
    curve = []
    for k in sorted(rounds):
        row = rounds[k]
        gate, walked = row.pop("gate"), row.pop("walked")
        row["candidate_success"] = round(float(np.mean(gate)), 3) if gate else None
        row["candidate_episodes"] = len(gate)
        if any(w != 0.0 for w in walked):
            row["candidate_walked_m"] = round(float(np.mean(walked)), 2)
        curve.append(row)
    return curve, robot_s


def in_service(gate: Mapping[str, Any], curve: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each policy the gate (``finetune.json``'s ``gate``) put in service: the round, robot minutes at that round's
    end, its success as measured when it passed, and as measured last (its episodes as the candidate and then as the
    incumbent, every look): a policy put in service on 10 episodes may measure lower over more."""
    robot_min = {int(r["round"]): r["robot_min"] for r in curve}
    decisions = gate.get("decisions", [])
    rows = []
    for d in decisions:
        if not d["replaced"]:
            continue
        name = f"round {d['round']}"
        if gate.get("incumbent") == name:  # still in service: the gate's own count has every episode since
            successes, episodes = gate["incumbent_successes"], gate["incumbent_episodes"]
        else:  # replaced since: the decision that replaced it (the last naming it) has its final count
            last = [e for e in decisions if e["incumbent"] == name][-1]
            successes, episodes = last["incumbent_successes"], last["incumbent_episodes"]
        rows.append({"round": int(d["round"]), "robot_min": robot_min.get(int(d["round"])),
                     "passed_with": f"{d['candidate_successes']}/{d['candidate_episodes']}",
                     "measured_last": f"{successes}/{episodes}", "success": round(successes / episodes, 3)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few episodes from scratch (about a minute)")
    parser.add_argument("--task", choices=sorted(ROBOTS), default="stand", help="stand (default) or walk")
    parser.add_argument("--start", default="scratch", help="scratch, or a simulation run directory to fine-tune")
    parser.add_argument("--out", type=Path, help="fine-tuning directory (default runs/dkitty-robot/<start>, from "
                        "scratch <task>-scratch-seed<S>; the untrained run goes beside it, <out>-untrained); an "
                        "unfinished one is resumed")
    parser.add_argument("--episodes", type=int, default=400, help="robot episodes in all (default 400)")
    parser.add_argument("--explore", type=int, default=10, help="exploration episodes per round (default 10)")
    parser.add_argument("--gate", type=int, default=10, help="episodes measuring each candidate (default 10)")
    parser.add_argument("--looks", type=int, default=1, help="looks a comparison may take (s2r finetune "
                        "--gate-looks; default 1)")
    parser.add_argument("--reality", type=Path, default=GAP_REALITY, help="the emulated robot's reality")
    parser.add_argument("--robot", type=Path, help="the hardware config (default: ROBOTS[task]; another motion "
                        "capture port lets two walk runs share a machine)")
    parser.add_argument("--target", type=float, default=0.8, help="the stated stand success (default 0.8)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    episodes, explore, gate, incumbent = (
        (QUICK["episodes"], QUICK["explore"], QUICK["gate"], QUICK["incumbent"]) if args.quick
        else (args.episodes, args.explore, args.gate, args.gate))
    label = f"{args.task}-scratch-seed{args.seed}" if args.start == "scratch" else Path(args.start).name
    out = args.out or ROOT / "runs" / ("dkitty-robot-quick" if args.quick else "dkitty-robot") / label
    t0 = time.perf_counter()
    if args.start == "scratch":
        # beside the run, one per fine-tuning directory: runs of two seeds started together never share one
        start = scratch_run(args.task, out.parent / f"{out.name}-untrained", args.seed)
    else:
        start = Path(args.start)
        if not start.exists():
            raise SystemExit(f"--start {start}: no such run directory or checkpoint; expected scratch or a run")
    flags = ["--robot", str(args.robot or ROBOTS[args.task]), "--driver", "emulator", "--lockstep",
             "--reality", str(args.reality),
             "--episodes", str(episodes), "--incumbent-episodes", str(incumbent), "--explore-episodes", str(explore),
             "--gate-episodes", str(gate), "--gate-looks", str(args.looks), "--seed", str(args.seed),
             *(["--sim-fraction", "0"] if args.start == "scratch" else [])]
    interventions, restarts = 0, list[dict[str, Any]]()
    summary = finetune(start, out, flags, resume=(out / "finetune.json").is_file())
    while ((needs_a_person(summary) and interventions < MAX_INTERVENTIONS)
           or (watchdog_stop(summary) and len(restarts) < MAX_RESTARTS)):
        if needs_a_person(summary):
            interventions += 1
            print(f"the robot needs a person ({summary['stop_reason']}): put back on its feet, resuming", flush=True)
        else:
            restarts.append({"episode": summary["episodes_done"], "reason": summary["stop_reason"]})
            print(f"the watchdog stopped the robot ({summary['stop_reason']}): checked and restarted", flush=True)
        summary = finetune(start, out, flags, resume=True)
    curve, robot_s = learning_curve(out)
    first_candidate = next((r["robot_min"] for r in curve
                            if r["candidate_success"] is not None and r["candidate_success"] >= args.target), None)
    gate_summary = summary.get("gate", {})
    served = in_service(gate_summary, curve)
    # the policy in service at the target as measured over all its episodes, not only those it passed the gate with
    first_incumbent = next((r["robot_min"] for r in served if r["success"] >= args.target), None)
    result = {
        "benchmark": "dkitty_robot_learning", "quick": args.quick, "task": f"dkitty-{args.task}", "start": args.start,
        "reality": str(args.reality), "seed": args.seed, "cpus": os.cpu_count(), "out": str(out),
        "episodes": summary["episodes_done"], "interventions": interventions, "watchdog_restarts": restarts,
        "robot_min": round(robot_s / 60.0, 1),
        "target": args.target, "robot_min_to_candidate_at_target": first_candidate,
        "robot_min_to_incumbent_at_target": first_incumbent,
        "incumbent_success_rate": gate_summary.get("incumbent_success_rate"),
        "incumbent": gate_summary.get("incumbent"), "replacements": len(served), "in_service": served,
        "stop_kind": summary["stop_kind"], "stop_reason": summary["stop_reason"],
        "wall_time_s": round(time.perf_counter() - t0, 1), "curve": curve,
    }
    print(f"robot: {result['episodes']} episodes, {result['robot_min']} robot min, {interventions} interventions; "
          f"first candidate at {args.target:.2f}: "
          f"{'never' if first_candidate is None else f'{first_candidate} robot min'}; first in service at it: "
          f"{'never' if first_incumbent is None else f'{first_incumbent} robot min'}", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
