"""The learning side of a run: the learner, the policy it hands out (optionally a Polyak average of its actor) and
the observation normalization; checkpoints of it and loading one back. Simulation training
(:class:`policies.train.Trainer`) and fine-tuning on the robot use the same agent."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import gymnasium as gym
import numpy as np
import torch

from policies.checkpoint import Checkpoint
from policies.config import TrainConfig
from policies.crossq import CROSSQ_BETA1, CrossQLearner, CrossQParams, make_crossq_model
from policies.envs import Env
from policies.exploration import make_exploration
from policies.networks import TWINS, PolicyModule
from policies.normalizer import DEFAULT_NORM_EPS, RunningMeanStd
from policies.observations import ObservationNormalization
from policies.offpolicy import Learner, load_module_state
from policies.replay import Batch
from policies.sac import SACLearner, SACParams, make_sac_model
from policies.td3 import DDPG_CRITICS, TD3Learner, TD3Params, make_td3_model
from s2r.core.errors import UserError


def _out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation that failed (torch's CPU allocator raises a plain ``RuntimeError``)."""
    return isinstance(exc, MemoryError | torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc))


_T = TypeVar("_T")


def allocate(build: Callable[[], _T], field: str, too_big: str) -> _T:
    """``build()``, with an allocation that fails a ``UserError`` naming the config ``field`` (``too_big`` says
    what did not fit)."""
    try:
        return build()
    except (MemoryError, RuntimeError) as exc:
        if not _out_of_memory(exc):
            raise
        raise UserError(f"config field {field!r}: {too_big} in memory ({exc})") from None


def build_learner(cfg: TrainConfig, obs_dim: int, act_dim: int, device: torch.device) -> Learner:
    """A fresh learner as the config says (its auto fields resolved)."""
    cfg = cfg.resolved()
    hidden = tuple(cfg.hidden)
    assert cfg.lr is not None and cfg.policy_delay is not None and cfg.critic_hidden is not None
    assert cfg.gamma is not None and cfg.init_alpha is not None and cfg.target_noise is not None
    assert cfg.exploration is not None and cfg.exploration_noise is not None
    if cfg.algo == "crossq":
        crossq = make_crossq_model(obs_dim, act_dim, hidden, tuple(cfg.critic_hidden), cfg.activation, cfg.lr,
                                   CROSSQ_BETA1, cfg.init_alpha, device, cfg.seed)
        return CrossQLearner(crossq, CrossQParams(gamma=cfg.gamma, policy_delay=cfg.policy_delay,
                                                  target_entropy=cfg.target_entropy, autotune_alpha=cfg.autotune_alpha))
    if cfg.algo == "sac":
        model = make_sac_model(obs_dim, act_dim, hidden, cfg.activation, cfg.lr, cfg.init_alpha, device, cfg.seed)
        return SACLearner(model, SACParams(gamma=cfg.gamma, tau=cfg.tau, target_entropy=cfg.target_entropy,
                                           autotune_alpha=cfg.autotune_alpha))
    # TD3, or DDPG: the same update with one critic (and its config's defaults: no delay, no smoothing, OU noise).
    critics = DDPG_CRITICS if cfg.algo == "ddpg" else TWINS
    td3 = make_td3_model(obs_dim, act_dim, hidden, cfg.activation, cfg.lr, device, cfg.seed, critics)
    params = TD3Params(cfg.gamma, cfg.tau, cfg.policy_delay, cfg.target_noise, cfg.target_noise_clip)
    noise = make_exploration(cfg.exploration, cfg.exploration_noise, cfg.ou_theta, cfg.ou_dt, td3.generator)
    return TD3Learner(td3, params, noise, cfg.algo)


