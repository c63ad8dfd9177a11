"""The gymnasium env that joins a task (spec, observation, reward) with a physics engine.

Per step: the normalized action goes through the task's action mapping (the same pure functions
the robot controller uses) into joint targets; the engine runs the substeps that make up one
control period, with the command reaching the actuators after ``action_latency`` and, where the task
declares ``push_force_std`` or ``passive_torque_std``, a random push on its target bodies or a random torque on its
passive joints; the observation is built by
the task from a reading with ``obs_noise_std`` noise (and IMU noise for a floating base); the reward is the
sum of the task's named terms, which ``info["reward_terms"]`` reports one by one.

A task that observes the torso's position (the walk) observes the simulator's by default. With
``position_source="odometry"`` it observes the position a robot without motion capture measures: leg odometry on the
noisy reading (:class:`sim.odometry.StanceOdometry`, the robot's own code), restarted at each episode's start as the
robot's is. The reward and success stay the simulator's: a policy trained so learns to walk where its odometry holds,
and is judged by where it really went.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from sim.engines import Engine, make_engine
from sim.odometry import DEFAULT_STANCE_TOLERANCE_M, Legs, StanceOdometry, with_heading
from sim.params import ParameterSet
from sim.rotations import quat_from_rotvec, quat_mul, yaw_of
from sim.state import RobotState, SimState
from sim.tasks.actions import action_to_command, clip_action, start_action
from sim.tasks.base import Task, observes_base_position, start_base_pose, step_reward_terms, total_reward
from sim.tasks.spec import FloatArray
from sim.visual import ImageEffects, postprocess

DEFAULT_PHYSICS_TIMESTEP_S = 0.0025
"""Largest physics step (s); the real step is shortened so whole substeps fill a control period."""
IMAGE_STREAM_KEY = 0x1A6E
"""Spawn key of the image-noise stream: ``reset(seed=s)`` seeds it apart from the physics' stream, which images
never draw from (so a vector policy's episodes are the same with or without camera images)."""
POSITION_SOURCES = ("truth", "odometry")
"""``SimEnv(position_source=...)``: the simulator's torso position, or leg odometry's (the robot's ``tracker: {kind:
estimator}``)."""


def image_rng(seed: int | None) -> np.random.Generator:
    """The generator of image noise for ``seed`` (fresh entropy for ``None``)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(IMAGE_STREAM_KEY,)))


class SimEnv(gym.Env[np.ndarray, np.ndarray]):
    """A task on an engine, as a gymnasium env. Episodes end by time limit (``truncated``), or where the task says
    the robot would stop (``terminated``, :meth:`~sim.tasks.base.Task.terminated`)."""

    # gymnasium declares metadata as a mutable instance attribute; the class default is read by gym.make.
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}  # noqa: RUF012

    def __init__(
        self,
        task: Task,
        engine: str = "mujoco",
        control_period: float | None = None,
        physics_timestep: float = DEFAULT_PHYSICS_TIMESTEP_S,
        render_mode: str | None = None,
        render_size: tuple[int, int] = (320, 240),
        params: Mapping[str, float] | None = None,
        position_source: str = "truth",
        stance_tolerance_m: float = DEFAULT_STANCE_TOLERANCE_M,
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self._odometry = _odometry(task, position_source, stance_tolerance_m)
        if control_period is not None:
            task = replace(task, spec=task.spec.with_control_period(control_period))  # type: ignore[type-var]
        self.task = task
        self.spec_ = task.spec
        self.substeps, timestep = self.spec_.substeps(physics_timestep)
        self.engine: Engine = make_engine(engine, task, timestep)
        self.params = ParameterSet(task.param_specs(), self.engine)
        self._param_names = frozenset(self.params.names())
        if params:
            self.params.set_many(params)
        self.render_mode = render_mode
        self.render_size = render_size
        self.metadata = {**self.metadata, "render_fps": round(1.0 / self.spec_.control_period)}

        n = self.spec_.n_joints
        obs_size = self.spec_.obs_layout.size
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_size,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (n,), np.float32)

        self._command = self.spec_.reset.copy()
        self._last_action = np.zeros(n)
        self._goal: dict[str, float] = {}
        self._steps = 0
        self._substep_clock = 0
        self._pending: deque[tuple[int, FloatArray]] = deque()
        self._pushed: tuple[str, ...] = ()
        # The task's parameter of kind passive_torque_std (the claw's valve_torque_std), if it declares one.
        self._nudge = next((p for p in task.param_specs() if p.kind == "passive_torque_std"), None)
        self._nudge_index = np.array([] if self._nudge is None else
                                     [self.spec_.passive_joints.index(j) for j in self._nudge.targets], dtype=np.int64)
        self._image_rng = image_rng(None)

    # --- gymnasium API --------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self._image_rng = image_rng(seed)
        start = self.task.sample_start(self.np_random)
        base_pose = start_base_pose(start)
        self.engine.reset(start.joint_pos, start.passive_pos, base_pose)
        self._pushed = ()
        self._command = np.asarray(start.joint_pos, dtype=np.float64).copy()
        self._last_action = start_action(self._command, self.spec_)
        self._goal = dict(start.goal)
        self._steps = 0
        self._substep_clock = 0
        self._pending.clear()
        state = self.engine.read()
        reading = self._noisy(state)
        if self._odometry is not None and base_pose is not None:  # a task that observes its position has a base
            self._odometry.restart(base_pose[:3])
            self._odometry.align_heading(yaw_of(base_pose[3:]), reading.base_quat)
        obs = self.task.observe(self._positioned(reading), self._last_action, self._goal)
        return obs, {"goal": dict(self._goal), "success": self.task.success(state, self._goal)}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        a = clip_action(np.nan_to_num(np.asarray(action, dtype=np.float64), nan=0.0))
        command = action_to_command(a, self._command, self.spec_)
        self._push()
        self._advance(command, self._substeps_this_period())
        previous_action = self._last_action
        self._command = command
        self._last_action = a
        self._steps += 1

        state = self.engine.read()
        obs = self.task.observe(self._positioned(self._noisy(state)), self._last_action, self._goal)
        terms = step_reward_terms(self.task, state, self._goal, a, previous_action)
        terminated = self.task.terminated(state, self._goal)
        truncated = not terminated and self._steps >= self.spec_.episode_steps
        info = {
            "reward_terms": terms,
            "success": self.task.success(state, self._goal),
            "command": command,
            "goal": dict(self._goal),
        }
        return obs, total_reward(terms), terminated, truncated, info

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        w, h = self.render_size
        return self.engine.render(w, h)

    def render_camera(self, name: str) -> np.ndarray:
        """What the task camera ``name`` sees now (RGB uint8, its height x width x 3), with the ``image_*``
        parameters' pixel effects (:func:`sim.visual.postprocess`); their noise comes from a stream of its own,
        seeded by ``reset(seed=...)``, so the same seed, parameters and frames give the same images."""
        return postprocess(self.engine.render_camera(name), self.image_effects(), self._image_rng)

    def image_effects(self) -> ImageEffects:
        """The pixel-level effects of the current ``image_*`` parameters (none where the task declares none)."""
        names = self._param_names
        return ImageEffects(
            brightness=self.params.get("image_brightness") if "image_brightness" in names else 0.0,
            contrast=self.params.get("image_contrast") if "image_contrast" in names else 1.0,
            blur_sigma=self.params.get("image_blur_sigma") if "image_blur_sigma" in names else 0.0,
            noise_std=self.params.get("image_noise_std") if "image_noise_std" in names else 0.0,
        )

    def close(self) -> None:
        self.engine.close()

    # --- state access (likelihoods, resets from logged states) ---------------------------------
    def get_sim_state(self) -> SimState:
        """A snapshot of the simulator, the last action and the leg odometry if it runs, exact on the same engine."""
        return replace(self.engine.get_state(), last_action=self._last_action.copy(),
                       odometry=None if self._odometry is None else self._odometry.snapshot())

    def set_sim_state(self, state: SimState) -> None:
        """Restore a snapshot; the command in it becomes the previous command for rate limiting, and its last action
        (else the command normalized, as at a reset) the previous action. Leg odometry continues from the snapshot's,
        or without one (a state built from a reading) restarts at the restored pose, as at a reset."""
        self.engine.set_state(state)
        self._command = np.asarray(state.command, dtype=np.float64).copy()
        self._last_action = (start_action(self._command, self.spec_) if state.last_action is None
                             else np.asarray(state.last_action, dtype=np.float64).copy())
        self._pending.clear()
        if self._odometry is not None:
            if state.odometry is not None:
                self._odometry.restore(state.odometry)
            else:
                pose = self.engine.read()
                self._odometry.restart(pose.base_pos)
                self._odometry.align_heading(yaw_of(pose.base_quat), pose.base_quat)
        self._pushed = ()

    def read(self) -> RobotState:
        """The noiseless current reading."""
        return self.engine.read()

    @property
    def goal(self) -> dict[str, float]:
        """The current episode's goal values."""
        return dict(self._goal)

    # --- internals ------------------------------------------------------------------------------
    def _env_param(self, name: str) -> float:
        """An env-level parameter's value; a task that does not declare it runs without it."""
        return self.params.get(name) if name in self._param_names else 0.0

    def _substeps_this_period(self) -> int:
        jitter = self._env_param("control_jitter_std")
        if jitter <= 0.0:
            return self.substeps
        period = self.spec_.control_period + float(self.np_random.normal(0.0, jitter))
        return max(1, round(period / self.engine.timestep))

    def _advance(self, command: FloatArray, n_substeps: int) -> None:
        """Run ``n_substeps``; ``command`` takes effect ``action_latency`` after this step begins."""
        latency = self._env_param("action_latency")
        delay = round(latency / self.engine.timestep)
        if delay == 0:
            self._pending.clear()
            self.engine.set_command(command)
            self.engine.step(n_substeps)
            self._substep_clock += n_substeps
            return
        self._pending.append((self._substep_clock + delay, command))
        end = self._substep_clock + n_substeps
        while self._substep_clock < end:
            if self._pending and self._pending[0][0] <= self._substep_clock:
                self.engine.set_command(self._pending.popleft()[1])
                continue
            next_event = self._pending[0][0] if self._pending else end
            k = min(next_event, end) - self._substep_clock
            self.engine.step(k)
            self._substep_clock += k

    def _push(self) -> None:
        """Fresh disturbances for this control period: a horizontal force (N) on the push targets and a torque
        (N m) on the nudged passive joints, or none."""
        std = self._env_param("push_force_std")
        if std <= 0.0:
            for body in self._pushed:
                self.engine.set_external_force(body, np.zeros(3))
            self._pushed = ()
        else:
            targets = self.params.spec("push_force_std").targets
            force = np.concatenate([self.np_random.normal(0.0, std, 2), [0.0]])
            for body in targets:
                self.engine.set_external_force(body, force)
            self._pushed = targets
        if self._nudge is None:
            return
        std = self.params.get(self._nudge.name)
        torque = np.zeros(len(self.spec_.passive_joints))
        if std > 0.0:  # nothing is drawn at 0, so runs without nudges keep their random stream
            torque[self._nudge_index] = self.np_random.normal(0.0, std, len(self._nudge_index))
        self.engine.set_passive_torque(torque)

    def _positioned(self, reading: RobotState) -> RobotState:
        """The (noisy) reading as the policy observes it: with the odometry's pose where that is the position
        source."""
        if self._odometry is None:
            return reading
        position = self._odometry.update(reading.joint_pos, reading.base_quat)
        return replace(reading, base_pos=position,
                       base_quat=with_heading(reading.base_quat, self._odometry.heading(reading.base_quat)))

    def _noisy(self, state: RobotState) -> RobotState:
        """The reading as the sensors would give it: angle noise on joints, IMU noise on a floating base."""
        std = self._env_param("obs_noise_std")
        orientation_std = self._env_param("base_orientation_noise_std") if state.has_base else 0.0
        angvel_std = self._env_param("base_angvel_noise_std") if state.has_base else 0.0
        if std <= 0.0 and orientation_std <= 0.0 and angvel_std <= 0.0:
            return state
        rng = self.np_random
        out = state
        if std > 0.0:
            out = replace(out, joint_pos=out.joint_pos + rng.normal(0.0, std, out.joint_pos.shape),
                          passive_pos=out.passive_pos + rng.normal(0.0, std, out.passive_pos.shape))
        if orientation_std > 0.0:
            # A small rotation of the body frame, as an IMU's attitude estimate is off by.
            tilt = quat_from_rotvec(rng.normal(0.0, orientation_std, 3))
            out = replace(out, base_quat=quat_mul(out.base_quat, tilt))
        if angvel_std > 0.0:
            out = replace(out, base_angvel=out.base_angvel + rng.normal(0.0, angvel_std, 3))
        return out


def _odometry(task: Task, position_source: str, stance_tolerance_m: float) -> StanceOdometry | None:
    """The leg odometry ``position_source`` asks for (``None`` for the simulator's position)."""
    if position_source not in POSITION_SOURCES:
        raise ValueError(f"position_source must be one of {', '.join(POSITION_SOURCES)}, got {position_source!r}")
    if position_source == "truth":
        return None
    if not (observes_base_position(task) and hasattr(task, "feet")):
        raise ValueError(f"position_source {position_source!r} is for a legged task that observes its position "
                         f"(dkitty-walk), not {task.spec.name}")
    legs: Legs = task  # type: ignore[assignment]  # checked above: a legged task has feet and foot_radius
    return StanceOdometry(legs, stance_tolerance_m)


class DictObservationEnv(gym.Env[dict[str, Any], np.ndarray]):
    """A dict-observation view over a :class:`SimEnv` (``self.sim``), the goal and camera envs' common part: the
    flat env does the physics, renders and closes."""

    sim: SimEnv

    def render(self) -> np.ndarray | None:
        return self.sim.render()

    def close(self) -> None:
        self.sim.close()

    @property
    def unwrapped_sim(self) -> SimEnv:
        """The flat env underneath (parameters, state access)."""
        return self.sim
