"""The real-time controller: a fixed-rate loop that runs a policy on the robot, episode by episode.

One control cycle, every ``config.control_period_s``::

    wait for the deadline (sleep, then spin on the clock)
    read      the IMU's newest sample (a robot with one), then every joint and encoder in one bus transaction
    observe   task.observe(reading.state(), last_action, goal)   -- the sim env's own function
    act       policy(observation) -> normalized action
    filter    robot.safety.filter_action (the task's action_to_command + hardware limits + NaN hold)
    write     one sync write; the bus returns the command actually sent (tick-quantized)

The policy-facing state (previous command, last action) is kept by :class:`PolicyState` exactly as
:class:`sim.env.SimEnv` keeps it, so for the same readings the robot's observations and commands are
the simulator's. An episode is a scripted reset, then ``T = task.spec.episode_steps`` policy cycles:
T + 1 readings, T actions. The reset's last reading is the episode's first. The reset (:mod:`robot.resets`, one
strategy per robot from :func:`robot.resets.make_reset`) brings the robot to the start ``task.sample_start(rng)``
draws, as ``SimEnv.reset`` does: the joints to the start pose, a resettable passive joint (the valve) driven to its
start angle, a floating base (a legged robot) put down by a scene placer. It runs the controller's own cycle, so
its cycles are checked and stopped as the policy's are.

A robot with an IMU (``config.imu``) gets the torso's orientation and angular velocity from it: the newest
valid sample joins every reading (``Reading.base_quat``/``base_angvel``/``imu_time``), so ``reading.state()``
is the :class:`~sim.state.RobotState` with the base fields the sim's engine fills. A cycle without any sample
yet holds the previous command, as a stale reading does.

A controller given a camera and an estimator (``camera``, ``estimator``: ``s2r deploy --perception``) observes the
task's passive joint through them instead of its encoder: every cycle polls the camera's newest frame (before the
bus read, as the IMU), and the policy's observation is the task's own ``observe`` of the reading with the
estimator's angle as the passive joint's position (its velocity zero: the turn task does not observe it, as
:class:`export.modular_policy.ModularPolicy` builds it in simulation). The encoder is still read and logged
(``passive_pos``: success and reward are judged on it), next to the estimate (``passive_estimate``), the frame's age
(``frame_age``) and the frame itself (``camera_NAME``). A cycle without any frame yet holds the previous command.

A robot with a position source (``config.tracker``: motion capture or leg odometry, ``robot.tracker``) gets the torso's
position, velocity and heading from it: the newest valid pose joins every reading (``Reading.base_pos``/
``base_linvel``/``pose_time``), and the IMU's orientation takes the source's heading (its tilt is kept). A cycle
without any pose yet holds the previous command. A dead-reckoning source restarts at each episode's start pose.

The watchdog stops the run safely (hold the last safe command, then torque off) on: N consecutive failed reads, data
older than a bound (both from ``config.watchdog``), a servo hardware error, a bus failure or a policy failure; with an
IMU also on a torso tilt beyond ``imu.max_tilt_rad`` (with a recovery reset, ``reset: {kind: recovery}``, a tilt ends
the episode instead, as a fall, and the next reset rights the robot; ``max_consecutive_failures`` failed resets in a
row are the stop) and on no valid IMU frame for ``imu.max_silence_s``; with a
position source on no valid pose for ``tracker.max_age_s``; with a camera on no new frame for
``camera.max_frame_age_s``. A config with a ``safe_pose_rad`` moves there
(rate-limited, one write per period, no reads needed) instead of holding, before the torque goes off. A requested stop
(``should_stop`` returns a reason, e.g. from a signal handler in the command line layer) turns the torque off, also
cutting a safety stop's hold short. Nothing here installs signal handlers. More than ``max_held_fraction`` of the
newest ``held_window`` cycles refusing a NaN or infinite action is a safety stop too. A serial port that goes away (the
servos' or the IMU's: :class:`robot.bus.PortLost`) stops the run as ``port_lost``: the hold is tried (the IMU's line
may be the lost one) and the torque-off cannot be confirmed when the servos' line is gone.

During each episode (from before its reset to its last step) the servos' own Bus Watchdog is armed
(:func:`bus_watchdog_s`): should the host die, every servo stops where it is within that time. A host that left
the bus silent for longer (a stall between two cycles) stops the run, as the servos have stopped.

Every time is on ``clock`` (s, monotonic), which must be the bus's clock: the data age compares the
two. Tests pass a fake clock and a ``sleep`` that advances it, so a loop runs in zero time.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from robot.bus import Bus, BusError, HardwareFault, PortLost, Reading, describe_hardware_error
from robot.config import RobotConfig
from robot.dynamixel.control_table import BUS_WATCHDOG_MAX_S
from robot.resets import Reset, ResetFailed, ResetSettings, ResetStart, make_reset
from robot.safety import Filtered, Hold, SafetyLimits, clip_to_limits, filter_action, hold_command, step_towards
from robot.tracker.source import EpisodeFrame, PoseSample
from robot.view import NO_VIEW, StepRecord, StepView
from s2r.core.errors import UserError
from sim.odometry import with_heading
from sim.rotations import tilt, yaw_of
from sim.state import RobotState
from sim.tasks.actions import start_action
from sim.tasks.base import EpisodeStartLike, Task, start_base_pose, step_reward_terms, total_reward
from sim.tasks.spec import FloatArray, TaskSpec

if TYPE_CHECKING:
    from robot.camera.reader import CameraFrame, CameraSource
    from robot.hardware import GroundTruth, ScenePlacer
    from robot.imu.reader import ImuCounters, ImuSource
    from robot.streams import StreamCounters
    from robot.tracker.source import PoseSource, TrackerCounters

Policy = Callable[[NDArray[np.float32]], Any]
"""Observation (float32, shape (O,)) in, normalized action (J,) out."""
StopKind = Literal["completed", "requested", "safety", "port_lost"]
SAFETY_STOP_KINDS: tuple[StopKind, ...] = ("safety", "port_lost")
"""Stops that mean the robot was made safe because something failed (the command line exits non-zero)."""

BUS_WATCHDOG_MARGIN_PERIODS = 3
"""The servos' Bus Watchdog is armed for the watchdog's data-age bound plus this many control periods (periods):
never before the controller itself would have stopped on a silent bus, soon after a dead host."""
TIME_EPSILON_S = 1e-9
"""A deadline this close counts as reached (s): clocks tick in nanoseconds, and a fake clock's sum of
sleeps can land one rounding step short of the deadline."""
US_PER_S = 1e6
DEG_PER_RAD = 180.0 / math.pi


class AngleEstimator(Protocol):
    """Reads the task's passive joint's angle (rad) from one camera frame (RGB uint8, height x width x 3):
    :class:`export.perception_model.OnnxAngleEstimator`."""

    def angle(self, frame: NDArray[np.uint8]) -> float: ...


@runtime_checkable
class FramePolicy(Protocol):
    """A policy of the camera frame and the robot's own readings instead of the task's observation: an end-to-end
    camera policy (:class:`export.pixels_policy.OnnxPixelsPolicy`). Given as the controller's policy, it acts on
    each cycle's frame, joint readings (rad), last action and goal (SI units, the task's ``goal_fields`` order)."""

    def act_frame(self, frame: NDArray[np.uint8], joint_pos: FloatArray, last_action: FloatArray,
                  goal: FloatArray) -> NDArray[np.float32]: ...


@dataclass(frozen=True)
class ControllerSettings:
    """How the loop waits, resets and stops; the robot-specific limits live in the hardware config."""

    spin_s: float = 0.0003
    """Sleep until this long before a deadline, then spin on the clock (s). ``time.sleep`` wakes 0.1-0.5 ms
    late; spinning the rest keeps the period error in microseconds at a few percent of a core. Use 0
    with a fake clock that only moves in ``sleep``."""
    safe_stop_hold_s: float = 0.5
    """How long a safety stop holds the last safe command before turning the torque off (s)."""
    reset_tolerance_rad: float = 0.05
    """A reset phase is settled when every joint it moves is this close to its start (rad): the fingers to the
    start pose, then each driven passive joint to its start angle."""
    reset_settle_speed_rad_s: float = 0.05
    """A driven passive joint is settled only once it is also this slow (rad/s): released while still moving, it
    would coast on past its start angle."""
    reset_timeout_s: float = 5.0
    """Longest wait for a reset phase to settle (s): from the start of the finger move, and for a driven passive
    joint from when its rate-limited goal reached the start angle. After it the episode starts from where
    things are (logged in the meta)."""
    reset_agree_rad: float = 1.0
    """A driven passive joint's reset starts from two consecutive readings this close together (rad): the ramp
    starts at the reading, and one glitched reading (an emulated valve once read 1604 rad between two of 3.1)
    would otherwise send the servo that far."""
    episode_steps: int | None = None
    """Policy steps per episode; ``None`` is the task's ``episode_steps`` (fewer only for smoke tests)."""
    held_window: int = 10
    """Policy cycles (the newest, within one episode) over which held commands are counted (cycles)."""
    max_held_fraction: float = 0.5
    """A safety stop once more than this fraction (-) of ``held_window`` cycles refused the policy's action for a NaN
    or an infinity (and held the previous command): a robot that mostly holds is not being controlled by its policy,
    and a policy that outputs NaN every step would otherwise run every episode to "completed". With the defaults it
    stops at the 6th such cycle in a row. Cycles held for a stale reading or a missing IMU sample do not count:
    the configured watchdogs (failed reads, data age, IMU silence) bound those."""

    def __post_init__(self) -> None:
        for name in ("spin_s", "safe_stop_hold_s", "reset_tolerance_rad", "reset_settle_speed_rad_s",
                     "reset_timeout_s", "reset_agree_rad"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise UserError(f"controller setting {name} must be a finite number >= 0; got {value!r}")
        if self.episode_steps is not None and self.episode_steps < 1:
            raise UserError(f"episode steps must be >= 1; got {self.episode_steps}")
        if self.held_window < 1:
            raise UserError(f"controller setting held_window must be an integer >= 1; got {self.held_window!r}")
        if not 0.0 <= self.max_held_fraction < 1.0:
            raise UserError(f"controller setting max_held_fraction must be in [0, 1); got {self.max_held_fraction!r}")

    def reset_settings(self) -> ResetSettings:
        """The ``reset_*`` settings, as the reset strategy (:mod:`robot.resets`) takes them."""
        return ResetSettings(tolerance_rad=self.reset_tolerance_rad, settle_speed_rad_s=self.reset_settle_speed_rad_s,
                             timeout_s=self.reset_timeout_s, agree_rad=self.reset_agree_rad)


@dataclass(frozen=True)
class Stop:
    """Why the run stopped."""

    kind: StopKind
    """``completed`` (every episode ran), ``requested`` (SIGINT/SIGTERM, the caller's ``should_stop``),
    ``safety`` (watchdog, hardware error, bus or policy failure, tilt, IMU silence, too many held actions) or
    ``port_lost`` (the servos' or the IMU's serial port is gone: a cable pulled, the emulator's process dead; the
    hold is still tried, for the IMU's line may be the lost one, but with the servos' line gone nothing reaches
    them and the torque-off cannot be confirmed)."""
    reason: str
    """In words, e.g. ``"watchdog: 3 consecutive failed reads (last: timeout (f1_mid, id 21))"``."""
    time: float = math.nan
    """Clock time when the stop was decided (s)."""

    def describe(self) -> str:
        """``"completed"``, ``"requested: SIGTERM"``, ``"safety: watchdog: ..."``."""
        return self.kind if self.kind == "completed" else f"{self.kind}: {self.reason}"


def bus_watchdog_s(config: RobotConfig) -> float:
    """How long the servos' own Bus Watchdog waits for an instruction during an episode (s): see
    :data:`BUS_WATCHDOG_MARGIN_PERIODS`; at most the register's longest, 2.54 s."""
    wanted = config.watchdog.max_data_age_s + BUS_WATCHDOG_MARGIN_PERIODS * config.control_period_s
    return min(BUS_WATCHDOG_MAX_S, wanted)


def bus_stop(exc: BusError, what: str, time: float, request: str | None = None) -> Stop:
    """The stop for a bus failure while doing ``what``: ``port_lost`` when the port itself is gone; ``requested``
    when a stop was asked for (``request``), since the bus gives its retries up for one; else ``safety``."""
    if isinstance(exc, PortLost):
        return Stop("port_lost", f"{what}: {exc}", time)
    if request is not None:
        return Stop("requested", f"{request} (while {what}: {exc})", time)
    return Stop("safety", f"bus failure while {what}: {exc}", time)


COMPLETED = Stop("completed", "every episode ran")


class Fallen(Exception):
    """Raised inside an episode whose robot fell (a recovery reset's config lets a fall end the episode)."""


class ControllerStop(Exception):
    """Raised inside the loop to leave it; carries the :class:`Stop`."""

    def __init__(self, stop: Stop) -> None:
        super().__init__(stop.describe())
        self.stop = stop


@dataclass
class LoopStats:
    """Per-cycle timing of every control cycle run (reset and episode cycles alike)."""

    period_error_s: list[float] = field(default_factory=list)
    """Actual minus nominal period of each cycle that followed another (s)."""
    cycle_time_s: list[float] = field(default_factory=list)
    """Work time of each cycle, from its start to the end of its write (s)."""
    overruns: int = 0
    """Cycles whose work ran past the next deadline (the next cycle then starts at once)."""

    def summary(self) -> dict[str, float | int | None]:
        """Percentiles in microseconds: ``period_error_*`` of the absolute period error, ``cycle_time_*``."""

        def pct(values: list[float], q: float) -> float | None:
            a = np.asarray(values, dtype=np.float64)
            a = a[np.isfinite(a)]
            return round(float(np.percentile(a, q)) * US_PER_S, 1) if a.size else None

        abs_err = [abs(e) for e in self.period_error_s]
        return {
            "period_error_p50_us": pct(abs_err, 50),
            "period_error_p99_us": pct(abs_err, 99),
            "period_error_max_us": pct(abs_err, 100),
            "cycle_time_p50_us": pct(self.cycle_time_s, 50),
            "cycle_time_p99_us": pct(self.cycle_time_s, 99),
            "overruns": self.overruns,
            "cycles": len(self.cycle_time_s),
        }


class RateTimer:
    """Deadlines every ``period_s``: sleep until ``spin_s`` before each, then spin on ``clock``.

    After an overrun the schedule restarts from the late start instead of bunching cycles to catch up.
    """

    def __init__(self, period_s: float, clock: Callable[[], float], sleep: Callable[[float], None],
                 spin_s: float) -> None:
        self.period_s = period_s
        self._clock = clock
        self._sleep = sleep
        self._spin_s = spin_s
        self._deadline: float | None = None
        self._last_start: float | None = None

    def restart(self) -> None:
        """The next :meth:`wait` returns at once and starts a new schedule (no period error for it)."""
        self._deadline = None
        self._last_start = None

    def wait(self) -> tuple[float, float, bool]:
        """Wait for the next deadline; returns (start time, period error (NaN after a restart), overrun)."""
        clock = self._clock
        overrun = False
        if self._deadline is not None:
            remaining = self._deadline - clock()
            if remaining < -TIME_EPSILON_S:
                overrun = True
            else:
                last = math.nan
                while remaining > TIME_EPSILON_S:
                    if remaining == last:
                        # A clock that stood still since the last look moves only when slept on (a lock-step
                        # clock, or a sleep too short to move it): spinning, or sleeping short, would never end.
                        self._sleep(remaining)
                    elif remaining > self._spin_s:
                        self._sleep(remaining - self._spin_s)
                    last = remaining
                    remaining = self._deadline - clock()
        start = clock()
        error = math.nan if self._last_start is None else (start - self._last_start) - self.period_s
        if self._deadline is None or overrun:
            self._deadline = start
        self._deadline += self.period_s
        self._last_start = start
        return start, error, overrun


class PolicyState:
    """The previous command and last action, kept exactly as :class:`sim.env.SimEnv` keeps them."""

    def __init__(self, limits: SafetyLimits) -> None:
        self.limits = limits
        spec = limits.spec
        self.command: FloatArray = clip_to_limits(spec.reset, limits)
        """The last command given to the bus, before quantization (rad): the rate limit's reference."""
        self.last_action: FloatArray = episode_start_action(self.command, limits)
        """The last applied action, clipped to [-1, 1]: the observation's ``last_action``."""

    def start(self, command: FloatArray) -> None:
        """A new episode from ``command``: the last action is the command normalized, as in ``SimEnv.reset``."""
        self.command = clip_to_limits(command, self.limits)
        self.last_action = episode_start_action(self.command, self.limits)

    def observe(self, task: Task, state: RobotState, goal: dict[str, float]) -> NDArray[np.float32]:
        """The policy's observation: the task's own function, as in the sim env."""
        return np.asarray(task.observe(state, self.last_action, goal))

    def act(self, action: object) -> Filtered:
        """Filter one policy output and advance the state (a held command keeps the last action)."""
        f = filter_action(action, self.command, self.limits)
        self.command = f.command
        if f.action is not None:
            self.last_action = f.action
        return f

    def hold(self, why: Hold) -> Filtered:
        """Keep the previous command for a cycle without a usable observation."""
        f = hold_command(self.command, self.limits, why)
        self.command = f.command
        return f


def episode_start_action(command: FloatArray, limits: SafetyLimits) -> FloatArray:
    """``last_action`` at the start of an episode, as in ``SimEnv.reset`` (:func:`sim.tasks.actions.start_action`)."""
    return start_action(command, limits.spec)


def check_policy(policy: Policy, obs_size: int, n_joints: int) -> None:
    """Call the policy once on a zero observation (also warms it up); a wrong shape is a :class:`UserError`."""
    try:
        out = np.asarray(policy(np.zeros(obs_size, dtype=np.float32)), dtype=np.float64)
    except Exception as exc:
        raise UserError(f"the policy failed on an observation of shape ({obs_size},): "
                        f"{type(exc).__name__}: {exc}") from exc
    if out.shape != (n_joints,):
        raise UserError(f"the policy maps an observation of shape ({obs_size},) to an action of shape {out.shape}; "
                        f"the task expects ({n_joints},)")


def check_camera(spec: TaskSpec, config: RobotConfig, has_camera: bool, has_estimator: bool) -> None:
    """A camera and an estimator come together, for a config with a ``camera`` section and a task with exactly one
    passive joint to estimate; a :class:`UserError` otherwise."""
    if has_camera != has_estimator:
        raise UserError("a camera needs an estimator that reads the passive joint from its frames, and an estimator "
                        "a camera")
    if not has_camera:
        return
    if config.camera is None:
        raise UserError(f"a camera was given, but {config.source} has no camera section (its frame rate and "
                        "stale-frame bound)")
    if len(spec.passive_joints) != 1:
        raise UserError(f"the task {spec.name!r} has {len(spec.passive_joints)} passive joints; a camera estimate "
                        "stands in for exactly one")


def check_robot(spec: TaskSpec, config: RobotConfig, has_imu: bool, has_tracker: bool = False) -> None:
    """The task must be the hardware config's (``config.task_spec()``), an IMU given exactly when the config has
    an ``imu`` section, and a position source exactly when it has a ``tracker``; a :class:`UserError` otherwise."""
    expected = config.task_spec()
    if spec.joint_names != expected.joint_names or spec.name != expected.name:
        raise UserError(f"the task {spec.name!r} does not match the hardware config's task "
                        f"{expected.name!r} ({config.source})")
    if not math.isclose(spec.control_period, config.control_period_s, rel_tol=0, abs_tol=1e-12):
        raise UserError(f"the task's control period {spec.control_period} s differs from the hardware config's "
                        f"{config.control_period_s} s; build the task with config.task_spec()")
    if config.imu is not None and not has_imu:
        raise UserError(f"{config.source} has an imu section: the controller needs the IMU to build the "
                        f"{spec.name} observation and to watch the tilt (robot.hardware.open_robot gives it)")
    if config.imu is None and has_imu:
        raise UserError(f"an IMU was given, but {config.source} has no imu section (its bounds and mounting)")
    if config.tracker is not None and not has_tracker:
        raise UserError(f"{config.source} has a tracker section ({config.tracker.kind}): the controller needs the "
                        f"position source to build the {spec.name} observation (robot.hardware.open_robot gives it)")
    if config.tracker is None and has_tracker:
        raise UserError(f"a position source was given, but {config.source} has no tracker section (its kind and "
                        "max_age_s)")


@dataclass(frozen=True)
class EpisodeResult:
    """One episode as run: the trajectory-log arrays and meta, and what it means."""

    arrays: dict[str, np.ndarray]
    """The arrays of ``s2r.core.trajlog`` (plus ``hold``, ``overrun`` and ``command_filtered``)."""
    meta: dict[str, Any]
    """Goal, success, stop reason, reward term names, reset details."""
    steps: int
    """Policy steps run (T; fewer than planned when stopped)."""
    complete: bool
    """Whether every planned step ran (a stop at the episode's last reading leaves it complete)."""
    success: bool
    """``task.success`` at the last reading (``False`` when it was stale or the episode is incomplete)."""
    episode_return: float
    """Sum of the rewards of the steps whose reading succeeded."""
    stop: Stop | None
    """Why the run stops after this episode, or ``None`` to go on."""
    true_success: bool | None = None
    """``task.success`` on the emulator's physics at the episode's end (``truth``); ``None`` without one, or for an
    incomplete episode."""


class _EpisodeLog:
    """Rows of one episode, appended as the cycles run."""

    def __init__(self, n_terms: int, imu: bool = False, tracker: bool = False,
                 goal: Mapping[str, float] | None = None, camera: str | None = None) -> None:
        self.n_terms = n_terms
        self.camera = camera
        """The camera's task camera name when the passive joint is observed through a camera."""
        self.estimates: list[float] = []
        self.frame_ages: list[float] = []
        self.frames: list[NDArray[np.uint8]] = []
        self.goal = np.array([float(v) for v in (goal or {}).values()], dtype=np.float64)
        """The episode's goal values (meta ``goal_names`` order), logged with every reading."""
        self.imu = imu
        self.tracker = tracker
        self.readings: list[Reading] = []
        self.obs: list[NDArray[np.float32]] = []
        self.actions: list[FloatArray] = []
        self.filtered: list[FloatArray] = []
        self.sent: list[FloatArray] = []
        self.hold: list[int] = []
        self.rewards: list[float] = []
        self.terms: list[FloatArray] = []
        self.comm_errors: list[int] = []
        self.cycle_time: list[float] = []
        self.period_error: list[float] = []
        self.overrun: list[bool] = []

    @property
    def steps(self) -> int:
        return max(0, min(len(self.sent), len(self.readings) - 1, len(self.rewards)))

    def step(self, action: FloatArray, f: Filtered, sent: FloatArray, cycle_time: float, comm_errors: int,
             period_error: float, overrun: bool) -> None:
        """One policy cycle's action, commands and timing."""
        self.actions.append(action)
        self.filtered.append(f.command)
        self.sent.append(sent)
        self.hold.append(int(f.hold))
        self.comm_errors.append(comm_errors)
        self.cycle_time.append(cycle_time)
        self.period_error.append(period_error)
        self.overrun.append(overrun)

    def reward(self, terms: dict[str, float], names: tuple[str, ...]) -> None:
        """One step's reward from its ``terms`` (``names``: the spec's order)."""
        self.terms.append(np.array([terms[name] for name in names]))
        self.rewards.append(total_reward(terms))

    def arrays(self) -> dict[str, np.ndarray]:
        t = self.steps
        rs = self.readings[: t + 1]
        n_j = rs[0].joint_pos.shape[0]

        def rows(values: list[FloatArray], width: int) -> np.ndarray:
            return np.asarray(values[:t], dtype=np.float64).reshape(t, width)

        base: dict[str, np.ndarray] = {}
        if self.imu:
            base = {
                "base_quat": np.array([r.base_quat for r in rs], dtype=np.float64).reshape(len(rs), 4),
                "base_angvel": np.array([r.base_angvel for r in rs], dtype=np.float64).reshape(len(rs), 3),
                "imu_age": np.array([r.time - r.imu_time for r in rs], dtype=np.float64),
            }
        if self.tracker:
            base |= {
                "base_pos": np.array([r.base_pos for r in rs], dtype=np.float64).reshape(len(rs), 3),
                "base_linvel": np.array([r.base_linvel for r in rs], dtype=np.float64).reshape(len(rs), 3),
                "pose_age": np.array([r.time - r.pose_time for r in rs], dtype=np.float64),
            }
        if self.camera is not None:
            base |= {
                "passive_estimate": np.asarray(self.estimates[: t + 1], dtype=np.float64).reshape(len(rs), 1),
                "frame_age": np.asarray(self.frame_ages[: t + 1], dtype=np.float64),
                f"camera_{self.camera}": np.stack(self.frames[: t + 1]).astype(np.uint8),
            }
        return {
            **base,
            "time": np.array([r.time for r in rs]),
            "joint_pos": np.array([r.joint_pos for r in rs]),
            "joint_vel": np.array([r.joint_vel for r in rs]),
            "joint_effort": np.array([r.state().joint_effort for r in rs]),
            "passive_pos": np.array([r.passive_pos for r in rs]),
            "passive_vel": np.array([r.passive_vel for r in rs]),
            "stale": np.array([r.stale for r in rs], dtype=np.int8),
            "obs": np.asarray(self.obs[: t + 1], dtype=np.float32),
            "goal": np.tile(self.goal, (len(rs), 1)),
            "action": rows(self.actions, n_j),
            "command": rows(self.sent, n_j),
            "command_filtered": rows(self.filtered, n_j),
            "hold": np.asarray(self.hold[:t], dtype=np.int8),
            "reward": np.asarray(self.rewards[:t], dtype=np.float64),
            "reward_terms": rows(self.terms, self.n_terms),
            "comm_errors": np.asarray(self.comm_errors[:t], dtype=np.int64),
            "cycle_time": np.asarray(self.cycle_time[:t], dtype=np.float64),
            "period_error": np.asarray(self.period_error[:t], dtype=np.float64),
            "overrun": np.asarray(self.overrun[:t], dtype=np.int8),
        }


class Controller:
    """Runs ``policy`` on the robot behind ``bus`` (already connected, torque on), one episode per call.

    ``task`` provides observation, reward terms, success and starts; its spec must be the hardware
    config's (``config.task_spec()``, the same joints and control period). ``should_stop`` is polled
    every cycle and returns a reason (e.g. ``"SIGTERM"``) to stop, or ``None``. ``imu`` is the torso IMU, required
    exactly when the config has an ``imu`` section; ``placer`` puts a floating base down at episode starts
    (``None``: a person does). ``tracker`` is the torso's position source, required exactly when the config has a
    ``tracker`` section. All three come from :func:`robot.hardware.open_robot`; ``imu`` and ``tracker`` must run on
    ``clock``. ``view`` is shown every policy step after its write, and each episode's end (:mod:`robot.view`; the
    live view of ``--view``). ``truth`` (an emulator's, :attr:`robot.hardware.RobotIO.truth`) is asked for the
    world's true state when an episode ends, to judge its success on the physics too (``meta["truth"]``); nothing
    acts on it.
    """

    def __init__(
        self,
        policy: Policy | FramePolicy,
        bus: Bus,
        task: Task,
        config: RobotConfig,
        *,
        settings: ControllerSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        logger: logging.Logger | None = None,
        should_stop: Callable[[], str | None] = lambda: None,
        imu: ImuSource | None = None,
        placer: ScenePlacer | None = None,
        view: StepView = NO_VIEW,
        tracker: PoseSource | None = None,
        camera: CameraSource | None = None,
        estimator: AngleEstimator | None = None,
        truth: GroundTruth | None = None,
    ) -> None:
        spec = task.spec
        check_robot(spec, config, imu is not None, tracker is not None)
        check_camera(spec, config, camera is not None, estimator is not None)
        self._frame_policy: FramePolicy | None = None
        """The policy as a :class:`FramePolicy` when it is one (checked once: a runtime protocol check is slow)."""
        self._obs_policy: Policy | None = None
        """The policy of the task's observation otherwise."""
        if isinstance(policy, FramePolicy):
            self._frame_policy = policy
        else:
            self._obs_policy = policy
        if self._frame_policy is not None and camera is None:
            raise UserError("a policy of the camera frame needs the camera (the config's camera section)")
        self._goal_names = tuple(f.name for f in getattr(task, "goal_fields", ()))
        """The task's goal values in the order a frame policy takes them."""
        self.camera = camera
        self.estimator = estimator
        self.truth = truth
        self._frame: CameraFrame | None = None
        """The camera's frame of the newest cycle."""
        self.bus = bus
        self.task = task
        self.config = config
        self.settings = settings if settings is not None else ControllerSettings()
        self.clock = clock
        self.sleep = sleep
        self.log = logger if logger is not None else logging.getLogger("robot.controller")
        self.should_stop = should_stop
        self.imu = imu
        self.placer = placer
        self.view = view
        """Shown each policy step (:mod:`robot.view`); detached, with an error logged, when it raises."""
        self.tracker = tracker
        self._raw: Reading | None = None
        """The newest reading before the pose was attached: the position source's input."""
        self._pose_frame: EpisodeFrame | None = None
        """The episode's frame for the position source's poses (:meth:`_anchor`); ``None``: the source's world."""
        self._truth_frame: EpisodeFrame | None = None
        """The episode's frame for the ground truth's state, anchored alike."""
        self._last_pose: PoseSample | None = None
        """The position source's newest pose, in its own world."""
        self.limits = SafetyLimits(spec, config.low, config.high)
        self.state = PolicyState(self.limits)
        self.reset: Reset = make_reset(spec, config, self.settings.reset_settings(), self.limits, self.log,
                                       placer.place if placer is not None else None)
        """The scripted reset before each episode (:mod:`robot.resets`)."""
        self._reset_io = _ResetCycle(self)
        self.stats = LoopStats()
        self.held_actions = 0
        """Policy outputs refused for a NaN or infinity."""
        self.episodes_run = 0
        self.failed_resets = 0
        """Resets that could not bring the robot to its start (:class:`robot.resets.ResetFailed`)."""
        self._failed_resets_in_a_row = 0
        self.righted_resets = 0
        """Resets that righted a fallen robot and then reached the start."""
        self.fallen_episodes = 0
        """Episodes ended by a fall (:class:`Fallen`)."""
        self._timer = RateTimer(config.control_period_s, clock, sleep, self.settings.spin_s)
        self._have_command = False
        self.errors_before_start = bus.counters.total_comm_errors
        """Communication errors the bus had counted before this controller (e.g. while connecting)."""
        self._accounted_errors = self.errors_before_start
        self._started = clock()
        self._cycle_start = math.nan
        self._cycle_error = math.nan
        self._cycle_overrun = False
        self._watchdog_s = 0.0
        """The servos' Bus Watchdog time while it is armed (s); 0 while it is not."""
        self._last_bus_io = clock()
        """When the last read or write through the bus ended (s): the servos' watchdog times from there."""

    @property
    def episode_steps(self) -> int:
        """Policy steps per episode."""
        steps = self.settings.episode_steps
        return self.task.spec.episode_steps if steps is None else steps

    # --- one cycle ------------------------------------------------------------------------------
    def _begin_cycle(self) -> Reading:
        """Wait for the deadline and read (the caller logs the reading, then calls :meth:`_check`)."""
        self._cycle_start, self._cycle_error, self._cycle_overrun = self._timer.wait()
        if math.isfinite(self._cycle_error):
            self.stats.period_error_s.append(self._cycle_error)
        if self._cycle_overrun:
            self.stats.overruns += 1
        silent = self.clock() - self._last_bus_io
        if self._watchdog_s and silent > self._watchdog_s:
            raise ControllerStop(Stop("safety", f"the host left the bus silent for {silent:.3f} s, past the servos' "
                                      f"bus watchdog ({self._watchdog_s:g} s): they have stopped", self.clock()))
        # The IMU and the camera first: their samples are then never younger than the servos' reply they go with.
        try:
            if self.camera is not None:
                self._frame = self.camera.poll()
            sample = self.imu.poll() if self.imu is not None else None
            reading = self.bus.read()
        except BusError as exc:  # PortLost from the IMU's line too
            raise self._bus_stop(exc, "reading") from exc
        self._last_bus_io = self.clock()
        if self.imu is not None:
            if sample is None:
                reading = replace(reading, base_quat=np.full(4, np.nan), base_angvel=np.full(3, np.nan))
            else:
                reading = replace(reading, base_quat=sample.quat, base_angvel=sample.angvel,
                                  imu_time=sample.receive_time)
        self._raw = reading
        return self._with_pose(reading)

    def _with_pose(self, reading: Reading) -> Reading:
        """``reading`` (servos and IMU) with the position source's newest pose, and the IMU's orientation turned to
        its heading; NaN position and velocity before the source's first valid pose."""
        if self.tracker is None:
            return reading
        try:
            pose = self.tracker.poll(reading.state())
        except OSError as exc:  # the receiver's socket closed, a lock-step emulator's datagrams lost
            raise ControllerStop(Stop("port_lost", f"position source lost: {type(exc).__name__}: {exc}",
                                      self.clock())) from exc
        self._last_pose = pose
        return self._attach(reading, pose)

    def _attach(self, reading: Reading, pose: PoseSample | None) -> Reading:
        """``reading`` with ``pose`` (in the source's world; the episode's frame applied here) and the IMU's
        orientation turned to its heading; NaN position and velocity without a pose."""
        if pose is None:
            return replace(reading, base_pos=np.full(3, np.nan), base_linvel=np.full(3, np.nan))
        if self._pose_frame is not None:
            pose = self._pose_frame.sample(pose)
        quat = reading.base_quat
        if quat.shape == (4,) and np.all(np.isfinite(quat)):
            quat = with_heading(quat, pose.yaw)
        return replace(reading, base_quat=quat, base_pos=pose.position, base_linvel=pose.linvel,
                       pose_time=pose.receive_time)

    def _bus_stop(self, exc: BusError, what: str) -> ControllerStop:
        """Leave the loop for a bus failure while doing ``what`` (see :func:`bus_stop`)."""
        return ControllerStop(bus_stop(exc, what, self.clock(), self.should_stop()))

    def _check(self, reading: Reading, check_tilt: bool = True) -> None:
        """A requested stop, then the watchdog: raises :class:`ControllerStop` to leave the loop (or
        :class:`Fallen`, see :meth:`_check_tilt`)."""
        request = self.should_stop()
        if request is not None:
            raise ControllerStop(Stop("requested", request, self.clock()))
        wd = self.config.watchdog
        counters = self.bus.counters
        if reading.stale and counters.consecutive_stale_reads >= wd.max_consecutive_failed_reads:
            raise ControllerStop(Stop("safety", f"watchdog: {counters.consecutive_stale_reads} consecutive failed "
                                      f"reads (last: {reading.error})", self.clock()))
        self._check_age(reading.time)
        if reading.alerts:
            try:
                errors = self.bus.hardware_errors()
            except PortLost as exc:
                raise self._bus_stop(exc, "reading the hardware error status") from exc
            except BusError as exc:
                raise ControllerStop(Stop("safety", f"servos {', '.join(reading.alerts)} raised the hardware "
                                          f"alert and their error status cannot be read: {exc}",
                                          self.clock())) from exc
            if errors:
                listing = ", ".join(f"{n}: {describe_hardware_error(e)}" for n, e in errors.items())
                raise ControllerStop(Stop("safety", f"servo hardware error ({listing})", self.clock()))
        if self.imu is not None:
            self._check_imu_age(reading.time)
            if check_tilt:
                self._check_tilt(reading)
        self._check_pose_age(reading.time)
        self._check_frame_age(reading.time)

    def _check_frame_age(self, now: float) -> None:
        """A stale camera: no new valid frame for longer than ``camera.max_frame_age_s``."""
        if self.camera is not None and self.config.camera is not None:
            self._check_silence(now, self.camera.counters, self.config.camera.max_frame_age_s, "camera stale",
                                "new frame")

    def _check_imu_age(self, now: float) -> None:
        """IMU silence: no valid frame for longer than ``imu.max_silence_s``."""
        if self.imu is not None and self.config.imu is not None:
            self._check_silence(now, self.imu.counters, self.config.imu.max_silence_s, "IMU silent",
                                "valid IMU frame")

    def _check_pose_age(self, now: float) -> None:
        """A stale or missing pose: none valid for longer than ``tracker.max_age_s``."""
        if self.tracker is not None and self.config.tracker is not None:
            self._check_silence(now, self.tracker.counters, self.config.tracker.max_age_s,
                                f"position source ({self.config.tracker.kind}) stale", "valid pose")

    def _check_silence(self, now: float, counters: StreamCounters, limit: float, what: str, sample: str) -> None:
        """A sensor silent for longer than ``limit`` (s) stops the run; before its first sample the bound runs from
        the controller's start, as the servo watchdog's does. The counters' text is made only for the stop: this
        runs every cycle."""
        last = counters.last_receive_time
        age = now - (self._started if last is None else last)
        if age > limit:
            shown = (f"no {sample} in {age * 1e3:.0f} ms since the start" if last is None
                     else f"no {sample} for {age * 1e3:.0f} ms")
            raise ControllerStop(Stop("safety", f"{what}: {shown} (limit {limit * 1e3:.0f} ms; {counters.describe()})",
                                      self.clock()))

    def _check_tilt(self, reading: Reading) -> None:
        """The torso tilted beyond ``imu.max_tilt_rad`` from upright: a safety stop, or :class:`Fallen` (the episode
        ends, the next reset rights the robot) with a recovery reset whose config says so."""
        if self.config.imu is None or not np.all(np.isfinite(reading.base_quat)):
            return  # no sample yet: the silence watchdog covers it
        angle = tilt(reading.base_quat)
        bound = self.config.imu.max_tilt_rad
        if angle > bound:
            what = (f"tilt {angle:.3f} rad ({angle * DEG_PER_RAD:.0f} deg) beyond the bound {bound:.3f} rad "
                    f"({bound * DEG_PER_RAD:.0f} deg)")
            if self.config.recovery is not None and self.config.recovery.fall_ends_episode:
                raise Fallen(what)
            raise ControllerStop(Stop("safety", what, self.clock()))

    def _check_age(self, now: float) -> None:
        last_ok = self.bus.counters.last_ok_time
        # Before the first good reading the bound runs from the controller's start: the servos hold their
        # positions since connect, so a failed first read is one failed read, not data of infinite age.
        age = now - (self._started if last_ok is None else last_ok)
        limit = self.config.watchdog.max_data_age_s
        if age > limit:
            shown = (f"no good reading in {age * 1e3:.0f} ms since the start" if last_ok is None
                     else f"the newest good reading is {age * 1e3:.0f} ms old")
            raise ControllerStop(Stop("safety", f"watchdog: {shown} (limit {limit * 1e3:.0f} ms)", self.clock()))

    def _write(self, command: FloatArray) -> FloatArray:
        """Send a command (after checking the data is still fresh); returns what was sent."""
        now = self.clock()
        self._check_age(now)
        self._check_imu_age(now)
        self._check_pose_age(now)
        self._check_frame_age(now)
        try:
            sent = self.bus.write(command)
        except HardwareFault as exc:
            raise ControllerStop(Stop("safety", f"servo hardware error: {exc}", self.clock())) from exc
        except BusError as exc:
            raise self._bus_stop(exc, "writing") from exc
        self._last_bus_io = self.clock()
        self._have_command = True
        return sent

    def _end_cycle(self) -> float:
        """Record the cycle's work time; returns it (s)."""
        duration = self.clock() - self._cycle_start
        self.stats.cycle_time_s.append(duration)
        return duration

    def _new_errors(self) -> int:
        """Communication errors counted since the last call."""
        total = self.bus.counters.total_comm_errors
        new, self._accounted_errors = total - self._accounted_errors, total
        return new

    # --- an episode -----------------------------------------------------------------------------
    def episode(self, rng: np.random.Generator, goal: Mapping[str, float] | None = None) -> EpisodeResult:
        """Reset, then run one episode of policy cycles; a stop ends it early (see ``EpisodeResult.stop``).

        ``goal`` (the task's goal dict, checked by the caller: :func:`robot.goals.check_goal`) replaces the goal the
        task draws; the start is drawn either way, so a commanded goal leaves the episode's start as it was."""
        task, spec = self.task, self.task.spec
        start = task.sample_start(rng)
        goal = dict(start.goal) if goal is None else {k: float(v) for k, v in goal.items()}
        target = clip_to_limits(np.asarray(start.joint_pos, dtype=np.float64), self.limits)
        camera = self.config.camera.name if self.camera is not None and self.config.camera is not None else None
        log = _EpisodeLog(len(spec.reward_terms), imu=self.imu is not None, tracker=self.tracker is not None,
                          goal=goal, camera=camera)
        info: dict[str, Any] = {}
        steps = self.episode_steps
        stop: Stop | None = None
        imu_before = self.imu.counters if self.imu is not None else None
        tracker_before = self.tracker.counters if self.tracker is not None else None
        camera_before = self.camera.counters if self.camera is not None else None
        recent_holds: deque[bool] = deque(maxlen=self.settings.held_window)
        if self.config.recovery is not None:
            info["failed_resets_before"] = self._failed_resets_in_a_row
        try:
            self._pose_frame = self._truth_frame = None
            reading = self._reset(start, target, info)
            self._failed_resets_in_a_row = 0
            self.righted_resets += bool(info.get("base_reset", {}).get("righted"))
            if self.tracker is not None and self._raw is not None:
                # A dead-reckoning source restarts at the start pose (the episode's world frame), then the episode's
                # first reading takes the restarted pose.
                self.tracker.start_episode(start_base_pose(start), self._raw.state())
                reading = self._with_pose(self._raw)
            if not info.get("base_reset", {}).get("placed", True):
                reading = self._anchor(start_base_pose(start), reading, info)
            self.state.start(target)
            # The actions before and after the step whose reward is due: the action-rate term's input.
            stepped = (self.state.last_action, self.state.last_action)
            for k in range(steps + 1):
                if k > 0:
                    reading = self._begin_cycle()  # wait for the deadline, read
                log.readings.append(reading)
                observed, failure = self._observed(reading, log)
                obs = self.state.observe(task, observed, goal)
                log.obs.append(obs)
                try:
                    if failure is not None:
                        raise failure
                    if k > 0:
                        self._check(reading)
                    if k == steps:
                        self._end_cycle()
                        break
                    before = self.state.last_action
                    action, f = self._decide(reading, obs, goal)
                    recent_holds.append(f.hold == Hold.NON_FINITE_ACTION)
                    self._check_holds(recent_holds)
                    sent = self._write(f.command)
                    cycle_time = self._end_cycle()
                    log.step(action, f, sent, cycle_time, self._new_errors(), self._cycle_error,
                             self._cycle_overrun)
                    self._show(StepRecord(self.episodes_run, k, reading, action, sent, int(f.hold), self._cycle_error,
                                          cycle_time, self._cycle_overrun,
                                          self._accounted_errors - self.errors_before_start))
                finally:
                    if k > 0:
                        # The previous step's reward, after this cycle's write: off the read-to-write path.
                        log.reward(step_reward_terms(task, reading.state(), goal, stepped[1], stepped[0]),
                                   spec.reward_terms)
                stepped = (before, self.state.last_action)
        except ControllerStop as exc:
            stop = exc.stop
            self.log.warning("stopping: %s", stop.describe())
        except Fallen as exc:
            info["fallen"] = str(exc)
            self.fallen_episodes += 1
            self.log.warning("the robot fell (%s): the episode ends, the next reset rights it", exc)
        except ResetFailed as exc:
            stop = self._reset_failed(exc)
        episode = self.episodes_run
        if self.camera is not None and camera_before is not None:
            info["camera"] = self.camera.counters.since(camera_before)
        self._end_episode(log, info, imu_before, tracker_before)
        result = self._result(log, goal, target, info, steps, stop)
        try:
            self.view.episode_end(episode, result.meta)
        except Exception as exc:
            self._detach_view(exc)
        return result

    def _anchor(self, start_pose: FloatArray | None, reading: Reading, info: dict[str, Any]) -> Reading:
        """A floating base the reset did not put at its start: the episode's frame is anchored where it stands
        (:class:`EpisodeFrame`), for the position source's poses and for the ground truth; returns the first reading
        in it. The meta's ``episode_frame`` (and ``truth_frame``) say how; without a pose yet the source's world is
        kept, and the meta says that too."""
        if start_pose is None:
            return reading
        if self.tracker is not None and self._raw is not None:
            pose = self._last_pose
            if pose is None:
                info["episode_frame"] = None
                self.log.warning("no pose at the episode's start: its goal stays in the position source's world")
            else:
                self._pose_frame = EpisodeFrame.anchoring(pose.position, pose.yaw, start_pose)
                info["episode_frame"] = self._pose_frame.describe()
                reading = self._attach(self._raw, pose)  # the same pose, now in the frame: no second poll
        if self.truth is not None:
            try:
                true = self.truth.true_state()
            except Exception as exc:  # measuring never stops a run
                self.log.warning("no ground truth at the episode's start: %s: %s", type(exc).__name__, exc)
            else:
                self._truth_frame = EpisodeFrame.anchoring(true.base_pos, yaw_of(true.base_quat), start_pose)
                info["truth_frame"] = self._truth_frame.describe()
        return reading

    def _reset_failed(self, exc: ResetFailed) -> Stop | None:
        """Count a failed reset; the stop once ``max_consecutive_failures`` ran in a row, else ``None`` (the episode
        does not run, and the next one's reset tries again)."""
        self.failed_resets += 1
        self._failed_resets_in_a_row += 1
        most = self.config.recovery.max_consecutive_failures if self.config.recovery is not None else 1
        if self._failed_resets_in_a_row < most:
            return None
        stop = Stop("safety", f"{self._failed_resets_in_a_row} failed resets in a row (last: {exc.reason})",
                    self.clock())
        self.log.warning("stopping: %s", stop.describe())
        return stop

    def _show(self, record: StepRecord) -> None:
        """One step to the view. A view that fails is detached: what shows the run must never stop the robot."""
        try:
            self.view.step(record)
        except Exception as exc:
            self._detach_view(exc)

    def _detach_view(self, exc: Exception) -> None:
        self.log.error("the view failed (%s: %s); the run goes on without it", type(exc).__name__, exc)
        self.view = NO_VIEW

    def _reset(self, start: EpisodeStartLike, target: FloatArray, info: dict[str, Any]) -> Reading:
        """The episode's reset (``self.reset``) to ``start`` with the joints' command ``target``; returns the
        episode's first reading. ``info`` gets the meta's reset fields, also when a stop ends the reset."""
        passive_start = np.asarray(start.passive_pos, dtype=np.float64)
        try:
            # Before a placement too, so the reset's first cycle comes as soon after it as without the arming;
            # a placement longer than the watchdog (it sends the servos nothing) is the stall stop.
            self._arm_bus_watchdog()
            return self.reset.run(self._reset_io, ResetStart(target, passive_start, start_base_pose(start)), info)
        finally:
            info["reset_comm_errors"] = self._new_errors()

    def _end_episode(self, log: _EpisodeLog, info: dict[str, Any], imu_before: ImuCounters | None,
                     tracker_before: TrackerCounters | None = None) -> None:
        """Disarm the servos' watchdog and account the errors and IMU frames since the last step."""
        self._disarm_bus_watchdog()
        # Errors after the last logged step (the final reading, a stop, the disarming) go to that step, or to the
        # reset when no step was logged: every counted error is in some episode's log.
        if log.comm_errors:
            log.comm_errors[-1] += self._new_errors()
        else:
            info["reset_comm_errors"] += self._new_errors()
        if self.imu is not None and imu_before is not None:
            info["imu"] = self.imu.counters.since(imu_before)
        if self.tracker is not None and tracker_before is not None:
            info["tracker"] = self.tracker.counters.since(tracker_before)
        self.episodes_run += 1

    def _arm_bus_watchdog(self) -> None:
        """Arm the servos' Bus Watchdog for the episode: a host that dies leaves no servo chasing its last goal."""
        timeout = bus_watchdog_s(self.config)
        try:
            self.bus.set_bus_watchdog(timeout)
        except BusError as exc:
            raise self._bus_stop(exc, "arming the servos' bus watchdog") from exc
        self._last_bus_io = self.clock()
        self._watchdog_s = timeout

    def _disarm_bus_watchdog(self) -> None:
        """Disarm it between episodes (log writing and learning leave the bus silent); a failure is logged only: the
        torque-off that follows a stop does not need it, and the next connect clears it."""
        if not self._watchdog_s:
            return
        self._watchdog_s = 0.0
        try:
            self.bus.set_bus_watchdog(0.0)
        except BusError as exc:
            self.log.error("could not disarm the servos' bus watchdog: %s", exc)

    def _check_holds(self, recent: deque[bool]) -> None:
        """A safety stop when more than ``max_held_fraction`` of the newest ``held_window`` cycles refused the policy's
        action (``recent``: one flag per cycle, newest last)."""
        s = self.settings
        held = sum(recent)
        if held > s.max_held_fraction * s.held_window:
            raise ControllerStop(Stop("safety", f"held actions: the policy's output was NaN or infinite in {held} of "
                                      f"the last {len(recent)} cycles (limit {s.max_held_fraction:g} of "
                                      f"{s.held_window} cycles)", self.clock()))

    def _observed(self, reading: Reading, log: _EpisodeLog) -> tuple[RobotState, ControllerStop | None]:
        """The state the policy observes: the reading's, with a camera the estimator's angle of the cycle's frame as
        the passive joint's (NaN before the first frame, or when the estimator failed: the stop to raise once the
        reading is logged, returned second); the estimate, frame and its age are logged."""
        state = reading.state()
        if self.camera is None or self.estimator is None:
            return state, None
        frame = self._frame
        angle, failure = math.nan, None
        if frame is not None:
            try:
                angle = float(self.estimator.angle(frame.image))
            except Exception as exc:  # any failure of the estimator must stop the robot safely, as the policy's
                failure = ControllerStop(Stop("safety", f"perception failure: {type(exc).__name__}: {exc}",
                                              self.clock()))
        log.estimates.append(angle)
        log.frame_ages.append(math.inf if frame is None else reading.time - frame.receive_time)
        log.frames.append(np.zeros(self._blank_shape(), dtype=np.uint8) if frame is None else frame.image)
        return replace(state, passive_pos=np.array([angle]), passive_vel=np.zeros(1)), failure

    def _blank_shape(self) -> tuple[int, int, int]:
        camera = self.config.camera
        return (0, 0, 3) if camera is None else (camera.height, camera.width, 3)

    def _decide(self, reading: Reading, obs: NDArray[np.float32], goal: dict[str, float]
                ) -> tuple[FloatArray, Filtered]:
        """The policy's action (NaN when not run) and the filtered command for one cycle."""
        n = self.limits.spec.n_joints
        frame = self._frame
        if (reading.stale or (self.camera is not None and frame is None)
                or (self.imu is not None and not np.all(np.isfinite(reading.base_quat)))
                or (self.tracker is not None and not np.all(np.isfinite(reading.base_pos)))):
            return np.full(n, np.nan), self.state.hold(Hold.STALE_READING)
        try:
            if self._frame_policy is not None:
                assert frame is not None  # a frame policy comes with a camera (checked at construction)
                raw = self._frame_policy.act_frame(frame.image, reading.joint_pos, self.state.last_action,
                                                   np.array([goal[name] for name in self._goal_names]))
            else:
                assert self._obs_policy is not None
                raw = self._obs_policy(obs)
            action = np.asarray(raw, dtype=np.float64)
            f = self.state.act(action)
        except Exception as exc:  # any failure of the policy (or its output's shape) must stop the robot safely
            raise ControllerStop(Stop("safety", f"policy failure: {type(exc).__name__}: {exc}",
                                      self.clock())) from exc
        if f.hold == Hold.NON_FINITE_ACTION:
            self.held_actions += 1
        return action.reshape(n), f

    def _result(self, log: _EpisodeLog, goal: dict[str, float], start_command: FloatArray, info: dict[str, Any],
                planned: int, stop: Stop | None) -> EpisodeResult:
        spec = self.task.spec
        steps = log.steps
        complete = steps == planned
        last = log.readings[steps] if log.readings else None
        success = bool(complete and last is not None and not last.stale and self.task.success(last.state(), goal))
        # The task's own end (the walk past its tilt bound), as simulation ends there: learning from the log then
        # takes the last transition as terminal, as it does in simulation.
        terminated = bool(last is not None and not last.stale and self.task.terminated(last.state(), goal))
        rewards = np.asarray(log.rewards[:steps], dtype=np.float64)
        episode_return = float(np.sum(rewards[np.isfinite(rewards)]))
        arrays = log.arrays() if log.readings else {}
        meta = {
            "goal": goal,
            "goal_names": list(goal),
            "success": success,
            "complete": complete,
            "terminated": terminated,
            "stop_reason": stop.describe() if stop is not None else (
                f"fallen: {info['fallen']}" if "fallen" in info
                else f"reset failed: {info['reset_failed']}" if "reset_failed" in info else "time_limit"),
            "reward_terms": list(spec.reward_terms),
            "return": episode_return,
            "steps": steps,
            "episode_steps": planned,
            "start_command": [float(v) for v in start_command],
            "stale_readings": int(sum(r.stale for r in log.readings[: steps + 1])),
            "held_actions": int(sum(h == Hold.NON_FINITE_ACTION for h in log.hold[:steps])),
            **info,
        }
        truth = self._truth(goal) if complete else None
        if truth is not None:
            meta["truth"] = truth
        true_success = None if truth is None else bool(truth["success"])
        return EpisodeResult(arrays, meta, steps, complete, success, episode_return, stop, true_success)

    def _truth(self, goal: dict[str, float]) -> dict[str, Any] | None:
        """The world's true state at the episode's end and the task's success on it, from ``truth``; ``None``
        without one. A failed request is logged and leaves the episode unjudged: measuring never stops a run."""
        if self.truth is None:
            return None
        try:
            state = self.truth.true_state()
        except Exception as exc:  # an emulator that cannot answer must not end an otherwise good run
            self.log.warning("no ground truth for this episode: %s: %s", type(exc).__name__, exc)
            return None
        if self._truth_frame is not None:
            state = self._truth_frame.state(state)
        elif self._pose_frame is not None:
            return None  # anchored for the robot but not for the truth: the two would judge different goals
        return {"time": float(state.time), "success": bool(self.task.success(state, goal)),
                "passive_pos": [float(v) for v in state.passive_pos],
                "base_pos": [float(v) for v in state.base_pos], "base_quat": [float(v) for v in state.base_quat]}

    # --- stopping -------------------------------------------------------------------------------
    def shutdown(self, stop: Stop) -> bool:
        """End the run: a safety stop holds the last safe command (or, with ``config.safe_pose_rad``, moves to the
        safe pose rate-limited first) for ``safe_stop_hold_s``; then the torque goes off. Returns whether the
        torque is off (a failure is logged, never raised)."""
        # A lost port may be the IMU's, with the servos still reachable: hold (or fold) as for any safety stop.
        if stop.kind in SAFETY_STOP_KINDS and self._have_command:
            held = True
            try:
                if self.config.safe_pose_rad is not None:
                    self._move_to_safe_pose()
                self.bus.write(self.state.command)
            except BusError as exc:
                self.log.error("could not hold the last command: %s", exc)
                held = not isinstance(exc, PortLost)  # nothing holds on a dead line: waiting only delays the exit
            if held:
                self._hold(self.settings.safe_stop_hold_s)
        try:
            self.bus.torque(False)
        except BusError as exc:
            self.log.error("could not turn the torque off: %s", exc)
            return False
        return True

    def _hold(self, duration_s: float) -> None:
        """Sleep ``duration_s`` in control periods, cut short by a requested stop (the person asking for the torque
        to go off now is obeyed within one period)."""
        end = self.clock() + duration_s
        while True:
            remaining = end - self.clock()
            if remaining <= TIME_EPSILON_S:
                return
            if self.should_stop() is not None:
                self.log.warning("stop requested during the safety hold: the torque goes off now")
                return
            self.sleep(min(remaining, self.config.control_period_s))

    def _move_to_safe_pose(self) -> None:
        """Rate-limited steps from the last command to ``config.safe_pose_rad``, one write per control period.

        No reading is needed or waited for (the stop may be a dead IMU or a failing bus): each goal lies within
        ``max_step`` of the previous one and inside the limits, which the servos' own position loops follow.
        A failed write raises :class:`BusError` to the caller, which goes on to turn the torque off."""
        if self.config.safe_pose_rad is None:
            return
        target = clip_to_limits(np.asarray(self.config.safe_pose_rad, dtype=np.float64), self.limits)
        steps = math.ceil(float(np.max(np.abs(target - self.state.command))) / self.limits.max_step) + 1
        self.log.warning("moving to the safe pose (%d steps) before the torque goes off", steps)
        for _ in range(steps):
            if np.array_equal(self.state.command, target):
                break
            command = step_towards(target, self.state.command, self.limits)
            self.state.command = target.copy() if np.allclose(command, target, rtol=0, atol=1e-12) else command
            self.bus.write(self.state.command)
            self.sleep(self.config.control_period_s)


class _ResetCycle:
    """The controller's cycle as a reset drives it (:class:`robot.resets.ResetIO`): every read is checked, every write
    first checks the data's age, and a failure leaves as the controller's stop."""

    def __init__(self, controller: Controller) -> None:
        self._c = controller

    def now(self) -> float:
        return self._c.clock()

    def restart_timer(self) -> None:
        self._c._timer.restart()

    def begin_cycle(self, check_tilt: bool = True) -> Reading:
        reading = self._c._begin_cycle()
        self._c._check(reading, check_tilt)
        return reading

    def end_cycle(self) -> None:
        self._c._end_cycle()

    @property
    def command(self) -> FloatArray:
        return self._c.state.command

    @property
    def commanded(self) -> bool:
        return self._c._have_command

    def start_from(self, command: FloatArray) -> None:
        self._c.state.command = command

    def write(self, command: FloatArray) -> None:
        self._c.state.command = command
        self._c._write(command)

    def placed(self, command: FloatArray) -> None:
        self._c.state.command = command
        self._c._have_command = True

    @contextmanager
    def passive_driven(self, names: tuple[str, ...]) -> Iterator[None]:
        try:
            with self._c.bus.passive_driven(*names):
                yield
        except BusError as exc:  # switching the servos, or a write between
            raise self._c._bus_stop(exc, f"driving {', '.join(names)} for the reset") from exc

    def write_passive(self, goals: dict[str, float]) -> None:
        c = self._c
        c._check_age(c.clock())
        try:
            c.bus.write_passive(goals)
        except HardwareFault as exc:
            raise ControllerStop(Stop("safety", f"servo hardware error: {exc}", c.clock())) from exc
        except ValueError as exc:  # a goal beyond the Goal Position register (a valve turned ~256 times one way)
            raise ControllerStop(Stop("safety", f"cannot drive {', '.join(goals)} for the reset: {exc}",
                                      c.clock())) from exc
        c._last_bus_io = c.clock()

    def safety_stop(self, reason: str) -> Exception:
        return ControllerStop(Stop("safety", reason, self._c.clock()))
