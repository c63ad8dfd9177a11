"""``benchmarks/her.py``: the learners it compares are what they say (HER or not, SB3's SAC + HerReplayBuffer on the
dict observation), and a short run reports every learner's curve on the same evaluation episodes, as its JSON."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from policies.envs import make_env
from policies.her import HerReplayBuffer
from policies.replay import ReplayBuffer

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "her.py"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The benchmark script as a module (it imports its sibling ``sample_efficiency``, as when it runs)."""
    monkeypatch.syspath_prepend(str(BENCH.parent))
    spec = importlib.util.spec_from_file_location("her_benchmark", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("learner", "her"), [("s2r-sac-her", True), ("s2r-sac", False),
                                              ("s2r-crossq-her", True), ("s2r-crossq", False)])
def test_ours_train_the_sparse_goal_claw_with_her_or_without(bench: ModuleType, learner: str, her: bool) -> None:
    run = bench.make_run(learner, seed=0, steps=100, warmup=50)
    try:
        cfg = run.trainer.cfg
        assert cfg.env_kwargs == {"reward_type": "sparse"} and cfg.algo == learner.split("-")[1]
        assert isinstance(run.trainer.buffer, HerReplayBuffer) is her
        if her:
            assert (run.trainer.buffer.strategy, run.trainer.buffer.k) == ("future", 4)
        else:
            assert isinstance(run.trainer.buffer, ReplayBuffer) and cfg.her_strategy == "none"
    finally:
        run.close()


def test_sb3_sac_uses_its_her_replay_on_the_dict_observation(bench: ModuleType) -> None:
    pytest.importorskip("stable_baselines3")
    from stable_baselines3.her import HerReplayBuffer as SB3Her

    run = bench.make_run("sb3-sac-her", seed=0, steps=100, warmup=50)
    try:
        model = run.model
        assert isinstance(model.replay_buffer, SB3Her) and model.replay_buffer.n_sampled_goal == 4
        assert set(model.observation_space.spaces) == {"observation", "achieved_goal", "desired_goal"}
        assert model.env.get_attr("reward_type")[0] == "sparse"
    finally:
        run.close()


@pytest.mark.slow  # ~30 s on 2 cores, most of it SB3's model and replay of a million transitions
def test_a_short_run_reports_every_learner_on_the_same_episodes() -> None:
    pytest.importorskip("stable_baselines3")
    learners = ["s2r-sac-her", "s2r-sac", "sb3-sac-her"]
    out = subprocess.run([sys.executable, str(BENCH), "--quick", "--learners", *learners, "--steps", "150",
                          "--eval-every", "75", "--episodes", "2"], check=True, capture_output=True, text=True,
                         cwd=ROOT, timeout=300).stdout
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["benchmark"] == "her" and summary["quick"] is True and summary["reward_type"] == "sparse"
    assert sorted(summary["learners"]) == sorted(learners)
    assert [r["learner"] for r in summary["runs"]] == learners and {r["seed"] for r in summary["runs"]} == {0}
    for run in summary["runs"]:
        assert [c["step"] for c in run["curve"]] == [75, 150]
        assert all(0.0 <= c["success"] <= 1.0 and -40.0 <= c["return_mean"] <= 0.0 for c in run["curve"])
        assert run["train_s"] > 0 and run["success_at"] == {str(c["step"]): c["success"] for c in run["curve"]}


def test_ours_and_sb3_are_evaluated_on_the_same_episodes(bench: ModuleType) -> None:
    ours = make_env(bench.GOAL_ID, env_kwargs={"reward_type": "sparse"})
    theirs = bench.goal_env()
    try:
        goals = set()
        first = sys.modules["sample_efficiency"].EVAL_SEED  # the evaluation seed both benchmarks use
        for seed in range(first, first + 5):
            flat, _ = ours.reset(seed=seed)
            obs, _ = theirs.reset(seed=seed)
            np.testing.assert_array_equal(flat, np.concatenate([obs["observation"], obs["desired_goal"]]))
            goals.add(tuple(obs["desired_goal"].tolist()))
        assert len(goals) == 5  # random goals, one per episode
    finally:
        ours.close()
        theirs.close()
