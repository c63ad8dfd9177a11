"""Training throughput of our SAC against Stable-Baselines3's SAC, side by side in one run.

Both libraries train with the same hyperparameters — 2x256 ReLU MLPs, batch 256, one gradient step
per environment step, Adam 3e-4, gamma 0.99, tau 0.005, learned temperature, the same number of
uniformly random warm-up steps — on ``HalfCheetah-v5`` and on the claw task (``dclaw-turn``), each
with 1 and with 2 torch threads. Throughput is environment steps per second (with their updates)
after the warm-up, measured over the same window for both; each setting is measured ``--rounds``
times in interleaved order (the machine is shared) and the best round counts. Each library is then
taken at its best thread setting, and the ratio ours / SB3 is reported per task.

Our SAC runs through the real training loop (:class:`policies.train.Trainer`, no outputs), with its
defaults: observation normalization on, the environment stepped on a second thread while updating.

Prints progress lines, then one JSON object as the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import sim
from policies.config import TrainConfig
from policies.train import Trainer

TASKS = ("HalfCheetah-v5", "dclaw-turn")
THREADS = (1, 2)
HIDDEN = (256, 256)
BATCH = 256
LR = 3e-4
SETTLE_UPDATES = 20
"""Updates run after the warm-up before timing starts (first-call allocations)."""


def measure_ours(task: str, threads: int, warmup: int, steps: int, seed: int) -> float:
    cfg = TrainConfig(
        task=task,
        steps=warmup + SETTLE_UPDATES + steps,
        seed=seed,
        hidden=HIDDEN,
        batch_size=BATCH,
        lr=LR,
        warmup_steps=warmup,
        threads=threads,
        device="cpu",
    )
    trainer = Trainer(cfg)
    try:
        trainer.run_until(warmup + SETTLE_UPDATES)
        t0 = time.perf_counter()
        trainer.run_until(warmup + SETTLE_UPDATES + steps)
        return steps / (time.perf_counter() - t0)
    finally:
        trainer.close()


def measure_sb3(task: str, threads: int, warmup: int, steps: int, seed: int) -> float:
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    torch.set_num_threads(threads)
    env_id = sim.resolve_env_id(task)
    env = gym.make(env_id, engine="mujoco") if env_id.startswith("s2r/") else gym.make(env_id)
    start = warmup + SETTLE_UPDATES

    class Clock(BaseCallback):
        t0 = 0.0

        def _on_step(self) -> bool:
            if self.num_timesteps == start:
                Clock.t0 = time.perf_counter()
            return True

    model = SAC(
        "MlpPolicy",
        env,
        learning_rate=LR,
        buffer_size=1_000_000,
        learning_starts=warmup,
        batch_size=BATCH,
        tau=0.005,
        gamma=0.99,
        train_freq=1,
        gradient_steps=1,
        ent_coef="auto",
        policy_kwargs={"net_arch": list(HIDDEN)},
        device="cpu",
        seed=seed,
        verbose=0,
    )
    model.learn(total_timesteps=start + steps, callback=Clock())
    elapsed = time.perf_counter() - Clock.t0
    env.close()
    return steps / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short windows, one round (under a minute)")
    parser.add_argument("--steps", type=int, help="timed environment steps per measurement")
    parser.add_argument("--warmup", type=int, help="random warm-up steps before learning (both libraries)")
    parser.add_argument("--rounds", type=int, help="interleaved repetitions; the best counts")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    args = parser.parse_args()
    steps = args.steps or (150 if args.quick else 1500)
    warmup = args.warmup or (300 if args.quick else 1000)
    rounds = args.rounds or (1 if args.quick else 2)

    results: dict[str, Any] = {}
    for task in args.tasks:
        runs: dict[str, dict[int, list[float]]] = {"ours": {t: [] for t in THREADS}, "sb3": {t: [] for t in THREADS}}
        for r in range(rounds):
            for threads in THREADS:
                for lib, fn in (("ours", measure_ours), ("sb3", measure_sb3)):
                    sps = fn(task, threads, warmup, steps, seed=r)
                    runs[lib][threads].append(sps)
                    print(f"{task:16s} {lib:4s} threads={threads} round={r}: {sps:7.1f} env steps/s", flush=True)
        entry: dict[str, Any] = {}
        for lib, per_thread in runs.items():
            best = {t: max(v) for t, v in per_thread.items()}
            best_threads = max(best, key=lambda t: best[t])
            entry[lib] = {
                "steps_per_s": {str(t): round(v, 1) for t, v in best.items()},
                "all_rounds": {str(t): [round(x, 1) for x in v] for t, v in per_thread.items()},
                "best_threads": best_threads,
                "best_steps_per_s": round(best[best_threads], 1),
            }
        entry["ratio"] = round(entry["ours"]["best_steps_per_s"] / entry["sb3"]["best_steps_per_s"], 2)
        results[task] = entry
        print(f"{task}: ours {entry['ours']['best_steps_per_s']} / SB3 {entry['sb3']['best_steps_per_s']} "
              f"= {entry['ratio']}x", flush=True)

    import stable_baselines3

    summary = {
        "benchmark": "sac_throughput",
        "unit": "environment steps per second, one update per step, after warm-up",
        "quick": bool(args.quick),
        "timed_steps": steps,
        "warmup_steps": warmup,
        "rounds": rounds,
        "hidden": list(HIDDEN),
        "batch_size": BATCH,
        "torch": torch.__version__,
        "stable_baselines3": stable_baselines3.__version__,
        "cpu_count": __import__("os").cpu_count(),
        "machine": platform.machine(),
        "tasks": results,
        "ratios": {task: results[task]["ratio"] for task in results},
        "min_ratio": round(float(np.min([results[t]["ratio"] for t in results])), 2),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
