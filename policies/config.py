"""The training configuration: defaults, YAML files, ``key=value`` overrides and the resolved form."""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from s2r.core.errors import ParameterError, UserError, did_you_mean
from s2r.core.yamlfile import load_yaml, read_yaml_file

Algo = Literal["sac", "td3", "crossq", "ddpg"]
ALGOS: tuple[Algo, ...] = ("sac", "td3", "crossq", "ddpg")
Exploration = Literal["gaussian", "ou"]
EXPLORATIONS: tuple[Exploration, ...] = ("gaussian", "ou")
HerChoice = Literal["none", "final", "future", "episode", "random"]
"""``her_strategy``'s values: no relabelling, or a strategy of :mod:`policies.her`."""
HER_DEFAULT_K = 4
"""Hindsight goals per original goal (the paper's k = 4 with ``future``, and Stable-Baselines3's default)."""

CONFIG_NAME = "config.yaml"
"""The resolved config in a run directory (``s2r train --resume`` starts from it)."""

CLAW_GAMMA = 0.95
"""Discount on the claw: a horizon of 1 / (1 - 0.95) = 20 steps (2 s), half its 4 s episode. Measured with
CrossQ under the shipped randomization, seed 1: 0.96 success at 20k steps with 0.95, 0.02 at 30k with 0.99
(``benchmarks/sample_efficiency.py``)."""
DEFAULT_GAMMA = 0.99
"""Discount elsewhere (SAC's and SB3's default)."""
SAC_LR = 3e-4
"""Adam learning rate of SAC and TD3 (Haarnoja et al. 2018, Fujimoto et al. 2018)."""
CROSSQ_LR = 1e-3
"""Adam learning rate of CrossQ (Bhatt et al. 2024, and sb3-contrib's default)."""
CROSSQ_INIT_ALPHA = 0.1
"""CrossQ's initial temperature. The temperature settles near 0.1-0.3 on the claw; from 1.0 it takes the first
10k steps to get there, and seed 2 under the shipped randomization had not learned by 30k (0.06 success). From 0.1 all
three seeds passed 0.9 by 30k (seed 0 at 25k, seed 1 at 30k, seed 2 at 20k; ``benchmarks/sample_efficiency.py``)."""
CROSSQ_POLICY_AVERAGE = 0.001
"""CrossQ's policy is the average of its actor over about the last 1,000 steps (``policy_average``). On the claw the
deterministic policy of the online actor jittered between evaluations after it had learned while its exploring
episodes kept succeeding. Under the shipped randomization (seeds 0-2, evaluated every 2.5k steps; the online actor
learns identically whatever the rate) a 500-step average (0.002) still fell to 0.44 and 0.58 on seed 2 after reaching
1.00; the 1,000-step one first reached 0.9 at 12.5k, 15k and 12.5k steps and never fell below 0.84 afterwards. Slower
ones lag the learning (0.0002: first 0.9 at 17.5k-20k) and were no steadier (0.0005: 0.70 at 27.5k on seed 2)."""
DEFAULT_THREADS = 2
"""torch's intra-op threads unless the config says otherwise. On the 2-core machine CrossQ on the claw (2x256, batch
256) took 20.6 ms per environment step with two threads against 33-38 ms with one, the environment's own thread
included (one update alone: 14-16 ms against 23-26 ms). A fixed count, not the machine's core count, removes one
reason for a seed's run to differ between machines. A run repeats bit for bit on one machine, but another CPU can
still take another path: the demo's seed 1 stood at 0.84 nominal success at 24k steps on one 2-core host and at
0.92 on another, with the same code."""
CROSSQ_WARMUP_STEPS = 1000
"""CrossQ's random steps before learning. Its critics learn from the first batches (no target network), so a long random
warm-up only delays it: under the shipped claw randomization a 4k warm-up first reached 0.9 success at 17k, 19k and
beyond 33k steps (seeds 0, 1, 2); a 1k warm-up at 12.5k, 15k and 10k (``benchmarks/sample_efficiency.py``)."""
CROSSQ_POLICY_DELAY = 3
"""Critic updates per actor update in CrossQ (the paper's and sb3-contrib's)."""
TD3_POLICY_DELAY = 2
"""Critic updates per actor update in TD3 (Fujimoto et al. 2018); DDPG updates its actor every time."""
TD3_TARGET_NOISE = 0.2
"""Std of TD3's target-policy smoothing noise (normalized action units; Fujimoto et al. 2018); DDPG has none."""
TD3_EXPLORATION_NOISE = 0.1
"""Std of TD3's Gaussian exploration noise (normalized action units; Fujimoto et al. 2018)."""
DDPG_EXPLORATION_NOISE = 0.2
"""Sigma of DDPG's Ornstein-Uhlenbeck exploration noise (normalized action units per square root of process time;
Lillicrap et al. 2016, whose tasks mostly bound actions to [-1, 1]). With ``ou_theta`` 0.15 and ``ou_dt`` 1 the
noise's stationary std is 0.38."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run. ``None`` on an ``auto`` field means "derive it" (see
    :meth:`resolved`); the run directory's ``config.yaml`` holds the resolved values."""

    task: str = "dclaw-turn"
    """Short task name (``dclaw-turn``) or any gymnasium id with Box spaces (``Pendulum-v1``)."""
    engine: str = "mujoco"
    """Physics engine of our ``s2r/`` environments (``mujoco`` or ``pybullet``); ignored for other ids."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for ``gym.make``."""
    algo: Algo = "crossq"
    """Learner: ``crossq`` (SAC with batch-renormalized critics and no target network), ``sac``, ``td3`` or ``ddpg``
    (TD3's update with one critic, no target-policy smoothing and no policy delay, Lillicrap et al. 2016)."""
    steps: int = 150_000
    """Environment steps to train for (in total, across resumes)."""
    seed: int = 0
    """Seed of networks, replay sampling, exploration and environment resets."""

    randomize: dict[str, Any] | None = None
    """Per-episode domain randomization: a distribution in the YAML form of ``randomization/configs/`` (``s2r
    train --randomize FILE`` copies the file's content here, so the run keeps it); ``None`` trains on nominal."""
    epopt_eps: float | None = None
    """EPOpt: fraction of probed models kept as the hard set, in (0, 1]; ``None`` is off (needs ``randomize``)."""
    epopt_models: int = 20
    """EPOpt: models probed per iteration, one episode each (the focus phase runs as many)."""
    epopt_warmup: int = 5
    """EPOpt: first iterations that keep every probed model (epsilon = 1)."""

    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer widths of the actor (and of the critics unless ``critic_hidden`` says otherwise)."""
    critic_hidden: tuple[int, ...] | None = None
    """Hidden layer widths of the critics; auto: ``hidden``. CrossQ's paper widens its critics (2048 units,
    sb3-contrib 1024); on a 2-core CPU a 1024-wide critic costs about 10x a 256-wide one per update (263 ms against
    26 ms), and 256 units learn the claw to 0.9 within 20k steps for two of three seeds (README)."""
    activation: Literal["relu", "tanh"] = "relu"
    """Hidden activation of actor and critics."""
    lr: float | None = None
    """Adam learning rate of actor, critics and temperature; auto: 1e-3 for ``crossq`` (the paper's), 3e-4
    otherwise (DDPG's paper had 1e-4 for the actor and 1e-3 for the critic; one rate serves both here)."""
    batch_size: int = 256
    """Transitions per gradient step."""
    buffer_size: int = 1_000_000
    """Replay capacity (transitions); memory is only touched as the buffer fills."""
    warmup_steps: int | None = None
    """Uniformly random steps before learning starts; auto: ``clip(steps // 10, batch_size, 5000)``, and for
    ``crossq`` at most ``CROSSQ_WARMUP_STEPS`` (or ``batch_size`` if larger)."""
    updates_per_step: int = 1
    """Gradient steps per environment step once learning has started."""
    gamma: float | None = None
    """Discount per environment step; auto: ``CLAW_GAMMA`` on the claw's tasks, 0.99 otherwise."""
    n_step: int = 1
    """Steps of each return before bootstrapping (n-step returns; 1 is the one-step TD target). On the claw 3 steps
    moved seeds 1 and 2 to 0.9 success by 15k and 20k steps but held seed 0 back (0.10 at 30k), so the default stays
    1 (README, *Learners and sample efficiency*)."""
    tau: float = 0.005
    """Polyak rate of the target networks (per update; per actor update in TD3 and DDPG). DDPG's paper had 0.001;
    0.005 is TD3's, SAC's and Stable-Baselines3's DDPG's."""
    policy_average: float | None = None
    """Rate, per environment step, of the Polyak average of the actor's weights that is evaluated, checkpointed as
    the policy and exported (weight averaging, Nikishin et al. 2018, "Improving Stability in Deep Reinforcement
    Learning with Weight Averaging"); the online actor keeps exploring and learning. 0: the online actor is the
    policy. Auto: ``CROSSQ_POLICY_AVERAGE`` for ``crossq``, 0 otherwise."""

    init_alpha: float | None = None
    """SAC and CrossQ: initial temperature; auto: ``CROSSQ_INIT_ALPHA`` for ``crossq``, 1.0 (SB3's) for ``sac``."""
    autotune_alpha: bool = True
    """SAC: learn the temperature towards ``target_entropy``."""
    target_entropy: float | None = None
    """SAC: entropy target (nats); auto: ``-act_dim``."""

    policy_delay: int | None = None
    """TD3, DDPG and CrossQ: critic updates per actor update; auto: 2 for ``td3``, 1 for ``ddpg``, 3 for
    ``crossq``."""
    target_noise: float | None = None
    """TD3 and DDPG: std of the target-policy smoothing noise (normalized action units); auto: 0.2 for ``td3``, 0
    (no smoothing) for ``ddpg``."""
    target_noise_clip: float = 0.5
    """TD3 and DDPG: clip of the smoothing noise (normalized action units)."""
    exploration: Exploration | None = None
    """TD3 and DDPG: noise on the actor's action while exploring: ``gaussian`` (independent every step, std
    ``exploration_noise``) or ``ou`` (Ornstein-Uhlenbeck, correlated from step to step and restarted from 0 with
    every episode: sigma ``exploration_noise``, ``ou_theta``, ``ou_dt``); auto: ``ou`` for ``ddpg`` (Lillicrap et
    al. 2016), ``gaussian`` for ``td3`` (Fujimoto et al. 2018)."""
    exploration_noise: float | None = None
    """TD3 and DDPG: scale of the exploration noise, the Gaussian's std (normalized action units) or the
    Ornstein-Uhlenbeck sigma (normalized action units per square root of process time); auto: 0.1 for ``td3``,
    ``DDPG_EXPLORATION_NOISE`` (0.2) for ``ddpg``."""
    ou_theta: float = 0.15
    """``ou`` exploration: rate of reversion towards 0 (per unit of process time; Lillicrap et al.'s 0.15).
    ``ou_theta * ou_dt``, the fraction of the way back to 0 per step, is at most 1."""
    ou_dt: float = 1.0
    """``ou`` exploration: process time per environment step (units of process time; 1, Lillicrap et al.'s)."""

    her_strategy: HerChoice | None = None
    """Hindsight Experience Replay on a goal-conditioned task (a dict observation of ``observation``,
    ``achieved_goal`` and ``desired_goal``, such as ``s2r/DClawTurnGoal-v0``): where a sampled transition's
    hindsight goal comes from, ``final`` (the episode's last achieved goal), ``future`` (one achieved later in the
    episode), ``episode`` (any of the episode's) or ``random`` (any stored one); ``none`` replays the commanded goals
    only. Auto: ``future`` on goal-conditioned tasks, ``none`` on flat ones, where any other value is an error."""
    her_k: int = HER_DEFAULT_K
    """HER: hindsight goals per original goal; a sampled transition is relabelled with probability
    ``her_k / (her_k + 1)`` (Stable-Baselines3's ``n_sampled_goal``). Episodes are stored once, whatever ``her_k``."""

    obs_norm: bool = True
    """Normalize observations with running statistics (saved in checkpoints)."""
    obs_norm_clip: float = 10.0
    """Clip of normalized observations (standard deviations)."""

    eval_interval: int | None = None
    """Environment steps between evaluations (and checkpoints); auto: ``clip(steps // 10, 1000, 5000)``."""
    eval_episodes: int | None = None
    """Deterministic episodes per evaluation; auto: 50 on ``s2r/`` tasks (40-step episodes), else 10."""
    stop_success: float | None = None
    """Stop at the first evaluation whose success rate is at least this (Stable-Baselines3's
    ``StopTrainingOnRewardThreshold``, on success rather than return); ``None`` trains all ``steps``."""
    log_interval: int = 1000
    """Environment steps between rows of ``metrics.jsonl``."""
    save_replay: bool = True
    """Save the replay buffer with the ``last`` checkpoint so ``--resume`` continues with it."""

    threads: int | None = None
    """torch intra-op threads; auto: :data:`DEFAULT_THREADS` (2)."""
    device: str = "auto"
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when available)."""
    overlap_env: bool = True
    """Step the environment on a background thread while the learner updates."""

    def resolved(self, env_id: str | None = None, goal_conditioned: bool = False) -> TrainConfig:
        """A copy with every auto field replaced by its value (``env_id``: the resolved task id, with a dict
        observation when ``goal_conditioned``)."""
        crossq = self.algo == "crossq"
        ddpg = self.algo == "ddpg"
        warmup = self.warmup_steps
        if warmup is None:
            warmup = min(max(self.steps // 10, self.batch_size), 5000)
            if crossq:
                warmup = min(warmup, max(CROSSQ_WARMUP_STEPS, self.batch_size))
        interval = self.eval_interval
        if interval is None:
            interval = min(max(self.steps // 10, 1000), 5000)
        threads = self.threads if self.threads is not None else DEFAULT_THREADS
        episodes = self.eval_episodes
        if episodes is None:
            episodes = 50 if (env_id or self.task).startswith(("s2r/", "dclaw")) else 10
        gamma = self.gamma
        if gamma is None:
            gamma = CLAW_GAMMA if "dclaw" in (env_id or self.task).lower() else DEFAULT_GAMMA
        critic_hidden = self.critic_hidden if self.critic_hidden is not None else self.hidden
        lr = self.lr if self.lr is not None else (CROSSQ_LR if crossq else SAC_LR)
        delay = self.policy_delay
        if delay is None:
            delay = CROSSQ_POLICY_DELAY if crossq else 1 if ddpg else TD3_POLICY_DELAY
        target_noise = self.target_noise
        if target_noise is None:
            target_noise = 0.0 if ddpg else TD3_TARGET_NOISE
        exploration = self.exploration if self.exploration is not None else "ou" if ddpg else "gaussian"
        exploration_noise = self.exploration_noise
        if exploration_noise is None:
            exploration_noise = DDPG_EXPLORATION_NOISE if ddpg else TD3_EXPLORATION_NOISE
        init_alpha = self.init_alpha if self.init_alpha is not None else (CROSSQ_INIT_ALPHA if crossq else 1.0)
        average = self.policy_average
        if average is None:
            average = CROSSQ_POLICY_AVERAGE if crossq else 0.0
        her = self.her_strategy
        if her is None:
            her = "future" if goal_conditioned else "none"
        return dataclasses.replace(
            self,
            her_strategy=her,
            critic_hidden=critic_hidden,
            gamma=gamma,
            lr=lr,
            policy_delay=delay,
            target_noise=target_noise,
            exploration=exploration,
            exploration_noise=exploration_noise,
            init_alpha=init_alpha,
            policy_average=average,
            warmup_steps=warmup,
            eval_interval=interval,
            threads=threads,
            eval_episodes=episodes,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, not tuples) for YAML, JSON and checkpoints."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else (dict(v) if isinstance(v, dict) else v)
        return out


FIELD_NAMES = tuple(f.name for f in fields(TrainConfig))


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """``value`` as the field's type, or :class:`UserError` naming the field and the expected type."""
    origin = get_origin(hint)
    args = get_args(hint)
    bad = UserError(f"config field {name!r}: expected {_type_name(hint)}, got {value!r}")
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [arg for arg in args if arg is not type(None)]
        if len(options) == 1:
            return _coerce(name, value, options[0])  # its own message (a NaN says "finite")
        for arg in options:
            try:
                return _coerce(name, value, arg)
            except UserError:
                continue
        raise bad
    if origin is Literal:
        if value not in args:
            raise UserError(f"config field {name!r}: expected one of {list(args)}, got {value!r}")
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if hint is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad
    if hint is float:
        # No float field of a training run has a meaning for NaN or infinity (a NaN learning rate trained
        # on NaN weights without a word).
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isfinite(value):
                return float(value)
            raise UserError(f"config field {name!r}: expected a finite number, got {value!r}")
        raise bad
    if hint is str:
        if isinstance(value, str):
            return value
        raise bad
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad
        return tuple(_coerce(f"{name}[{i}]", v, args[0]) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        return dict(value)
    raise bad


_HINTS = get_type_hints(TrainConfig)


def _validate(cfg: TrainConfig) -> TrainConfig:
    positive = ("steps", "batch_size", "buffer_size", "updates_per_step", "log_interval", "n_step")
    for name in (*positive, "policy_delay"):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 1:
            raise UserError(f"config field {name!r} must be at least 1, got {getattr(cfg, name)}")
    for name in ("warmup_steps", "eval_interval", "threads", "eval_episodes"):
        v = getattr(cfg, name)
        if v is not None and v < (0 if name == "warmup_steps" else 1):
            raise UserError(f"config field {name!r} must be {'>= 0' if name == 'warmup_steps' else '>= 1'}, got {v}")
    if cfg.stop_success is not None and not 0.0 < cfg.stop_success <= 1.0:
        raise UserError(f"config field 'stop_success' must be a success rate in (0, 1], got {cfg.stop_success}")
    if cfg.her_k < 1:
        raise UserError(f"config field 'her_k' must be at least 1 (her_strategy=none turns relabelling off), got "
                        f"{cfg.her_k}")
    if cfg.epopt_eps is not None:
        if cfg.randomize is None:
            raise ParameterError("epopt_eps", "is set, and EPOpt needs a distribution to draw models from: set "
                                 "{randomize} too")
        if not 0.0 < cfg.epopt_eps <= 1.0:
            raise UserError(f"config field 'epopt_eps' must be in (0, 1], got {cfg.epopt_eps}")
    if cfg.epopt_models < 1 or cfg.epopt_warmup < 0:
        raise UserError(f"config fields 'epopt_models' must be >= 1 and 'epopt_warmup' >= 0, got "
                        f"{cfg.epopt_models} and {cfg.epopt_warmup}")
    for name in ("hidden", "critic_hidden"):
        widths = getattr(cfg, name)
        if widths is not None and (not widths or any(h < 1 for h in widths)):
            raise UserError(f"config field {name!r} must be a non-empty list of positive widths, got {list(widths)}")
    if cfg.gamma is not None and not 0.0 < cfg.gamma <= 1.0:
        raise UserError(f"config field 'gamma' must be in (0, 1], got {cfg.gamma}")
    for name in ("tau", "policy_average"):
        v = getattr(cfg, name)
        if v is not None and not 0.0 <= v <= 1.0:
            raise UserError(f"config field {name!r} must be in [0, 1], got {v}")
    for name in ("lr", "init_alpha", "obs_norm_clip"):
        if getattr(cfg, name) is not None and getattr(cfg, name) <= 0:
            raise UserError(f"config field {name!r} must be positive, got {getattr(cfg, name)}")
    for name in ("target_noise", "target_noise_clip", "exploration_noise"):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 0:
            raise UserError(f"config field {name!r} must be >= 0, got {getattr(cfg, name)}")
    if cfg.ou_theta <= 0 or cfg.ou_dt <= 0 or cfg.ou_theta * cfg.ou_dt > 1:
        raise UserError(f"config fields 'ou_theta' and 'ou_dt' must be positive with ou_theta * ou_dt <= 1 (a step "
                        f"reverts at most all the way to 0), got {cfg.ou_theta} and {cfg.ou_dt}")
    if not cfg.task:
        raise UserError("config field 'task' must not be empty")
    if cfg.seed < 0:
        raise UserError(f"config field 'seed' must be >= 0 (numpy refuses a negative seed), got {cfg.seed}")
    return cfg


def config_from_mapping(data: Mapping[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """``base`` (defaults if ``None``) with the fields in ``data`` replaced; unknown keys are errors."""
    unknown = sorted(set(data) - set(FIELD_NAMES))
    if unknown:
        raise UserError(f"unknown config field(s) {unknown}{did_you_mean(unknown[0], FIELD_NAMES)}; "
                        f"known fields: {', '.join(FIELD_NAMES)}")
    values = {k: _coerce(k, v, _HINTS[k]) for k, v in data.items()}
    return _validate(dataclasses.replace(base if base is not None else TrainConfig(), **values))


def load_config_file(path: str | Path, base: TrainConfig | None = None) -> TrainConfig:
    """Read a YAML mapping of config fields over ``base``."""
    p = Path(path)
    data = read_yaml_file(p, "config file")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"config file {str(p)!r} must hold a mapping of field: value, got {type(data).__name__}")
    return config_from_mapping(data, base)


def parse_overrides(overrides: Iterable[str]) -> dict[str, Any]:
    """``["key=value", ...]`` as a mapping; values are YAML scalars/lists (``0.5``, ``true``, ``[64, 64]``)."""
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ParameterError("overrides", f"must be key=value, got {item!r}")
        out[key] = load_yaml(raw, f"--set {key} value {raw!r}") if raw.strip() else ""
    return out


def dump_config(cfg: TrainConfig) -> str:
    """The config as YAML text (field order kept)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
