"""A preallocated replay buffer of raw transitions, normalized at sampling time, and the batch type."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class Batch:
    """A minibatch of transitions for one update; all tensors float32 on the learner's device."""

    obs: Tensor
    """Normalized observations ``[B, obs_dim]``."""
    actions: Tensor
    """Normalized actions in [-1, 1] ``[B, act_dim]``."""
    rewards: Tensor
    """Rewards ``[B, 1]``."""
    next_obs: Tensor
    """Normalized next observations ``[B, obs_dim]`` (the true final observation at an episode's end)."""
    terminated: Tensor
    """``[B, 1]``: 1.0 where the episode ended by termination (no bootstrapping), 0.0 otherwise —
    including time-limit truncation, which must bootstrap."""
    horizon: Tensor | None = None
    """``[B, 1]``: environment steps from ``obs`` to ``next_obs`` for multi-step transitions (the bootstrap is
    discounted by ``gamma ** horizon`` and ``rewards`` holds the discounted sum over those steps); ``None`` when
    every transition is one step."""

    def discount(self, gamma: float) -> Tensor | float:
        """The discount of each transition's bootstrap term: ``gamma ** horizon``, or ``gamma``."""
        return gamma if self.horizon is None else torch.pow(gamma, self.horizon)

    @staticmethod
    def concat(parts: list[Batch]) -> Batch:
        """The rows of ``parts`` as one batch (one-step parts get horizon 1 when another part is multi-step)."""
        def cat(name: str) -> Tensor:
            return torch.cat([getattr(b, name) for b in parts])

        horizon = None
        if any(b.horizon is not None for b in parts):
            horizon = torch.cat([b.horizon if b.horizon is not None else torch.ones_like(b.rewards) for b in parts])
        return Batch(cat("obs"), cat("actions"), cat("rewards"), cat("next_obs"), cat("terminated"), horizon)


class Replay(Protocol):
    """What the trainer needs of a replay: :class:`ReplayBuffer`, or :class:`policies.her.HerReplayBuffer`."""

    def __len__(self) -> int:
        """Transitions that can be sampled."""
        ...

    def sample(self, batch_size: int, mean: Tensor, inv_std: Tensor, clip: float) -> Batch:
        """A batch with observations normalized by ``mean`` and ``inv_std`` and clipped to ``±clip``."""
        ...

    def state_dict(self) -> dict[str, object]: ...
    def load_state_dict(self, state: dict[str, object]) -> None: ...


class NStepReturns:
    """Folds an episode's consecutive one-step transitions into ``n``-step ones (n-step returns, as in Rainbow and
    D4PG): ``(s_t, a_t, sum_{i<k} gamma^i r_{t+i}, s_{t+k}, terminated, k)`` with ``k = n``, or fewer steps where
    the episode ends first. Bootstrapping ``n`` steps ahead carries a reward back ``n`` times faster per update."""

    def __init__(self, n: int, gamma: float) -> None:
        if n < 1:
            raise ValueError(f"n-step returns need n >= 1, got {n}")
        self.n = n
        self.gamma = gamma
        self.pending: deque[tuple[np.ndarray, np.ndarray, float]] = deque()

    def push(self, obs: np.ndarray, action: np.ndarray, reward: float, next_obs: np.ndarray, terminated: bool,
             episode_end: bool) -> list[tuple[np.ndarray, np.ndarray, float, np.ndarray, bool, int]]:
        """Add one step; returns the transitions it completes (every pending one at the episode's end)."""
        self.pending.append((np.array(obs, copy=True), np.array(action, copy=True), float(reward)))
        out = []
        if terminated or episode_end:
            while self.pending:
                out.append(self._fold(next_obs, terminated))
                self.pending.popleft()
        elif len(self.pending) == self.n:
            out.append(self._fold(next_obs, False))
            self.pending.popleft()
        return out

    def _fold(self, next_obs: np.ndarray, terminated: bool) -> tuple[np.ndarray, np.ndarray, float, np.ndarray,
                                                                     bool, int]:
        ret = sum(self.gamma**i * r for i, (_, _, r) in enumerate(self.pending))
        obs, action, _ = self.pending[0]
        return obs, action, ret, next_obs, terminated, len(self.pending)


