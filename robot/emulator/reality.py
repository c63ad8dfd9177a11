"""The emulated robot's "reality": physics parameters, engine, latency, sensor noise and bus timing.

A reality YAML file (every field optional; defaults are the nominal simulation and an ideal bus)::

    engine: mujoco                 # mujoco | pybullet
    physics_timestep_s: 0.0025     # physics step of the emulated robot (s)
    seed: 0                        # seed of the sensor noise
    params:                        # named physical parameters, as listed by `s2r params dclaw-turn`
      valve_damping: 0.08
      finger_kp: 3.5
      tip_friction: 0.8
      action_latency: 0.01         # s from a goal position arriving to the motors acting on it
      obs_noise_std: 0.002         # rad, Gaussian noise on every position (joints and valve encoder)
      base_orientation_noise_std: 0.01  # rad, a legged robot's IMU: random rotation of every orientation frame
      base_angvel_noise_std: 0.02  # rad/s, Gaussian noise on every gyroscope axis of the IMU's frames
      light_intensity: 0.8         # the camera's look (robot.emulator.camera): colours, lights, camera pose ...
      image_noise_std: 0.01        # ... and pixel effects (image_brightness, _contrast, _blur_sigma, _noise_std)
    velocity_noise_std_rad_s: 0.0  # Gaussian noise on Present Velocity
    current_noise_std_a: 0.0       # Gaussian noise on Present Current
    wire_time: true                # replies take 10 bits per byte at the config's baud (10 us at 1 Mbps)
    return_delay: true             # each servo waits its Return Delay Time register before replying
    reply_latency_s: 0.0           # extra firmware time before every reply (s)
    initial_joint_pos_rad: null    # joint positions at power-on (task order); null = the task's reset pose
    initial_passive_pos_rad: null  # passive joints (the valve) at power-on; null = 0
    tracker_latency_s: 0.0         # a legged robot's motion capture (tracker.kind mocap): capture to arrival (s)
    tracker_position_noise_std_m: 0.0  # Gaussian noise on each axis of every pose's position (m)
    tracker_orientation_noise_std_rad: 0.0  # random rotation of every pose's orientation, std per component (rad)
    tracker_dropout_prob: 0.0      # chance per pose that the system loses the body (untracked datagrams) ...
    tracker_dropout_duration_s: 0.0  # ... for this long (s; 0: that one pose)
    mounting:                      # how servos really sit on their joints (what `s2r calibrate` measures), in the
      f0_top: {scale: -1, offset_rad: 0.12}  # config's convention joint = raw_rad * scale + offset_rad; a joint
                                   # left out sits exactly as the hardware config says

``control_jitter_std`` is a property of the control loop, not of the robot, so it is refused here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robot.config import RobotConfig
from s2r.core.errors import UserError
from s2r.core.fields import Fields
from s2r.core.resources import REALITY_DIR, config_path
from s2r.core.yamlfile import read_yaml_file
from sim import resolve_env_id
from sim.engines import ENGINES, ParamSpec
from sim.engines.base import IMAGE_KINDS
from sim.tasks import make_task
from sim.visual import ImageEffects

ACTION_LATENCY = "action_latency"
OBS_NOISE = "obs_noise_std"
IMU_ORIENTATION_NOISE = "base_orientation_noise_std"
IMU_ANGVEL_NOISE = "base_angvel_noise_std"
LOOP_ONLY_PARAMS = frozenset({"control_jitter_std"})
"""Task parameters that describe the controller's loop; the emulated robot has no such thing."""
DEFAULT_PHYSICS_TIMESTEP_S = 0.0025
NO_IMAGE_EFFECTS = ImageEffects()
"""A camera image as the engine renders it."""
MAX_MOUNTING_OFFSET_RAD = math.pi
"""Largest offset of a mounting (rad): half a turn; beyond it the same horn position has a smaller offset."""


@dataclass(frozen=True)
class JointMounting:
    """How one joint's servo really sits, in the hardware config's calibration convention
    (``joint = raw_rad * scale + offset_rad``, ``raw_rad`` 0 at 2048 ticks)."""

    scale: float
    """1, or -1 for a servo mounted the other way round."""
    offset_rad: float
    """The joint's angle (rad) when the servo reads 2048 ticks."""


