"""The hardware config: which servos drive which joints, how they are calibrated, and how the bus runs.

One YAML file per robot (``hardware_configs/dclaw.yaml``, ``hardware_configs/dkitty.yaml``), loaded into frozen
dataclasses and checked against the task spec at load: a bad field is a :class:`~s2r.core.errors.UserError` naming
the field by its dotted path and what was expected. Motor IDs, calibration and limits live only here, never in code.

A task with a floating base (``TaskSpec.base_joint``, a legged robot) observes the base's orientation and
angular velocity, so its config must have an ``imu`` section (:class:`ImuConfig`: the serial IMU of
``robot.imu``); a fixed-base task's config must not. ``encoders`` may be left out when the task has no
passive joints.

A task with cameras (``TaskSpec.cameras``) may have a ``camera`` section (:class:`CameraConfig`): a camera read
through OpenCV (``robot.camera``) that shows what the named task camera sees, for a deployment that estimates a
passive joint from its frames instead of reading its encoder (``s2r deploy --perception``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robot.dynamixel.control_table import (
    BAUD_CODES,
    BUS_WATCHDOG_MAX_S,
    MAX_ID,
    SAME_TABLE_MODELS,
    OperatingMode,
    Register,
)
from robot.dynamixel.timing import state_read_attempt_s
from robot.dynamixel.units import (
    A_PER_CURRENT_UNIT,
    BIT_TIME_PER_BYTE,
    MAX_POSITION_TICK,
    RAD_S_PER_VELOCITY_UNIT,
    S_PER_RETURN_DELAY_UNIT,
    joint_limits_to_ticks,
)
from robot.imu.protocol import FRAME_BYTES, SUPPORTED_VERSIONS
from robot.tracker.protocol import DATAGRAM_BYTES
from s2r.core.errors import UserError
from s2r.core.fields import Fields
from s2r.core.resources import config_path
from s2r.core.yamlfile import read_yaml_file
from sim import resolve_env_id
from sim.tasks import make_task
from sim.tasks.base import observes_base_position
from sim.tasks.spec import FloatArray, TaskSpec

AUTO_PORT = "auto"
"""``port`` value meaning: the one USB serial adapter found, or the emulator when the driver is ``emulator``."""
SUPPORTED_PROTOCOL = 2.0
_OPERATING_MODES = {
    "position": OperatingMode.POSITION,
    "extended_position": OperatingMode.EXTENDED_POSITION,
    "current_based_position": OperatingMode.CURRENT_BASED_POSITION,
}
_LIMIT_TOLERANCE_RAD = 1e-9
MAX_CONTROL_PERIOD_S = BUS_WATCHDOG_MAX_S / 2
"""Longest control period (s): the servos' Bus Watchdog must outlast a cycle and a late one after it."""
DEFAULT_PASSIVE_RESET_VELOCITY_RAD_S = 2.0
"""Default rate limit of a passive joint driven during a reset (rad/s), a little under the task's finger limit."""
_MAX_LATENCY_TIMER_S = 0.255
_MAX_REPLY_SPIN_S = 0.01
"""Longest configurable spin while waiting for a reply (s): beyond it the CPU is better given back."""
MAX_RETRIES = 20
"""Most extra attempts of a write or of a connect step (-): a servo that did not answer 21 times in a row is not
there, and every attempt is time in which nothing else reaches the bus."""
MAX_IMU_LINE_USE = 0.9
"""Largest share of the IMU line's capacity its frames may take (-): a full line delays every frame."""
MAX_IMU_RATE_HZ = 2000.0
"""Fastest IMU stream accepted (frames/s): the reader decodes frames in Python every control cycle."""
MIN_SILENCE_FRAMES = 2
"""The IMU silence timeout must cover at least this many frame periods, so that one late frame is not silence."""
TRACKER_KINDS = ("mocap", "estimator", "none")
"""``tracker.kind``: motion capture over UDP (``robot.tracker.udp``), leg odometry (``robot.tracker.estimator``),
or none."""
DEFAULT_TRACKER_PORT = 9870
"""UDP port the pose datagrams arrive on by default (on 127.0.0.1)."""
MAX_TRACKER_RATE_HZ = 1000.0
"""Fastest pose stream accepted (datagrams/s): the receiver decodes them in Python every control cycle."""
MIN_TRACKER_AGE_FRAMES = 2
"""``tracker.max_age_s`` covers at least this many datagram periods, so that one lost datagram is not a stop."""
MAX_CAMERA_FPS = 240.0
"""Fastest camera stream accepted (frames/s): every frame is decoded on the robot's computer."""
MIN_CAMERA_AGE_FRAMES = 2
"""``camera.max_frame_age_s`` covers at least this many frame periods, so that one late frame is not a stop."""
CAMERA_URL_SCHEMES = ("http://", "https://", "rtsp://", "udp://", "tcp://")
"""Stream URLs a ``camera.source`` may name (OpenCV's FFmpeg backend opens them)."""
DEFAULT_VELOCITY_WINDOW_S = 0.1
DEFAULT_STANCE_TOLERANCE_M = 0.002
_UNIT_QUAT_TOLERANCE = 1e-6
"""How far from 1 the norm of a configured quaternion may be (-)."""
RESET_KINDS = ("placer", "recovery")
"""``reset.kind``: a scene placer puts the robot down (the emulator and the mock; a person on the real robot), or the
robot recovers and stands up by itself (:class:`robot.resets.RecoveryReset`)."""
MIN_CALIBRATION_SPAN_RAD = 0.2
"""Least distance between a joint's two calibration poses (rad, about 11 deg): a hand-held pose is a few
degrees off, and the direction of the servo must still stand out from that."""


@dataclass(frozen=True)
class ServoModelConfig:
    """The servo model every joint and encoder uses."""

    name: str
    """Model name, e.g. ``"XM430-W350"``."""
    model_number: int
    """Model number the servo reports to PING; connecting fails on any other."""


