"""Environment stepping for training: the training and evaluation environments (under the run's randomization,
EPOpt's schedule for training), the threaded :class:`EnvStepper`, the :class:`Collector` that stores transitions
and keeps episode totals, and the :class:`Evaluator`."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from policies.config import TrainConfig
from policies.envs import Env, make_env
from policies.evaluate import evaluate_env
from policies.her import GoalLayout, HerReplayBuffer
from policies.networks import PolicyModule
from policies.observations import ObservationNormalization
from policies.replay import NStepReturns, Replay, ReplayBuffer
from randomization.distributions import ParameterDistribution, parse_distribution
from randomization.epopt import EpoptConfig, EpoptEnv
from randomization.wrapper import RandomizedEnv
from sim.rollout import to_env_action

EVAL_SEED_OFFSET = 1_000_000
"""Evaluation episodes during training are seeded ``seed + EVAL_SEED_OFFSET + i`` (the same every time)."""


class EnvFactory:
    """Builds the run's environments under its randomization: EPOpt's schedule for the training environment when
    it is on, plain per-episode draws otherwise (evaluation draws are seeded by the episode seed, the same every
    time)."""

    def __init__(self, cfg: TrainConfig, env_id: str) -> None:
        self.cfg = cfg
        self.env_id = env_id
        self.distribution: ParameterDistribution | None = None
        if cfg.randomize is not None:
            self.distribution = parse_distribution(cfg.randomize, "config field 'randomize'", task=cfg.task)

    def make(self, training: bool) -> tuple[Env, EpoptEnv | None]:
        """A new environment, and its EPOpt wrapper when it has one."""
        cfg = self.cfg
        env = make_env(self.env_id, cfg.engine, cfg.env_kwargs)
        if self.distribution is None:
            return env, None
        if training and cfg.epopt_eps is not None:
            epopt = EpoptEnv(env, self.distribution, EpoptConfig(cfg.epopt_eps, cfg.epopt_models, cfg.epopt_warmup),
                             cfg.seed + 4)
            return epopt, epopt
        return RandomizedEnv(env, self.distribution, cfg.seed + 4), None


@dataclass(frozen=True)
class StepResult:
    """One environment step, plus the first observation of the next episode after an episode's end."""

    obs: np.ndarray
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]
    reset_obs: np.ndarray | None
    reset_info: dict[str, Any] | None = None
    """The next episode's reset info, with ``reset_obs``."""


class EnvStepper:
    """Steps an environment (resetting it after an episode's end), optionally on a background thread.

    ``submit(action)`` starts a step and ``result()`` waits for it; in between the caller is free
    to do other work, which then overlaps the simulation.
    """

    def __init__(self, env: Env, threaded: bool) -> None:
        self.env = env
        self.threaded = threaded
        self._pending: np.ndarray | None = None
        self._requests: queue.SimpleQueue[np.ndarray | None] = queue.SimpleQueue()
        self._results: queue.SimpleQueue[StepResult | BaseException] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._serve, name="s2r-env-stepper", daemon=True)
            self._thread.start()

    def submit(self, action: np.ndarray) -> None:
        if self.threaded:
            self._requests.put(action)
        else:
            self._pending = action

    def result(self) -> StepResult:
        if not self.threaded:
            assert self._pending is not None, "result() without submit()"
            action, self._pending = self._pending, None
            return self._step(action)
        out = self._results.get()
        if isinstance(out, BaseException):
            raise out
        return out

    def _step(self, action: np.ndarray) -> StepResult:
        obs, reward, terminated, truncated, info = self.env.step(action)
        reset_obs = reset_info = None
        if terminated or truncated:
            reset_obs, reset_info = self.env.reset()
        return StepResult(np.asarray(obs), float(reward), bool(terminated), bool(truncated), info, reset_obs,
                          reset_info)

    def _serve(self) -> None:
        while True:
            action = self._requests.get()
            if action is None:
                return
            try:
                self._results.put(self._step(action))
            except BaseException as exc:  # handed to the main thread, which raises it
                self._results.put(exc)

    def close(self) -> None:
        if self._thread is not None:
            self._requests.put(None)
            self._thread.join()
            self._thread = None


@dataclass
class Episode:
    """A training episode's totals."""

    episode_return: float = 0.0
    length: int = 0
    terms: dict[str, float] = field(default_factory=dict)
    """Sums of the named reward terms the environment reports (``info["reward_terms"]``)."""
    success: bool | None = None
    """``info["success"]`` at the episode's last step (``None`` when the environment reports none)."""


