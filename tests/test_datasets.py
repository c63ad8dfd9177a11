"""``s2r trajlog-dataset --format minari|lerobot``: each format read back by its own library's loader matches the logs.

The logs are synthetic (``TrajectoryWriter``, the claw's shapes): three complete episodes, one of them with a bad
reading in the middle (two transitions left out, the episode split in two), and one stopped episode (left out).
The expected arrays come from the episode files themselves (``np.load``), not through the converter.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import sim
from policies.dataset import trajlog_segments, trajlog_to_dataset
from s2r.cli import main as s2r_main
from s2r.core.trajlog import RunInfo, TrajectoryWriter
from sim.tasks import make_task

ENV_ID = "s2r/DClawTurnRandom-v0"
SPEC = make_task(ENV_ID).spec
INFO = RunInfo(SPEC.name, SPEC.robot, SPEC.joint_names, SPEC.passive_joints, SPEC.control_period, "sim",
               extra={"env_id": ENV_ID, "policy": "scripted:zero"})
STEPS = (5, 6, 4)
BAD_READING = (1, 3)
"""Episode 1's reading 3 is NaN: its transitions 2 and 3 are left out."""


def _episode(steps: int, rng: np.random.Generator, camera: tuple[int, int] | None) -> dict[str, np.ndarray]:
    r, j = steps + 1, SPEC.n_joints
    arrays = {
        "time": np.arange(r) * SPEC.control_period, "joint_pos": rng.normal(size=(r, j)),
        "joint_vel": rng.normal(size=(r, j)), "joint_effort": np.zeros((r, j)), "passive_pos": rng.normal(size=(r, 1)),
        "passive_vel": rng.normal(size=(r, 1)), "stale": np.zeros(r, dtype=np.uint8),
        "obs": rng.normal(size=(r, SPEC.obs_layout.size)).astype(np.float32),
        # Some actions beyond [-1, 1]: the datasets hold them as applied, clipped.
        "action": rng.uniform(-1.2, 1.2, size=(steps, j)), "command": rng.normal(size=(steps, j)),
        "reward": rng.normal(size=steps), "reward_terms": rng.normal(size=(steps, 2)),
        "comm_errors": np.zeros(steps, dtype=np.int64), "cycle_time": np.full(steps, 1e-3),
        "period_error": np.zeros(steps),
    }
    if camera is not None:
        arrays["camera_wrist"] = rng.integers(0, 256, size=(r, *camera, 3), dtype=np.uint8)
    return arrays


def write_logs(directory: Path, camera: tuple[int, int] | None = None) -> Path:
    rng = np.random.default_rng(3)
    writer = TrajectoryWriter(directory, INFO)
    for k, steps in enumerate(STEPS):
        arrays = _episode(steps, rng, camera)
        if k == BAD_READING[0]:
            arrays["obs"][BAD_READING[1]] = np.nan
        writer.write_episode(arrays, {"complete": True})
    writer.write_episode(_episode(3, rng, camera), {"complete": False})
    return directory


def expected_episodes(directory: Path) -> list[dict[str, np.ndarray]]:
    """The episodes a dataset must hold, cut from the complete episode files by hand."""
    out = []
    for k in range(len(STEPS)):
        with np.load(directory / f"episode_{k:06d}.npz") as f:
            arrays = {name: f[name] for name in f.files}
        bounds = [(0, BAD_READING[1] - 1), (BAD_READING[1] + 1, STEPS[k])] if k == BAD_READING[0] else [(0, STEPS[k])]
        for start, stop in bounds:
            n = stop - start
            out.append({
                "observations": arrays["obs"][start:stop + 1].astype(np.float32),
                "actions": np.clip(arrays["action"][start:stop], -1, 1).astype(np.float32),
                "rewards": arrays["reward"][start:stop].astype(np.float32),
                "terminations": np.zeros(n, dtype=bool),
                "truncations": np.arange(n) == n - 1,
                "frames": arrays.get("camera_wrist", np.zeros((n + 1, 0)))[start:stop + 1],
                "source": np.array([k, start]),
            })
    return out


def test_registered_envs_have_string_entry_points_and_a_json_spec() -> None:
    for env_id in sim.TASK_IDS.values():
        spec = gym.spec(env_id)
        assert isinstance(spec.entry_point, str) and spec.entry_point.startswith("sim:")
        assert spec.max_episode_steps == make_task(env_id).spec.episode_steps
        again = gym.envs.registration.EnvSpec.from_json(spec.to_json())
        assert (again.entry_point, again.max_episode_steps) == (spec.entry_point, spec.max_episode_steps)