@dataclass(frozen=True)
class JointConfig:
    """One actuated joint and the servo that drives it."""

    name: str
    """Joint name from the task spec (e.g. ``"f0_top"``)."""
    id: int
    """Servo ID on the bus."""
    scale: float
    """Calibration: ``joint = raw_rad * scale + offset_rad`` (``-1`` for a servo mounted the other way)."""
    offset_rad: float
    """Calibration offset (rad); ``raw_rad`` is 0 at 2048 ticks."""
    low_rad: float
    """Lower joint limit (rad); inside the task spec's range, written to the servo's position limits."""
    high_rad: float
    """Upper joint limit (rad)."""
    velocity_limit_rad_s: float
    """Servo Velocity Limit register (rad/s at the joint)."""
    current_limit_a: float
    """Servo Current Limit register (A)."""


@dataclass(frozen=True)
class EncoderConfig:
    """A torque-off servo that reads one of the task's passive joints (e.g. the valve)."""

    name: str
    """Passive joint name from the task spec (e.g. ``"valve"``)."""
    id: int
    """Servo ID on the bus."""
    scale: float
    """Calibration: ``angle = raw_rad * scale + offset_rad``."""
    offset_rad: float
    """Calibration offset (rad)."""
    resettable: bool = False
    """Whether the encoder's servo may be position-controlled during a scripted reset, to put the passive joint
    at the episode's start (as ROBEL's D'Claw drives its valve servo); its torque is off during episodes."""
    reset_velocity_limit_rad_s: float = DEFAULT_PASSIVE_RESET_VELOCITY_RAD_S
    """Fastest the passive joint is driven during a reset (rad/s): the controller's rate limit on the goal it sends."""


@dataclass(frozen=True)
class RetryConfig:
    """How often a failed transaction is tried again before it counts as failed."""

    read: int
    """Extra attempts of the per-cycle state read; after them the reading is stale."""
    write: int
    """Extra attempts of a write that expects a status packet (torque, settings)."""
    connect: int
    """Extra attempts of each PING and setting read/write while connecting."""


@dataclass(frozen=True)
class WatchdogConfig:
    """When the controller must stop because it no longer sees the robot."""

    max_consecutive_failed_reads: int
    """Stop after this many stale readings in a row."""
    max_data_age_s: float
    """Stop when the newest good reading is older than this (s)."""


@dataclass(frozen=True)
class ImuConfig:
    """The torso IMU of a legged robot: a serial device streaming ``robot.imu.protocol`` frames."""

    port: str
    """Serial device of the IMU (``/dev/serial/by-id/...``), or ``"auto"``: the IMU the emulator serves (emulator
    driver), the mock's (mock driver); the real robot's must be named here or with ``--imu-port``."""
    baud: int
    """Line rate (bit/s); must carry ``rate_hz`` frames with room to spare."""
    rate_hz: float
    """Frames per second the IMU streams (Hz); at least one per control period."""
    frame_version: int
    """Frame format version the IMU speaks (see ``robot.imu.protocol``); only 1 exists."""
    max_tilt_rad: float
    """Tilt of the torso from upright (rad) beyond which the controller stops safely; at most the task's
    ``max_tilt_rad`` when the task has one."""
    max_silence_s: float
    """Longest time without a valid IMU frame (s) before the controller stops safely."""
    mounting_quat: tuple[float, float, float, float]
    """Orientation of the IMU's axes in the torso frame (w, x, y, z; sensor -> torso); identity when the IMU's
    axes are the torso's (x forward, y left, z up)."""

    @property
    def frame_period_s(self) -> float:
        """Time between two frames (s)."""
        return 1.0 / self.rate_hz


@dataclass(frozen=True)
class TrackerConfig:
    """Where the torso's position and heading come from (``robot.tracker``): what the walk task observes."""

    kind: str
    """``mocap``: pose datagrams (``robot.tracker.protocol``) on UDP ``127.0.0.1:port`` from a motion-capture bridge
    or the emulator; ``estimator``: leg odometry on the IMU's heading (drifts with the distance walked)."""
    max_age_s: float
    """Longest time without a valid pose (s) before the controller stops safely; at least the control period."""
    velocity_window_s: float = DEFAULT_VELOCITY_WINDOW_S
    """The torso's velocity is the position's difference over at least this long (s) of capture time."""
    port: int = DEFAULT_TRACKER_PORT
    """``mocap``: the UDP port on 127.0.0.1 the datagrams arrive on (0: any free port, for an emulator started by
    the same process, which is told the port)."""
    rate_hz: float = 0.0
    """``mocap``: datagrams per second the bridge sends (Hz), at least one per control period; the emulator sends
    at this rate. 0 for the estimator (it runs once per control cycle)."""
    stance_tolerance_m: float = DEFAULT_STANCE_TOLERANCE_M
    """``estimator``: how close to the floor a foot must stay between two polls to count as standing (m; see
    ``robot.tracker.estimator``). 2 mm suits the trot of ``benchmarks/tracker_drift.py`` at 10 Hz."""

    @property
    def period_s(self) -> float:
        """``mocap``: time between two datagrams (s)."""
        return 1.0 / self.rate_hz


@dataclass(frozen=True)
class CameraConfig:
    """A camera that shows one task camera's view (``robot.camera``), read through OpenCV's ``VideoCapture``."""

    name: str
    """The task camera it stands for (``TaskSpec.cameras``, e.g. ``"top"``): its pose and intrinsics are what an
    estimator trained on that camera's renders expects."""
    source: int | str
    """A USB camera's index (``0`` is ``/dev/video0``), a stream URL (``http://...``, ``rtsp://...``), or ``"auto"``:
    the MJPEG stream of the emulator started by the same process (``robot.emulator.camera``)."""
    width: int
    """Frame width (pixels); the task camera's."""
    height: int
    """Frame height (pixels); the task camera's."""
    fps: float
    """Frames per second the camera delivers (Hz); the emulator renders at it in real time."""
    max_frame_age_s: float
    """Longest time without a new valid frame (s) before the controller stops safely."""

    @property
    def frame_period_s(self) -> float:
        """Time between two frames (s)."""
        return 1.0 / self.fps


