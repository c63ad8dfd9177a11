"""Joint calibration: each joint's offset and direction, from its servo's readings in two known poses.

The hardware config's convention is ROBEL's, ``joint = raw_rad * scale + offset_rad`` (``robot.dynamixel.units``).
With the torque off a person holds the robot in pose A, then in pose B (the config's ``calibration_poses``: known
joint angles ``q``), and the servos' own angles ``r`` are read in each (:meth:`DynamixelBus.servo_angles`). The
direction is the sign of ``(qB - qA) / (rB - rA)`` (the size of ``scale`` is the config's, 1 for a direct drive), and
the offset the mean of ``q - scale * r`` over both poses. A joint whose servo turned by clearly more or less than the
poses are apart was not held in both: that is an error naming the joint, never a calibration.

:func:`calibrated_text` writes the result into the config's own text (comments and layout kept) and loads it back,
so the config's checks apply to the new calibration: the joint limits must map into one servo turn.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from robot.config import CalibrationPoses, RobotConfig, config_from_mapping
from s2r.core.errors import UserError
from s2r.core.yamlfile import load_yaml, set_numbers
from sim.tasks.spec import FloatArray

SAMPLES_PER_POSE = 5
"""Readings of every servo in each pose; their median is the pose's reading (one glitched sample cannot move it)."""
MAX_POSE_MISMATCH_RAD = math.radians(8.0)
"""Largest difference (rad) between how far a joint's servo turned from pose A to pose B and how far apart the poses
are: a hand-held pose is a few degrees off, a joint left in the wrong pose (or a wrong direction of a pose) is
tens."""
MAX_SAMPLE_SPREAD_RAD = math.radians(2.0)
"""Largest spread (rad) of one joint's readings within a pose: more means the joint moved while it was read."""

PoseSource = Callable[[str, tuple[float, ...]], None]
"""Puts the robot in a pose (name ``"A"`` or ``"B"``, joint angles in task order, rad) and returns once it is there:
a prompt for the person holding the robot, or the emulator's scene placement."""


@dataclass(frozen=True)
class JointCalibration:
    """One joint's calibration, as measured, and the config's before it."""

    name: str
    """Joint name (task order)."""
    scale: float
    """Measured ``scale``: the config's size, the direction the servo turned."""
    offset_rad: float
    """Measured ``offset_rad`` (rad)."""
    old_scale: float
    """The config's ``scale`` before calibration."""
    old_offset_rad: float
    """The config's ``offset_rad`` before calibration (rad)."""
    mismatch_rad: float
    """How far the servo's turn between the poses differs from the poses' distance (rad): how well the poses were
    held, at most :data:`MAX_POSE_MISMATCH_RAD`."""

    @property
    def flipped(self) -> bool:
        """Whether the direction changed."""
        return (self.scale > 0) != (self.old_scale > 0)


@dataclass(frozen=True)
class Calibration:
    """The calibration of every joint, and the servo readings it came from."""

    joints: tuple[JointCalibration, ...]
    """Per joint, task order."""
    servo_rad_a: tuple[float, ...]
    """The servos' own angles in pose A (rad, task order)."""
    servo_rad_b: tuple[float, ...]
    """The servos' own angles in pose B (rad)."""

    def to_json(self) -> dict[str, Any]:
        """The per-joint values, for ``s2r calibrate --json``."""
        return {"joints": {j.name: {"scale": j.scale, "offset_rad": j.offset_rad, "old_scale": j.old_scale,
                                    "old_offset_rad": j.old_offset_rad, "mismatch_rad": j.mismatch_rad}
                           for j in self.joints},
                "servo_rad_a": list(self.servo_rad_a), "servo_rad_b": list(self.servo_rad_b)}

    def describe(self) -> str:
        """A table for people: every joint's direction and offset, before and after, and how well the poses held."""
        rows = [f"{'joint':<12} {'scale':>12} {'offset (deg)':>22} {'pose mismatch (deg)':>20}"]
        for j in self.joints:
            scale = f"{j.old_scale:+g} -> {j.scale:+g}"
            offset = f"{math.degrees(j.old_offset_rad):+.2f} -> {math.degrees(j.offset_rad):+.2f}"
            rows.append(f"{j.name:<12} {scale:>12} {offset:>22} {math.degrees(j.mismatch_rad):>20.2f}")
        return "\n".join(rows)


def pose_lines(config: RobotConfig, pose: tuple[float, ...]) -> list[str]:
    """Every joint's angle of a pose, for the person who sets it: ``f0_mid (id 11): +45.0 deg (+0.7854 rad)``."""
    return [f"{j.name} (id {j.id}): {math.degrees(q):+.1f} deg ({q:+.4f} rad)" for j, q in zip(config.joints, pose,
                                                                                              strict=True)]


