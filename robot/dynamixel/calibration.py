"""Joint angles <-> servo registers for a whole robot, from its hardware config's calibration and limits."""

from __future__ import annotations

import numpy as np

from robot.config import RobotConfig
from robot.dynamixel.control_table import OperatingMode, Register
from robot.dynamixel.units import (
    FloatArray,
    IntArray,
    current_units_to_a,
    joint_limits_to_ticks,
    joint_to_ticks,
    ticks_to_joint,
    velocity_units_to_joint,
)
from sim.tasks.actions import clip_to_range

JOINT_PLAUSIBLE_MARGIN_RAD = 0.5
"""How far outside its configured limits a joint may read before the reading is rejected as implausible (rad):
room for a joint pushed past a limit under load, backlash, or one left past it by hand with the torque off. A
misread register lies far outside (a byte shifted into Present Position reads hundreds of rad)."""
ENCODER_PLAUSIBLE_TICKS = (Register.GOAL_POSITION.spec.low, Register.GOAL_POSITION.spec.high)
"""Present Position (ticks) an encoder servo can report: the X-series' multi-turn range of +-256 turns (ROBOTIS
e-manual, XM430-W350, Goal Position(116) in Extended Position Control Mode: -1,048,575 ~ 1,048,575)."""


class ServoCodec:
    """Converts commands and readings of every joint and encoder of one config; pure apart from its arrays."""

    def __init__(self, config: RobotConfig) -> None:
        self.n_joints = len(config.joints)
        self.n_encoders = len(config.encoders)
        self.joint_scale = config.joint_scale
        self.joint_offset = config.joint_offset
        self.encoder_scale = config.encoder_scale
        self.encoder_offset = config.encoder_offset
        self.low = config.low
        self.high = config.high
        limited = config.operating_mode_value != OperatingMode.EXTENDED_POSITION
        if limited:
            pairs = [joint_limits_to_ticks(j.low_rad, j.high_rad, j.scale, j.offset_rad) for j in config.joints]
        else:
            wide = (Register.GOAL_POSITION.spec.low, Register.GOAL_POSITION.spec.high)
            pairs = [wide for _ in config.joints]
        self.tick_low: IntArray = np.array([p[0] for p in pairs], dtype=np.int64)
        """Smallest goal (ticks) per joint: the Min Position Limit written to the servo."""
        self.tick_high: IntArray = np.array([p[1] for p in pairs], dtype=np.int64)
        """Largest goal (ticks) per joint: the Max Position Limit."""
        self._joint_labels = [f"{j.name}, id {j.id}" for j in config.joints]
        self._encoder_labels = [f"{e.name}, id {e.id}" for e in config.encoders]
        self.plausible_low: FloatArray = self.low - JOINT_PLAUSIBLE_MARGIN_RAD
        """Lowest joint reading taken as real (rad): the lower limit less ``JOINT_PLAUSIBLE_MARGIN_RAD``."""
        self.plausible_high: FloatArray = self.high + JOINT_PLAUSIBLE_MARGIN_RAD
        """Highest joint reading taken as real (rad)."""
        ends = ticks_to_joint(np.array(ENCODER_PLAUSIBLE_TICKS)[:, None], self.encoder_scale, self.encoder_offset)
        self.encoder_plausible_low: FloatArray = ends.min(axis=0)
        """Lowest encoder reading taken as real (rad): ``ENCODER_PLAUSIBLE_TICKS`` through the calibration."""
        self.encoder_plausible_high: FloatArray = ends.max(axis=0)
        """Highest encoder reading taken as real (rad)."""

    def command_ticks(self, command_rad: FloatArray) -> IntArray:
        """Goal positions (ticks) for joint targets (rad): clamped to the limits, rounded to a tick."""
        cmd = np.asarray(command_rad, dtype=np.float64)
        if cmd.shape != (self.n_joints,):
            raise ValueError(f"command has shape {cmd.shape}, expected ({self.n_joints},)")
        if not np.all(np.isfinite(cmd)):
            raise ValueError(f"command has non-finite values: {cmd}")
        ticks = joint_to_ticks(clip_to_range(cmd, self.low, self.high), self.joint_scale, self.joint_offset)
        return self.clamp_joint_ticks(ticks)

    def clamp_joint_ticks(self, ticks: IntArray) -> IntArray:
        """Joint-servo positions (ticks, joint order) clamped into ``tick_low`` .. ``tick_high``: the position
        limits written to the servos, which refuse a goal outside them."""
        # Integer ticks, so not clip_to_range (which works in float): the same clamp, without np.clip's dispatch.
        return np.minimum(np.maximum(ticks, self.tick_low), self.tick_high)

    def joint_rad(self, ticks: IntArray) -> FloatArray:
        """Joint angles (rad) of joint-servo positions (ticks)."""
        return ticks_to_joint(ticks, self.joint_scale, self.joint_offset)

    def quantize_command(self, command_rad: FloatArray) -> FloatArray:
        """What a command becomes on the wire, back in rad."""
        return self.joint_rad(self.command_ticks(command_rad))

    def quantize_joint_pos(self, joint_rad: FloatArray) -> FloatArray:
        """A joint angle as the encoder would report it (rounded to a tick), in rad."""
        return ticks_to_joint(joint_to_ticks(joint_rad, self.joint_scale, self.joint_offset),
                              self.joint_scale, self.joint_offset)

    def quantize_encoder_pos(self, angle_rad: FloatArray) -> FloatArray:
        """A passive-joint angle as its encoder would report it, in rad."""
        return ticks_to_joint(joint_to_ticks(angle_rad, self.encoder_scale, self.encoder_offset),
                              self.encoder_scale, self.encoder_offset)

    def passive_goal_ticks(self, index: int, angle_rad: float) -> int:
        """Goal Position (ticks) that drives passive joint ``index`` (encoder order) to ``angle_rad``.

        A driven encoder runs in extended position mode (multi-turn, no position limits), so the goal is only
        bounded by the register; one outside it is a ``ValueError``, never silently clipped."""
        if not np.isfinite(angle_rad):
            raise ValueError(f"passive goal is not finite: {angle_rad}")
        ticks = int(joint_to_ticks(angle_rad, self.encoder_scale[index], self.encoder_offset[index]))
        spec = Register.GOAL_POSITION.spec
        if not spec.low <= ticks <= spec.high:
            raise ValueError(f"passive goal {angle_rad} rad is {ticks} ticks, outside the Goal Position range "
                             f"{spec.low}..{spec.high}")
        return ticks

    def passive_rad(self, index: int, ticks: int) -> float:
        """Angle (rad) of passive joint ``index`` at raw position ``ticks``."""
        return float(ticks_to_joint(ticks, self.encoder_scale[index], self.encoder_offset[index]))

    def implausible(self, joint_pos_rad: FloatArray, passive_pos_rad: FloatArray) -> str | None:
        """``None`` when every joint and encoder reading (rad) lies in its physical range (``plausible_low`` ..
        ``plausible_high``, ``encoder_plausible_low`` .. ``encoder_plausible_high``); else which do not and why. NaN
        counts as outside. Pure."""
        j = np.asarray(joint_pos_rad, dtype=np.float64)
        p = np.asarray(passive_pos_rad, dtype=np.float64)
        bad_j = np.flatnonzero(~((j >= self.plausible_low) & (j <= self.plausible_high)))
        bad_p = np.flatnonzero(~((p >= self.encoder_plausible_low) & (p <= self.encoder_plausible_high)))
        if not bad_j.size and not bad_p.size:
            return None
        parts = [f"{self._joint_labels[k]}: {j[k]:.6g} rad outside [{self.plausible_low[k]:.6g}, "
                 f"{self.plausible_high[k]:.6g}]" for k in bad_j]
        parts += [f"{self._encoder_labels[k]}: {p[k]:.6g} rad outside [{self.encoder_plausible_low[k]:.6g}, "
                  f"{self.encoder_plausible_high[k]:.6g}]" for k in bad_p]
        return "; ".join(parts)

    def joint_state(self, current_units: IntArray, velocity_units: IntArray,
                    position_ticks: IntArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(position rad, velocity rad/s, current A) of the joints from their present registers."""
        return (
            ticks_to_joint(position_ticks, self.joint_scale, self.joint_offset),
            velocity_units_to_joint(velocity_units, self.joint_scale),
            current_units_to_a(current_units),
        )

    def encoder_state(self, velocity_units: IntArray, position_ticks: IntArray) -> tuple[FloatArray, FloatArray]:
        """(position rad, velocity rad/s) of the encoders from their present registers."""
        return (
            ticks_to_joint(position_ticks, self.encoder_scale, self.encoder_offset),
            velocity_units_to_joint(velocity_units, self.encoder_scale),
        )