@dataclass(frozen=True)
class RecoveryConfig:
    """The ``reset`` section with ``kind: recovery``: a legged robot rights itself and stands up before each episode,
    with no placer and no person (:class:`robot.resets.RecoveryReset`). Poses are in task order, rad, inside the
    joint limits."""

    crouch_pose_rad: tuple[float, ...]
    """The crouch the legs fold to first, safe from any stance (the D'Kitty's legs folded under the torso); the
    stand-up extends from it to the episode's start pose."""
    righting_poses_rad: tuple[tuple[float, ...], ...]
    """The self-righting sequence of a fallen robot, each pose reached rate-limited and held ``hold_s``, then back to
    the crouch: one attempt."""
    fallen_tilt_rad: float = 0.6
    """A torso tilted more than this from upright (rad), crouched and at rest, has fallen: it is righted first."""
    upright_tilt_rad: float = 0.25
    """The reset is done when the torso is within this tilt of upright (rad) at the start pose."""
    joint_tolerance_rad: float = 0.2
    """... and every joint within this of its start (rad): weight-bearing legs sag under load, by more than the
    controller's ``reset_tolerance_rad``."""
    righting_attempts: int = 2
    """Most self-righting attempts in one reset; a robot still fallen after them is a failed reset."""
    hold_s: float = 1.0
    """How long each reached pose of the sequence is held for the torso to come to rest (s), and how long the robot
    stays at the start pose before the episode starts."""
    rest_rate_rad_s: float = 0.5
    """Before anything moves, an upright torso turning faster than this (rad/s, the IMU's gyroscope) is still rocking
    or tipping over: the reset holds the legs where the episode left them until it comes to rest or falls, since
    folding a tipping robot throws it onto its back."""
    rest_s: float = 0.3
    """... at rest once the rate has stayed under ``rest_rate_rad_s`` this long (s) ..."""
    rest_timeout_s: float = 3.0
    """... waiting at most this long (s); then the reset goes on as if it were at rest."""
    stand_waypoints: int = 4
    """Segments of the stand-up from the crouch to the start pose: every joint passes each waypoint together, so the
    legs extend evenly instead of the fastest joint first."""
    max_consecutive_failures: int = 3
    """After this many failed resets in a row the run stops safely (a safety stop): a robot that keeps failing to
    right itself needs a person."""
    fall_ends_episode: bool = True
    """A tilt beyond ``imu.max_tilt_rad`` during an episode ends the episode (``stop_reason`` ``fallen: ...``) and
    the next reset rights the robot, instead of stopping the run; false keeps the tilt a safety stop."""
    catch_pose_rad: tuple[float, ...] | None = None
    """Where the legs go first when a reset finds the robot fallen; ``None``: the righting sequence at once. A robot
    that has just fallen is still rolling, and whether it stops on its side or rolls on onto its back is decided in
    the next few tenths of a second: the catch is sent with the reading that found the fall, each joint at its own
    rate limit (they need not arrive together), and held ``hold_s``; the righting sequence follows."""


@dataclass(frozen=True)
class CalibrationPoses:
    """The two poses ``s2r calibrate`` reads the servos in (``robot.calibrate``): a person holds the robot in each,
    torque off. Task order, rad, inside the joint limits; the poses differ by at least
    :data:`MIN_CALIBRATION_SPAN_RAD` at every joint."""

    a_rad: tuple[float, ...]
    """Pose A, usually every joint at its zero."""
    b_rad: tuple[float, ...]
    """Pose B: every joint at a known angle away from pose A (a jig or a protractor sets it)."""