class ReplayBuffer:
    """Ring buffer of ``(obs, action, reward, next_obs, terminated)`` with one preallocated array each.

    Observations are stored raw and normalized with the statistics given to :meth:`sample`, so the
    normalization always reflects the current statistics. On CPU the torch tensors share memory
    with the numpy arrays the environment loop writes into, so adding a transition is a few numpy
    stores and sampling is one index operation per array.
    """

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: torch.device, seed: int) -> None:
        if capacity < 1:
            raise ValueError(f"replay capacity must be positive, got {capacity}")
        self.capacity = capacity
        self.obs_dim = obs_dim
        self.act_dim = act_dim
        self.device = device
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        # actions, reward and the termination flag share one array: one gather per sample.
        self.act_rew_term = np.zeros((capacity, act_dim + 2), np.float32)
        self.horizon = np.ones((capacity, 1), np.float32)
        self.multi_step = False
        """Whether any stored transition spans more than one step (batches then carry ``horizon``)."""
        self.pos = 0
        self.size = 0
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self._on_cpu = device.type == "cpu"
        self._t_obs = torch.from_numpy(self.obs)
        self._t_next = torch.from_numpy(self.next_obs)
        self._t_art = torch.from_numpy(self.act_rew_term)

    def __len__(self) -> int:
        return self.size

    def add(self, obs: np.ndarray, action: np.ndarray, reward: float, next_obs: np.ndarray, terminated: bool,
            horizon: int = 1) -> None:
        """Store one transition of ``horizon`` environment steps (overwriting the oldest once full)."""
        i = self.pos
        self.horizon[i] = horizon
        if horizon != 1:
            self.multi_step = True
        self.obs[i] = obs
        self.next_obs[i] = next_obs
        row = self.act_rew_term[i]
        row[: self.act_dim] = action
        row[self.act_dim] = reward
        row[self.act_dim + 1] = 1.0 if terminated else 0.0
        self.pos = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, mean: Tensor, inv_std: Tensor, clip: float) -> Batch:
        """A uniformly sampled batch with observations normalized by ``mean`` and ``inv_std``."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = torch.randint(0, self.size, (batch_size,), generator=self.generator)
        both = torch.empty((2 * batch_size, self.obs_dim))
        torch.index_select(self._t_obs, 0, idx, out=both[:batch_size])
        torch.index_select(self._t_next, 0, idx, out=both[batch_size:])
        art = self._t_art.index_select(0, idx)
        if not self._on_cpu:
            both = both.to(self.device, non_blocking=True)
            art = art.to(self.device, non_blocking=True)
        both.sub_(mean).mul_(inv_std).clamp_(-clip, clip)
        a = self.act_dim
        return Batch(
            obs=both[:batch_size],
            actions=art[:, :a],
            rewards=art[:, a : a + 1],
            next_obs=both[batch_size:],
            terminated=art[:, a + 1 : a + 2],
            horizon=torch.from_numpy(self.horizon[idx.numpy()]).to(self.device) if self.multi_step else None,
        )

    def state_dict(self) -> dict[str, object]:
        """The filled part of the buffer and the ring position (tensors and ints only)."""
        n = self.size
        return {
            "obs": torch.from_numpy(self.obs[:n].copy()),
            "next_obs": torch.from_numpy(self.next_obs[:n].copy()),
            "act_rew_term": torch.from_numpy(self.act_rew_term[:n].copy()),
            "horizon": torch.from_numpy(self.horizon[:n].copy()),
            "pos": self.pos,
            "size": n,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore from :meth:`state_dict`; the buffer's shapes and capacity must fit."""
        size = int(state["size"])  # type: ignore[call-overload]
        obs = state["obs"]
        art = state["act_rew_term"]
        if not isinstance(obs, Tensor) or not isinstance(art, Tensor):
            raise ValueError("replay state holds no tensors")
        if size > self.capacity or obs.shape != (size, self.obs_dim) or art.shape != (size, self.act_dim + 2):
            raise ValueError(
                f"replay state of {size} transitions with obs {tuple(obs.shape)} does not fit a buffer of "
                f"capacity {self.capacity}, obs_dim {self.obs_dim}, act_dim {self.act_dim}"
            )
        nxt = state["next_obs"]
        assert isinstance(nxt, Tensor)
        self.obs[:size] = obs.numpy()
        self.next_obs[:size] = nxt.numpy()
        self.act_rew_term[:size] = art.numpy()
        horizon = state.get("horizon")  # absent in replay files written before n-step returns: all one step
        self.horizon[:size] = horizon.numpy() if isinstance(horizon, Tensor) else 1.0
        self.multi_step = bool((self.horizon[:size] != 1.0).any())
        self.size = size
        self.pos = int(state["pos"]) % self.capacity  # type: ignore[call-overload]
        gen = state.get("generator")
        if isinstance(gen, Tensor):
            self.generator.set_state(gen)
