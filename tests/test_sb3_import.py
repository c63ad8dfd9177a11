"""Bring your own policy: ``s2r export --from-sb3`` turns a Stable-Baselines3 model (and its VecNormalize statistics)
into the verified ONNX contract of ``s2r export``, without running anything pickled in the files.

Stable-Baselines3 is used here only to make the models; the importer reads the files itself.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from cli_runs import fast_robot_config
from sb3_contrib import CrossQ
from stable_baselines3 import PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from export import ObsNorm, OnnxPolicy, export_module
from export.metadata import ACTION_ENV_BOUNDS, ACTION_NORMALIZED, UNKNOWN_RANDOMIZATION
from export.sb3_export import sb3_actor
from export.sb3_files import read_sb3_zip, read_vecnormalize
from policies.envs import make_env, resolve_task
from s2r.cli import main
from s2r.core.errors import UserError

CLAW = "dclaw-turn"
WARMUP = 100
"""Random steps before the first update: the models only have to exist (a few hundred small updates follow)."""
SAMPLES = "1000"


def _observations(env_id: str, n: int, seed: int) -> np.ndarray:
    """``n`` observations from random-action episodes of ``env_id``."""
    env = make_env(env_id)
    out: list[np.ndarray] = []
    obs, _ = env.reset(seed=seed)
    while len(out) < n:
        out.append(obs)
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    return np.asarray(out, dtype=np.float32)


def _export(*args: str | Path) -> int:
    return main(["export", *map(str, args), "--samples", SAMPLES, "--json"])


def _max_diff(onnx: Path, model: BaseAlgorithm, obs: np.ndarray, sb3_obs: np.ndarray) -> float:
    expected, _ = model.predict(sb3_obs, deterministic=True)
    return float(np.max(np.abs(OnnxPolicy(onnx).act(obs) - expected)))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sb3")


@pytest.fixture(scope="module")
def claw_sac(work: Path) -> tuple[Path, Path, Path]:
    """SAC trained 250 steps on the claw behind VecNormalize: the zip, the statistics and the exported file."""
    venv = VecNormalize(DummyVecEnv([lambda: make_env(resolve_task(CLAW))]), norm_reward=False)
    model = SAC("MlpPolicy", venv, policy_kwargs={"net_arch": [32, 32]}, learning_starts=WARMUP, batch_size=32, seed=0)
    model.learn(250)
    zip_path, stats, onnx = work / "claw_sac.zip", work / "claw_vecnorm.pkl", work / "claw_sac.onnx"
    model.save(zip_path)
    venv.save(str(stats))
    assert _export("--from-sb3", zip_path, "--vecnormalize", stats, "--task", CLAW, "--out", onnx) == 0
    return zip_path, stats, onnx


@pytest.fixture(scope="module")
def pendulum_td3(work: Path) -> tuple[Path, Path]:
    """TD3 (tanh activations) trained 200 steps on Pendulum, whose actions are in [-2, 2]: the zip and the export."""
    model = TD3("MlpPolicy", "Pendulum-v1", policy_kwargs={"net_arch": [32, 32], "activation_fn": torch.nn.Tanh},
                learning_starts=WARMUP, batch_size=32, seed=0)
    model.learn(200)
    zip_path, onnx = work / "pendulum_td3.zip", work / "pendulum_td3.onnx"
    model.save(zip_path)
    assert _export("--from-sb3", zip_path, "--task", "Pendulum-v1", "--out", onnx) == 0
    return zip_path, onnx


def test_sac_with_vecnormalize_matches_predict_and_carries_the_task(claw_sac: tuple[Path, Path, Path]) -> None:
    zip_path, stats, onnx = claw_sac
    model = SAC.load(zip_path)
    with stats.open("rb") as f:
        vecnorm = pickle.load(f)  # SB3's own loader, for the reference: this file is ours
    obs = np.concatenate([_observations(resolve_task(CLAW), 500, 1),
                          np.random.default_rng(0).normal(0.0, 2.0, (500, 21)).astype(np.float32)])
    diff = _max_diff(onnx, model, obs, vecnorm.normalize_obs(obs).astype(np.float32))
    print(f"SB3 SAC on {CLAW}: max |onnx - predict| = {diff:.3g}")
    assert diff <= 1e-5

    info = OnnxPolicy(onnx).info
    assert info is not None
    made = info.provenance
    assert (made.algo, made.training_steps, made.source_checkpoint) == ("sb3-sac", model.num_timesteps, str(zip_path))
    assert (info.task, info.robot, info.action_output) == (CLAW, "dclaw", ACTION_NORMALIZED)
    assert len(info.joint_names) == 9 and info.obs_layout[-1].stop == 21 and info.control_period_s == 0.1
    assert made.randomization == UNKNOWN_RANDOMIZATION and len(made.config_sha256) == 64
    assert read_vecnormalize(stats).sha256 != made.config_sha256  # the hash covers the zip and the statistics


def test_td3_on_a_gym_env_maps_onto_its_bounds(pendulum_td3: tuple[Path, Path]) -> None:
    zip_path, onnx = pendulum_td3
    model = TD3.load(zip_path)
    obs = np.concatenate([_observations("Pendulum-v1", 500, 2),
                          np.random.default_rng(1).uniform([-1, -1, -8], [1, 1, 8], (500, 3)).astype(np.float32)])
    assert _max_diff(onnx, model, obs, obs) <= 1e-5
    info = OnnxPolicy(onnx).info
    assert info is not None
    assert (info.provenance.algo, info.action_output, info.action_low) == ("sb3-td3", ACTION_ENV_BOUNDS, (-2.0,))


def test_crossq_batch_renorm_actor_matches_predict(work: Path) -> None:
    model = CrossQ("MlpPolicy", "Pendulum-v1", policy_kwargs={"net_arch": {"pi": [32, 32], "qf": [64, 64]}},
                   learning_starts=WARMUP, batch_size=32, seed=0)
    model.learn(150)
    zip_path, onnx = work / "crossq.zip", work / "crossq.onnx"
    model.save(zip_path)
    assert _export("--from-sb3", zip_path, "--task", "Pendulum-v1", "--out", onnx) == 0
    obs = np.random.default_rng(2).uniform([-1, -1, -8], [1, 1, 8], (500, 3)).astype(np.float32)
    assert _max_diff(onnx, CrossQ.load(zip_path), obs, obs) <= 1e-5


def test_the_export_evaluates_and_deploys_on_the_emulator(claw_sac: tuple[Path, Path, Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    onnx = claw_sac[2]
    capsys.readouterr()
    assert main(["eval", str(onnx), "--episodes", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["episodes"] == 1
    robot = fast_robot_config("dclaw", tmp_path)
    assert main(["deploy", str(onnx), "--robot", str(robot), "--driver", "emulator", "--lockstep", "--episodes", "1",
                 "--log-dir", str(tmp_path / "logs"), "--json"]) == 0
    deployed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert deployed["stop_kind"] == "completed" and deployed["episodes"] == 1


class _Payload:
    """Unpickling this runs ``touch MARKER``: what a malicious file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return os.system, (f"touch {self.marker}",)


