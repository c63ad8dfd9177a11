"""n-step returns: folding an episode's steps, the replay's horizon column, and the targets that use it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policies.crossq import CrossQParams, crossq_update, make_crossq_model
from policies.replay import Batch, NStepReturns, ReplayBuffer

GAMMA = 0.9


def _step(t: int) -> tuple[np.ndarray, np.ndarray]:
    return np.array([float(t)]), np.array([float(-t)])


def test_steps_fold_into_n_step_transitions_and_the_episode_end_flushes_the_rest() -> None:
    acc = NStepReturns(3, GAMMA)
    out = []
    rewards = [1.0, 2.0, 3.0, 4.0, 5.0]
    for t, r in enumerate(rewards):
        obs, act = _step(t)
        out += acc.push(obs, act, r, np.array([float(t + 1)]), terminated=False, episode_end=t == len(rewards) - 1)
    assert [(x[0][0], x[5]) for x in out] == [(0.0, 3), (1.0, 3), (2.0, 3), (3.0, 2), (4.0, 1)]
    first = out[0]
    assert first[2] == pytest.approx(1.0 + GAMMA * 2.0 + GAMMA**2 * 3.0)
    assert first[3][0] == 3.0 and first[4] is False  # bootstraps from s_3
    last = out[-1]
    assert last[2] == pytest.approx(5.0) and last[3][0] == 5.0
    assert not acc.pending


def test_a_termination_is_carried_by_every_transition_it_cuts_short() -> None:
    acc = NStepReturns(4, GAMMA)
    out = []
    for t in range(3):
        obs, act = _step(t)
        out += acc.push(obs, act, 1.0, np.array([9.0]), terminated=t == 2, episode_end=t == 2)
    assert [x[4] for x in out] == [True, True, True] and [x[5] for x in out] == [3, 2, 1]


def test_the_stored_observation_is_a_copy() -> None:
    acc = NStepReturns(2, GAMMA)
    obs = np.zeros(1)
    acc.push(obs, np.zeros(1), 0.0, np.ones(1), False, False)
    obs[0] = 5.0
    out = acc.push(np.ones(1), np.zeros(1), 0.0, np.ones(1), False, False)
    assert out[0][0][0] == 0.0


def test_the_replay_keeps_horizons_through_save_and_load_and_old_files_load_as_one_step() -> None:
    buf = ReplayBuffer(8, 1, 1, torch.device("cpu"), seed=0)
    buf.add(np.zeros(1), np.zeros(1), 1.0, np.ones(1), False, horizon=3)
    batch = buf.sample(4, torch.zeros(1), torch.ones(1), 10.0)
    assert batch.horizon is not None and torch.equal(batch.horizon, torch.full((4, 1), 3.0))
    copy = ReplayBuffer(8, 1, 1, torch.device("cpu"), seed=0)
    copy.load_state_dict(buf.state_dict())
    assert copy.multi_step and copy.horizon[0, 0] == 3.0
    old = buf.state_dict()
    del old["horizon"]
    legacy = ReplayBuffer(8, 1, 1, torch.device("cpu"), seed=0)
    legacy.load_state_dict(old)
    assert not legacy.multi_step and legacy.sample(2, torch.zeros(1), torch.ones(1), 10.0).horizon is None


def test_a_one_step_part_gets_horizon_one_when_mixed_with_a_multi_step_part() -> None:
    one = Batch(*(torch.zeros(2, 1) for _ in range(5)))
    many = Batch(*(torch.zeros(3, 1) for _ in range(5)), horizon=torch.full((3, 1), 4.0))
    mixed = Batch.concat([one, many])
    assert mixed.horizon is not None and mixed.horizon[:, 0].tolist() == [1.0, 1.0, 4.0, 4.0, 4.0]
    assert torch.allclose(torch.as_tensor(mixed.discount(GAMMA))[:, 0],
                          torch.tensor([GAMMA, GAMMA, GAMMA**4, GAMMA**4, GAMMA**4]))


def test_the_crossq_target_discounts_the_bootstrap_by_gamma_to_the_horizon() -> None:
    """With zero rewards, a horizon of k must shrink the critic's regression target by gamma**(k - 1)."""
    n = 32
    g = torch.Generator().manual_seed(0)
    obs, act = torch.randn(n, 3, generator=g), torch.rand(n, 2, generator=g) * 2 - 1
    losses = {}
    for k in (1, 3):
        model = make_crossq_model(3, 2, (16,), (16,), "relu", 1e-3, 0.5, 1.0, torch.device("cpu"), 0)
        with torch.no_grad():
            model.critic.biases[-1].fill_(10.0)  # a large, known bootstrap value
        batch = Batch(obs, act, torch.zeros(n, 1), obs, torch.zeros(n, 1), horizon=torch.full((n, 1), float(k)))
        losses[k] = crossq_update(model, batch, CrossQParams(gamma=GAMMA, policy_delay=1000))["critic_loss"]
    # Same critic, same (s', a') draws: only the target's discount differs, so the losses must differ.
    assert losses[1] != losses[3]