@dataclass(frozen=True)
class Spaces:
    """What the agent needs to know of the environment it acts in."""

    env_id: str
    """Gymnasium id (checked against a checkpoint's)."""
    obs_dim: int
    act_dim: int
    action_low: np.ndarray
    """The environment's action bounds (float64), saved in checkpoints for deployment."""
    action_high: np.ndarray

    @classmethod
    def of(cls, env_id: str, env: Env) -> Spaces:
        obs_space, act_space = env.observation_space, env.action_space
        assert isinstance(obs_space, gym.spaces.Box) and isinstance(act_space, gym.spaces.Box)  # make_env checks
        return cls(env_id, int(obs_space.shape[0]), int(act_space.shape[0]),
                   np.asarray(act_space.low, dtype=np.float64), np.asarray(act_space.high, dtype=np.float64))

    @classmethod
    def of_checkpoint(cls, ckpt: Checkpoint) -> Spaces:
        """The spaces a checkpoint was trained on (no environment needed: fine-tuning acts on the robot)."""
        return cls(ckpt.env_id, ckpt.obs_dim, ckpt.act_dim, np.asarray(ckpt.action_low, dtype=np.float64),
                   np.asarray(ckpt.action_high, dtype=np.float64))


class Agent:
    """Learner, handed-out policy and observation normalization of one config (resolved) on one environment."""

    def __init__(self, cfg: TrainConfig, spaces: Spaces, device: torch.device) -> None:
        assert cfg.policy_average is not None, "the config must be resolved"
        self.cfg = cfg
        self.spaces = spaces
        self.device = device
        self.learner = allocate(lambda: build_learner(cfg, spaces.obs_dim, spaces.act_dim, device), "hidden",
                                f"networks of widths {list(cfg.hidden)} do not fit")
        self.policy_actor = self.learner.actor
        """The policy evaluated, checkpointed and exported: the learner's actor, or with ``policy_average`` the
        Polyak average of its weights."""
        self._averaged: tuple[list[torch.Tensor], list[torch.Tensor], float] | None = None
        """(the policy's parameters, the online actor's, the rate) when averaging."""
        if cfg.policy_average > 0:
            self.policy_actor = copy.deepcopy(self.learner.actor).requires_grad_(False)
            self._averaged = (list(self.policy_actor.parameters()), list(self.learner.actor.parameters()),
                              cfg.policy_average)
        self.obs = ObservationNormalization(spaces.obs_dim, cfg.obs_norm, cfg.obs_norm_clip, device)

    # --- acting and learning ---------------------------------------------------------------------
    def explore(self, obs: np.ndarray) -> np.ndarray:
        """The learner's exploration action (normalized, float32) for one raw observation."""
        x = torch.from_numpy(self.obs.normalize(obs)[None]).to(self.device)
        out: np.ndarray = self.learner.explore(x)[0].cpu().numpy()
        return out

    def episode_start(self) -> None:
        """A new episode begins: the learner's exploration starts afresh (see
        :meth:`policies.offpolicy.Learner.episode_start`)."""
        self.learner.episode_start()

    def update(self, batch: Batch, update_actor: bool = True) -> dict[str, float]:
        """One gradient step of the learner (see :meth:`policies.offpolicy.Learner.update`)."""
        return self.learner.update(batch, update_actor)

    def average_policy(self) -> None:
        """One step of the handed-out policy toward the learner's actor (nothing without ``policy_average``)."""
        if self._averaged is not None:
            with torch.no_grad():
                torch._foreach_lerp_(*self._averaged)

    def policy_module(self) -> PolicyModule:
        """Normalizer (current statistics) + the handed-out actor, the deterministic policy as deployed."""
        return self.obs.policy_module(self.policy_actor)

    def temperature(self) -> float | None:
        """SAC's entropy temperature (``None`` for the other learners)."""
        if isinstance(self.learner, SACLearner):
            return float(self.learner.model.log_alpha.detach().exp())
        return None

    # --- checkpoints -----------------------------------------------------------------------------
    def checkpoint(self, step: int, evaluation: dict[str, Any] | None,
                   loop: dict[str, Any] | None) -> Checkpoint:
        """The handed-out policy after ``step`` environment steps; with ``loop`` (the caller's counters), the
        training state as well: the learner's, and the online actor's when it is not the policy."""
        cfg = self.cfg
        self.obs.flush()
        state = None
        if loop is not None:
            state = {"learner": self.learner.training_state(), "loop": loop}
            if self.policy_actor is not self.learner.actor:
                state["online_actor"] = self.learner.actor.state_dict()
        stats = self.obs.stats
        return Checkpoint(
            algo=cfg.algo,
            env_id=self.spaces.env_id,
            task=cfg.task,
            engine=cfg.engine,
            step=step,
            config=cfg.to_dict(),
            obs_dim=self.spaces.obs_dim,
            act_dim=self.spaces.act_dim,
            hidden=tuple(cfg.hidden),
            activation=cfg.activation,
            stochastic=self.policy_actor.stochastic,
            actor_state=self.policy_actor.state_dict(),
            obs_norm=cfg.obs_norm,
            obs_mean=stats.mean.copy(),
            obs_var=stats.var.copy(),
            obs_count=stats.count,
            obs_clip=cfg.obs_norm_clip,
            obs_eps=DEFAULT_NORM_EPS,
            action_low=self.spaces.action_low,
            action_high=self.spaces.action_high,
            eval=evaluation,
            training=state,
        )

    def load_training(self, ckpt: Checkpoint, source: str) -> dict[str, Any]:
        """Actors, learner and observation statistics of ``ckpt`` (read from ``source``, which error messages
        name); returns the checkpoint's loop counters. ``ckpt`` must hold training state for this config's
        algorithm and spaces."""
        sp, cfg = self.spaces, self.cfg
        if ckpt.training is None:
            raise UserError(f"cannot resume from {source!r}: it holds no training state")
        if (ckpt.algo, ckpt.env_id, ckpt.obs_dim, ckpt.act_dim) != (cfg.algo, sp.env_id, sp.obs_dim, sp.act_dim):
            raise UserError(
                f"cannot resume: the checkpoint is {ckpt.algo} on {ckpt.env_id} "
                f"(obs {ckpt.obs_dim}, act {ckpt.act_dim}), "
                f"the config asks for {cfg.algo} on {sp.env_id} (obs {sp.obs_dim}, act {sp.act_dim})"
            )
        try:
            load_module_state(self.policy_actor, ckpt.actor_state, "actor")
            if self.policy_actor is not self.learner.actor:
                # A checkpoint of a run without averaging holds one actor: the average starts there.
                load_module_state(self.learner.actor, ckpt.training.get("online_actor", ckpt.actor_state), "actor")
            self.learner.load_training_state(ckpt.training["learner"])
            loop: dict[str, Any] = ckpt.training["loop"]
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise UserError(f"cannot resume from {source!r}: {exc}") from exc
        self.obs.load(RunningMeanStd(ckpt.obs_mean.copy(), ckpt.obs_var.copy(), ckpt.obs_count))
        return loop

    def load_policy(self, ckpt: Checkpoint) -> None:
        """The actor and observation statistics of ``ckpt`` (a policy of this config's algorithm and spaces) in
        place of the learner's, leaving the rest of the training state as it is."""
        sp, cfg = self.spaces, self.cfg
        if (ckpt.algo, ckpt.obs_dim, ckpt.act_dim) != (cfg.algo, sp.obs_dim, sp.act_dim):
            raise UserError(f"the policy is {ckpt.algo} (obs {ckpt.obs_dim}, act {ckpt.act_dim}); the learner is "
                            f"{cfg.algo} (obs {sp.obs_dim}, act {sp.act_dim})")
        try:
            load_module_state(self.learner.actor, ckpt.actor_state, "actor")
            if self.policy_actor is not self.learner.actor:
                load_module_state(self.policy_actor, ckpt.actor_state, "actor")
        except ValueError as exc:
            raise UserError(f"cannot load the policy: {exc}") from exc
        self.obs.load(RunningMeanStd(ckpt.obs_mean.copy(), ckpt.obs_var.copy(), ckpt.obs_count))
