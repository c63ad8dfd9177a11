"""Log-likelihood of logged robot transitions under the simulator at given parameter values.

For every logged control step t the simulator is put in the logged state (joint and valve positions
and velocities at reading t; a floating base as in :func:`base_trajectory`), the logged commands are
replayed for one control period, and the simulated next state is compared with reading t+1. The
engine is driven directly (``engine.set_command`` / ``engine.step``) rather than through ``env.step``: the log holds the
commands that were actually sent (after rate limiting and the safety filter), not normalized actions,
and the period actually taken (``period_error``) sets the number of substeps. An ``action_latency``
is replayed exactly as the env applies it: each command takes effect that long after its period
began, so the first part of a period still runs the earlier command.

Noise model: each state dimension d (every joint and passive-joint position and velocity) gets
independent Gaussian noise of std sigma_d on the next state, so with N transitions and the mean
square residual m_d of dimension d,  log L = -N/2 * sum_d [m_d / sigma_d^2 + log(2 pi sigma_d^2)].
sigma_d is fitted, not stated: the adaptation loop sets it to the RMS residual of dimension d at its
current parameter estimate (:func:`fit_noise_std`), floored at a sensor's resolution (``NoiseFloor``)
so that a dimension that never moves cannot make the likelihood infinite. Positions (mrad) and
velocities (rad/s) thus weigh in by how well they are predicted, with no hand-tuned scale.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

import sim  # noqa: F401  (registers the envs, in a fresh worker too)
from s2r.core.errors import UserError
from s2r.core.trajlog import OnSkip, RunInfo, episode_files, read_episodes, read_run
from sim.env import SimEnv
from sim.state import RobotState, SimState
from sim.tasks.actions import wrap_angle
from sim.tasks.base import Task, base_height
from sim.tasks.spec import FloatArray, TaskSpec

LIKELIHOOD_PARAM_KINDS_ENV = frozenset({"action_latency"})
"""Env-level parameter kinds the one-step replay models; the others (noise, jitter) it cannot see."""


@dataclass(frozen=True)
class NoiseFloor:
    """Smallest noise std the likelihood fits per state dimension."""

    position: float = 1e-4
    """Angles (rad): well below an XM430's 1.5 mrad tick, so real noise always sits above it."""
    velocity: float = 1e-3
    """Angular velocities (rad/s): well below an XM430's 0.024 rad/s unit."""

    def per_dimension(self, spec: TaskSpec) -> FloatArray:
        """The floor for each state dimension, in :func:`state_dim_names` order."""
        n_pos = spec.n_joints + len(spec.passive_joints)
        return np.concatenate([np.full(n_pos, self.position), np.full(n_pos, self.velocity)])


@dataclass(frozen=True)
class LoggedEpisode:
    """The arrays of one logged episode that the likelihood needs (T steps, J joints, P passive joints)."""

    joint_pos: FloatArray
    """(T+1, J) joint angles (rad)."""
    joint_vel: FloatArray
    """(T+1, J) joint velocities (rad/s)."""
    passive_pos: FloatArray
    """(T+1, P) passive-joint angles (rad)."""
    passive_vel: FloatArray
    """(T+1, P) passive-joint velocities (rad/s)."""
    command: FloatArray
    """(T, J) joint targets sent at each step (rad)."""
    period: FloatArray
    """(T,) duration of each control period as run (s)."""
    usable: np.ndarray
    """(T,) bool: both readings of the transition are fresh (not stale)."""
    base_qpos: FloatArray | None = None
    """(T+1, 7) floating-base position (m) and orientation (w, x, y, z) per reading; ``None`` for a fixed base."""
    base_qvel: FloatArray | None = None
    """(T+1, 6) floating-base linear velocity (m/s, world) and angular velocity (rad/s, body); ``None`` if fixed."""

    @property
    def steps(self) -> int:
        return int(self.command.shape[0])


