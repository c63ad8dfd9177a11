"""Policy latency at batch 1: ``export.OnnxPolicy.act`` (onnxruntime, one thread) vs PyTorch ``inference_mode``.

Both run the same policy: by default a random-initialized SAC actor of the deployed size (21 observations,
256-256 ReLU hidden layers, 9 actions) with observation normalization, saved as a checkpoint and exported
with ``s2r export``'s code; ``--checkpoint`` measures a trained one instead. Each call is one observation
from a fixed set of distinct float32 observations, timed with ``perf_counter_ns``; the two runtimes
alternate in blocks so machine load falls on both alike. PyTorch runs with one intra-op thread, as
onnxruntime does, and its time includes the numpy-to-tensor conversions a caller needs (as
``policies.checkpoint.policy_from_checkpoint`` does). The machine's load average is reported: other
jobs on a small machine show up directly in the p99. The last stdout line is one JSON object.

Usage: python benchmarks/policy_latency.py [--quick] [--checkpoint RUN_DIR|FILE] [--calls N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from export.onnx_export import ExportConfig, export_policy
from export.onnx_policy import OnnxPolicy
from policies.checkpoint import BEST_NAME, Checkpoint, load_checkpoint, save_checkpoint
from policies.networks import Actor
from sim.tasks import make_task

ENV_ID = "s2r/DClawTurnFixed-v0"
HIDDEN = (256, 256)
GOAL_ONNX_P99_US = 50.0
"""Target: ``OnnxPolicy.act`` p99 at batch 1 (us)."""
BLOCK_CALLS = 1000
"""Calls per runtime before switching to the other one."""
WARMUP_CALLS = 500
DISTINCT_OBS = 256
QUICK_CALLS = 20_000
FULL_CALLS = 200_000

Policy = Callable[[np.ndarray], np.ndarray]


def synthetic_checkpoint(seed: int) -> Checkpoint:
    """A random-initialized actor of the deployed size on the claw task, with random observation statistics."""
    spec = make_task(ENV_ID).spec
    obs_dim, act_dim = spec.obs_layout.size, spec.n_joints
    rng = np.random.default_rng(seed)
    actor = Actor(obs_dim, act_dim, HIDDEN, "relu", stochastic=True, generator=torch.Generator().manual_seed(seed))
    return Checkpoint(
        algo="sac", env_id=ENV_ID, task="dclaw-turn", engine="mujoco", step=0, config={"benchmark": "policy_latency"},
        obs_dim=obs_dim, act_dim=act_dim, hidden=HIDDEN, activation="relu", stochastic=True,
        actor_state=actor.state_dict(), obs_norm=True, obs_mean=rng.normal(0.0, 0.3, obs_dim),
        obs_var=rng.uniform(0.05, 1.0, obs_dim), obs_count=1000.0, obs_clip=10.0, obs_eps=1e-8,
        action_low=-np.ones(act_dim), action_high=np.ones(act_dim),
    )


def torch_policy(ckpt: Checkpoint) -> Policy:
    module = ckpt.policy_module()

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out: np.ndarray = module(torch.from_numpy(obs).unsqueeze(0))[0].numpy()
        return out

    return act


def time_blocks(policies: dict[str, Policy], obs: np.ndarray, calls: int) -> dict[str, np.ndarray]:
    """Per-call times (us) of each policy, ``calls`` each, run in alternating blocks."""
    times = {name: np.empty(calls) for name in policies}
    for policy in policies.values():
        for i in range(WARMUP_CALLS):
            policy(obs[i % len(obs)])
    clock = time.perf_counter_ns
    for start in range(0, calls, BLOCK_CALLS):
        stop = min(start + BLOCK_CALLS, calls)
        for name, policy in policies.items():
            out = times[name]
            for i in range(start, stop):
                o = obs[i % len(obs)]
                t0 = clock()
                policy(o)
                out[i] = clock() - t0
    return {name: t / 1000.0 for name, t in times.items()}


def stats(t: np.ndarray) -> dict[str, float]:
    return {
        "p50": round(float(np.percentile(t, 50)), 2),
        "p90": round(float(np.percentile(t, 90)), 2),
        "p99": round(float(np.percentile(t, 99)), 2),
        "p999": round(float(np.percentile(t, 99.9)), 2),
        "mean": round(float(t.mean()), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_CALLS} calls per runtime (< 1 min)")
    parser.add_argument("--calls", type=int, help=f"calls per runtime (default {FULL_CALLS}, quick {QUICK_CALLS})")
    parser.add_argument("--checkpoint", metavar="RUN_DIR|FILE", help="a trained checkpoint instead of random weights")
    args = parser.parse_args()
    calls = args.calls or (QUICK_CALLS if args.quick else FULL_CALLS)
    load_start = [round(x, 2) for x in os.getloadavg()]
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        if args.checkpoint:
            ckpt = load_checkpoint(args.checkpoint)
            source = Path(tmp) / BEST_NAME
            save_checkpoint(source, ckpt)  # a snapshot: a training run may overwrite its file meanwhile
        else:
            ckpt = synthetic_checkpoint(0)
            source = Path(tmp) / BEST_NAME
            save_checkpoint(source, ckpt)
        t0 = time.perf_counter()
        result = export_policy(source, Path(tmp) / "policy.onnx", ExportConfig(samples=1000))
        export_s = time.perf_counter() - t0
        onnx_policy = OnnxPolicy(result.path)

        rng = np.random.default_rng(1)
        std = np.sqrt(ckpt.obs_var + ckpt.obs_eps)
        obs = (ckpt.obs_mean + std * rng.normal(size=(DISTINCT_OBS, ckpt.obs_dim))).astype(np.float32)
        reference = torch_policy(ckpt)
        max_diff = max(float(np.max(np.abs(onnx_policy.act(o) - reference(o)))) for o in obs)
        times = time_blocks({"onnx": onnx_policy.act, "torch": reference}, obs, calls)

    onnx_stats, torch_stats = stats(times["onnx"]), stats(times["torch"])
    summary: dict[str, Any] = {
        "benchmark": "policy_latency",
        "quick": args.quick,
        "policy": args.checkpoint or "random-init",
        "network": f"{ckpt.obs_dim}-{'-'.join(map(str, ckpt.hidden))}-{ckpt.act_dim} {ckpt.activation}",
        "batch": 1,
        "calls": calls,
        "onnx_act_us": onnx_stats,
        "torch_inference_mode_us": torch_stats,
        "speedup_p50": round(torch_stats["p50"] / onnx_stats["p50"], 2),
        "speedup_p99": round(torch_stats["p99"] / onnx_stats["p99"], 2),
        "max_abs_diff": max_diff,
        "goal_onnx_p99_us": GOAL_ONNX_P99_US,
        "goal_met": onnx_stats["p99"] <= GOAL_ONNX_P99_US,
        "export_s": round(export_s, 2),
        "export_max_abs_diff": result.verification.max_abs_diff,
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "load_average_start": load_start,
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
    }
    print(f"OnnxPolicy.act  p50 {onnx_stats['p50']:.1f} us  p99 {onnx_stats['p99']:.1f} us")
    print(f"torch inference p50 {torch_stats['p50']:.1f} us  p99 {torch_stats['p99']:.1f} us")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