def test_the_time_limit_ends_episodes_where_the_env_does_at_any_control_period() -> None:
    for period, kwargs in ((None, {}), (0.05, {"control_period": 0.05})):
        env = gym.make(ENV_ID, engine="mujoco", **kwargs, max_episode_steps=sim.time_limit(ENV_ID, kwargs))
        expected = SPEC.episode_steps if period is None else round(SPEC.episode_duration / period)
        assert env.spec is not None and env.spec.max_episode_steps == expected
        env.reset(seed=0)
        action = np.zeros(SPEC.n_joints, dtype=np.float32)
        steps, truncated = 0, False
        while not truncated:
            *_, truncated, _ = env.step(action)
            steps += 1
        assert steps == expected == env.unwrapped.spec_.episode_steps  # type: ignore[attr-defined]
        env.close()


def test_segments_are_the_npz_transitions(tmp_path: Path) -> None:
    logs = write_logs(tmp_path / "logs")
    flat = trajlog_to_dataset(logs)
    segments = trajlog_segments(logs)
    assert [(s.episode, s.start, s.steps) for s in segments] == [(0, 0, 5), (1, 0, 2), (1, 4, 2), (2, 0, 4)]
    np.testing.assert_array_equal(np.concatenate([s.observations[:-1] for s in segments]), flat["observations"])
    np.testing.assert_array_equal(np.concatenate([s.observations[1:] for s in segments]), flat["next_observations"])
    np.testing.assert_array_equal(np.concatenate([s.actions for s in segments]), flat["actions"])
    np.testing.assert_array_equal(np.concatenate([s.rewards for s in segments]), flat["rewards"])
    for want, got in zip(expected_episodes(logs), segments, strict=True):
        np.testing.assert_array_equal(got.observations, want["observations"])
        np.testing.assert_array_equal(got.truncations, want["truncations"])


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert s2r_main(["trajlog-dataset", *argv, "--json"]) == 0
    summary: dict[str, Any] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return summary


# --- Minari -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("camera", [None, (6, 8)], ids=["state", "camera"])
def test_minari_load_dataset_reads_the_logs_back(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  camera: tuple[int, int] | None) -> None:
    minari = pytest.importorskip("minari")
    logs = write_logs(tmp_path / "logs", camera)
    root = tmp_path / "minari"
    summary = _run(["--log-dir", str(logs), "--format", "minari", "--out", str(root)], capsys)
    dataset_id = "s2r/dclaw-turn-dclaw-sim-v0"
    assert summary["out"] == str(root / dataset_id) and summary["episodes"] == 4 and summary["transitions"] == 13

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    dataset = minari.load_dataset(dataset_id)
    want = expected_episodes(logs)
    assert dataset.total_episodes == len(want) and dataset.total_steps == 13
    for w, ep in zip(want, dataset.iterate_episodes(), strict=True):
        observations = ep.observations["state"] if camera else ep.observations
        np.testing.assert_array_equal(observations, w["observations"])
        if camera:
            np.testing.assert_array_equal(ep.observations["images"]["wrist"], w["frames"])  # lossless
        np.testing.assert_array_equal(ep.actions, w["actions"])
        np.testing.assert_array_equal(ep.rewards, w["rewards"])
        np.testing.assert_array_equal(ep.terminations, w["terminations"])
        np.testing.assert_array_equal(ep.truncations, w["truncations"])
        assert [ep.infos["source_episode"][0], ep.infos["source_step"][0]] == w["source"].tolist()

    meta = json.loads(dataset.storage.metadata["s2r"])
    assert (meta["env_id"], meta["robot"], meta["joint_names"], meta["fps"]) == (
        ENV_ID, "dclaw", list(SPEC.joint_names), pytest.approx(10.0))
    assert [b["name"] for b in meta["observation_layout"]] == list(SPEC.obs_layout.names)
    assert meta["cameras"] == ({"wrist": [*camera, 3]} if camera else {})
    env = dataset.recover_environment()
    assert env.spec is not None and (env.spec.id, env.spec.max_episode_steps) == (ENV_ID, SPEC.episode_steps)
    assert env.observation_space.shape == (SPEC.obs_layout.size,)
    env.close()