@dataclass(frozen=True)
class RobotConfig:
    """A robot's hardware: bus, servos, calibration, limits, timing; loaded by :func:`load_config`."""

    robot: str
    """Robot name; must equal the task spec's ``robot``."""
    task: str
    """Task the robot runs (short name, e.g. ``"dclaw-turn"``)."""
    port: str
    """Serial device (``/dev/ttyUSB0``) or ``"auto"``."""
    baud: int
    """Bus baud rate (bit/s); the servos must already be set to it."""
    protocol: float
    """Dynamixel protocol version; only 2.0 is supported."""
    servo: ServoModelConfig
    """Servo model of every joint and encoder."""
    operating_mode: str
    """Operating mode of the joint servos: ``position``, ``extended_position`` or ``current_based_position``."""
    joints: tuple[JointConfig, ...]
    """Actuated joints in task-spec order."""
    encoders: tuple[EncoderConfig, ...]
    """Passive-joint encoders in the order of the task spec's ``passive_joints``."""
    control_period_s: float
    """Control loop period (s); equals the task spec's unless ``control_period_override``."""
    control_period_override: bool
    """Whether ``control_period_s`` deliberately differs from the task spec's."""
    return_delay_s: float
    """Servo Return Delay Time (s, 2 us steps) written at connect; 0 is fastest."""
    latency_timer_s: float
    """USB-serial latency timer (s); the packet timeout is bytes * byte time + 2 * this + 2 ms."""
    reply_spin_s: float
    """How long the host polls for a reply without yielding the CPU (s) before it waits in ``select``: a core
    that sleeps through the wait wakes 50-200 us late. 0 always yields."""
    fast_sync_read: bool
    """Read the servos' state with FAST_SYNC_READ (one combined status packet, X-series firmware v45 and later)
    instead of SYNC_READ (one status packet per servo); a failed fast read is retried as a plain sync read."""
    retries: RetryConfig
    """Retry counts."""
    watchdog: WatchdogConfig
    """Controller watchdog thresholds."""
    source: str = "<memory>"
    """Where the config was loaded from (for messages)."""
    imu: ImuConfig | None = None
    """The torso IMU; present exactly when the task has a floating base."""
    safe_pose_rad: tuple[float, ...] | None = None
    """Joint positions (rad, task order, inside the limits) a safety stop moves to, rate-limited, before the torque
    goes off (a legged robot folds its legs so that it settles low instead of collapsing from a height);
    ``None``: a safety stop holds the last command."""
    calibration_poses: CalibrationPoses | None = None
    """The poses ``s2r calibrate`` measures the joints' offsets and directions in; ``None``: it cannot run."""
    tracker: TrackerConfig | None = None
    """The torso's position source (the ``tracker`` section); ``None``: none (``kind: none`` or no section). A
    task that observes the base position (the walk) needs one; a fixed-base task must not have one."""
    camera: CameraConfig | None = None
    """The ``camera`` section: a camera showing a task camera's view; ``None``: none. Opened only by a deployment that
    reads through it (``s2r deploy --perception``)."""
    recovery: RecoveryConfig | None = None
    """The ``reset`` section's self-recovery (``kind: recovery``); ``None``: the default ``kind: placer``, a scene
    placer (or a person) puts the robot at each episode's start."""

    # --- derived views ------------------------------------------------------------------------
    @property
    def joint_names(self) -> tuple[str, ...]:
        """Joint names in task-spec order."""
        return tuple(j.name for j in self.joints)

    @property
    def joint_ids(self) -> tuple[int, ...]:
        """Servo IDs of the joints, in task-spec order."""
        return tuple(j.id for j in self.joints)

    @property
    def encoder_ids(self) -> tuple[int, ...]:
        """Servo IDs of the passive-joint encoders."""
        return tuple(e.id for e in self.encoders)

    @property
    def resettable_passive_joints(self) -> tuple[str, ...]:
        """Passive joints whose encoder servo may drive them during resets, in task-spec order."""
        return tuple(e.name for e in self.encoders if e.resettable)

    def encoder(self, name: str) -> EncoderConfig:
        """The encoder of a passive joint, by name; ``KeyError`` naming the known ones otherwise."""
        for e in self.encoders:
            if e.name == name:
                return e
        raise KeyError(f"no encoder for a passive joint named {name!r} in {self.source}; "
                       f"known: {', '.join(e.name for e in self.encoders)}")

    @property
    def all_ids(self) -> tuple[int, ...]:
        """Every servo ID: joints, then encoders."""
        return self.joint_ids + self.encoder_ids

    def name_of(self, servo_id: int) -> str:
        """The joint or encoder name of a servo ID."""
        names = {j.id: j.name for j in self.joints} | {e.id: e.name for e in self.encoders}
        if servo_id in names:
            return names[servo_id]
        raise KeyError(f"no servo with ID {servo_id} in {self.source}")

    @property
    def low(self) -> FloatArray:
        """Lower joint limits (rad)."""
        return np.array([j.low_rad for j in self.joints])

    @property
    def high(self) -> FloatArray:
        """Upper joint limits (rad)."""
        return np.array([j.high_rad for j in self.joints])

    @property
    def joint_scale(self) -> FloatArray:
        """Calibration scales of the joints."""
        return np.array([j.scale for j in self.joints])

    @property
    def joint_offset(self) -> FloatArray:
        """Calibration offsets of the joints (rad)."""
        return np.array([j.offset_rad for j in self.joints])

    @property
    def encoder_scale(self) -> FloatArray:
        """Calibration scales of the encoders."""
        return np.array([e.scale for e in self.encoders])

    @property
    def encoder_offset(self) -> FloatArray:
        """Calibration offsets of the encoders (rad)."""
        return np.array([e.offset_rad for e in self.encoders])

    @property
    def operating_mode_value(self) -> OperatingMode:
        """The Operating Mode register value for :attr:`operating_mode`."""
        return _OPERATING_MODES[self.operating_mode]

    def task_spec(self) -> TaskSpec:
        """The task spec at this config's control period: the one value the sim and the loop share."""
        spec = base_task_spec(self.task)
        if spec.control_period == self.control_period_s:
            return spec
        return spec.with_control_period(self.control_period_s)


def base_task_spec(task: str) -> TaskSpec:
    """The unmodified spec of a task named on the command line or in a config."""
    try:
        return make_task(resolve_env_id(task)).spec
    except KeyError as exc:
        raise UserError(f"unknown task {task!r}: {exc.args[0]}") from None


# --- loading ------------------------------------------------------------------------------------
def load_config(path: str | Path) -> RobotConfig:
    """Load and validate a hardware config YAML file: ``path``, or a shipped config by name (``dclaw``) or by its
    path in the repository (``hardware_configs/dclaw.yaml``) from any directory
    (:func:`s2r.core.resources.config_path`)."""
    file = config_path(path)
    source = str(path if file == Path(path) else file)
    return config_from_mapping(read_yaml_file(file, "hardware config"), source=source)