def check_run(info: RunInfo, spec: TaskSpec, directory: str | os.PathLike[str]) -> None:
    """Logs must come from the task's robot and task, with the same joints in the same order."""
    if info.robot != spec.robot or info.task != spec.name:
        raise UserError(f"{directory} holds logs of task {info.task!r} on robot {info.robot!r}; "
                        f"expected task {spec.name!r} on robot {spec.robot!r}")
    if tuple(info.joint_names) != tuple(spec.joint_names):
        raise UserError(f"{directory}: logged joints {list(info.joint_names)} differ from the task's "
                        f"{list(spec.joint_names)}")
    if tuple(info.passive_joints) != tuple(spec.passive_joints):
        raise UserError(f"{directory}: logged passive joints {list(info.passive_joints)} differ from the task's "
                        f"{list(spec.passive_joints)}")
    if not (info.control_period > 0 and math.isfinite(info.control_period)):
        raise UserError(f"{directory}: control period {info.control_period!r} is not a positive duration")


def base_trajectory(task: Task, arrays: Mapping[str, np.ndarray], period: FloatArray) -> tuple[FloatArray, FloatArray]:
    """The floating base's (T+1, 7) positions and orientations and (T+1, 6) velocities over a logged episode.

    Orientation and angular velocity are the IMU's (``base_quat``, ``base_angvel``). Position and linear
    velocity are the logged ``base_pos``/``base_linvel`` where a position source gave them. Without one, the
    floor's plane is all that matters: the base sits over the origin at the height the task estimates from
    joint angles and orientation (feet on the floor), and moves with the backward difference of that height.
    """
    quat = np.asarray(arrays["base_quat"], dtype=np.float64)
    angvel = np.asarray(arrays["base_angvel"], dtype=np.float64)
    if "base_pos" in arrays:
        pos = np.asarray(arrays["base_pos"], dtype=np.float64)
    else:
        pos = np.zeros((quat.shape[0], 3))
        joint_pos = np.asarray(arrays["joint_pos"], dtype=np.float64)
        empty = np.zeros(0)
        for k in range(quat.shape[0]):
            state = RobotState(0.0, joint_pos[k], empty, empty, empty, base_quat=quat[k], base_angvel=angvel[k])
            pos[k, 2] = base_height(task, state)
    if "base_linvel" in arrays:
        linvel = np.asarray(arrays["base_linvel"], dtype=np.float64)
    else:
        linvel = np.zeros_like(pos)
        linvel[1:] = np.diff(pos, axis=0) / np.asarray(period, dtype=np.float64)[:, None]
    return np.concatenate([pos, quat], axis=1), np.concatenate([linvel, angvel], axis=1)


