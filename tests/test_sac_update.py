"""SAC update: hand-written gradients against the autograd reference (:mod:`policies.sac_reference`), the critic
target, the temperature loss, log-probs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from policies.networks import LOG_STD_MIN
from policies.offpolicy import FusedAdam
from policies.replay import Batch
from policies.sac import (
    SACLearner,
    SACModel,
    SACParams,
    make_sac_model,
    sac_critic_update,
    sac_update,
    squashed_sample,
)
from policies.sac_reference import SACGradients, sac_reference_gradients, sac_reference_update

OBS, ACT, N = 5, 3, 8


def _model(activation: str = "relu", init_alpha: float = 0.7, lr: float = 0.0) -> SACModel:
    m = make_sac_model(OBS, ACT, (16, 12), activation, lr, init_alpha, torch.device("cpu"), seed=3)  # type: ignore[arg-type]
    for mod in (m.actor, m.critic, m.critic_target):
        mod.double()
    m.log_alpha.data = m.log_alpha.data.double()
    # Rebuild the optimizer (and its gradient buffers) for the float64 parameters.
    m.opt = FusedAdam([*m.actor.parameters(), *m.critic.parameters(), m.log_alpha], lr)
    # Make the targets differ from the critic so a wrong network choice shows.
    with torch.no_grad():
        for p in m.critic_target.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def _batch(seed: int = 0, terminated: list[float] | None = None) -> Batch:
    g = torch.Generator().manual_seed(seed)
    term = torch.tensor(terminated if terminated is not None else [0.0, 1.0] * (N // 2), dtype=torch.float64)
    return Batch(
        obs=torch.randn(N, OBS, generator=g, dtype=torch.float64),
        actions=torch.rand(N, ACT, generator=g, dtype=torch.float64) * 2 - 1,
        rewards=torch.randn(N, 1, generator=g, dtype=torch.float64),
        next_obs=torch.randn(N, OBS, generator=g, dtype=torch.float64),
        terminated=term.reshape(-1, 1),
    )


def _noise(m: SACModel, rows: int) -> torch.Tensor:
    """The noise the next update will draw, without drawing it."""
    state = m.generator.get_state()
    eps = torch.randn((rows, ACT), generator=m.generator, dtype=torch.float64)
    m.generator.set_state(state)
    return eps


def _assert_grads(m: SACModel, ref: SACGradients, stats: dict[str, float]) -> None:
    for got, want in zip([q.grad for q in m.critic.parameters()], ref.critic, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)
    assert stats["critic_loss"] == pytest.approx(ref.critic_loss, rel=1e-9, abs=1e-12)
    if ref.actor is not None:
        for got, want in zip([q.grad for q in m.actor.parameters()], ref.actor, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)
        assert stats["actor_loss"] == pytest.approx(ref.actor_loss, rel=1e-9, abs=1e-12)
        assert stats["alpha_loss"] == pytest.approx(ref.alpha_loss, rel=1e-9, abs=1e-12)
    if ref.log_alpha is not None:
        torch.testing.assert_close(m.log_alpha.grad, ref.log_alpha)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_hand_written_gradients_match_autograd(activation: str) -> None:
    m = _model(activation)
    b = _batch()
    p = SACParams(tau=0.0)
    ref = sac_reference_gradients(m, b, p, _noise(m, 2 * N))
    stats = sac_update(m, b, p)  # lr = 0: parameters stay, gradients stay in .grad
    _assert_grads(m, ref, stats)


def test_multi_step_batches_a_set_entropy_target_and_a_fixed_temperature_match_autograd() -> None:
    m = _model()
    b = _batch()
    horizon = torch.tensor([1.0, 2.0, 3.0, 3.0] * (N // 4), dtype=torch.float64).reshape(-1, 1)
    b = Batch(b.obs, b.actions, b.rewards, b.next_obs, b.terminated, horizon)
    for p in (SACParams(gamma=0.9, tau=0.0, target_entropy=-1.0), SACParams(tau=0.0, autotune_alpha=False)):
        ref = sac_reference_gradients(m, b, p, _noise(m, 2 * N))
        _assert_grads(m, ref, sac_update(m, b, p))


def test_the_critic_only_update_matches_autograd() -> None:
    m = _model()
    b = _batch()
    p = SACParams(tau=0.0)
    ref = sac_reference_gradients(m, b, p, _noise(m, N), update_actor=False)
    _assert_grads(m, ref, sac_critic_update(m, b, p))


def test_the_fast_learner_follows_the_reference_update_over_several_steps() -> None:
    """Adam, the Polyak step, the noise and the critic-only steps included: two copies of a model, one updated
    by the learner and one by the reference, stay together."""
    torch.manual_seed(0)
    fast = _model(lr=1e-3)
    torch.manual_seed(0)  # the same perturbation of the target critic
    ref = _model(lr=1e-3)
    learner, p = SACLearner(fast, SACParams()), SACParams()
    for i, update_actor in enumerate([False, True, True, False, True]):
        b = _batch(seed=i)
        learner.update(b, update_actor)
        sac_reference_update(ref, b, p, update_actor)
    for net in ("actor", "critic", "critic_target"):
        for x, y in zip(getattr(fast, net).parameters(), getattr(ref, net).parameters(), strict=True):
            torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(fast.log_alpha, ref.log_alpha, rtol=1e-9, atol=1e-11)


def test_gradient_through_clamped_log_std_is_zero() -> None:
    m = _model()
    with torch.no_grad():
        last = m.actor.n_layers - 1
        getattr(m.actor, f"b{last}")[ACT:] = LOG_STD_MIN - 5.0  # every log-std below the clamp
    b = _batch()
    p = SACParams(tau=0.0)
    ref = sac_reference_gradients(m, b, p, _noise(m, 2 * N))
    sac_update(m, b, p)
    grad_w = getattr(m.actor, f"w{last}").grad
    assert grad_w is not None
    assert torch.all(grad_w[:, ACT:] == 0)
    assert ref.actor is not None
    torch.testing.assert_close(grad_w, ref.actor[2 * last])


def _constant_critics(m: SACModel, q_value: float, q_next: float) -> None:
    """Every critic outputs ``q_value`` and every target critic ``q_next``, whatever the input."""
    with torch.no_grad():
        last = m.critic.n_layers - 1
        for net, value in ((m.critic, q_value), (m.critic_target, q_next)):
            getattr(net, f"w{last}").zero_()
            getattr(net, f"b{last}").fill_(value)


@pytest.mark.parametrize(("terminated", "bootstraps"), [(1.0, False), (0.0, True)])
def test_critic_target_termination_versus_truncation(terminated: float, bootstraps: bool) -> None:
    """A terminated transition's target is its reward; a truncated (not terminated) one bootstraps."""
    m = _model(init_alpha=1e-12)  # alpha * log pi is negligible: the target is r + gamma * Q'
    q_value, q_next, reward, gamma = 2.0, 10.0, 1.5, 0.9
    _constant_critics(m, q_value, q_next)
    b = Batch(
        obs=torch.zeros(1, OBS, dtype=torch.float64),
        actions=torch.zeros(1, ACT, dtype=torch.float64),
        rewards=torch.full((1, 1), reward, dtype=torch.float64),
        next_obs=torch.ones(1, OBS, dtype=torch.float64),
        terminated=torch.full((1, 1), terminated, dtype=torch.float64),
    )
    sac_update(m, b, SACParams(gamma=gamma, tau=0.0, autotune_alpha=False))
    # d/db of 0.5 * (b - y)^2 is (b - y): the last bias gradient recovers the target y.
    grad_b = getattr(m.critic, f"b{m.critic.n_layers - 1}").grad
    assert grad_b is not None
    y = q_value - grad_b.flatten()
    expected = reward + gamma * q_next if bootstraps else reward
    torch.testing.assert_close(y, torch.full((2,), expected, dtype=torch.float64), atol=1e-8, rtol=0)


