"""Checkpoints: save -> load -> identical actions; bad files give a clear UserError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from policies.checkpoint import (
    BEST_NAME,
    LAST_NAME,
    Checkpoint,
    load_checkpoint,
    resolve_checkpoint_path,
    save_checkpoint,
)
from policies.networks import Actor, ObsNormalizer, PolicyModule
from s2r.core.errors import UserError
from s2r.policy_files import load_policy

OBS, ACT = 7, 3


def _checkpoint(seed: int = 0, hidden: tuple[int, ...] = (16, 8), stochastic: bool = True) -> Checkpoint:
    g = torch.Generator().manual_seed(seed)
    actor = Actor(OBS, ACT, hidden, "relu", stochastic=stochastic, generator=g)
    rng = np.random.default_rng(seed)
    return Checkpoint(
        algo="sac" if stochastic else "td3",
        env_id="s2r/DClawTurnFixed-v0",
        task="dclaw-turn",
        engine="mujoco",
        step=1234,
        config={"hidden": list(hidden), "seed": seed},
        obs_dim=OBS,
        act_dim=ACT,
        hidden=hidden,
        activation="relu",
        stochastic=stochastic,
        actor_state=actor.state_dict(),
        obs_norm=True,
        obs_mean=rng.normal(size=OBS),
        obs_var=rng.uniform(0.5, 2.0, size=OBS),
        obs_count=100.0,
        obs_clip=10.0,
        obs_eps=1e-8,
        action_low=-np.ones(ACT),
        action_high=np.ones(ACT),
    )


@pytest.mark.parametrize("stochastic", [True, False])
def test_save_load_gives_identical_actions(tmp_path: Path, stochastic: bool) -> None:
    ckpt = _checkpoint(stochastic=stochastic)
    path = tmp_path / "policy.pt"
    save_checkpoint(path, ckpt)

    raw = torch.load(path, weights_only=True)  # plain data only
    assert raw["actor"]["hidden"] == [16, 8]
    assert raw["obs_norm"]["mean"].dtype == torch.float64

    reference = PolicyModule(
        ObsNormalizer(torch.from_numpy(ckpt.obs_mean), torch.from_numpy(ckpt.obs_var), 10.0, 1e-8),
        ckpt.build_actor(),
    )
    obs = np.random.default_rng(1).normal(size=(32, OBS)).astype(np.float32)
    policy = load_policy(path).act
    got = policy(obs)
    with torch.no_grad():
        want = reference(torch.from_numpy(obs)).numpy()
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(policy(obs[3]), got[3], rtol=0, atol=1e-6)
    assert got.shape == (32, ACT) and np.all(np.abs(got) <= 1.0)

    loaded = load_checkpoint(path)
    assert (loaded.algo, loaded.step, loaded.hidden, loaded.stochastic) == (ckpt.algo, 1234, (16, 8), stochastic)
    np.testing.assert_array_equal(loaded.obs_mean, ckpt.obs_mean)


def test_policy_rejects_observations_of_the_wrong_size(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "p.pt", _checkpoint())
    policy = load_policy(tmp_path / "p.pt").act
    with pytest.raises(ValueError, match=r"shape \(7,\)"):
        policy(np.zeros(5, np.float32))


def test_run_directory_prefers_best_over_last(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="holds no checkpoint"):
        resolve_checkpoint_path(tmp_path)
    save_checkpoint(tmp_path / LAST_NAME, _checkpoint(seed=1))
    assert resolve_checkpoint_path(tmp_path) == tmp_path / LAST_NAME
    save_checkpoint(tmp_path / BEST_NAME, _checkpoint(seed=2))
    assert resolve_checkpoint_path(tmp_path) == tmp_path / BEST_NAME
    obs = np.zeros(OBS, np.float32)
    np.testing.assert_array_equal(load_policy(tmp_path).act(obs), load_policy(tmp_path / BEST_NAME).act(obs))
    assert not np.array_equal(load_policy(tmp_path).act(obs), load_policy(tmp_path / LAST_NAME).act(obs))


def test_garbage_file_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"this is not a checkpoint at all" * 10)
    with pytest.raises(UserError, match="corrupted or not a checkpoint"):
        load_checkpoint(path)


def test_truncated_file_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "p.pt"
    save_checkpoint(path, _checkpoint())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="corrupted or not a checkpoint"):
        load_checkpoint(path)


def test_other_torch_file_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(UserError, match="not an s2r policy checkpoint"):
        load_checkpoint(path)


def test_weights_that_do_not_fit_the_architecture_are_a_user_error(tmp_path: Path) -> None:
    data = _checkpoint(hidden=(16, 8)).to_dict()
    data["actor"]["hidden"] = [32, 8]  # the stored weights are 16 wide
    path = tmp_path / "wrong.pt"
    torch.save(data, path)
    with pytest.raises(UserError, match=r"actor: w0 has shape \(7, 16\), the network expects \(7, 32\)"):
        load_checkpoint(path)


def test_missing_layer_is_a_user_error(tmp_path: Path) -> None:
    data = _checkpoint(hidden=(16, 8)).to_dict()
    data["actor"]["hidden"] = [16, 8, 8]
    path = tmp_path / "deeper.pt"
    torch.save(data, path)
    with pytest.raises(UserError, match=r"parameters do not match \(missing \['b3', 'w3'\]"):
        load_checkpoint(path)


def test_statistics_of_the_wrong_size_are_a_user_error(tmp_path: Path) -> None:
    data = _checkpoint().to_dict()
    data["obs_norm"]["mean"] = torch.zeros(OBS + 1, dtype=torch.float64)
    path = tmp_path / "stats.pt"
    torch.save(data, path)
    with pytest.raises(UserError, match="observation statistics"):
        load_checkpoint(path)


def test_missing_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no checkpoint or run directory"):
        load_checkpoint(tmp_path / "nope.pt")