def load_logged_episodes(directory: str | os.PathLike[str], spec: TaskSpec, task: Task | None = None, *,
                         strict: bool = False, on_skip: OnSkip | None = None) -> tuple[RunInfo, list[LoggedEpisode]]:
    """The run info and episodes of a log directory, checked against ``spec``; problems are ``UserError``.

    A damaged episode file is skipped and reported to ``on_skip``, or with ``strict`` is an error
    (:func:`s2r.core.trajlog.read_episodes`). Each episode is replayed at its own control period (its meta's), so a
    directory holding episodes of several periods is replayed right. A robot with a floating base
    (``spec.base_joint``) needs its IMU arrays in the logs and ``task`` to estimate what the IMU does not measure
    (:func:`base_trajectory`).
    """
    if spec.base_joint is not None and task is None:
        raise ValueError(f"{spec.name} has a floating base: load_logged_episodes needs its task")
    info = read_run(directory)
    check_run(info, spec, directory)
    if not episode_files(directory):
        raise UserError(f"{directory} holds no finished episodes (episode_*.npz)")
    out = []
    # read_episodes checks every array's columns against run.json, which check_run matched to the spec.
    for ep in read_episodes(directory, strict=strict, on_skip=on_skip):
        where = f"{directory}: episode {ep.index}"
        stale = np.asarray(ep["stale"]).astype(bool)
        arrays = [np.asarray(ep[k], dtype=np.float64)
                  for k in ("joint_pos", "joint_vel", "passive_pos", "passive_vel", "command")]
        finite = np.all(np.isfinite(np.concatenate(arrays[:4], axis=1)), axis=1)
        period = ep.control_period + np.asarray(ep["period_error"], dtype=np.float64)
        base_qpos = base_qvel = None
        if task is not None and spec.base_joint is not None:
            missing = [k for k in ("base_quat", "base_angvel") if k not in ep.arrays]
            if missing:
                raise UserError(f"{where}: no {' or '.join(missing)}; {spec.name} has a floating base whose "
                                "orientation and angular velocity come from the IMU")
            base_qpos, base_qvel = base_trajectory(task, ep.arrays, period)
            finite &= np.all(np.isfinite(base_qpos), axis=1) & np.all(np.isfinite(base_qvel), axis=1)
        fresh = ~stale & finite
        out.append(LoggedEpisode(
            joint_pos=arrays[0], joint_vel=arrays[1], passive_pos=arrays[2], passive_vel=arrays[3],
            command=arrays[4], period=period,
            usable=fresh[:-1] & fresh[1:] & np.all(np.isfinite(arrays[4]), axis=1),
            base_qpos=base_qpos, base_qvel=base_qvel,
        ))
    if sum(int(e.usable.sum()) for e in out) == 0:
        raise UserError(f"{directory}: no usable transitions (every episode is empty or its readings are stale)")
    return info, out


def thin_transitions(episodes: Sequence[LoggedEpisode], limit: int) -> list[LoggedEpisode]:
    """The episodes with at most ``limit`` usable transitions kept, evenly spaced over all of them."""
    total = sum(int(e.usable.sum()) for e in episodes)
    if total <= limit:
        return list(episodes)
    keep = set(np.unique(np.linspace(0, total - 1, limit).round().astype(int)).tolist())
    out, counter = [], 0
    for e in episodes:
        usable = e.usable.copy()
        for t in np.flatnonzero(e.usable):
            usable[t] = counter in keep
            counter += 1
        out.append(replace(e, usable=usable))
    return out


def state_dim_names(spec: TaskSpec) -> tuple[str, ...]:
    """Names of the scored state dimensions, in residual column order."""
    return (
        *(f"joint_pos/{n}" for n in spec.joint_names),
        *(f"passive_pos/{n}" for n in spec.passive_joints),
        *(f"joint_vel/{n}" for n in spec.joint_names),
        *(f"passive_vel/{n}" for n in spec.passive_joints),
    )


def command_segments(clock: Sequence[int] | np.ndarray, delay: int, t: int) -> list[tuple[int, int]]:
    """The commands in force during period ``t``, as ``(substeps, command index)`` in time order.

    ``clock[j]`` is the substep at which period j begins (``clock[t + 1]`` ends period t); command j
    takes effect at ``clock[j] + delay``. Index -1 stands for the command held before the first step.
    """
    start, end = clock[t], clock[t + 1]
    active = -1
    for j in range(t + 1):
        if clock[j] + delay <= start:
            active = j
    segments, cursor = [], start
    for j in range(active + 1, t + 1):
        effective = clock[j] + delay
        if effective >= end:
            break
        if effective > cursor:
            segments.append((effective - cursor, active))
            cursor = effective
        active = j
    segments.append((end - cursor, active))
    return segments