@pytest.mark.parametrize(("log_std", "alpha_goes_up"), [(-8.0, True), (0.0, False)])
def test_temperature_moves_toward_the_entropy_target(log_std: float, alpha_goes_up: bool) -> None:
    """Entropy below the target (-|A|) raises alpha; above it lowers alpha."""
    m = _model(lr=1e-2)
    with torch.no_grad():
        last = m.actor.n_layers - 1
        getattr(m.actor, f"w{last}").zero_()
        bias = getattr(m.actor, f"b{last}")
        bias[:ACT] = 0.0
        bias[ACT:] = log_std
    before = float(m.log_alpha.detach())
    stats = sac_update(m, _batch(), SACParams())
    entropy_below_target = stats["entropy"] < -ACT
    assert entropy_below_target == alpha_goes_up
    assert (float(m.log_alpha.detach()) > before) == alpha_goes_up
    # The loss is -log_alpha * (log_pi + target): its gradient's sign says which way alpha moves.
    assert m.log_alpha.grad is not None
    assert (float(m.log_alpha.grad) < 0) == alpha_goes_up


def _numerical_log_density(a: float, mu: float, std: float, h: float = 1e-6) -> float:
    """log p(a) from a central difference of the CDF P(tanh(u) <= a) = Phi((atanh(a) - mu) / std)."""

    def cdf(x: float) -> float:
        return 0.5 * (1.0 + math.erf((math.atanh(x) - mu) / (std * math.sqrt(2.0))))

    return math.log((cdf(a + h) - cdf(a - h)) / (2 * h))