def required_poses(config: RobotConfig) -> CalibrationPoses:
    """The config's calibration poses; a :class:`UserError` saying what to add when it has none."""
    if config.calibration_poses is None:
        raise UserError(f"{config.source} has no calibration_poses: add a section with the two poses to calibrate in "
                        "(a: and b:, one angle per joint in task order, rad; see hardware_configs/dclaw.yaml)")
    return config.calibration_poses


def read_pose(servo_angles: Callable[[], FloatArray], config: RobotConfig, name: str,
              samples: int = SAMPLES_PER_POSE) -> FloatArray:
    """The servos' angles in one pose (rad, task order): the median of ``samples`` readings, which must agree
    within :data:`MAX_SAMPLE_SPREAD_RAD` (a joint that moved is named)."""
    rows = np.array([np.asarray(servo_angles(), dtype=np.float64) for _ in range(samples)])
    spread = rows.max(axis=0) - rows.min(axis=0)
    moved = [f"{j.name} ({math.degrees(s):.1f} deg)" for j, s in zip(config.joints, spread, strict=True)
             if not s <= MAX_SAMPLE_SPREAD_RAD]
    if moved:
        raise UserError(f"in pose {name} these joints moved while they were read: {', '.join(moved)}; hold the robot "
                        f"still (at most {math.degrees(MAX_SAMPLE_SPREAD_RAD):g} deg) and calibrate again")
    return np.asarray(np.median(rows, axis=0), dtype=np.float64)


def solve(config: RobotConfig, poses: CalibrationPoses, servo_a: FloatArray, servo_b: FloatArray) -> Calibration:
    """The calibration from the servos' angles (rad, task order) in pose A and pose B; pure. A joint whose servo turned
    by more than :data:`MAX_POSE_MISMATCH_RAD` more or less than the poses are apart is a :class:`UserError` naming
    it (every such joint at once)."""
    qa, qb = np.asarray(poses.a_rad), np.asarray(poses.b_rad)
    ra, rb = np.asarray(servo_a, dtype=np.float64), np.asarray(servo_b, dtype=np.float64)
    joints, problems = [], []
    for k, j in enumerate(config.joints):
        size = abs(j.scale)
        span_q, span_r = qb[k] - qa[k], rb[k] - ra[k]
        mismatch = abs(abs(span_r) * size - abs(span_q))
        if not mismatch <= MAX_POSE_MISMATCH_RAD:
            problems.append(f"{j.name} (id {j.id}) turned {math.degrees(abs(span_r) * size):.1f} deg between the "
                            f"poses, which are {math.degrees(abs(span_q)):.1f} deg apart")
            continue
        scale = math.copysign(size, span_q * span_r)
        offset = float(np.mean([qa[k] - scale * ra[k], qb[k] - scale * rb[k]]))
        joints.append(JointCalibration(j.name, scale, offset, j.scale, j.offset_rad, float(mismatch)))
    if problems:
        raise UserError("the servos' readings do not fit the calibration poses: " + "; ".join(problems) + ". Was "
                        f"every joint in both poses (within {math.degrees(MAX_POSE_MISMATCH_RAD):g} deg)? Nothing was "
                        "written; calibrate again")
    return Calibration(tuple(joints), tuple(float(x) for x in ra), tuple(float(x) for x in rb))


def measure(config: RobotConfig, servo_angles: Callable[[], FloatArray], put_in_pose: PoseSource,
            samples: int = SAMPLES_PER_POSE) -> Calibration:
    """Calibrate: pose A, read, pose B, read, :func:`solve`. ``servo_angles`` reads the servos' own angles (rad,
    task order; the torque must be off, so the person can move the joints); ``put_in_pose`` returns once the robot
    is in the pose."""
    poses = required_poses(config)
    put_in_pose("A", poses.a_rad)
    servo_a = read_pose(servo_angles, config, "A", samples)
    put_in_pose("B", poses.b_rad)
    servo_b = read_pose(servo_angles, config, "B", samples)
    return solve(config, poses, servo_a, servo_b)


def calibrated_text(text: str, source: str, calibration: Calibration) -> tuple[str, RobotConfig]:
    """The hardware config ``text`` (from ``source``) with every joint's ``scale`` and ``offset_rad`` set to the
    calibration's, everything else kept, and the config it loads as. The config's own checks apply: a calibration
    that maps a joint's limits outside one servo turn is a :class:`UserError` (nothing to write)."""
    values: dict[tuple[str, ...], float] = {}
    for j in calibration.joints:
        values[("joints", j.name, "scale")] = j.scale
        values[("joints", j.name, "offset_rad")] = j.offset_rad
    new = set_numbers(text, values, source)
    try:
        config = config_from_mapping(load_yaml(new, source), source=source)
    except UserError as exc:
        raise UserError(f"the measured calibration does not fit the config's joint limits, so nothing was written: "
                        f"{exc}. A joint whose range crosses the servo's end of turn needs its horn remounted"
                        ) from None
    return new, config