@dataclass(frozen=True)
class RealityConfig:
    """How the emulated robot differs from the nominal simulation, and how its bus behaves."""

    engine: str = "mujoco"
    """Physics engine: ``mujoco`` or ``pybullet``."""
    physics_timestep_s: float = DEFAULT_PHYSICS_TIMESTEP_S
    """Physics step (s)."""
    params: Mapping[str, float] = field(default_factory=dict)
    """Engine-level named parameters (task parameter names), applied from the nominal model."""
    action_latency_s: float = 0.0
    """Delay from a goal position arriving at a servo to the motor acting on it (s); ``action_latency``."""
    position_noise_std_rad: float = 0.0
    """Gaussian noise on every position reading (rad); ``obs_noise_std``."""
    velocity_noise_std_rad_s: float = 0.0
    """Gaussian noise on every velocity reading (rad/s)."""
    current_noise_std_a: float = 0.0
    """Gaussian noise on every current reading (A)."""
    wire_time: bool = True
    """Whether bytes take their time on the wire at the config's baud (10 bits per byte)."""
    return_delay: bool = True
    """Whether each servo waits its Return Delay Time register before its reply."""
    reply_latency_s: float = 0.0
    """Extra processing time of the servo firmware before every reply (s)."""
    initial_joint_pos_rad: tuple[float, ...] | None = None
    """Joint positions at power-on in task order (rad); ``None`` = the task's reset pose."""
    initial_passive_pos_rad: tuple[float, ...] | None = None
    """Passive-joint positions at power-on (rad); ``None`` = zeros."""
    seed: int = 0
    """Seed of the sensor noise."""
    imu_orientation_noise_std_rad: float = 0.0
    """Std of each component of a random rotation applied to every IMU orientation frame (rad);
    ``base_orientation_noise_std``."""
    imu_angvel_noise_std_rad_s: float = 0.0
    """Gaussian noise on each gyroscope axis of every IMU frame (rad/s); ``base_angvel_noise_std``."""
    line_poll_s: float = 0.0
    """After each request, watch the line without blocking for this long (s) before sleeping in ``select`` again.
    Real servos are never late to notice a packet; a process woken from ``select`` on a small VM starts 50-200 us
    late. 0 (the default) never spins: on a shared machine a spinning emulator starves the loop it serves. The
    control-loop benchmark sets it to a little more than one control period, giving the emulator a core."""
    tracker_latency_s: float = 0.0
    """Motion capture: time from a pose being taken to its datagram arriving (s): the system's processing and the
    bridge's."""
    tracker_position_noise_std_m: float = 0.0
    """Motion capture: Gaussian noise on each axis of every pose's position (m)."""
    tracker_orientation_noise_std_rad: float = 0.0
    """Motion capture: std of each component of a random rotation applied to every pose's orientation (rad)."""
    tracker_dropout_prob: float = 0.0
    """Motion capture: chance per pose (-) that the system loses the body (occluded markers) and sends untracked
    datagrams for ``tracker_dropout_duration_s``."""
    tracker_dropout_duration_s: float = 0.0
    """Motion capture: how long a dropout lasts (s); 0: the one pose."""
    image_effects: ImageEffects = NO_IMAGE_EFFECTS
    """The camera's pixel effects (the ``image_*`` parameters of ``params``), applied to every frame the emulated
    camera streams; the other visual parameters (colours, lights, camera pose) act on the engine's rendering."""
    mounting: Mapping[str, JointMounting] = field(default_factory=dict)
    """Joint name -> how its servo really sits (``mounting``); a joint not named sits as the hardware config's
    ``scale`` and ``offset_rad`` say, so a config is exactly calibrated for the nominal reality."""


NOMINAL_REALITY = RealityConfig()


def load_reality(path: str | Path, config: RobotConfig) -> RealityConfig:
    """Load and validate a reality YAML file for the robot of ``config`` (its task's parameter names): ``path``, or a
    shipped reality by name (``dclaw_pybullet_gap``) or repository path (:func:`s2r.core.resources.config_path`)."""
    file = config_path(path, REALITY_DIR)
    return reality_from_mapping(read_yaml_file(file, "reality file"), config,
                                source=str(path if file == Path(path) else file))


def task_param_specs(config: RobotConfig) -> tuple[ParamSpec, ...]:
    """The named parameters of the config's task."""
    return make_task(resolve_env_id(config.task)).param_specs()