def config_from_mapping(data: Any, source: str = "<memory>") -> RobotConfig:
    """Validate an already-parsed config (e.g. ``s2r.core.yamlfile.load_yaml`` output) into a :class:`RobotConfig`."""
    root = _Node(data, "", source)
    robot = root.text("robot")
    task = root.text("task")
    spec = base_task_spec(task)
    if robot != spec.robot:
        root.fail("robot", f"the task {task!r} runs on the robot {spec.robot!r}", robot)

    port = root.text("port", AUTO_PORT)
    baud = root.integer("baud")
    if baud not in BAUD_CODES:
        root.fail("baud", f"one of {', '.join(str(b) for b in BAUD_CODES)}", baud)
    protocol = root.number("protocol", SUPPORTED_PROTOCOL)
    if protocol != SUPPORTED_PROTOCOL:
        root.fail("protocol", "2.0 (only Dynamixel protocol 2.0 is supported)", protocol)

    sv = root.child("servo")
    servo = ServoModelConfig(sv.text("name"), sv.integer("model_number"))
    if servo.model_number not in SAME_TABLE_MODELS:
        models = " or ".join(f"{number} ({name})" for number, name in SAME_TABLE_MODELS.items())
        sv.fail("model_number", f"{models}, the models whose control table is implemented", servo.model_number)
    sv.done()

    mode = root.text("operating_mode", "position")
    if mode not in _OPERATING_MODES:
        root.fail("operating_mode", f"one of {', '.join(_OPERATING_MODES)}", mode)

    defaults = root.child("joint_defaults", optional=True)
    default_vel = defaults.number("velocity_limit_rad_s", None)
    default_cur = defaults.number("current_limit_a", None)
    defaults.done()

    joints = _joints(root.child("joints"), spec, default_vel, default_cur, mode)
    encoders = _encoders(root.child("encoders", optional=not spec.passive_joints), spec)
    ids: dict[int, str] = {}
    for section, items in (("joints", joints), ("encoders", encoders)):
        for item in items:
            if item.id in ids:
                root.fail(f"{section}.{item.name}.id", f"an ID not already used by {ids[item.id]}", item.id)
            ids[item.id] = item.name

    period = root.number("control_period_s", spec.control_period)
    override = root.flag("control_period_override", False)
    if not (period > 0 and math.isfinite(period)):
        root.fail("control_period_s", "a positive number of seconds", period)
    if period > spec.episode_duration:
        root.fail("control_period_s", f"a period no longer than the task's episode of {spec.episode_duration:g} s "
                  "(an episode holds at least one control period)", period)
    if period > MAX_CONTROL_PERIOD_S:
        # The servos' Bus Watchdog, armed during episodes, stops them after its longest time without an instruction.
        root.fail("control_period_s", f"a period of at most {MAX_CONTROL_PERIOD_S:g} s (half the servos' longest bus "
                  f"watchdog, {BUS_WATCHDOG_MAX_S:g} s, so that one late cycle does not stop them)", period)
    if not override and not math.isclose(period, spec.control_period, rel_tol=0, abs_tol=1e-12):
        root.fail("control_period_s", f"the task's control period {spec.control_period} s (set "
                  "control_period_override: true to run the loop at another period)", period)

    return_delay = root.number("return_delay_s", 0.0)
    top_delay = Register.RETURN_DELAY_TIME.spec.high * S_PER_RETURN_DELAY_UNIT
    if not 0.0 <= return_delay <= top_delay:
        root.fail("return_delay_s", f"a delay in [0, {top_delay:g}] s", return_delay)
    latency_timer = root.number("latency_timer_s", 0.001)
    if not 0.0 <= latency_timer <= _MAX_LATENCY_TIMER_S:
        root.fail("latency_timer_s", f"a time in [0, {_MAX_LATENCY_TIMER_S}] s", latency_timer)

    fast_sync_read = root.flag("fast_sync_read", False)
    reply_spin = root.number("reply_spin_s", 0.0)
    if not 0.0 <= reply_spin <= _MAX_REPLY_SPIN_S:
        root.fail("reply_spin_s", f"a time in [0, {_MAX_REPLY_SPIN_S}] s", reply_spin)

    rt = root.child("retries", optional=True)
    retries = RetryConfig(rt.count("read", 2), rt.count("write", 2), rt.count("connect", 3))
    rt.done()
    wd = root.child("watchdog", optional=True)
    max_failed = wd.count("max_consecutive_failed_reads", 3)
    if max_failed < 1:
        wd.fail("max_consecutive_failed_reads", "an integer >= 1", max_failed)
    max_age = wd.number("max_data_age_s", 0.25)
    if not (max_age > 0 and math.isfinite(max_age)):
        wd.fail("max_data_age_s", "a positive number of seconds", max_age)
    wd.done()
    _check_read_deadline(root, retries, max_age, period, baud, len(ids), latency_timer, return_delay)
    imu = _imu(root, spec, period)
    tracker = _tracker(root, task, spec, period)
    safe_pose = _optional_pose(root, "safe_pose_rad", joints)
    poses = _calibration_poses(root.child("calibration_poses", optional=True), joints)
    recovery = _recovery(root, spec, joints)
    camera = _camera(root, spec, period)
    root.done()
    return RobotConfig(
        robot=robot, task=task, port=port, baud=baud, protocol=protocol, servo=servo, operating_mode=mode,
        joints=joints, encoders=encoders, control_period_s=period, control_period_override=override,
        return_delay_s=return_delay, latency_timer_s=latency_timer, fast_sync_read=fast_sync_read,
        reply_spin_s=reply_spin, retries=retries, watchdog=WatchdogConfig(max_failed, max_age), source=source,
        imu=imu, safe_pose_rad=safe_pose, calibration_poses=poses, tracker=tracker,
        recovery=recovery, camera=camera,
    )


def _check_read_deadline(root: _Node, retries: RetryConfig, max_age_s: float, period_s: float, baud: int,
                         n_servos: int, latency_timer_s: float, return_delay_s: float) -> None:
    """Retries and watchdog bounds that can work together: the data-age bound covers at least one control period
    (a good reading arrives once per period at best), and every configured attempt of the state read, each failing
    at worst (:func:`robot.dynamixel.timing.state_read_attempt_s`), fits in it: the bus gives a read up at that
    bound, so retries beyond it would be configured but never run, and before it a read must not block a stop."""
    if max_age_s < period_s:
        root.fail("watchdog.max_data_age_s", f"at least the control period {period_s:g} s (a good reading comes at "
                  "most once per period)", max_age_s)
    attempt_s = state_read_attempt_s(baud, n_servos, latency_timer_s, return_delay_s)
    worst_s = (1 + retries.read) * attempt_s
    if worst_s > max_age_s:
        fit = max(0, math.floor(max_age_s / attempt_s) - 1)
        root.fail("retries.read", f"at most {fit}: {1 + retries.read} failing state reads of {n_servos} servos take up "
                  f"to {worst_s:.3f} s ({attempt_s * 1e3:.1f} ms each at {baud} bit/s with a "
                  f"{latency_timer_s * 1e3:g} ms latency timer, the drain after each included), more than "
                  f"watchdog.max_data_age_s {max_age_s:g} s; lower retries.read or raise the data-age bound",
                  retries.read)
    for key in ("write", "connect"):
        if getattr(retries, key) > MAX_RETRIES:
            root.fail(f"retries.{key}", f"an integer in [0, {MAX_RETRIES}]", getattr(retries, key))


