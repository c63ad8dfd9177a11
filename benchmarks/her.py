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

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from sample_efficiency import (
    STABLE,
    TARGET,
    Budget,
    OursRun,
    Run,
    SB3Model,
    benchmark_parser,
    budget_of,
    collect_runs,
    learning_curve,
    report,
    sb3_kwargs,
)

from policies.config import HerChoice, TrainConfig
from policies.envs import find_goal_env, make_env
from policies.train import Trainer

GOAL_ID = "s2r/DClawTurnGoal-v0"
REWARD_TYPE = "sparse"
LEARNERS = ("s2r-sac-her", "s2r-sac", "s2r-crossq-her", "s2r-crossq", "sb3-sac-her")
DEFAULT_LEARNERS = ("s2r-crossq-her", "s2r-crossq", "sb3-sac-her")
"""HER or not at one budget with ``s2r train``'s default learner, and SB3's SAC + HER beside it."""
DEFAULT_STEPS = 150_000
"""Our CrossQ + HER first reached 0.9 at 130k steps (seed 0); at 50k no learner was past 0.5."""
HER_K = 4
"""Hindsight goals per original goal, ours and SB3's (``n_sampled_goal``)."""
HER_STRATEGY: HerChoice = "future"


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


class SB3HerRun(SB3Model):
    """Stable-Baselines3's SAC with its HerReplayBuffer on the dict-observation goal claw."""

    def __init__(self, seed: int, warmup: int | None) -> None:
        from stable_baselines3 import SAC
        from stable_baselines3.her import HerReplayBuffer

        super().__init__(SAC("MultiInputPolicy", goal_env(), replay_buffer_class=HerReplayBuffer,
                             replay_buffer_kwargs={"n_sampled_goal": HER_K, "goal_selection_strategy": HER_STRATEGY},
                             **sb3_kwargs(seed, warmup)))


def make_run(learner: str, seed: int, steps: int, warmup: int | None) -> Run:
    if learner == "sb3-sac-her":
        return SB3HerRun(seed, warmup)
    algo = learner.split("-")[1]
    return OursGoalRun(algo, learner.endswith("-her"), seed, steps, warmup)


def measure(learner: str, seed: int, steps: int, every: int, episodes: int, warmup: int | None,
            save_dir: Path | None = None) -> dict[str, Any]:
    torch.set_num_threads(1)
    # Ours act on the flat concat(observation, desired_goal), SB3 on the dict: the same env and seeded episodes.
    eval_env: gym.Env[Any, Any] = goal_env() if learner.startswith("sb3") else make_env(
        GOAL_ID, env_kwargs={"reward_type": REWARD_TYPE})
    return learning_curve(make_run(learner, seed, steps, warmup), eval_env, learner, seed,
                          Budget(steps, every, episodes, warmup, [seed]), save_dir)


def main() -> None:
    args = benchmark_parser(__doc__ or "", LEARNERS, DEFAULT_LEARNERS, DEFAULT_STEPS, "random-goal episodes",
                            "an SB3 zip or our checkpoint").parse_args()
    budget = budget_of(args, DEFAULT_STEPS, quick_steps=300, quick_every=150, quick_episodes=3)
    runs = collect_runs(args, budget, lambda learner, seed: measure(
        learner, seed, budget.steps, budget.every, budget.episodes, budget.warmup, args.save_models))
    print(json.dumps(report(
        args, budget, runs, benchmark="her", task=GOAL_ID, reward_type=REWARD_TYPE,
        her={"strategy": HER_STRATEGY, "k": HER_K},
        unit=f"environment steps (and training seconds, one torch thread) to deterministic success >= {TARGET} over "
             f"random goals (stable: every later evaluation >= {STABLE})")))


if __name__ == "__main__":
    main()