def reality_from_mapping(data: Any, config: RobotConfig, source: str = "<memory>") -> RealityConfig:
    """Validate an already-parsed reality mapping; errors name the field and what was expected."""
    root = Fields(data, "", source, optional=True)
    engine = root.raw("engine", "mujoco")
    if engine not in ENGINES:
        root.fail("engine", f"one of {', '.join(ENGINES)}", engine)
    timestep = root.number("physics_timestep_s", DEFAULT_PHYSICS_TIMESTEP_S, low=0.0)
    # A step longer than the control period would leave whole commands unseen by the physics.
    if not 0 < timestep <= config.control_period_s:
        root.fail("physics_timestep_s", f"a positive number of seconds, at most the control period "
                  f"{config.control_period_s:g} s", timestep)
    seed = root.raw("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        root.fail("seed", "a non-negative integer", seed)

    specs = {s.name: s for s in task_param_specs(config)}
    raw = root.raw("params", {})
    if not isinstance(raw, Mapping):
        root.fail("params", "a mapping of parameter names to values", raw)
    params: dict[str, float] = {}
    for name, value in raw.items():
        if name in LOOP_ONLY_PARAMS:
            raise UserError(f"{source}: parameter params.{name} describes the control loop, not the robot; "
                            "the emulator cannot apply it (the real loop's jitter is whatever it is)")
        if name not in specs:
            raise UserError(f"{source}: unknown parameter params.{name}; known parameters of {config.task}: "
                            f"{', '.join(n for n in specs if n not in LOOP_ONLY_PARAMS)}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UserError(f"{source}: params.{name} must be a number in {specs[name].unit}; got {value!r}")
        try:
            params[str(name)] = specs[name].validate(value)
        except (TypeError, ValueError) as exc:
            raise UserError(f"{source}: params.{name}: {exc}") from None
    latency = params.pop(ACTION_LATENCY, 0.0)
    noise = params.pop(OBS_NOISE, 0.0)
    imu_orientation_noise = params.pop(IMU_ORIENTATION_NOISE, 0.0)
    imu_angvel_noise = params.pop(IMU_ANGVEL_NOISE, 0.0)
    image = {kind.removeprefix("image_"): params.pop(kind) for kind in sorted(IMAGE_KINDS) if kind in params}
    spec = config.task_spec()
    initial_joints = root.vector("initial_joint_pos_rad", spec.n_joints, "rad")
    if initial_joints is not None:
        # The servos power on where the robot was left, which is inside the joints' travel.
        for k, (q, lo, hi) in enumerate(zip(initial_joints, spec.joint_low, spec.joint_high, strict=True)):
            if not lo <= q <= hi:
                root.fail(f"initial_joint_pos_rad[{k}]", f"an angle of {spec.joint_names[k]} inside the task's "
                          f"range [{lo:.6g}, {hi:.6g}] rad", q)
    reality = RealityConfig(
        engine=str(engine),
        physics_timestep_s=timestep,
        params=params,
        action_latency_s=latency,
        position_noise_std_rad=noise,
        velocity_noise_std_rad_s=root.number("velocity_noise_std_rad_s", 0.0, low=0.0),
        current_noise_std_a=root.number("current_noise_std_a", 0.0, low=0.0),
        wire_time=root.flag("wire_time", True),
        return_delay=root.flag("return_delay", True),
        reply_latency_s=root.number("reply_latency_s", 0.0, low=0.0),
        initial_joint_pos_rad=initial_joints,
        initial_passive_pos_rad=root.vector("initial_passive_pos_rad", len(spec.passive_joints), "rad"),
        seed=seed,
        imu_orientation_noise_std_rad=imu_orientation_noise,
        imu_angvel_noise_std_rad_s=imu_angvel_noise,
        line_poll_s=root.number("line_poll_s", 0.0, low=0.0),
        tracker_latency_s=root.number("tracker_latency_s", 0.0, low=0.0),
        tracker_position_noise_std_m=root.number("tracker_position_noise_std_m", 0.0, low=0.0),
        tracker_orientation_noise_std_rad=root.number("tracker_orientation_noise_std_rad", 0.0, low=0.0),
        tracker_dropout_prob=_probability(root, "tracker_dropout_prob"),
        tracker_dropout_duration_s=root.number("tracker_dropout_duration_s", 0.0, low=0.0),
        image_effects=ImageEffects(**image),
        mounting=_mounting(root.child("mounting", optional=True), config),
    )
    root.done()
    return reality


def _probability(node: Fields, key: str) -> float:
    p = node.number(key, 0.0)
    if not 0.0 <= p <= 1.0:
        node.fail(key, "a probability in [0, 1]", p)
    return p


def _mounting(node: Fields, config: RobotConfig) -> dict[str, JointMounting]:
    """The ``mounting`` section: joint name -> :class:`JointMounting`, names from the hardware config."""
    out: dict[str, JointMounting] = {}
    names = config.joint_names
    for name in node.keys():
        if name not in names:
            node.refuse(name, f"is not a joint of {config.source}; its joints: {', '.join(names)}")
        m = node.child(name)
        scale = m.number("scale")
        if scale not in (1.0, -1.0):
            m.fail("scale", "1, or -1 for a servo mounted the other way round", scale)
        offset = m.number("offset_rad", 0.0)
        if not abs(offset) <= MAX_MOUNTING_OFFSET_RAD:
            m.fail("offset_rad", f"an offset in [-{MAX_MOUNTING_OFFSET_RAD:.6g}, {MAX_MOUNTING_OFFSET_RAD:.6g}] rad "
                   "(half a turn either way)", offset)
        m.done()
        out[name] = JointMounting(scale, offset)
    return out