@pytest.mark.parametrize(
    ("a", "mu", "std"), [(0.0, 0.0, 1.0), (0.5, 0.3, 0.7), (-0.9, -1.0, 0.4), (0.99, 2.0, 0.5), (-0.3, 1.2, 2.5)]
)
def test_tanh_log_prob_matches_numerical_density(a: float, mu: float, std: float) -> None:
    u = math.atanh(a)
    mu_t = torch.tensor([[mu]], dtype=torch.float64)
    log_std = torch.tensor([[math.log(std)]], dtype=torch.float64)
    eps = (torch.tensor([[u]], dtype=torch.float64) - mu_t) / std
    got_a, logp, _ = squashed_sample(mu_t, log_std, eps)
    assert float(got_a) == pytest.approx(a, abs=1e-12)
    assert float(logp) == pytest.approx(_numerical_log_density(a, mu, std), abs=1e-5)


def test_tanh_log_prob_sums_dimensions_and_stays_finite_when_saturated() -> None:
    mu = torch.tensor([[0.0, 12.0, -15.0]])
    log_std = torch.zeros(1, 3)
    eps = torch.tensor([[0.3, 0.5, -0.2]])
    _, logp, u = squashed_sample(mu, log_std, eps)
    # float64 closed form: log N(u; mu, 1) - log(1 - tanh(u)^2) = ... + 2 log cosh(u)
    u64 = u.double().flatten()
    gauss = -0.5 * eps.double().flatten() ** 2 - 0.5 * math.log(2 * math.pi)
    expected = float((gauss + 2 * torch.log(torch.cosh(u64))).sum())
    assert torch.isfinite(logp).all()
    assert float(logp) == pytest.approx(expected, rel=1e-5)
    # The naive float32 form loses the saturated dimensions entirely.
    naive = torch.log(1 - torch.tanh(u) ** 2)
    assert not torch.isfinite(naive).all()


def test_update_on_float32_cpu_changes_parameters_and_returns_floats() -> None:
    m = make_sac_model(OBS, ACT, (32, 32), "relu", 3e-4, 1.0, torch.device("cpu"), seed=0)
    g = torch.Generator().manual_seed(1)
    b = Batch(
        obs=torch.randn(N, OBS, generator=g),
        actions=torch.rand(N, ACT, generator=g) * 2 - 1,
        rewards=torch.randn(N, 1, generator=g),
        next_obs=torch.randn(N, OBS, generator=g),
        terminated=torch.zeros(N, 1),
    )
    after = [*m.actor.parameters(), *m.critic.parameters(), *m.critic_target.parameters()]
    before = [p.detach().clone() for p in after]
    stats = sac_update(m, b, SACParams())
    assert all(not torch.equal(x, y) for x, y in zip(before, after, strict=True))
    assert set(stats) >= {"critic_loss", "actor_loss", "alpha_loss", "alpha", "entropy", "q_mean"}
    assert all(isinstance(v, float) and np.isfinite(v) for v in stats.values())