def test_a_malicious_vecnormalize_file_is_refused_without_running(claw_sac: tuple[Path, Path, Path], tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    zip_path = claw_sac[0]
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(_Payload(marker)))
    assert _export("--from-sb3", zip_path, "--vecnormalize", evil, "--task", CLAW, "--out", tmp_path / "x.onnx") == 2
    err = capsys.readouterr().err
    assert "refusing to load VecNormalize file" in err and "system" in err and "nothing in it was run" in err
    # Hidden inside what looks like VecNormalize's state, too.
    with pytest.raises(UserError, match="asks to import"):
        nested = tmp_path / "nested.pkl"
        nested.write_bytes(pickle.dumps(_EvilVecNormalize(marker)))
        read_vecnormalize(nested)
    assert not marker.exists() and not (tmp_path / "x.onnx").exists()


class _EvilVecNormalize:
    """Pickles as a VecNormalize whose obs_rms is the payload."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return VecNormalize, (), {"norm_obs": True, "obs_rms": _Payload(self.marker)}


def test_pickled_entries_of_the_zip_are_only_parsed(claw_sac: tuple[Path, Path, Path], tmp_path: Path) -> None:
    zip_path = claw_sac[0]
    marker = tmp_path / "pwned"
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(zip_path) as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.infolist():
            payload = src.read(item)
            if item.filename == "data":
                data = json.loads(payload)
                data["policy_kwargs"] = {":type:": "<class 'dict'>",
                                         ":serialized:": base64.b64encode(pickle.dumps(_Payload(marker))).decode()}
                data["lr_schedule"][":serialized:"] = data["policy_kwargs"][":serialized:"]
                payload = json.dumps(data).encode()
            dst.writestr(item, payload)
    sb3_actor(read_sb3_zip(tampered))  # read as far as the export needs it
    assert not marker.exists()


def test_unsupported_models_and_misuse_are_refused_clearly(claw_sac: tuple[Path, Path, Path], work: Path,
                                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ppo = PPO("MlpPolicy", "Pendulum-v1", n_steps=32, batch_size=32, n_epochs=1, seed=0)
    ppo.learn(32)
    ppo.save(work / "ppo.zip")
    assert _export("--from-sb3", work / "ppo.zip", "--task", "Pendulum-v1", "--out", tmp_path / "p.onnx") == 2
    err = capsys.readouterr().err
    assert "ActorCriticPolicy (PPO and A2C" in err and "SB3 SAC, TD3" in err

    zip_path = claw_sac[0]
    assert _export("--from-sb3", zip_path, "--task", "Pendulum-v1", "--out", tmp_path / "w.onnx") == 2
    assert "observes (21,), but Pendulum-v1 has the observation space (3,)" in capsys.readouterr().err

    # An SB3 zip where an s2r policy file goes: the way to convert it, not a torch traceback.
    for argv in (["export", str(zip_path)], ["eval", str(zip_path), "--episodes", "1"],
                 ["deploy", str(zip_path), "--robot", "dclaw", "--driver", "emulator", "--lockstep", "--episodes", "1",
                  "--log-dir", str(tmp_path / "logs")]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "is a Stable-Baselines3 model" in err and "s2r export --from-sb3" in err, err
    assert main(["export", "--from-sb3", str(zip_path)]) == 2
    assert "--from-sb3 needs --task" in capsys.readouterr().err


def test_export_module_takes_any_actor_and_a_normalizer(tmp_path: Path) -> None:
    torch.manual_seed(0)
    actor = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1), torch.nn.Tanh())
    norm = ObsNorm(np.array([0.0, 0.0, 1.0]), np.array([0.5, 0.5, 4.0]), clip=5.0, eps=1e-8)
    result = export_module(actor, tmp_path / "mine.onnx", task="Pendulum-v1", obs_norm=norm, algo="mine",
                           training_steps=7, provenance={"run": 1})
    obs = np.random.default_rng(3).uniform([-1, -1, -8], [1, 1, 8], (200, 3)).astype(np.float32)
    with torch.inference_mode():
        normalized = actor(torch.clamp((torch.from_numpy(obs) - torch.tensor([0.0, 0.0, 1.0]))
                                       / torch.sqrt(torch.tensor([0.5, 0.5, 4.0])), -5.0, 5.0)).numpy()
    assert np.max(np.abs(OnnxPolicy(result.path).act(obs) - 2.0 * normalized)) <= 1e-5  # [-1, 1] -> [-2, 2]
    made = result.metadata.provenance
    assert result.checkpoint is None and made.algo == "mine" and made.training_steps == 7
    with pytest.raises(UserError, match=r"observation normalizer mean has shape \(2,\); the task's observation has"):
        export_module(actor, tmp_path / "bad.onnx", task="Pendulum-v1", obs_norm=ObsNorm(np.zeros(2), np.ones(2)))
    assert not (tmp_path / "bad.onnx").exists()
