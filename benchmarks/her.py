"""Hindsight Experience Replay on the sparse claw: steps to 0.9 success over random goals, with HER and without at
the same budget, and against Stable-Baselines3's SAC + HerReplayBuffer on the same seeds.

Every learner trains on ``s2r/DClawTurnGoal-v0`` (any commanded valve angle, the sparse reward: 0 within 0.1 rad,
else -1) with one torch thread, and is evaluated every ``--eval-every`` steps on ``--episodes`` deterministic
episodes of random goals (the same seeded episodes for every learner and every evaluation; the evaluation
protocol, the step-to-target rule and the summary are :mod:`sample_efficiency`'s). Learners:

- ``s2r-sac-her``: our SAC with HER (``future``, k = 4) through the real training loop (``policies.train.Trainer``);
- ``s2r-sac``: the same without HER (``her_strategy=none``: the commanded goals only), at the same budget;
- ``s2r-crossq-her``: our CrossQ (``s2r train``'s default learner) with HER;
- ``s2r-crossq``: CrossQ without HER;
- ``sb3-sac-her``: Stable-Baselines3's ``SAC("MultiInputPolicy", env, replay_buffer_class=HerReplayBuffer)``
  (``future``, ``n_sampled_goal=4``) with SB3's other defaults, on the env's own dict observation.

Reported per learner and seed: the success at every evaluation, the first step where it reached 0.9 (``null`` if
never), whether every later evaluation stayed at or above 0.8, and the training wall time (evaluations excluded);
per learner the seeds reaching 0.9 and the median steps and seconds to get there. ``--jsonl FILE`` appends one
line per finished run, so a long sweep can be split across invocations and read back with ``--from-jsonl``.

Prints progress lines, then one JSON object as the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from sample_efficiency import EVAL_SEED, STABLE, TARGET, OursRun, Policy, Run, summarize, summarize_run

from policies.config import TrainConfig
from policies.envs import find_goal_env, make_env
from policies.evaluate import evaluate_env
from policies.train import Trainer

GOAL_ID = "s2r/DClawTurnGoal-v0"
REWARD_TYPE = "sparse"
LEARNERS = ("s2r-sac-her", "s2r-sac", "s2r-crossq-her", "s2r-crossq", "sb3-sac-her")
DEFAULT_LEARNERS = ("s2r-sac-her", "s2r-sac", "sb3-sac-her")
"""The comparison the issue asks for: HER or not at one budget, and SAC + HER against SB3's."""
HER_K = 4
"""Hindsight goals per original goal, ours and SB3's (``n_sampled_goal``)."""
HER_STRATEGY = "future"


def goal_env(env_id: str = GOAL_ID) -> gym.Env[Any, Any]:
    """The goal claw with its dict observation, made as our trainer makes it (the same time limit and
    seeding): the environment under :class:`policies.envs.FlatGoalEnv`."""
    flat = find_goal_env(make_env(env_id, env_kwargs={"reward_type": REWARD_TYPE}))
    assert flat is not None
    return flat.env


class OursGoalRun(OursRun):
    """Our learner on the goal claw, through the trainer (its HER replay, or none)."""

    def __init__(self, algo: str, her: bool, seed: int, steps: int, warmup: int | None) -> None:
        cfg = TrainConfig(task=GOAL_ID, algo=algo, seed=seed, steps=steps,  # type: ignore[arg-type]  # one of LEARNERS
                          env_kwargs={"reward_type": REWARD_TYPE}, threads=1, device="cpu", warmup_steps=warmup,
                          her_strategy=HER_STRATEGY if her else "none", her_k=HER_K)
        self.trainer = Trainer(cfg)


class SB3HerRun:
    """Stable-Baselines3's SAC with its HerReplayBuffer on the dict-observation goal claw."""

    def __init__(self, seed: int, warmup: int | None) -> None:
        from stable_baselines3 import SAC
        from stable_baselines3.her import HerReplayBuffer

        kwargs: dict[str, Any] = {"seed": seed, "device": "cpu", "verbose": 0}
        if warmup is not None:
            kwargs["learning_starts"] = warmup
        self.model: Any = SAC("MultiInputPolicy", goal_env(), replay_buffer_class=HerReplayBuffer,
                              replay_buffer_kwargs={"n_sampled_goal": HER_K, "goal_selection_strategy": HER_STRATEGY},
                              **kwargs)
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


