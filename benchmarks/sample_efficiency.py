"""Sample efficiency on the claw: environment steps to 0.9 success, ours against SB3's SAC and sb3-contrib's CrossQ.

Every learner trains on ``dclaw-turn`` under the shipped randomization (``randomization/configs/dclaw.yaml``,
one draw per episode, the same wrapper for all) with one torch thread, and is evaluated every
``--eval-every`` steps on ``--episodes`` deterministic episodes of the *nominal* claw (the same seeded episodes
for every learner). Learners:

- ``s2r-crossq``: our CrossQ (``s2r train``'s default learner), through the real training loop;
- ``s2r-sac``: our SAC with its defaults;
- ``sb3-sac``: Stable-Baselines3's SAC with its defaults;
- ``sb3-crossq``: sb3-contrib's CrossQ with its defaults (critics of 2x1024 units);
- ``sb3-crossq256``: the same with critics of 2x256 units, ours: the algorithms side by side at one network
  size (sb3-contrib's default critic costs about ten times the update time on a CPU).

Reported per learner and seed: the success at every evaluation, the first step where it reached 0.9
(``null`` if never), whether it stayed at or above 0.8 at every later evaluation, and the training wall time
(evaluations excluded). The summary gives, per learner, the seeds that reached 0.9 and the median steps and
seconds to get there. ``--jsonl FILE`` appends one line per finished run, so long sweeps can be split across
invocations and read back with ``--from-jsonl``.

Prints progress lines, then one JSON object as the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from policies.checkpoint import save_checkpoint
from policies.config import TrainConfig
from policies.envs import make_env
from policies.evaluate import evaluate_env
from policies.train import Trainer
from randomization.distributions import parse_distribution
from randomization.wrapper import RandomizedEnv
from s2r.core.yamlfile import read_yaml_file

ROOT = Path(__file__).resolve().parents[1]
TASK = "dclaw-turn"
PRIOR = ROOT / "randomization" / "configs" / "dclaw.yaml"
LEARNERS = ("s2r-crossq", "s2r-sac", "sb3-sac", "sb3-crossq", "sb3-crossq256")
TARGET = 0.9
"""Success that counts as learned (issue 15: >= 0.9 within 30k steps)."""
STABLE = 0.8
"""Every evaluation after reaching ``TARGET`` must stay at or above this."""
EVAL_SEED = 10_000
"""Seed of the first evaluation episode (the same episodes for every learner and every evaluation)."""

Policy = Callable[[np.ndarray], np.ndarray]


class Run(Protocol):
    """One learner being trained: ``advance(k)`` trains to ``k`` steps, ``policy()`` is its deterministic policy."""

    def advance(self, step: int) -> None: ...

    def policy(self) -> Policy: ...

    def save(self, stem: Path) -> Path:
        """Write the model as its own library saves it (``stem`` plus that library's suffix); returns the file."""
        ...

    def close(self) -> None: ...


class OursRun:
    def __init__(self, algo: str, seed: int, steps: int, randomize: dict[str, Any], warmup: int | None) -> None:
        cfg = TrainConfig(task=TASK, algo=algo, seed=seed, steps=steps,  # type: ignore[arg-type]  # one of LEARNERS
                          randomize=randomize, threads=1, device="cpu", warmup_steps=warmup)
        self.trainer = Trainer(cfg)

    def advance(self, step: int) -> None:
        self.trainer.run_until(step)

    def policy(self) -> Policy:
        self.trainer.flush_observations()
        module = self.trainer.policy_module()

        def act(obs: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                out: np.ndarray = module(torch.from_numpy(obs)[None])[0].numpy()
            return out

        return act

    def save(self, stem: Path) -> Path:
        path = stem.with_suffix(".pt")
        save_checkpoint(path, self.trainer.checkpoint(training=False))
        return path

    def close(self) -> None:
        self.trainer.close()


class SB3Model:
    """A Stable-Baselines3 model as a :class:`Run`: trained in chunks, evaluated deterministically."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.done = 0

    def advance(self, step: int) -> None:
        if step > self.done:
            self.model.learn(step - self.done, reset_num_timesteps=False)
            self.done = step

    def policy(self) -> Policy:
        model = self.model

        def act(obs: Any) -> np.ndarray:
            out: np.ndarray = model.predict(obs, deterministic=True)[0]
            return out

        return act

    def save(self, stem: Path) -> Path:
        path = stem.with_suffix(".zip")
        self.model.save(path)
        return path

    def close(self) -> None:
        self.model.get_env().close()


def sb3_kwargs(seed: int, warmup: int | None) -> dict[str, Any]:
    """SB3's constructor arguments every peer shares: its defaults, on the CPU, quiet."""
    kwargs: dict[str, Any] = {"seed": seed, "device": "cpu", "verbose": 0}
    if warmup is not None:
        kwargs["learning_starts"] = warmup
    return kwargs


class SB3Run(SB3Model):
    def __init__(self, algo: str, seed: int, randomize: dict[str, Any], warmup: int | None) -> None:
        env = RandomizedEnv(make_env(self._env_id()), parse_distribution(randomize, str(PRIOR), task=TASK), seed + 4)
        kwargs = sb3_kwargs(seed, warmup)
        if algo.startswith("crossq"):
            from sb3_contrib import CrossQ

            if algo == "crossq256":
                kwargs["policy_kwargs"] = {"net_arch": {"pi": [256, 256], "qf": [256, 256]}}
            super().__init__(CrossQ("MlpPolicy", env, **kwargs))
        else:
            from stable_baselines3 import SAC

            super().__init__(SAC("MlpPolicy", env, **kwargs))

    @staticmethod
    def _env_id() -> str:
        from policies.envs import resolve_task

        return resolve_task(TASK)


def make_run(learner: str, seed: int, steps: int, randomize: dict[str, Any], warmup: int | None) -> Run:
    lib, algo = learner.split("-", 1)
    if lib == "s2r":
        return OursRun(algo, seed, steps, randomize, warmup)
    return SB3Run(algo, seed, randomize, warmup)


def measure(learner: str, seed: int, steps: int, every: int, episodes: int, randomize: dict[str, Any],
            warmup: int | None, save_dir: Path | None = None) -> dict[str, Any]:
    torch.set_num_threads(1)
    return learning_curve(make_run(learner, seed, steps, randomize, warmup), make_env(SB3Run._env_id()), learner,
                          seed, Budget(steps, every, episodes, warmup, [seed]), save_dir)


def learning_curve(run: Run, eval_env: Any, learner: str, seed: int, budget: Budget,
                   save_dir: Path | None = None) -> dict[str, Any]:
    """Train ``run`` to ``budget.steps``, evaluating it every ``budget.every`` steps on ``budget.episodes`` seeded
    deterministic episodes of ``eval_env`` (training time only on the clock); its curve and summary, and where its
    final model was saved. Closes both."""
    curve: list[dict[str, Any]] = []
    train_s = 0.0
    try:
        for step in range(budget.every, budget.steps + 1, budget.every):
            t0 = time.perf_counter()
            run.advance(step)
            train_s += time.perf_counter() - t0
            result = evaluate_env(run.policy(), eval_env, budget.episodes, EVAL_SEED)
            curve.append({"step": step, "success": result["success_rate"], "return_mean": result["return_mean"],
                          "train_s": round(train_s, 1)})
            print(f"{learner:14s} seed={seed} step={step:6d} success={result['success_rate']:.2f} "
                  f"return={result['return_mean']:6.1f} train={train_s:6.0f}s", flush=True)
        saved = None if save_dir is None else str(run.save(save_dir / f"{learner}_s{seed}_{budget.steps}"))
    finally:
        run.close()
        eval_env.close()
    return {**summarize_run(learner, seed, curve), "saved": saved}


def summarize_run(learner: str, seed: int, curve: list[dict[str, Any]]) -> dict[str, Any]:
    """Steps (and seconds) to ``TARGET``, and whether every later evaluation stayed at or above ``STABLE``."""
    reached = next((i for i, c in enumerate(curve) if c["success"] >= TARGET), None)
    return {
        "learner": learner,
        "seed": seed,
        "curve": curve,
        "steps_to_target": None if reached is None else curve[reached]["step"],
        "seconds_to_target": None if reached is None else curve[reached]["train_s"],
        "stable_after_target": None if reached is None else all(c["success"] >= STABLE for c in curve[reached:]),
        "train_s": curve[-1]["train_s"] if curve else 0.0,
        "success_at": {str(c["step"]): c["success"] for c in curve},
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for learner in sorted({r["learner"] for r in runs}):
        mine = [r for r in runs if r["learner"] == learner]
        hit = [r for r in mine if r["steps_to_target"] is not None]
        out[learner] = {
            "seeds": [r["seed"] for r in mine],
            "seeds_reaching_target": [r["seed"] for r in hit],
            "median_steps_to_target": float(np.median([r["steps_to_target"] for r in hit])) if hit else None,
            "median_seconds_to_target": float(np.median([r["seconds_to_target"] for r in hit])) if hit else None,
            "all_stable": all(r["stable_after_target"] for r in hit) if hit else None,
            "median_train_s": float(np.median([r["train_s"] for r in mine])),
        }
    return out


@dataclass(frozen=True)
class Budget:
    """What one invocation measures."""

    steps: int
    """Environment steps per run."""
    every: int
    """Steps between evaluations."""
    episodes: int
    """Deterministic episodes per evaluation."""
    warmup: int | None
    """Learner warm-up steps (``None``: each learner's default)."""
    seeds: list[int]
    """Seeds, each run by every learner."""


def benchmark_parser(doc: str, learners: tuple[str, ...], default_learners: tuple[str, ...], default_steps: int,
                     episodes_help: str, saved_help: str) -> argparse.ArgumentParser:
    """The command line this benchmark and :mod:`her` share."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few hundred steps, one seed (a smoke run, < 1 min)")
    parser.add_argument("--learners", nargs="+", choices=learners, default=list(default_learners))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, help=f"environment steps per run (default {default_steps})")
    parser.add_argument("--eval-every", type=int, help="steps between evaluations (default 5000)")
    parser.add_argument("--episodes", type=int, help=f"{episodes_help} per evaluation (default 50)")
    parser.add_argument("--save-models", type=Path, metavar="DIR",
                        help=f"save each run's final model here ({saved_help}), named LEARNER_sSEED_STEPS")
    parser.add_argument("--jsonl", type=Path, help="append one line per finished run to this file")
    parser.add_argument("--from-jsonl", type=Path, nargs="+", help="summarize runs recorded earlier; train nothing")
    return parser


def budget_of(args: argparse.Namespace, default_steps: int, quick_steps: int, quick_every: int,
              quick_episodes: int) -> Budget:
    """The budget the arguments ask for (``--quick``: a smoke run of one seed)."""
    if args.save_models is not None:
        args.save_models.mkdir(parents=True, exist_ok=True)
    return Budget(steps=args.steps or (quick_steps if args.quick else default_steps),
                  every=args.eval_every or (quick_every if args.quick else 5000),
                  episodes=args.episodes or (quick_episodes if args.quick else 50),
                  warmup=100 if args.quick else None,
                  seeds=args.seeds[:1] if args.quick else args.seeds)


def collect_runs(args: argparse.Namespace, budget: Budget,
                 measure_one: Callable[[str, int], dict[str, Any]]) -> list[dict[str, Any]]:
    """Every learner on every seed (``measure_one(learner, seed)``), each result appended to ``--jsonl`` as it
    ends; or, with ``--from-jsonl``, the runs recorded there."""
    runs: list[dict[str, Any]] = []
    if args.from_jsonl:
        for path in args.from_jsonl:
            runs += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return runs
    for seed in budget.seeds:
        for learner in args.learners:
            result = measure_one(learner, seed)
            runs.append(result)
            if args.jsonl is not None:
                with args.jsonl.open("a") as f:
                    f.write(json.dumps(result) + "\n")
    return runs


def report(args: argparse.Namespace, budget: Budget, runs: list[dict[str, Any]], **what: Any) -> dict[str, Any]:
    """The benchmark's JSON object: ``what`` it measured, the budget, the software and machine, and the runs."""
    import stable_baselines3

    return {
        **what,
        "quick": bool(args.quick),
        "steps": budget.steps,
        "eval_every": budget.every,
        "eval_episodes": budget.episodes,
        "eval_seed": EVAL_SEED,
        "torch": torch.__version__,
        "stable_baselines3": stable_baselines3.__version__,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "learners": summarize(runs),
        "runs": runs,
    }


def main() -> None:
    args = benchmark_parser(__doc__ or "", LEARNERS, LEARNERS, 30_000, "nominal episodes",
                            "an SB3 zip for `s2r export --from-sb3`, or our checkpoint").parse_args()
    budget = budget_of(args, 30_000, quick_steps=400, quick_every=200, quick_episodes=5)
    randomize = read_yaml_file(PRIOR, "randomization config")
    runs = collect_runs(args, budget, lambda learner, seed: measure(
        learner, seed, budget.steps, budget.every, budget.episodes, randomize, budget.warmup, args.save_models))
    print(json.dumps(report(
        args, budget, runs, benchmark="sample_efficiency", task=TASK, randomization=str(PRIOR.relative_to(ROOT)),
        unit="environment steps (and training seconds, one torch thread) to deterministic success >= 0.9 on nominal "
             "episodes")))


if __name__ == "__main__":
    main()