def _imu(root: _Node, spec: TaskSpec, control_period_s: float) -> ImuConfig | None:
    """The ``imu`` section: required for a floating-base task, refused otherwise."""
    raw = root.raw("imu")
    if spec.base_joint is None:
        if raw is not None:
            root.fail("imu", f"absent: the task {spec.name!r} has no floating base for an IMU to measure", raw)
        return None
    if raw is None:
        raise UserError(f"{root.source}: field imu is missing: the task {spec.name!r} observes the orientation and "
                        "angular velocity of its floating base, which the torso IMU measures")
    node = root.child("imu")
    port = node.text("port", AUTO_PORT)
    version = node.integer("frame_version", max(SUPPORTED_VERSIONS))
    if version not in SUPPORTED_VERSIONS:
        node.fail("frame_version", f"one of {', '.join(str(v) for v in SUPPORTED_VERSIONS)} "
                  "(the frame formats robot.imu.protocol implements)", version)
    rate = node.number("rate_hz")
    if not 1.0 / control_period_s <= rate <= MAX_IMU_RATE_HZ:
        node.fail("rate_hz", f"a rate in [{1.0 / control_period_s:g}, {MAX_IMU_RATE_HZ:g}] Hz (at least one frame per "
                  f"control period of {control_period_s:g} s)", rate)
    baud = node.integer("baud")
    need = FRAME_BYTES[version] * BIT_TIME_PER_BYTE * rate / MAX_IMU_LINE_USE
    if not baud >= need:
        node.fail("baud", f"a line rate of at least {math.ceil(need)} bit/s, to carry {rate:g} frames/s of "
                  f"{FRAME_BYTES[version]} bytes with {BIT_TIME_PER_BYTE} bits per byte at "
                  f"{MAX_IMU_LINE_USE:.0%} line use", baud)
    task_tilt = spec.extras.get("max_tilt_rad")
    top = math.pi if task_tilt is None else float(task_tilt)
    tilt_bound = node.number("max_tilt_rad", task_tilt)
    if not 0.0 < tilt_bound <= top + _LIMIT_TOLERANCE_RAD:
        which = "pi" if task_tilt is None else f"the task's max_tilt_rad {top:.6g}"
        node.fail("max_tilt_rad", f"a tilt in (0, {top:.6g}] rad (at most {which})", tilt_bound)
    silence = node.number("max_silence_s")
    least = MIN_SILENCE_FRAMES / rate
    if not silence >= least:
        node.fail("max_silence_s", f"a time of at least {least:g} s ({MIN_SILENCE_FRAMES} frame periods at "
                  f"{rate:g} Hz)", silence)
    mounting = _unit_quat(node, "mounting_quat")
    node.done()
    return ImuConfig(port, baud, rate, version, tilt_bound, silence, mounting)


def _tracker(root: _Node, task: str, spec: TaskSpec, control_period_s: float) -> TrackerConfig | None:
    """The ``tracker`` section: required (mocap or estimator) for a task that observes the base position, allowed
    for a floating base, refused for a fixed one."""
    raw = root.raw("tracker")
    needs = observes_base_position(make_task(resolve_env_id(task)))
    if raw is None:
        if needs:
            raise UserError(f"{root.source}: field tracker is missing: the task {spec.name!r} observes the torso's "
                            "position and heading, which a position source gives (tracker.kind: mocap, or "
                            "estimator for leg odometry)")
        return None
    node = root.child("tracker")
    if spec.base_joint is None:
        root.fail("tracker", f"absent: the task {spec.name!r} has no floating base to track", raw)
    kind = node.choice("kind", TRACKER_KINDS)
    if kind == "none":
        if needs:
            node.fail("kind", f"mocap or estimator: the task {spec.name!r} observes the torso's position and heading",
                      kind)
        node.done()
        return None
    if kind == "mocap":
        port = node.integer("port", DEFAULT_TRACKER_PORT)
        if not 0 <= port <= 65535:
            node.fail("port", "a UDP port in 0..65535 (0: any free port, for an emulator started by the controller)",
                      port)
        rate = node.number("rate_hz")
        if not 1.0 / control_period_s <= rate <= MAX_TRACKER_RATE_HZ:
            node.fail("rate_hz", f"a rate in [{1.0 / control_period_s:g}, {MAX_TRACKER_RATE_HZ:g}] Hz (at least one "
                      f"pose per control period of {control_period_s:g} s)", rate)
        least = max(control_period_s, MIN_TRACKER_AGE_FRAMES / rate)
        why = (f"{MIN_TRACKER_AGE_FRAMES} datagram periods at {rate:g} Hz ({DATAGRAM_BYTES}-byte datagrams) and the "
               f"control period {control_period_s:g} s")
    else:
        port, rate = DEFAULT_TRACKER_PORT, 0.0
        for key in ("port", "rate_hz"):
            if key in node.data:
                node.fail(key, "absent: the estimator runs on the servos and the IMU, once per control cycle",
                          node.data[key])
        least = control_period_s
        why = f"the control period {control_period_s:g} s (the estimator updates once per cycle)"
    max_age = node.number("max_age_s")
    if not (math.isfinite(max_age) and max_age >= least):
        node.fail("max_age_s", f"a time of at least {least:g} s ({why})", max_age)
    window = node.number("velocity_window_s", DEFAULT_VELOCITY_WINDOW_S)
    if not 0.0 < window <= max_age:
        node.fail("velocity_window_s", f"a time in (0, {max_age:g}] s (at most tracker.max_age_s)", window)
    stance = DEFAULT_STANCE_TOLERANCE_M
    if kind == "estimator":
        stance = node.number("stance_tolerance_m", DEFAULT_STANCE_TOLERANCE_M)
        if not 0.0 < stance <= 1.0:
            node.fail("stance_tolerance_m", "a height in (0, 1] m", stance)
    node.done()
    return TrackerConfig(kind, max_age, window, port, rate, stance)


