"""Trajectory logs recorded in simulation, in the real robot's log format (``s2r/core/trajlog.py``).

Until the real controller writes logs, these stand in for them: a policy (a callable, the scripted
valve-turning stroke, or seeded random actions) runs in a simulated env with chosen parameter values,
and every episode is written with :class:`~s2r.core.trajlog.TrajectoryWriter` (``source="sim"``). The
readings get Gaussian sensor noise of the size a Dynamixel XM430 reports (see the config), so a
likelihood fitted to them meets noise as it will on hardware. The observation is the env's own (with
the env's ``obs_noise_std``); the logged joint and valve readings are the engine's state plus the
sensor noise configured here.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import gymnasium as gym
import numpy as np

from s2r.core.errors import UserError
from s2r.core.trajlog import RunInfo, TrajectoryWriter, config_hash
from sim import TASK_IDS, resolve_env_id
from sim.env import SimEnv
from sim.state import RobotState
from sim.tasks.actions import normalize
from sim.tasks.excitation import ExcitePolicy, MultiSine
from sim.tasks.spec import FloatArray, TaskSpec

Policy = Callable[[np.ndarray], np.ndarray]
"""Observation in, normalized action in [-1, 1] out."""

XM430_RAD_PER_TICK = 2.0 * math.pi / 4096
"""Position resolution of an XM430 encoder (rad)."""
XM430_RAD_S_PER_UNIT = 0.229 * 2.0 * math.pi / 60.0
"""Velocity resolution of an XM430 (0.229 rev/min per unit, in rad/s)."""
UNIFORM_QUANTIZATION_STD = 1.0 / math.sqrt(12.0)
"""Std of rounding error in units of the quantization step (-)."""

# The scripted stroke, per finger (top, mid, bot) in rad. Pressing puts the fingertip on a spoke;
# sweeping the top (abduction) joint then drags the spoke sideways. From the reset pose a forward
# sweep of the top joint turns the valve by about 0.6 rad, which moves its spoke to where the same
# finger can only reach it from the far side: so the stroke lifts, moves across and sweeps back,
# and the valve swings back and forth for the whole episode instead of one stroke's worth.
STROKE_PRESS_MID_BOT_RAD = (-0.85, 0.85)
STROKE_LIFT_MID_BOT_RAD = (-1.0, 1.25)
STROKE_SWEEP_STEP_RAD = 0.1
STROKE_FORWARD_END_RAD = 0.4
STROKE_FAR_SIDE_RAD = 0.48


def _stroke_cycle() -> tuple[tuple[float, float, float], ...]:
    press, lift = STROKE_PRESS_MID_BOT_RAD, STROKE_LIFT_MID_BOT_RAD
    dq, end, far = STROKE_SWEEP_STEP_RAD, STROKE_FORWARD_END_RAD, STROKE_FAR_SIDE_RAD
    n_fwd = round(end / dq)
    n_back = round(far / dq)
    return (
        *[(0.0, *press)] * 2,                                     # press on the spoke
        *[(dq * k, *press) for k in range(1, n_fwd + 1)],         # sweep forward: the valve turns
        (end, *lift), (far, *lift),                               # lift and move to the far side
        *[(far, *press)] * 2,                                     # press behind the spoke
        *[(far - dq * k, *press) for k in range(1, n_back + 1)],  # sweep back: the valve turns back
        *[(0.0, *lift)] * 2,                                      # lift and return to the start
    )


STROKE_CYCLE = _stroke_cycle()
"""One cycle of the scripted stroke: per-finger joint targets (top, mid, bot) per control step (rad)."""


class ScriptedTurn:
    """Open-loop stroke that turns the valve back and forth (all fingers alike); restart it each episode."""

    def __init__(self, spec: TaskSpec) -> None:
        if spec.n_joints % 3 != 0:
            raise ValueError(f"the scripted stroke drives fingers of 3 joints; task {spec.name} has {spec.n_joints}")
        self.spec = spec
        self.fingers = spec.n_joints // 3
        self.step = 0

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        target = np.tile(STROKE_CYCLE[self.step % len(STROKE_CYCLE)], self.fingers)
        self.step += 1
        return normalize(target, self.spec.low, self.spec.high)


def random_actions(n_joints: int, rng: np.random.Generator) -> Policy:
    """Uniform random normalized actions in [-1, 1] from ``rng``."""

    def act(obs: np.ndarray) -> np.ndarray:
        return rng.uniform(-1.0, 1.0, n_joints)

    return act


@dataclass(frozen=True)
class SimLogConfig:
    """What to simulate and how the readings are degraded."""

    task: str = "dclaw-turn"
    """Task name or gymnasium id."""
    engine: str = "mujoco"
    """Physics engine."""
    params: Mapping[str, float] = field(default_factory=dict)
    """Parameter values of the simulated "real" robot (their units); others stay nominal."""
    episodes: int = 5
    """Episodes to record."""
    seed: int = 0
    """Seed of the first reset (episode i resets with ``seed + i``), the random actions and the sensor noise."""
    position_noise_std: float = XM430_RAD_PER_TICK * UNIFORM_QUANTIZATION_STD
    """Std of the noise added to logged joint and valve angles (rad); default: an XM430's rounding error."""
    velocity_noise_std: float = XM430_RAD_S_PER_UNIT * UNIFORM_QUANTIZATION_STD
    """Std of the noise added to logged joint and valve velocities (rad/s); default: an XM430's rounding error."""

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise UserError(f"episodes must be at least 1, got {self.episodes}")
        for label, v in (("position_noise_std", self.position_noise_std),
                         ("velocity_noise_std", self.velocity_noise_std)):
            if not (v >= 0.0 and math.isfinite(v)):
                raise UserError(f"{label} must be a non-negative standard deviation, got {v!r}")