class Collector:
    """Steps the training environment: hands it an action (``submit``), and when the step is done (``finish``)
    stores the transition, folds the observations into the statistics and keeps the episode's totals."""

    def __init__(self, env: Env, threaded: bool, obs_norm: ObservationNormalization,
                 nstep: NStepReturns | None, her_goals: GoalLayout | None = None) -> None:
        self.env = env
        self.threaded = threaded
        self.obs_norm = obs_norm
        self.nstep = nstep
        """Folds steps into n-step transitions (transitions of an episode cut by a resume are not stored)."""
        self.her_goals = her_goals
        """With HER, the layout of the goal env's flat observations: the statistics are then fed each state's
        achieved goal in place of the commanded one (as in the HER paper's code), so that their goal half fits the
        hindsight goals, which are achieved ones, as well as the commanded goals."""
        self.obs: np.ndarray | None = None
        """The current observation (``None`` before the first episode)."""
        self._action: np.ndarray | None = None
        self._episode = Episode()
        self._stepper: EnvStepper | None = None
        space = env.action_space
        assert isinstance(space, gym.spaces.Box)
        self._low, self._high = np.asarray(space.low), np.asarray(space.high)

    def start(self, seed: int) -> np.ndarray:
        """The current observation, after resetting to a first episode (seeded ``seed``) when there is none."""
        if self.obs is None:
            obs, info = self.env.reset(seed=seed)
            self.obs = np.asarray(obs)
            self._observe(self.obs, info)
        if self._stepper is None:
            self._stepper = EnvStepper(self.env, threaded=self.threaded)
        return self.obs

    def submit(self, action: np.ndarray) -> None:
        """Start a step with the normalized ``action`` (on the stepper's thread when threaded)."""
        assert self._stepper is not None, "submit() before start()"
        self._action = action
        self._stepper.submit(to_env_action(action, self._low, self._high))

    def _observe(self, obs: np.ndarray, info: dict[str, Any] | None) -> None:
        """Queue ``obs`` for the statistics (with HER, its achieved goal in place of the commanded one)."""
        if self.her_goals is not None:
            assert info is not None
            obs = self.her_goals.flatten(self.her_goals.observation(obs), info["achieved_goal"])
        self.obs_norm.observe(obs)

    def finish(self, buffer: Replay) -> tuple[np.ndarray, Episode | None]:
        """Wait for the step and store its transition in ``buffer``; the next observation (the next episode's
        first after an episode's end), and the episode's totals when it ended."""
        assert self._stepper is not None and self.obs is not None and self._action is not None
        obs, action = self.obs, self._action
        res = self._stepper.result()
        if isinstance(buffer, HerReplayBuffer):
            buffer.add(obs, action, res.reward, res.obs, res.info["achieved_goal"], res.terminated,
                       res.reset_obs is not None)
        elif not isinstance(buffer, ReplayBuffer):
            raise TypeError(f"the collector stores into a ReplayBuffer or HerReplayBuffer, got {type(buffer)}")
        elif self.nstep is None:
            buffer.add(obs, action, res.reward, res.obs, res.terminated)
        else:
            for transition in self.nstep.push(obs, action, res.reward, res.obs, res.terminated,
                                              res.reset_obs is not None):
                buffer.add(*transition)
        ep = self._episode
        ep.episode_return += res.reward
        ep.length += 1
        terms = res.info.get("reward_terms")
        if terms:
            for k, v in terms.items():
                ep.terms[k] = ep.terms.get(k, 0.0) + float(v)
        self._observe(res.obs, res.info)
        if res.reset_obs is None:
            self.obs = res.obs
            return self.obs, None
        success = res.info.get("success")
        ep.success = None if success is None else bool(success)
        self._episode = Episode()
        self.obs = np.asarray(res.reset_obs)
        self._observe(self.obs, res.reset_info)
        return self.obs, ep

    def close(self) -> None:
        if self._stepper is not None:
            self._stepper.close()
            self._stepper = None
        self.env.close()


class Evaluator:
    """Deterministic episodes of a policy on the evaluation environment (made when first needed), seeded the same
    every time."""

    def __init__(self, envs: EnvFactory, episodes: int, seed: int, device: torch.device) -> None:
        self.envs = envs
        self.episodes = episodes
        self.seed = seed + EVAL_SEED_OFFSET
        self.device = device
        self._env: Env | None = None

    def env(self) -> Env:
        if self._env is None:
            self._env = self.envs.make(training=False)[0]
        return self._env

    def __call__(self, module: PolicyModule) -> dict[str, Any]:
        """:func:`policies.evaluate.evaluate_env`'s result for ``module`` (raw observation -> action)."""
        def policy(obs: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                out = module(torch.tensor(obs, device=self.device).unsqueeze(0))
            result: np.ndarray = out[0].cpu().numpy()
            return result

        return evaluate_env(policy, self.env(), self.episodes, self.seed)

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None