def _camera(root: _Node, spec: TaskSpec, control_period_s: float) -> CameraConfig | None:
    """The optional ``camera`` section: one of the task's cameras, at its resolution, fast enough for the loop."""
    raw = root.raw("camera")
    if raw is None:
        return None
    cameras = {c.name: c for c in spec.cameras}
    if not cameras:
        root.fail("camera", f"absent: the task {spec.name!r} has no camera whose view a camera could show", raw)
    node = root.child("camera")
    name = node.text("name", next(iter(cameras)))
    if name not in cameras:
        node.fail("name", f"one of the task {spec.name!r}'s cameras: {', '.join(cameras)}", name)
    task_camera = cameras[name]
    source = node.raw("source", AUTO_PORT)
    if isinstance(source, bool) or not isinstance(source, int | str):
        node.fail("source", "a camera index (0, 1, ...), a stream URL or 'auto'", source)
    if isinstance(source, int) and source < 0:
        node.fail("source", "a camera index of at least 0 (0 is /dev/video0)", source)
    if isinstance(source, str) and source != AUTO_PORT and not source.startswith(CAMERA_URL_SCHEMES):
        node.fail("source", f"a camera index (0, 1, ...), a stream URL ({', '.join(CAMERA_URL_SCHEMES)}...) or "
                  "'auto' (the emulator's stream)", source)
    width = node.integer("width", task_camera.width)
    height = node.integer("height", task_camera.height)
    if (width, height) != (task_camera.width, task_camera.height):
        node.fail("width", f"the task camera {name!r}'s resolution {task_camera.width}x{task_camera.height} pixels "
                  "(an estimator reads frames of that size)", f"{width}x{height}")
    fps = node.number("fps")
    # Slower than the loop is allowed (a loop at 50 Hz may read a 30 fps camera: cycles then share a frame); the
    # stale-frame bound says how old a frame may get.
    if not 0.0 < fps <= MAX_CAMERA_FPS:
        node.fail("fps", f"a rate in (0, {MAX_CAMERA_FPS:g}] Hz", fps)
    max_age = node.number("max_frame_age_s")
    least = max(control_period_s, MIN_CAMERA_AGE_FRAMES / fps)
    if not max_age >= least:
        node.fail("max_frame_age_s", f"a time of at least {least:g} s ({MIN_CAMERA_AGE_FRAMES} frame periods at "
                  f"{fps:g} Hz and the control period {control_period_s:g} s)", max_age)
    node.done()
    return CameraConfig(name, source, width, height, fps, max_age)


def _recovery(root: _Node, spec: TaskSpec, joints: tuple[JointConfig, ...]) -> RecoveryConfig | None:
    """The optional ``reset`` section: ``kind: placer`` (the default, no other field) or ``kind: recovery`` (a
    floating base only: it needs the IMU's tilt)."""
    raw = root.raw("reset")
    if raw is None:
        return None
    node = root.child("reset")
    kind = node.choice("kind", RESET_KINDS)
    if kind == "placer":
        node.done()
        return None
    if spec.base_joint is None:
        node.fail("kind", f"placer: the task {spec.name!r} has a fixed base, which has nothing to recover from",
                  kind)
    crouch = _pose(node, "crouch_pose_rad", joints)
    seq = node.raw("righting_poses_rad")
    if not isinstance(seq, list) or not seq:
        node.fail("righting_poses_rad", "a non-empty list of poses, each a list of one angle per joint (rad)", seq)
    righting = tuple(_pose_value(node, f"righting_poses_rad[{k}]", p, joints) for k, p in enumerate(seq))
    fallen = node.number("fallen_tilt_rad", 0.6)
    if not 0.0 < fallen < math.pi:
        node.fail("fallen_tilt_rad", "a tilt in (0, pi) rad", fallen)
    upright_tilt = node.number("upright_tilt_rad", 0.25)
    if not 0.0 < upright_tilt <= fallen:
        node.fail("upright_tilt_rad", f"a tilt in (0, {fallen:.6g}] rad (at most fallen_tilt_rad)", upright_tilt)
    tolerance = node.number("joint_tolerance_rad", 0.2)
    if not 0.0 < tolerance <= 1.0:
        node.fail("joint_tolerance_rad", "an angle in (0, 1] rad", tolerance)
    attempts = node.count("righting_attempts", 2)
    hold = node.number("hold_s", 1.0)
    if not 0.0 <= hold <= 10.0:
        node.fail("hold_s", "a time in [0, 10] s", hold)
    rest_rate = node.number("rest_rate_rad_s", 0.5)
    if not 0.0 < rest_rate <= 10.0:
        node.fail("rest_rate_rad_s", "an angular rate in (0, 10] rad/s", rest_rate)
    rest = node.number("rest_s", 0.3)
    if not 0.0 <= rest <= 10.0:
        node.fail("rest_s", "a time in [0, 10] s", rest)
    rest_timeout = node.number("rest_timeout_s", 3.0)
    if not rest <= rest_timeout <= 60.0:
        node.fail("rest_timeout_s", f"a time in [{rest:g}, 60] s (at least rest_s)", rest_timeout)
    waypoints = node.integer("stand_waypoints", 4, low=1)
    failures = node.integer("max_consecutive_failures", 3, low=1)
    fall_ends = node.flag("fall_ends_episode", True)
    catch = _optional_pose(node, "catch_pose_rad", joints)
    node.done()
    return RecoveryConfig(crouch, righting, fallen, upright_tilt, tolerance, attempts, hold, rest_rate, rest,
                          rest_timeout, waypoints, failures, fall_ends, catch)


def _unit_quat(node: _Node, key: str) -> tuple[float, float, float, float]:
    v = node.raw(key, [1.0, 0.0, 0.0, 0.0])
    if (not isinstance(v, list) or len(v) != 4
            or any(isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x) for x in v)
            or abs(math.sqrt(sum(float(x) ** 2 for x in v)) - 1.0) > _UNIT_QUAT_TOLERANCE):
        node.fail(key, "a unit quaternion [w, x, y, z] (norm 1 within "
                  f"{_UNIT_QUAT_TOLERANCE:g}), e.g. [1, 0, 0, 0] for an IMU aligned with the torso", v)
    w, x, y, z = (float(c) for c in v)
    return (w, x, y, z)


def _optional_pose(node: _Node, key: str, joints: tuple[JointConfig, ...]) -> tuple[float, ...] | None:
    """The optional pose ``key`` (``safe_pose_rad``, ``reset.catch_pose_rad``): checked as :func:`_pose` says, or
    ``None`` when absent."""
    return None if node.raw(key) is None else _pose(node, key, joints)


def _pose(node: _Node, key: str, joints: tuple[JointConfig, ...]) -> tuple[float, ...]:
    """The pose ``key``: one angle per joint, in task order, inside the joint limits."""
    return _pose_value(node, key, node.raw(key), joints)


def _pose_value(node: _Node, key: str, v: Any, joints: tuple[JointConfig, ...]) -> tuple[float, ...]:
    """``v``, the value of the pose ``key``, checked as :func:`_pose` says."""
    if (not isinstance(v, list) or len(v) != len(joints)
            or any(isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x) for x in v)):
        node.fail(key, f"a list of {len(joints)} finite angles (rad), one per joint in task order "
                  f"({', '.join(j.name for j in joints)})", v)
    for k, j in enumerate(joints):
        if not j.low_rad <= float(v[k]) <= j.high_rad:
            node.fail(f"{key}[{k}]", f"an angle of {j.name} inside its limits [{j.low_rad:.6g}, "
                      f"{j.high_rad:.6g}] rad", v[k])
    return tuple(float(x) for x in v)


