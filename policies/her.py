"""Hindsight Experience Replay (Andrychowicz et al. 2017, "Hindsight Experience Replay", NeurIPS).

Whole episodes of a goal-conditioned environment are stored once: each step's observation (without the goal), the
commanded goal, the action, the reward, the next observation and the goal the next state achieved. At sampling time
a transition gets, with probability ``k / (k + 1)``, a goal that was achieved instead (Stable-Baselines3's
``n_sampled_goal = k``: one original goal for ``k`` hindsight ones, without storing anything ``k`` times), and its
reward is recomputed with the environment's ``compute_reward``. Where the hindsight goal comes from is the strategy:

* ``final``: the goal achieved at the episode's last step;
* ``future``: the goal achieved at a step from this transition's on, up to the episode's end (the paper's best);
* ``episode``: the goal achieved at any step of the same episode;
* ``random``: the goal achieved at any stored step of any episode.

Only finished episodes are sampled (``final`` and ``future`` need the episode's end). Once the ring is full a new
episode overwrites the oldest one, which is then no longer sampled at all rather than with a missing end. Goal
environments end episodes by truncation only, so every stored transition bootstraps (its ``terminated`` flag is
stored all the same).

The networks see ``concat(observation, goal)``; both halves are normalized with the statistics given to
:meth:`HerReplayBuffer.sample`, whose goal half must suit achieved goals as much as commanded ones (the trainer feeds
it achieved goals, see :class:`policies.collector.Collector`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

from policies.envs import ComputeReward, GoalLayout
from policies.replay import Batch

HerStrategy = Literal["final", "future", "episode", "random"]
HER_STRATEGIES: tuple[HerStrategy, ...] = ("final", "future", "episode", "random")


class HerReplayBuffer:
    """A ring of goal-conditioned transitions, grouped into episodes, relabelled at sampling time.

    Transitions arrive one step at a time through :meth:`add` as flat vectors ``concat(observation, desired_goal)``
    (what the policy acted on) with the goal the next state achieved; :meth:`sample` returns normalized batches with
    hindsight goals mixed in.
    """

    def __init__(self, capacity: int, layout: GoalLayout, act_dim: int, device: torch.device, seed: int,
                 strategy: HerStrategy, k: int, compute_reward: ComputeReward) -> None:
        if capacity < 1:
            raise ValueError(f"replay capacity must be positive, got {capacity}")
        if strategy not in HER_STRATEGIES:
            raise ValueError(f"HER strategy must be one of {', '.join(HER_STRATEGIES)}, got {strategy!r}")
        if k < 0:
            raise ValueError(f"HER k must be >= 0, got {k}")
        self.capacity = capacity
        self.layout = layout
        self.act_dim = act_dim
        self.device = device
        self.strategy: HerStrategy = strategy
        self.k = k
        self.relabel_probability = k / (k + 1)
        """Chance that a sampled transition gets a hindsight goal."""
        self.compute_reward = compute_reward
        o, g = layout.obs_size, layout.goal_size
        self.obs = np.zeros((capacity, o), np.float32)
        self.next_obs = np.zeros((capacity, o), np.float32)
        self.desired_goal = np.zeros((capacity, g), np.float32)
        self.next_achieved_goal = np.zeros((capacity, g), np.float32)
        # actions, reward and the termination flag share one array, as in the flat buffer.
        self.act_rew_term = np.zeros((capacity, act_dim + 2), np.float32)
        self.episode_start = np.zeros(capacity, np.int64)
        """Slot of the first step of each slot's episode."""
        self.episode_length = np.zeros(capacity, np.int64)
        """Steps of each slot's episode; 0 while it is in progress or once it has been partly overwritten (the
        slot is then never sampled)."""
        self.pos = 0
        self.size = 0
        self.current_start = 0
        """Slot of the episode in progress's first step."""
        self.current_length = 0
        """Steps of the episode in progress stored so far."""
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self._valid: np.ndarray | None = None
        """Slots that may be sampled (finished, intact episodes); ``None`` when it needs recomputing."""
        self.last_relabelled = 0.0
        """Fraction of the last batch that got a hindsight goal."""

    def __len__(self) -> int:
        """Transitions that can be sampled (those of finished, intact episodes)."""
        return len(self._valid_slots())

    def add(self, obs: np.ndarray, action: np.ndarray, reward: float, next_obs: np.ndarray,
            next_achieved_goal: np.ndarray, terminated: bool, episode_end: bool) -> None:
        """Store one step; ``obs`` and ``next_obs`` are flat ``concat(observation, desired_goal)`` vectors (the
        goal is the commanded one, the same in both), ``episode_end`` closes the episode (termination or
        truncation)."""
        if self.current_length >= self.capacity:
            raise ValueError(f"an episode longer than the replay capacity ({self.capacity} transitions) cannot be "
                             "stored whole; raise buffer_size")
        i = self.pos
        if self.episode_length[i] > 0:
            # A finished episode is being overwritten: none of it is sampled any more (HER needs its whole).
            old = (self.episode_start[i] + np.arange(self.episode_length[i])) % self.capacity
            self.episode_length[old] = 0
            self._valid = None
        lay = self.layout
        self.obs[i] = lay.observation(obs)
        self.desired_goal[i] = lay.goal(obs)
        self.next_obs[i] = lay.observation(next_obs)
        self.next_achieved_goal[i] = next_achieved_goal
        row = self.act_rew_term[i]
        row[: self.act_dim] = action
        row[self.act_dim] = reward
        row[self.act_dim + 1] = 1.0 if terminated else 0.0
        self.episode_start[i] = self.current_start
        self.episode_length[i] = 0
        self.current_length += 1
        self.pos = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        if episode_end:
            slots = (self.current_start + np.arange(self.current_length)) % self.capacity
            self.episode_length[slots] = self.current_length
            self.current_start, self.current_length = self.pos, 0
            self._valid = None

    def _valid_slots(self) -> np.ndarray:
        if self._valid is None:
            self._valid = np.flatnonzero(self.episode_length[: self.size] > 0)
        return self._valid

    def _uniform(self, n: int) -> np.ndarray:
        return torch.rand(n, generator=self.generator, dtype=torch.float64).numpy()

    def hindsight_slots(self, idx: np.ndarray) -> np.ndarray:
        """For the transitions in slots ``idx``, the slots whose ``next_achieved_goal`` becomes their goal, as the
        strategy says."""
        cap = self.capacity
        start = self.episode_start[idx]
        length = self.episode_length[idx]
        if self.strategy == "random":
            valid = self._valid_slots()
            return valid[np.minimum((self._uniform(len(idx)) * len(valid)).astype(np.int64), len(valid) - 1)]
        if self.strategy == "final":
            offset = length - 1
        elif self.strategy == "future":
            t = (idx - start) % cap
            offset = t + np.minimum((self._uniform(len(idx)) * (length - t)).astype(np.int64), length - t - 1)
        else:  # episode
            offset = np.minimum((self._uniform(len(idx)) * length).astype(np.int64), length - 1)
        out: np.ndarray = (start + offset) % cap
        return out

    def sample_raw(self, batch_size: int) -> dict[str, np.ndarray]:
        """A batch before normalization: the slots ``idx``, observations, goals (relabelled where ``relabelled``),
        actions, rewards (recomputed for the relabelled rows), next observations and ``terminated``."""
        valid = self._valid_slots()
        if len(valid) == 0:
            raise ValueError("cannot sample: the HER replay holds no finished episode")
        pick = torch.randint(0, len(valid), (batch_size,), generator=self.generator).numpy()
        idx = valid[pick]
        relabelled = self._uniform(batch_size) < self.relabel_probability
        goals = self.desired_goal[idx]
        art = self.act_rew_term[idx]
        rewards = art[:, self.act_dim].copy()
        rows = np.flatnonzero(relabelled)
        if len(rows):
            goals[rows] = self.next_achieved_goal[self.hindsight_slots(idx[rows])]
            # the env's info is not stored; the goal envs' rewards depend on the goals alone
            rewards[rows] = np.asarray(
                self.compute_reward(self.next_achieved_goal[idx[rows]], goals[rows], [{}] * len(rows)),
                dtype=np.float32).reshape(len(rows))
        self.last_relabelled = float(relabelled.mean())
        return {"idx": idx, "obs": self.obs[idx], "goal": goals, "actions": art[:, : self.act_dim],
                "rewards": rewards, "next_obs": self.next_obs[idx], "terminated": art[:, self.act_dim + 1],
                "relabelled": relabelled}

    def sample(self, batch_size: int, mean: Tensor, inv_std: Tensor, clip: float) -> Batch:
        """A uniformly sampled batch of finished episodes' transitions, ``concat(observation, goal)`` normalized by
        ``mean`` and ``inv_std`` (flat-vector length each)."""
        raw = self.sample_raw(batch_size)
        both = np.empty((2 * batch_size, self.layout.size), np.float32)
        o = self.layout.obs_size
        both[:batch_size, :o] = raw["obs"]
        both[batch_size:, :o] = raw["next_obs"]
        both[:batch_size, o:] = raw["goal"]
        both[batch_size:, o:] = raw["goal"]
        t = torch.from_numpy(both).to(self.device, non_blocking=True)
        t.sub_(mean).mul_(inv_std).clamp_(-clip, clip)
        return Batch(
            obs=t[:batch_size],
            actions=torch.from_numpy(raw["actions"]).to(self.device),
            rewards=torch.from_numpy(raw["rewards"][:, None]).to(self.device),
            next_obs=t[batch_size:],
            terminated=torch.from_numpy(raw["terminated"][:, None].copy()).to(self.device),
        )

    # --- resume ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, object]:
        """The filled part of the ring, its episodes and position (tensors and ints only). The episode in progress
        is dropped on loading (a resumed run starts a new one)."""
        n = self.size
        return {
            "her": 1,
            "obs": torch.from_numpy(self.obs[:n].copy()),
            "next_obs": torch.from_numpy(self.next_obs[:n].copy()),
            "desired_goal": torch.from_numpy(self.desired_goal[:n].copy()),
            "next_achieved_goal": torch.from_numpy(self.next_achieved_goal[:n].copy()),
            "act_rew_term": torch.from_numpy(self.act_rew_term[:n].copy()),
            "episode_start": torch.from_numpy(self.episode_start[:n].copy()),
            "episode_length": torch.from_numpy(self.episode_length[:n].copy()),
            "pos": self.pos,
            "size": n,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore from :meth:`state_dict`; the buffer's shapes and capacity must fit."""
        if state.get("her") != 1:
            raise ValueError("the replay file holds a flat replay, not a HER replay")
        size = int(state["size"])  # type: ignore[call-overload]
        arrays = {name: state[name] for name in ("obs", "next_obs", "desired_goal", "next_achieved_goal",
                                                 "act_rew_term", "episode_start", "episode_length")}
        for name, value in arrays.items():
            if not isinstance(value, Tensor):
                raise ValueError(f"replay state field {name!r} is not a tensor")
            target = getattr(self, name)
            if size > self.capacity or tuple(value.shape) != (size, *target.shape[1:]):
                raise ValueError(f"replay state of {size} transitions with {name} {tuple(value.shape)} does not fit "
                                 f"a HER replay of capacity {self.capacity} with {name} rows {target.shape[1:]}")
        for name, value in arrays.items():
            assert isinstance(value, Tensor)
            getattr(self, name)[:size] = value.numpy()
        self.size = size
        self.pos = int(state["pos"]) % self.capacity  # type: ignore[call-overload]
        self.current_start, self.current_length = self.pos, 0
        self._valid = None
        gen = state.get("generator")
        if isinstance(gen, Tensor):
            self.generator.set_state(gen)
