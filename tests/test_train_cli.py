"""``s2r train`` / ``s2r eval`` end to end, resume, Ctrl-C, and how the loop stores episode ends."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from policies.config import config_from_mapping
from policies.train import Trainer, train
from s2r.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "hidden=[32,32]", "--set", "batch_size=32", "--set", "eval_episodes=2", "--set", "log_interval=100"]


class _AlternatingEnd(gym.Env[np.ndarray, np.ndarray]):
    """Even episodes terminate after 3 steps, odd ones are truncated after 5.

    Observations are ``[episode, t]`` during an episode and ``[1000 + episode, 0]`` at reset, so a
    stored transition shows whether the loop kept the true final observation.
    """

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self) -> None:
        self.k = -1
        self.t = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.k += 1
        self.t = 0
        return np.array([1000 + self.k, 0], np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.t += 1
        terminated = self.k % 2 == 0 and self.t == 3
        truncated = self.k % 2 == 1 and self.t == 5
        return np.array([self.k, self.t], np.float32), float(self.t), terminated, truncated, {"success": self.t == 3}


def _make_alternating(**kwargs: Any) -> gym.Env:
    return _AlternatingEnd()


ALTERNATING_ID = "S2RTestAlternatingEnd-v0"
if ALTERNATING_ID not in gym.registry:
    gym.register(id=ALTERNATING_ID, entry_point=_make_alternating, disable_env_checker=True)


@pytest.mark.parametrize("overlap", [False, True])
def test_truncation_bootstraps_and_termination_does_not(overlap: bool) -> None:
    cfg = config_from_mapping(
        {"task": ALTERNATING_ID, "steps": 40, "warmup_steps": 40, "obs_norm": False, "overlap_env": overlap}
    )
    trainer = Trainer(cfg)
    try:
        trainer.run_until(40)
    finally:
        trainer.close()
    buf = trainer.buffer
    n = len(buf)
    assert n == 40
    obs, nxt = buf.obs[:n], buf.next_obs[:n]
    term = buf.act_rew_term[:n, -1]
    assert not np.any(nxt[:, 0] >= 1000), "a reset observation was stored as a next observation"
    ends_by_termination = (nxt[:, 0] % 2 == 0) & (nxt[:, 1] == 3)
    ends_by_truncation = (nxt[:, 0] % 2 == 1) & (nxt[:, 1] == 5)
    assert ends_by_termination.sum() >= 3 and ends_by_truncation.sum() >= 3
    np.testing.assert_array_equal(term, ends_by_termination.astype(np.float32))
    # after every episode end the next transition starts from the reset observation
    ends = np.flatnonzero(ends_by_termination | ends_by_truncation)
    assert all(obs[i + 1, 0] >= 1000 for i in ends if i + 1 < n)
    assert trainer.state.episodes == len(ends)


def test_stop_success_ends_the_run_at_the_first_evaluation_that_reaches_it(tmp_path: Path) -> None:
    # Two evaluation episodes of the alternating env: one succeeds and one does not, so every evaluation scores 0.5.
    base = {"task": ALTERNATING_ID, "steps": 200, "warmup_steps": 200, "eval_interval": 50, "eval_episodes": 2,
            "hidden": [8, 8], "batch_size": 8}
    reached = train(config_from_mapping({**base, "stop_success": 0.5}), tmp_path / "reached", progress=False)
    assert reached["reached_success"] and reached["steps"] == 50 and reached["eval"]["success_rate"] == 0.5
    last = torch.load(tmp_path / "reached" / "last.pt", weights_only=True)
    assert last["step"] == 50
    # the checkpoint written by the evaluation that stopped the run counts the loop's time up to it, so a resumed
    # run adds to it rather than starting its clock at zero
    saved_time_s = last["training"]["loop"]["train_time_s"]
    assert 0.0 < saved_time_s <= reached["train_time_s"]
    resumed = train(config_from_mapping({**base, "steps": 100}), tmp_path / "reached", resume=True, progress=False)
    assert resumed["steps"] == 100 and resumed["train_time_s"] > round(saved_time_s, 2)
    short = train(config_from_mapping({**base, "stop_success": 0.6}), tmp_path / "short", progress=False)
    assert not short["reached_success"] and short["steps"] == 200
    evals = [json.loads(line) for line in (tmp_path / "short" / "metrics.jsonl").read_text().splitlines()]
    assert [r["success_rate"] for r in evals if r["kind"] == "eval"] == [0.5] * 4


def test_stop_success_on_a_task_without_success_warns_and_trains_all_steps(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config_from_mapping({"task": "Pendulum-v1", "steps": 100, "warmup_steps": 100, "eval_interval": 50,
                               "eval_episodes": 1, "hidden": [8], "stop_success": 0.5})
    summary = train(cfg, tmp_path / "run", progress=False)
    assert summary["steps"] == 100 and not summary["reached_success"]
    err = capsys.readouterr().err
    assert err.count("stop_success is set, but Pendulum-v1 reports no success") == 1


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_train_eval_resume_on_pendulum(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    args = ["train", "--task", "Pendulum-v1", "--steps", "300", "--seed", "1", "--out", str(run), "--quiet", *TINY]
    code, out, _ = _run([*args, "--set", "warmup_steps=100", "--set", "eval_interval=200"], capsys)
    assert code == 0, out
    assert "trained 300 steps" in out

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["task"] == "Pendulum-v1" and cfg["warmup_steps"] == 100 and cfg["threads"] == 2
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["step"]) for r in rows if r["kind"] == "eval"] == [("eval", 200), ("eval", 300)]
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert [r["step"] for r in train_rows] == [100, 200, 300]
    assert "critic_loss" in train_rows[-1] and "alpha" in train_rows[-1] and train_rows[-1]["steps_per_s"] > 0
    events = EventAccumulator(str(run / "tensorboard")).Reload()
    tags = set(events.Tags()["scalars"])
    # s2r's kind/key tags, and SB3's names for the same scalars
    assert {"train/return_mean", "train/critic_loss", "eval/return_mean"} <= tags
    assert {"rollout/ep_rew_mean", "rollout/ep_len_mean", "time/fps", "train/ent_coef", "eval/mean_reward"} <= tags
    assert [e.value for e in events.Scalars("rollout/ep_rew_mean")] == [
        pytest.approx(e.value) for e in events.Scalars("train/return_mean")]
    assert (run / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    for name in ("last.pt", "best.pt"):
        data = torch.load(run / name, weights_only=True)
        assert data["algo"] == "crossq" and data["env_id"] == "Pendulum-v1" and data["step"] in (200, 300)
    best = torch.load(run / "best.pt", weights_only=True)
    # what s2r finetune continues from (with the online actor beside the averaged policy); no replay
    assert set(best["training"]) == {"learner", "loop", "online_actor"}
    assert best["training"]["loop"]["step"] == best["step"]

    code, out, _ = _run(["eval", str(run), "--episodes", "2", "--json"], capsys)
    assert code == 0
    result = json.loads(out.strip().splitlines()[-1])
    assert result["episodes"] == 2 and result["success_rate"] is None
    assert set(result) >= {"episodes", "success_rate", "return_mean", "return_std"}

    code, _, err = _run(["train", "--task", "Pendulum-v1", "--steps", "300", "--out", str(run), "--quiet"], capsys)
    assert code == 2 and "--resume" in err

    code, out, _ = _run(["train", "--out", str(run), "--resume", "--steps", "400", "--quiet"], capsys)
    assert code == 0, out
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [100, 200, 300, 400]
    last = torch.load(run / "last.pt", weights_only=True)
    assert last["step"] == 400 and last["training"]["loop"]["updates"] == 300
    assert last["config"]["seed"] == 1  # from the run's config.yaml


def test_a_resume_under_another_distribution_starts_best_pt_afresh(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "claw"
    fixed = ROOT / "randomization" / "configs" / "dclaw.yaml"
    args = ["train", "--task", "dclaw-turn", "--steps", "80", "--out", str(run), "--quiet", *TINY,
            "--set", "warmup_steps=40", "--set", "eval_interval=80", "--randomize", str(fixed)]
    code, out, _ = _run(args, capsys)
    assert code == 0, out
    # A run that does no better than the first evaluation keeps the old best.pt unless the evaluation changed:
    # here it has (another distribution), so the resumed run's own evaluation must replace it.
    narrow = yaml.safe_load(fixed.read_text())
    narrow["parameters"] = {"valve_damping": {"dist": "uniform", "low": 0.2, "high": 0.25}}
    posterior = tmp_path / "posterior.yaml"
    posterior.write_text(yaml.safe_dump(narrow))
    state = torch.load(run / "last.pt", weights_only=True)["training"]["loop"]
    assert state["best_success"] >= 0.0  # an evaluation was scored
    code, out, err = _run(["train", "--out", str(run), "--resume", "--steps", "120", "--quiet",
                           "--randomize", str(posterior)], capsys)
    assert code == 0, out
    assert "randomize changed on resume: the next evaluation replaces best.pt" in err
    assert torch.load(run / "best.pt", weights_only=True)["step"] == 120
    # Resuming under the same distribution keeps comparing against the best so far.
    code, out, err = _run(["train", "--out", str(run), "--resume", "--steps", "160", "--quiet"], capsys)
    assert code == 0 and "changed on resume" not in err


def test_td3_and_the_claw_task_log_success_and_reward_terms(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "claw"
    args = ["train", "--task", "dclaw-turn", "--algo", "td3", "--steps", "120", "--out", str(run), "--quiet"]
    code, out, _ = _run([*args, *TINY, "--set", "warmup_steps=60", "--set", "log_interval=40"], capsys)
    assert code == 0, out
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["kind"] == "train" and "return_mean" in r]
    assert train_rows and "reward_terms/target_dist" in train_rows[-1] and train_rows[-1]["success_rate"] == 0.0
    assert rows[-1]["kind"] == "eval" and rows[-1]["success_rate"] is not None
    code, out, _ = _run(["eval", str(run / "last.pt"), "--episodes", "1", "--json", "--seed", "3"], capsys)
    assert code == 0 and json.loads(out)["engine"] == "mujoco"


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "interrupted"
    metrics = run / "metrics.jsonl"

    def interrupt_once_training_runs() -> None:
        deadline = time.monotonic() + 60
        while not metrics.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)
    killer = threading.Thread(target=interrupt_once_training_runs)
    killer.start()
    args = ["train", "--task", "Pendulum-v1", "--steps", "1000000", "--out", str(run), "--quiet", *TINY]
    code, out, err = _run([*args, "--set", "warmup_steps=50"], capsys)
    killer.join()
    assert code == 0
    assert "interrupted at step" in out and "saving a checkpoint" in err
    last = torch.load(run / "last.pt", weights_only=True)
    assert 100 <= last["step"] < 1_000_000 and last["training"] is not None
    assert (run / "replay.pt").is_file()
    assert signal.getsignal(signal.SIGINT) is before  # the previous handler is back


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--task", "NoSuchEnv-v0", "--steps", "10"], "cannot make environment 'NoSuchEnv-v0'"),
        (["train", "--task", "CartPole-v1", "--steps", "10"], "Box action space"),
        (["train", "--engine", "bogus", "--steps", "10"], "unknown engine 'bogus'"),
        (["train", "--set", "batch_size=-3", "--steps", "10"], "'batch_size' must be at least 1"),
        (["train", "--set", "lr", "--steps", "10"], "s2r train: error: --set must be key=value, got 'lr'"),
        (["train", "--resume", "--steps", "10"], "cannot resume"),
    ],
)
def test_bad_train_input_exits_2_with_a_message(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run([*args, "--out", str(tmp_path / "r"), "--quiet"], capsys)
    assert code == 2
    assert message in err


def test_eval_of_a_damaged_checkpoint_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 100)
    code, _, err = _run(["eval", str(bad)], capsys)
    assert code == 2 and "corrupted or not a checkpoint" in err
    code, _, err = _run(["eval", str(tmp_path)], capsys)
    assert code == 2 and "holds no checkpoint" in err


def test_time_s_counts_the_loop_once_when_the_budget_ends_between_log_rows(tmp_path: Path) -> None:
    # 130 steps with a row every 100: the last training row is written after the loop, which had already added its
    # time to the run's total (it was counted twice).
    cfg = config_from_mapping({"task": "Pendulum-v1", "steps": 130, "warmup_steps": 50, "batch_size": 32,
                               "hidden": [32, 32], "eval_episodes": 1, "log_interval": 100})
    summary = train(cfg, tmp_path / "run", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    times = [r["time_s"] for r in rows if r["kind"] == "train"]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [100, 130]
    assert times == sorted(times)
    assert times[-1] == pytest.approx(summary["train_time_s"], abs=0.01)