def _calibration_poses(node: _Node, joints: tuple[JointConfig, ...]) -> CalibrationPoses | None:
    """The optional ``calibration_poses`` section: poses ``a`` and ``b``, apart at every joint."""
    if not node.data:
        return None
    a, b = _pose(node, "a", joints), _pose(node, "b", joints)
    for k, j in enumerate(joints):
        if not abs(b[k] - a[k]) >= MIN_CALIBRATION_SPAN_RAD:
            node.fail(f"b[{k}]", f"an angle of {j.name} at least {MIN_CALIBRATION_SPAN_RAD:g} rad from pose A's "
                      f"{a[k]:.6g} rad (the servo's direction must stand out from how well a person holds a pose)",
                      b[k])
    node.done()
    return CalibrationPoses(a, b)


def _joints(node: _Node, spec: TaskSpec, default_vel: float | None, default_cur: float | None,
            mode: str) -> tuple[JointConfig, ...]:
    names = node.keys()
    if tuple(names) != spec.joint_names:
        node.fail("", f"exactly the task's joints in task order: {', '.join(spec.joint_names)}", ", ".join(names))
    vel_top = Register.VELOCITY_LIMIT.spec.high * RAD_S_PER_VELOCITY_UNIT
    cur_top = Register.CURRENT_LIMIT.spec.high * A_PER_CURRENT_UNIT
    out = []
    for k, name in enumerate(spec.joint_names):
        j = node.child(name)
        servo_id = j.servo_id("id")
        scale = j.scale("scale")
        offset = j.number("offset_rad", 0.0)
        lo, hi = spec.joint_low[k], spec.joint_high[k]
        low = j.number("low_rad", lo)
        high = j.number("high_rad", hi)
        if not lo - _LIMIT_TOLERANCE_RAD <= low < hi:
            j.fail("low_rad", f"a limit inside the task's range [{lo:.6g}, {hi:.6g}] rad", low)
        if not low < high <= hi + _LIMIT_TOLERANCE_RAD:
            j.fail("high_rad", f"a limit above low_rad and inside the task's range [{lo:.6g}, {hi:.6g}] rad", high)
        if _OPERATING_MODES[mode] != OperatingMode.EXTENDED_POSITION:
            t_lo, t_hi = joint_limits_to_ticks(low, high, scale, offset)
            if t_lo < 0 or t_hi > MAX_POSITION_TICK:
                j.fail("offset_rad", "a calibration that maps the joint limits into one servo turn "
                       f"(0..{MAX_POSITION_TICK} ticks); they map to {t_lo}..{t_hi}", offset)
            if t_hi <= t_lo:
                # Rounded inwards, the limits met: the servo's position limits would leave it no travel.
                j.fail("scale", "a calibration scale that maps the joint's range onto more than one servo tick "
                       f"(usually 1 or -1); [{low:.6g}, {high:.6g}] rad maps to {t_lo}..{t_hi}", scale)
        # The registers hold whole units, and a limit that rounds to 0 leaves a servo that cannot move.
        vel = j.number("velocity_limit_rad_s", default_vel)
        if not RAD_S_PER_VELOCITY_UNIT <= vel <= vel_top:
            j.fail("velocity_limit_rad_s", f"a speed in [{RAD_S_PER_VELOCITY_UNIT:.4g}, {vel_top:.4g}] rad/s (at least "
                   "one unit of the Velocity Limit register)", vel)
        cur = j.number("current_limit_a", default_cur)
        if not A_PER_CURRENT_UNIT <= cur <= cur_top:
            j.fail("current_limit_a", f"a current in [{A_PER_CURRENT_UNIT:.4g}, {cur_top:.4g}] A (at least one unit of "
                   "the Current Limit register)", cur)
        j.done()
        out.append(JointConfig(name, servo_id, scale, offset, low, high, vel, cur))
    return tuple(out)


def _encoders(node: _Node, spec: TaskSpec) -> tuple[EncoderConfig, ...]:
    names = node.keys()
    if tuple(names) != spec.passive_joints:
        node.fail("", f"one encoder per passive joint of the task, in order: {', '.join(spec.passive_joints)}",
                  ", ".join(names))
    vel_top = Register.VELOCITY_LIMIT.spec.high * RAD_S_PER_VELOCITY_UNIT
    out = []
    for name in spec.passive_joints:
        e = node.child(name)
        servo_id, scale, offset = e.servo_id("id"), e.scale("scale"), e.number("offset_rad", 0.0)
        resettable = e.flag("resettable", False)
        speed = e.number("reset_velocity_limit_rad_s", DEFAULT_PASSIVE_RESET_VELOCITY_RAD_S)
        # Slower than one velocity unit, a reset would crawl for minutes or never settle.
        if not RAD_S_PER_VELOCITY_UNIT <= speed <= vel_top:
            e.fail("reset_velocity_limit_rad_s", f"a speed in [{RAD_S_PER_VELOCITY_UNIT:.4g}, {vel_top:.4g}] rad/s "
                   "(at least one unit of the Velocity Limit register)", speed)
        if not resettable and "reset_velocity_limit_rad_s" in e.data:
            e.fail("reset_velocity_limit_rad_s", "absent unless resettable is true (the encoder is never driven)",
                   speed)
        e.done()
        out.append(EncoderConfig(name, servo_id, scale, offset, resettable, speed))
    return tuple(out)


class _Node(Fields):
    """:class:`s2r.core.fields.Fields` with the servo fields of a hardware config."""

    def servo_id(self, key: str) -> int:
        v = self.integer(key)
        if not 0 <= v <= MAX_ID:
            self.fail(key, f"a servo ID in 0..{MAX_ID}", v)
        return v

    def scale(self, key: str) -> float:
        v = self.number(key, 1.0)
        if v == 0.0:
            self.fail(key, "a non-zero calibration scale (usually 1 or -1)", v)
        return v