class TransitionReplay:
    """Replays logged transitions in one env; built once per worker and reused for every sample."""

    def __init__(self, env: SimEnv, episodes: Sequence[LoggedEpisode]) -> None:
        self.env = env
        self.episodes = list(episodes)
        dt = env.engine.timestep
        self._clocks = [
            np.concatenate([[0], np.cumsum(np.maximum(1, np.round(e.period / dt).astype(int)))]) for e in self.episodes
        ]

    @property
    def transitions(self) -> int:
        """Usable transitions scored per evaluation."""
        return sum(int(e.usable.sum()) for e in self.episodes)

    def residuals(self, values: Mapping[str, float]) -> FloatArray:
        """Simulated minus logged next state, shape (transitions, state dims); non-finite rows mean a blow-up."""
        params = self.env.params
        params.reset()
        params.set_many(values)
        latency = params.get("action_latency") if "action_latency" in params.names() else 0.0
        engine = self.env.engine
        delay = round(latency / engine.timestep)
        rows = []
        for ep, clock in zip(self.episodes, self._clocks, strict=True):
            # The log has no command before step 0; the env's reset (and the robot's) commands the start pose,
            # which reading 0 shows.
            before_first = ep.joint_pos[0]
            for t in np.flatnonzero(ep.usable):
                prev = ep.command[t - 1] if t > 0 else before_first
                base_q = () if ep.base_qpos is None else (ep.base_qpos[t],)
                base_v = () if ep.base_qvel is None else (ep.base_qvel[t],)
                self.env.set_sim_state(SimState(
                    qpos=np.concatenate([ep.joint_pos[t], ep.passive_pos[t], *base_q]),
                    qvel=np.concatenate([ep.joint_vel[t], ep.passive_vel[t], *base_v]),
                    command=prev,
                ))
                for substeps, j in command_segments(clock, delay, int(t)):
                    engine.set_command(ep.command[j] if j >= 0 else before_first)
                    engine.step(substeps)
                s = engine.read()
                rows.append(np.concatenate([
                    s.joint_pos - ep.joint_pos[t + 1],
                    wrap_angle(s.passive_pos - ep.passive_pos[t + 1]),
                    s.joint_vel - ep.joint_vel[t + 1],
                    s.passive_vel - ep.passive_vel[t + 1],
                ]))
        return np.array(rows)

    def mean_square_residuals(self, values: Mapping[str, float]) -> FloatArray:
        """Mean square residual per state dimension over all transitions (NaN where the simulation blew up)."""
        r = self.residuals(values)
        if not np.all(np.isfinite(r)):
            return np.full(r.shape[1], math.nan)
        return np.asarray((r**2).mean(axis=0))

    def close(self) -> None:
        self.env.close()


def fit_noise_std(mean_square: FloatArray, floor: FloatArray) -> FloatArray:
    """Maximum-likelihood noise std per dimension (the RMS residual), at least ``floor``."""
    return np.maximum(np.sqrt(mean_square), floor)


def gaussian_log_likelihood(mean_square: FloatArray, transitions: int, sigma: FloatArray) -> FloatArray:
    """Log-likelihood of residuals with per-dimension mean squares ``mean_square`` (..., D) under N(0, sigma^2).

    Rows with a NaN (a blown-up simulation) get ``-inf``.
    """
    ms = np.asarray(mean_square, dtype=np.float64)
    ll = -0.5 * transitions * np.sum(ms / sigma**2 + np.log(2.0 * math.pi * sigma**2), axis=-1)
    return np.where(np.isnan(ll), -math.inf, ll)


@dataclass(frozen=True)
class ReplaySetup:
    """Builds a :class:`TransitionReplay` in a worker (picklable: the logs travel with it)."""

    env_id: str
    """Gymnasium id of the task."""
    engine: str
    """Physics engine to replay on."""
    control_period: float
    """Control period of the replay env (s): the run's. It sets the physics step only; each episode is replayed
    for its own logged periods (:attr:`LoggedEpisode.period`)."""
    episodes: tuple[LoggedEpisode, ...]
    """The logged episodes."""
    def __call__(self) -> TransitionReplay:
        import gymnasium as gym

        env = gym.make(self.env_id, engine=self.engine, control_period=self.control_period).unwrapped
        if not isinstance(env, SimEnv):
            raise UserError(f"{self.env_id} is not an s2r simulated task")
        return TransitionReplay(env, self.episodes)


def evaluate_sample(replay: TransitionReplay, values: Mapping[str, float]) -> FloatArray:
    """The executor task: mean square residual per state dimension at one parameter sample."""
    return replay.mean_square_residuals(values)