def make_run(learner: str, seed: int, steps: int, warmup: int | None) -> Run:
    if learner == "sb3-sac-her":
        return SB3HerRun(seed, warmup)
    algo = learner.split("-")[1]
    return OursGoalRun(algo, learner.endswith("-her"), seed, steps, warmup)


def measure(learner: str, seed: int, steps: int, every: int, episodes: int, warmup: int | None,
            save_dir: Path | None = None) -> dict[str, Any]:
    torch.set_num_threads(1)
    run = make_run(learner, seed, steps, warmup)
    # Ours act on the flat concat(observation, desired_goal), SB3 on the dict: the same env and seeded episodes.
    eval_env: gym.Env[Any, Any] = goal_env() if learner.startswith("sb3") else make_env(
        GOAL_ID, env_kwargs={"reward_type": REWARD_TYPE})
    curve: list[dict[str, Any]] = []
    train_s = 0.0
    try:
        for step in range(every, steps + 1, every):
            t0 = time.perf_counter()
            run.advance(step)
            train_s += time.perf_counter() - t0
            result = evaluate_env(run.policy(), eval_env, episodes, EVAL_SEED)
            curve.append({"step": step, "success": result["success_rate"], "return_mean": result["return_mean"],
                          "train_s": round(train_s, 1)})
            print(f"{learner:14s} seed={seed} step={step:6d} success={result['success_rate']:.2f} "
                  f"return={result['return_mean']:6.1f} train={train_s:6.0f}s", flush=True)
        saved = None if save_dir is None else str(run.save(save_dir / f"{learner}_s{seed}_{steps}"))
    finally:
        run.close()
        eval_env.close()
    return {**summarize_run(learner, seed, curve), "saved": saved}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few hundred steps, one seed (a smoke run, < 1 min)")
    parser.add_argument("--learners", nargs="+", choices=LEARNERS, default=list(DEFAULT_LEARNERS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, help="environment steps per run (default 50000)")
    parser.add_argument("--eval-every", type=int, help="steps between evaluations (default 5000)")
    parser.add_argument("--episodes", type=int, help="random-goal episodes per evaluation (default 50)")
    parser.add_argument("--save-models", type=Path, metavar="DIR",
                        help="save each run's final model here (an SB3 zip or our checkpoint), named "
                             "LEARNER_sSEED_STEPS")
    parser.add_argument("--jsonl", type=Path, help="append one line per finished run to this file")
    parser.add_argument("--from-jsonl", type=Path, nargs="+", help="summarize runs recorded earlier; train nothing")
    args = parser.parse_args()
    steps = args.steps or (300 if args.quick else 50_000)
    every = args.eval_every or (150 if args.quick else 5000)
    episodes = args.episodes or (3 if args.quick else 50)
    warmup = 100 if args.quick else None
    seeds = args.seeds[:1] if args.quick else args.seeds
    if args.save_models is not None:
        args.save_models.mkdir(parents=True, exist_ok=True)

    runs: list[dict[str, Any]] = []
    if args.from_jsonl:
        for path in args.from_jsonl:
            runs += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    else:
        for seed in seeds:
            for learner in args.learners:
                result = measure(learner, seed, steps, every, episodes, warmup, args.save_models)
                runs.append(result)
                if args.jsonl is not None:
                    with args.jsonl.open("a") as f:
                        f.write(json.dumps(result) + "\n")

    import stable_baselines3

    summary = {
        "benchmark": "her",
        "task": GOAL_ID,
        "reward_type": REWARD_TYPE,
        "her": {"strategy": HER_STRATEGY, "k": HER_K},
        "unit": f"environment steps (and training seconds, one torch thread) to deterministic success >= {TARGET} "
                f"over random goals (stable: every later evaluation >= {STABLE})",
        "quick": bool(args.quick),
        "steps": steps,
        "eval_every": every,
        "eval_episodes": episodes,
        "eval_seed": EVAL_SEED,
        "torch": torch.__version__,
        "stable_baselines3": stable_baselines3.__version__,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "learners": summarize(runs),
        "runs": runs,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