def test_minari_refuses_an_existing_dataset_and_leaves_no_temporary_files(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("minari")
    logs = write_logs(tmp_path / "logs")
    root = tmp_path / "minari"
    argv = ["trajlog-dataset", "--log-dir", str(logs), "--format", "minari", "--out", str(root),
            "--dataset-id", "mine-v2"]
    assert s2r_main(argv) == 0
    assert s2r_main(argv) == 2
    assert "mine-v2 exists: a Minari dataset is never overwritten" in capsys.readouterr().err
    assert sorted(p.name for p in root.iterdir()) == ["mine-v2"]
    assert s2r_main([*argv[:-1], "no version"]) == 2
    assert "--dataset-id 'no version' is not a Minari dataset id" in capsys.readouterr().err
    assert s2r_main([*argv[:-2], "--env-id", "dkitty-stand"]) == 2
    assert "--env-id 's2r/DKittyStandFixed-v0' is the task 'dkitty-stand', but the logs are of 'dclaw-turn'" in (
        capsys.readouterr().err)


# --- LeRobot ----------------------------------------------------------------------------------------------
def test_lerobot_files_hold_the_logs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The v3.0 files as any parquet reader sees them (LeRobot's own loader: the next test)."""
    pq = pytest.importorskip("pyarrow.parquet")
    logs = write_logs(tmp_path / "logs", camera=(6, 8))
    out = tmp_path / "lerobot"
    summary = _run(["--log-dir", str(logs), "--format", "lerobot", "--out", str(out)], capsys)
    assert summary["out"] == str(out) and summary["episodes"] == 4
    info = json.loads((out / "meta" / "info.json").read_text())
    assert (info["codebase_version"], info["fps"], info["robot_type"], info["total_frames"]) == (
        "v3.0", 10, "dclaw", 13)
    assert info["features"]["action"]["names"] == list(SPEC.joint_names)
    assert info["features"]["observation.images.wrist"] == {"dtype": "image", "shape": [6, 8, 3],
                                                            "names": ["height", "width", "channels"]}
    data = pq.read_table(out / "data" / "chunk-000" / "file-000.parquet").to_pydict()
    want = expected_episodes(logs)
    np.testing.assert_array_equal(np.array(data["observation.state"], dtype=np.float32),
                                  np.concatenate([w["observations"][:-1] for w in want]))
    np.testing.assert_array_equal(np.array(data["next.truncated"]), np.concatenate([w["truncations"] for w in want]))
    tasks = pq.read_table(out / "meta" / "tasks.parquet").to_pydict()
    assert tasks == {"task": [ENV_ID], "task_index": [0]}


READER = Path(__file__).with_name("lerobot_reader.py")


def _lerobot_python() -> str:
    """An interpreter with LeRobot's loader: ``S2R_LEROBOT_PYTHON`` (``make lerobot-check`` sets it to a venv of
    its own, since the loader needs another torch), else this one if it has the loader."""
    python = os.environ.get("S2R_LEROBOT_PYTHON")
    if python:
        return python
    if any(importlib.util.find_spec(name) is not None for name in ("lerobot", "ledataset")):
        return sys.executable
    pytest.skip("LeRobot's loader (lerobot or lerobot-dataset) is not installed here: it needs another torch than "
                "this stack's; `make lerobot-check` builds a venv for it and runs this test")


def test_lerobot_dataset_reads_the_logs_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    python = _lerobot_python()
    logs = write_logs(tmp_path / "logs", camera=(6, 8))
    out = tmp_path / "lerobot"
    _run(["--log-dir", str(logs), "--format", "lerobot", "--out", str(out)], capsys)
    read = tmp_path / "read.npz"
    subprocess.run([python, str(READER), "s2r/dclaw-turn", str(out), str(read)], check=True, timeout=300)
    with np.load(read) as npz:
        header = json.loads(str(npz["header"]))
        column = {key: npz[key] for key in npz.files if key != "header"}
    want = expected_episodes(logs)
    assert (header["num_episodes"], header["num_frames"], header["fps"]) == (4, 13, 10)
    np.testing.assert_array_equal(column["observation.state"],
                                  np.concatenate([w["observations"][:-1] for w in want]))
    np.testing.assert_array_equal(column["action"], np.concatenate([w["actions"] for w in want]))
    np.testing.assert_array_equal(column["next.reward"], np.concatenate([w["rewards"] for w in want]))
    np.testing.assert_array_equal(column["next.terminated"], np.concatenate([w["terminations"] for w in want]))
    np.testing.assert_array_equal(column["next.truncated"], np.concatenate([w["truncations"] for w in want]))
    np.testing.assert_array_equal(column["episode_index"],
                                  np.repeat(np.arange(4), [len(w["rewards"]) for w in want]))
    # Images come back channel-first, scaled to [0, 1].
    frames = np.rint(column["observation.images.wrist"].transpose(0, 2, 3, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(frames, np.concatenate([w["frames"][:-1] for w in want]))
    assert header["tasks"] == [ENV_ID]
    assert header["s2r"]["joint_names"] == list(SPEC.joint_names)