def _noisy_reading(state: RobotState, cfg: SimLogConfig, rng: np.random.Generator) -> RobotState:
    def noise(x: FloatArray, std: float) -> FloatArray:
        return x + rng.normal(0.0, std, x.shape) if std > 0 else x.copy()

    return RobotState(
        time=state.time,
        joint_pos=noise(state.joint_pos, cfg.position_noise_std),
        joint_vel=noise(state.joint_vel, cfg.velocity_noise_std),
        passive_pos=noise(state.passive_pos, cfg.position_noise_std),
        passive_vel=noise(state.passive_vel, cfg.velocity_noise_std),
        joint_effort=state.joint_effort.copy(),
        # A floating base's IMU fields, as a robot logs them; its position needs a tracker, which robots lack.
        base_quat=state.base_quat.copy(),
        base_angvel=state.base_angvel.copy(),
    )


def make_env(task: str, engine: str, params: Mapping[str, float] | None = None) -> SimEnv:
    """The simulated env of ``task`` on ``engine`` with ``params`` applied; bad names or values are ``UserError``."""
    env_id = resolve_env_id(task)
    if env_id not in gym.registry:
        raise UserError(f"unknown task {task!r}; known tasks: {', '.join(TASK_IDS)}")
    env = gym.make(env_id, engine=engine).unwrapped
    if not isinstance(env, SimEnv):
        raise UserError(f"{task!r} is not an s2r simulated task")
    try:
        env.params.set_many(dict(params or {}))
    except (KeyError, ValueError) as exc:
        env.close()
        raise UserError(str(exc).strip("'\"")) from None
    return env


