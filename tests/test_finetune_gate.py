"""``s2r finetune`` starts from the deployed policy and hands out a candidate only when it beats the incumbent on
robot episodes: a fake robot (its episodes' successes decided by which policy runs) stands in for the claw."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from cli_runs import train_tiny

from export.onnx_export import ExportConfig, export_policy
from export.onnx_policy import OnnxPolicy
from policies.checkpoint import load_checkpoint, save_checkpoint
from policies.finetune import FinetuneConfig, Finetuner, build_agent, sha256_of
from robot.controller import EpisodeResult, Stop
from s2r.core.errors import ParameterError
from s2r.finetune import finetune
from s2r.policy_files import load_policy

ROOT = Path(__file__).resolve().parents[1]
ROBOT = ROOT / "hardware_configs" / "dclaw.yaml"
FAKE_STEPS = 4
"""Control steps of a fake episode."""


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny("dclaw-turn", tmp_path_factory.mktemp("gate") / "run")


@pytest.fixture
def run_dir(sim_run: Path, tmp_path: Path) -> Path:
    """A copy of the run whose last.pt holds another actor than its best.pt (as after more training)."""
    run = tmp_path / "run"
    shutil.copytree(sim_run, run)
    last = load_checkpoint(run / "last.pt")
    moved = {k: v + 0.5 for k, v in last.actor_state.items()}
    save_checkpoint(run / "last.pt", last.__class__(**{**last.__dict__, "actor_state": moved}))
    return run


class FakeRobot:
    """Episodes of ``FAKE_STEPS`` steps on random observations; ``success(policy)`` decides each one."""

    def __init__(self, success: Callable[[Any], bool]) -> None:
        self.success = success
        self.policies: list[Any] = []

    def __call__(self, cfg: FinetuneConfig, config: Any, task: Any, log: logging.Logger,
                 should_stop: Callable[[], str | None]) -> FakeRobot:
        self.spec = task.spec
        return self

    def episode(self, policy: Callable[[np.ndarray], Any], rng: np.random.Generator,
                goal: Any = None) -> EpisodeResult:
        self.policies.append(policy)
        spec, t = self.spec, FAKE_STEPS
        j, p, k = spec.n_joints, len(spec.passive_joints), len(spec.reward_terms)
        obs = rng.normal(size=(t + 1, spec.obs_layout.size)).astype(np.float32)
        action = np.stack([np.asarray(policy(o), dtype=np.float32) for o in obs[:-1]])
        success = self.success(policy)
        reward = np.full(t, 1.0 if success else -1.0)
        arrays = {"time": np.arange(t + 1) * 0.1, "joint_pos": np.zeros((t + 1, j)), "joint_vel": np.zeros((t + 1, j)),
                  "joint_effort": np.zeros((t + 1, j)), "passive_pos": np.zeros((t + 1, p)),
                  "passive_vel": np.zeros((t + 1, p)), "stale": np.zeros(t + 1, dtype=np.int8), "obs": obs,
                  "action": action, "command": np.zeros((t, j)), "reward": reward, "reward_terms": np.zeros((t, k)),
                  "comm_errors": np.zeros(t, dtype=np.int64), "cycle_time": np.zeros(t), "period_error": np.zeros(t)}
        meta = {"success": success, "complete": True, "stop_reason": "time_limit",
                "reward_terms": list(spec.reward_terms), "return": float(reward.sum()), "steps": t, "episode_steps": t}
        return EpisodeResult(arrays, meta, t, True, success, float(reward.sum()), None)

    def shutdown(self, stop: Stop) -> bool:
        return True

    def loop_summary(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


class FallingRobot(FakeRobot):
    """A FakeRobot whose reset fails (a fallen robot it could not right) on the calls numbered in ``fails``: the
    episode does not run, as the controller reports it."""

    def __init__(self, success: Callable[[Any], bool], fails: set[int], tips: frozenset[int] = frozenset()) -> None:
        super().__init__(success)
        self.fails = fails
        self.tips = tips
        """Calls whose episode runs, but the robot falls before its end (the controller's tilt bound)."""
        self.calls = 0

    def episode(self, policy: Callable[[np.ndarray], Any], rng: np.random.Generator,
                goal: Any = None) -> EpisodeResult:
        self.calls += 1
        if self.calls in self.fails:
            self.policies.append(policy)
            meta = {"success": False, "complete": False, "steps": 0,
                    "stop_reason": "reset failed: still fallen after 2 righting attempts"}
            return EpisodeResult({}, meta, 0, False, False, 0.0, None)
        result = super().episode(policy, rng, goal)
        if self.calls in self.tips:
            meta = {**result.meta, "success": False, "complete": False, "fallen": "tilt 0.9 rad",
                    "stop_reason": "fallen: tilt 0.9 rad"}
            return replace(result, meta=meta, complete=False, success=False)
        return result


def _name(policy: Any) -> str:
    return policy.path.name if isinstance(policy, OnnxPolicy) else "explore"


def _cfg(run: Path, out: Path, episodes: int, **kw: Any) -> FinetuneConfig:
    fields: dict[str, Any] = {"incumbent_episodes": 4, "explore_episodes": 1, "gate_episodes": 4,
                              "critic_warmup": 3, "updates_per_step": 1.0, **kw}
    return FinetuneConfig(run_dir=run, robot=ROBOT, driver="mock", episodes=episodes, out=out, **fields)


def test_finetuning_starts_from_the_policy_deploy_uses_not_from_last_pt(run_dir: Path, tmp_path: Path) -> None:
    learning, start = build_agent(_cfg(run_dir, tmp_path / "ft", 1))
    tuner = Finetuner(_cfg(run_dir, tmp_path / "ft", 1), learning, 10)
    obs = np.random.default_rng(0).normal(size=(64, learning.agent.spaces.obs_dim)).astype(np.float32) * 3
    # what `s2r export RUN_DIR` writes (random verification samples only: the rollouts would only cost time here)
    exported = export_policy(run_dir, tmp_path / "deployed.onnx", ExportConfig(samples=1000, rollout_fraction=0.0))
    assert Path(exported.checkpoint) == run_dir / "best.pt"
    onnx_actions = OnnxPolicy(tmp_path / "deployed.onnx").act(obs)
    np.testing.assert_allclose(tuner.act(obs), onnx_actions, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(tuner.act(obs), load_policy(run_dir).act(obs))  # the checkpoint deploy loads
    assert np.abs(tuner.act(obs) - load_policy(run_dir / "last.pt").act(obs)).max() > 1e-2
    assert start == {"checkpoint": str(run_dir / "best.pt"), "sha256": sha256_of(run_dir / "best.pt"),
                     "training_state_from": str(run_dir / "best.pt")}


def test_a_best_pt_without_training_state_takes_the_critics_of_last_pt_under_its_own_actor(
        run_dir: Path, tmp_path: Path) -> None:
    best = load_checkpoint(run_dir / "best.pt")
    save_checkpoint(run_dir / "best.pt", best.__class__(**{**best.__dict__, "training": None}))
    learning, start = build_agent(_cfg(run_dir, tmp_path / "ft", 1))
    obs = np.random.default_rng(1).normal(size=(16, learning.agent.spaces.obs_dim)).astype(np.float32)
    np.testing.assert_array_equal(Finetuner(_cfg(run_dir, tmp_path / "ft", 1), learning, 10).act(obs),
                                  load_policy(run_dir).act(obs))
    assert start["training_state_from"] == str(run_dir / "last.pt")
    critic = load_checkpoint(run_dir / "last.pt").training["learner"]["critic"]  # type: ignore[index]
    assert all(torch.equal(v, learning.agent.learner.model.critic.state_dict()[k])  # type: ignore[attr-defined]
               for k, v in critic.items())


def test_a_worse_candidate_is_measured_and_kept_out_of_policy_onnx(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ft"
    robot = FakeRobot(lambda policy: _name(policy) == "deployed.onnx")
    summary = finetune(_cfg(run_dir, out, 9), progress=False, open_session=robot)
    assert [_name(p) for p in robot.policies] == ["deployed.onnx"] * 4 + ["explore"] + ["round_001.onnx"] * 4
    (decision,) = summary.gate["decisions"]
    assert not decision["replaced"] and decision["incumbent_successes"] == 4 and decision["candidate_successes"] == 0
    assert (out / "policy.onnx").read_bytes() == (out / "onnx" / "deployed.onnx").read_bytes()
    assert summary.success_rate == 1.0 and summary.gate["confidence"] == 0.95
    # the critics were warmed up on the deployed policy's episodes, before the actor's first update
    assert [e.updates for e in summary.episodes] == [0, 0, 0, 3, FAKE_STEPS, 0, 0, 0, 0]
    saved = json.loads((out / "finetune.json").read_text())
    assert saved["start"]["sha256"] == sha256_of(run_dir / "best.pt")
    assert [(h["episode"], h["kind"], h["success"], h["incumbent_episodes"]) for h in saved["history"]] == [
        (0, "eval-incumbent", True, 1), (1, "eval-incumbent", True, 2), (2, "eval-incumbent", True, 3),
        (3, "eval-incumbent", True, 4), (4, "explore", False, 4),
        *[(k, "eval-candidate", False, 4) for k in range(5, 9)]]
    assert all(h["incumbent_success_rate"] == 1.0 for h in saved["history"])


def test_an_episode_whose_reset_failed_runs_again_and_a_fall_counts_as_a_failure(run_dir: Path,
                                                                                     tmp_path: Path) -> None:
    out = tmp_path / "ft"
    robot = FallingRobot(lambda policy: _name(policy) == "deployed.onnx", fails={3, 6, 7}, tips=frozenset({9}))
    summary = finetune(_cfg(run_dir, out, 9), progress=False, open_session=robot)
    assert robot.calls == 12 and summary.episodes_done == 9 and summary.stop_kind == "completed"
    # a fall is the policy's failure: the gate counts it (the candidate's second episode)
    (decision,) = summary.gate["decisions"]
    assert decision["candidate_episodes"] == 4 and decision["candidate_successes"] == 0
    # the failed ones ran nothing and were tried again with the same kind of policy
    assert [_name(p) for p in robot.policies] == (["deployed.onnx"] * 5 + ["explore"] * 3
                                                  + ["round_001.onnx"] * 4)
    assert [h["episode"] for h in summary.history] == list(range(9))
    assert [h["kind"] for h in summary.history] == ["eval-incumbent"] * 4 + ["explore"] + ["eval-candidate"] * 4
    assert len(list((out / "logs").glob("episode_*.npz"))) == 9


def test_a_clearly_better_candidate_replaces_the_incumbent_and_a_resume_keeps_it(run_dir: Path,
                                                                                tmp_path: Path) -> None:
    out = tmp_path / "ft"
    robot = FakeRobot(lambda policy: _name(policy) == "round_001.onnx")
    summary = finetune(_cfg(run_dir, out, 9), progress=False, open_session=robot)
    (decision,) = summary.gate["decisions"]
    assert decision["replaced"] and decision["p_value"] == pytest.approx(1 / 70)
    assert summary.gate["incumbent"] == "round 1" and summary.success_rate == 1.0
    assert (out / "policy.onnx").read_bytes() == (out / "onnx" / "round_001.onnx").read_bytes()
    # the next round's incumbent episodes run the new incumbent; the replayed gate agrees after a resume
    robot = FakeRobot(lambda policy: _name(policy) == "round_001.onnx")
    resumed = finetune(_cfg(run_dir, out, 11, resume=True), progress=False, open_session=robot)
    assert [_name(p) for p in robot.policies] == ["explore", "round_002.onnx"]
    assert resumed.gate["incumbent"] == "round 1" and len(resumed.history) == 11
    assert (out / "policy.onnx").read_bytes() == (out / "onnx" / "round_001.onnx").read_bytes()


def test_a_candidate_ahead_gets_more_looks_and_a_resume_mid_look_continues_them(run_dir: Path,
                                                                                 tmp_path: Path) -> None:
    # The deployed policy succeeds in every other episode, the candidate in all: 4 of 4 against 2 of 4 (p = 0.21),
    # then 8 of 8 against 4 of 8 (p = 0.038) pass no look at 1 - 0.05 / 3; 12 of 12 against 6 of 12 (p = 0.007) does.
    out, deployed_calls = tmp_path / "ft", [0]

    def success(policy: Any) -> bool:
        if _name(policy) == "deployed.onnx":
            deployed_calls[0] += 1
            return deployed_calls[0] % 2 == 0
        return _name(policy) == "round_001.onnx"

    robot = FakeRobot(success)
    first = finetune(_cfg(run_dir, out, 13, gate_looks=3), progress=False, open_session=robot)
    assert [_name(p) for p in robot.policies] == (["deployed.onnx"] * 4 + ["explore"] + ["round_001.onnx"] * 4
                                                  + ["deployed.onnx"] * 4)
    (look1,) = first.gate["decisions"]
    assert (look1["look"], look1["replaced"], look1["p_value"]) == (1, False, pytest.approx(15 / 70))
    robot = FakeRobot(success)
    resumed = finetune(_cfg(run_dir, out, 25, gate_looks=3, resume=True), progress=False, open_session=robot)
    assert [_name(p) for p in robot.policies] == ["round_001.onnx"] * 4 + ["deployed.onnx"] * 4 + \
        ["round_001.onnx"] * 4
    looks = resumed.gate["decisions"]
    assert [(d["look"], d["candidate_successes"], d["candidate_episodes"], d["incumbent_successes"],
             d["incumbent_episodes"], d["replaced"]) for d in looks] == [
        (1, 4, 4, 2, 4, False), (2, 8, 8, 4, 8, False), (3, 12, 12, 6, 12, True)]
    assert resumed.gate["comparisons"] == 1 and resumed.gate["look_confidence"] == pytest.approx(1 - 0.05 / 3)
    assert (out / "policy.onnx").read_bytes() == (out / "onnx" / "round_001.onnx").read_bytes()
    with pytest.raises(ParameterError, match="gate_looks"):  # the run's looks are part of its schedule
        finetune(_cfg(run_dir, out, 26, resume=True), progress=False, open_session=FakeRobot(success))