def record_sim_logs(
    directory: str | os.PathLike[str],
    config: SimLogConfig,
    policy: Policy | Literal["scripted", "random", "excite"] = "scripted",
) -> Path:
    """Roll ``policy`` out for ``config.episodes`` episodes and write them as a trajectory log; returns the directory.

    ``"scripted"`` restarts :class:`ScriptedTurn` every episode; ``"random"`` draws seeded uniform actions;
    ``"excite"`` is ``s2r deploy scripted:excite``'s multi-sine (:mod:`sim.tasks.excitation`) seeded by
    ``config.seed``, continuing across episodes as it does on the robot.
    """
    env = make_env(config.task, config.engine, config.params)
    spec = env.spec_
    noise_rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(1,)))
    action_rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(2,)))
    policy_name = policy if isinstance(policy, str) else getattr(policy, "__name__", type(policy).__name__)
    info = RunInfo(
        task=spec.name, robot=spec.robot, joint_names=spec.joint_names, passive_joints=spec.passive_joints,
        control_period=spec.control_period, source="sim",
        extra={
            "engine": config.engine, "env_id": resolve_env_id(config.task), "params": env.params.values(),
            "policy": policy_name, "seed": config.seed,
            "position_noise_std": config.position_noise_std, "velocity_noise_std": config.velocity_noise_std,
        },
        # What shapes the logged physics and readings (not the policy or seed): one simulated robot per directory.
        config_hash=config_hash({"engine": config.engine, "params": env.params.values(),
                                 "position_noise_std": config.position_noise_std,
                                 "velocity_noise_std": config.velocity_noise_std}),
    )
    excite = ExcitePolicy(MultiSine(spec, config.seed)) if policy == "excite" else None
    try:
        writer = TrajectoryWriter(directory, info)
        for ep in range(config.episodes):
            if policy == "scripted":
                act: Policy = ScriptedTurn(spec)
            elif policy == "random":
                act = random_actions(spec.n_joints, action_rng)
            elif excite is not None:
                act = excite
            elif callable(policy):
                act = policy
            else:
                raise UserError(f"policy must be a callable, 'scripted', 'random' or 'excite', got {policy!r}")
            _record_episode(env, act, writer, config, noise_rng, config.seed + ep)
    finally:
        env.close()
    return Path(directory)


def _record_episode(
    env: SimEnv, policy: Policy, writer: TrajectoryWriter, config: SimLogConfig,
    rng: np.random.Generator, seed: int,
) -> None:
    spec = env.spec_
    obs, reset_info = env.reset(seed=seed)
    readings = [_noisy_reading(env.read(), config, rng)]
    observations = [obs]
    actions, commands, rewards, terms, cycle_times = [], [], [], [], []
    success = bool(reset_info["success"])
    terminated = False
    for _ in range(spec.episode_steps):
        action = np.asarray(policy(obs), dtype=np.float64)
        start = time.perf_counter()
        obs, reward, terminated, truncated, info = env.step(action)
        cycle_times.append(time.perf_counter() - start)
        readings.append(_noisy_reading(env.read(), config, rng))
        observations.append(obs)
        actions.append(np.clip(action, -1.0, 1.0))
        commands.append(info["command"])
        rewards.append(float(reward))
        terms.append([info["reward_terms"][k] for k in spec.reward_terms])
        success = bool(info["success"])
        if terminated or truncated:
            break
    times = np.array([r.time for r in readings])
    steps = len(actions)
    arrays = {
        "time": times,
        "joint_pos": np.array([r.joint_pos for r in readings]),
        "joint_vel": np.array([r.joint_vel for r in readings]),
        "joint_effort": np.array([r.joint_effort for r in readings]),
        "passive_pos": np.array([r.passive_pos for r in readings]),
        "passive_vel": np.array([r.passive_vel for r in readings]),
        "stale": np.zeros(steps + 1, dtype=np.uint8),
        "obs": np.array(observations, dtype=np.float32),
        "action": np.array(actions),
        "command": np.array(commands),
        "reward": np.array(rewards),
        "reward_terms": np.array(terms, dtype=np.float64).reshape(steps, len(spec.reward_terms)),
        "comm_errors": np.zeros(steps, dtype=np.int64),
        "cycle_time": np.array(cycle_times),
        # Simulated time per step differs from the nominal period only under control-period jitter.
        "period_error": np.diff(times) - spec.control_period,
    }
    if readings[0].has_base:
        arrays["base_quat"] = np.array([r.base_quat for r in readings])
        arrays["base_angvel"] = np.array([r.base_angvel for r in readings])
        arrays["imu_age"] = np.zeros(steps + 1)
    writer.write_episode(arrays, {
        "goal": env.goal, "success": success, "stop_reason": "terminated" if terminated else "time_limit",
        "terminated": bool(terminated), "reward_terms": list(spec.reward_terms),
    })
