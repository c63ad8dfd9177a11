"""An in-process bus for fast unit tests: first-order servos, no serial port, no physics engine.

Why first-order dynamics and not the simulator: the mock exists to test the code *around* the bus (the
control loop, the safety filter, the watchdog, logging) quickly and deterministically. A first-order
lag with the servo's velocity limit is exact to integrate for any time step, so a test can drive it
with a fake clock and get the same numbers on every machine; it needs no MuJoCo and starts in
microseconds. Physics-backed behaviour is what the emulator is for (same Dynamixel bus code, over a
pty). The mock shares the bus's calibration and tick quantization (``ServoCodec``) and the emulator's
fault spec, and counts failures the same way, so both answer the same calls alike.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from robot.bus import (
    BusError,
    CounterBook,
    HardwareFault,
    Reading,
    require_driven,
)
from robot.busbase import ServoBusBase
from robot.config import RobotConfig
from robot.dynamixel.calibration import ServoCodec
from robot.dynamixel.control_table import S_PER_BUS_WATCHDOG_UNIT, STATE_BLOCK_SIZE, HardwareError, bus_watchdog_units
from robot.dynamixel.timing import STATUS_OVERHEAD_BYTES, packet_timeout_s
from robot.dynamixel.units import (
    RAD_S_PER_VELOCITY_UNIT,
    TORQUE_NM_PER_A,
    current_a_to_units,
    current_units_to_a,
)
from robot.emulator.faults import HARDWARE_BITS, NO_FAULTS, FaultInjector, FaultSpec
from sim.tasks.spec import FloatArray

DEFAULT_TIME_CONSTANT_S = 0.05
"""Time constant of the first-order position response (s)."""
DEFAULT_STIFFNESS_NM_PER_RAD = 4.0
"""Servo stiffness used to report a current from the tracking error (N m/rad, the sim's finger_kp)."""
PASSIVE_SERVO_SPEED_RAD_S = 4.8
"""Top speed of a driven passive joint's servo (rad/s): an XM430-W350's no-load speed, 46 rpm at 12 V."""


class MockBus(ServoBusBase):
    """First-order position servos behind the :class:`robot.bus.Bus` protocol, driven by ``clock``.

    Each joint moves towards its goal as ``q' = (goal - q) / time_constant_s``, never faster than its
    configured velocity limit; a torque-off joint stays where it is. Passive joints stay at
    ``passive_pos`` (tests may set :attr:`passive_pos`, e.g. from a policy, to play a turned valve), except
    while :meth:`passive_driven` has their servo on: then they follow :attr:`passive_goal` the same way,
    at most ``PASSIVE_SERVO_SPEED_RAD_S``. ``faults`` work as in the emulator: every status
    packet of a read draws a fate; a silent servo or a dropped, corrupted or too-late packet fails the
    attempt (counted), and a read whose attempts all fail is stale.
    """

    def __init__(
        self,
        config: RobotConfig,
        *,
        faults: FaultSpec | None = None,
        clock: Callable[[], float] = time.monotonic,
        time_constant_s: float = DEFAULT_TIME_CONSTANT_S,
        stiffness_nm_per_rad: float = DEFAULT_STIFFNESS_NM_PER_RAD,
        joint_pos: FloatArray | None = None,
        passive_pos: FloatArray | None = None,
    ) -> None:
        if time_constant_s <= 0:
            raise ValueError(f"time_constant_s must be positive, got {time_constant_s}")
        self.config = config
        self._codec = ServoCodec(config)
        self._clock = clock
        self._tau = time_constant_s
        self._stiffness = stiffness_nm_per_rad
        spec = config.task_spec()
        self.q = np.array(joint_pos if joint_pos is not None else spec.reset, dtype=np.float64)
        """True joint positions (rad)."""
        self.qd = np.zeros_like(self.q)
        """True joint velocities (rad/s)."""
        self.goal = self.q.copy()
        """Goal positions as the servos hold them (rad, tick-quantized)."""
        self.passive_pos = np.array(passive_pos if passive_pos is not None else np.zeros(len(config.encoders)),
                                    dtype=np.float64)
        """Passive-joint positions (rad)."""
        self.passive_vel = np.zeros_like(self.passive_pos)
        """Passive-joint velocities while driven (rad/s); 0 otherwise."""
        self.passive_goal = self.passive_pos.copy()
        """Goal positions of the passive joints' servos (rad, tick-quantized); used while driven."""
        self.passive_torque = np.zeros(len(self.passive_pos), dtype=bool)
        """Torque Enable of each passive joint's servo."""
        self._driving: set[str] = set()
        self._encoder_index = {e.name: k for k, e in enumerate(config.encoders)}
        self._servo_torque = np.zeros(len(self.q), dtype=bool)
        self._vel_limit = np.array([j.velocity_limit_rad_s for j in config.joints])
        self._ids = config.all_ids
        self._names = {i: config.name_of(i) for i in self._ids}
        self._errors: dict[int, HardwareError] = {}
        self._injector = FaultInjector(faults if faults is not None else NO_FAULTS)
        self._book = CounterBook()
        self._t_start = clock()
        self._t = self._t_start
        self._cycle = 0
        self._connected = False
        self._torque = False
        self.bus_watchdog_s = 0.0
        """The armed Bus Watchdog time (s); 0 off."""
        self.bus_watchdog_expired = False
        """Whether the Bus Watchdog stopped the servos (goals ignored until it is set again)."""
        n = len(self._ids)
        self._timeout_s = packet_timeout_s(config.baud, n * (STATUS_OVERHEAD_BYTES + STATE_BLOCK_SIZE),
                                           config.latency_timer_s, n * config.return_delay_s)
        """When a late reply counts as missing: the same packet timeout as the Dynamixel bus (s)."""

    # --- Bus protocol ------------------------------------------------------------------------------
    def connect(self, torque_on: bool = True) -> None:
        if self._connected_already(torque_on):
            return
        self._advance()
        missing = [i for i in self._ids if i in self._injector.silent]
        for _ in range(len(missing) * (1 + self.config.retries.connect)):
            self._book.error("timeout")
        if missing:
            raise BusError("servos do not match the config: " + "; ".join(
                f"{self._names[i]}, id {i}: no answer to PING (timeout)" for i in missing))
        errors = self.hardware_errors()
        if errors:
            raise HardwareFault(errors)
        self._servo_torque[:] = False
        self._connected = True
        if torque_on:
            self.torque(True)

    def read(self) -> Reading:
        self._require_connected()
        n_j, n_p = len(self.q), len(self.passive_pos)
        attempts = 1 + self.config.retries.read
        last_error: str | None = None
        t = self._clock()
        for attempt in range(1, attempts + 1):
            self._cycle += 1
            t = self._advance()
            failure = self._attempt()
            if failure is not None:
                last_error = failure
                continue
            pos = self._codec.quantize_joint_pos(self.q)
            vel = np.rint(self.qd / RAD_S_PER_VELOCITY_UNIT) * RAD_S_PER_VELOCITY_UNIT
            torque_nm = np.where(self._servo_torque, self._stiffness * (self.goal - self.q), 0.0)
            cur = current_units_to_a(current_a_to_units(torque_nm / TORQUE_NM_PER_A))
            ppos = self._codec.quantize_encoder_pos(self.passive_pos)
            problem = self._codec.implausible(pos, ppos)
            if problem is not None:  # the Dynamixel bus's check, so a test can play a robot outside its range
                self._book.error("implausible")
                last_error = f"implausible ({problem})"
                continue
            pvel = np.rint(self.passive_vel / RAD_S_PER_VELOCITY_UNIT) * RAD_S_PER_VELOCITY_UNIT
            alerts = tuple(self._names[i] for i in self._ids if i in self._errors)
            reading = Reading(t, t, pos, vel, cur, ppos, pvel, True, attempt, last_error, alerts)
            return self._book.reading(reading)
        return self._book.reading(Reading.failed(n_j, n_p, t, t, attempts, last_error))

    def write(self, command_rad: FloatArray) -> FloatArray:
        self._require_connected()
        sent = self._codec.quantize_command(command_rad)
        self._advance()
        if not self.bus_watchdog_expired:  # a stopped servo refuses goals; a sync write hears nothing back
            self.goal = sent.copy()
        self._book.writes += 1
        return sent

    def torque(self, enabled: bool) -> None:
        self._require_connected()
        self._advance()
        if enabled:
            self._enable(range(len(self.q)))
        else:
            self._servo_torque[:] = False
            self.passive_torque[:] = False
            self._driving.clear()
        self._torque = enabled

    def write_passive(self, goals_rad: Mapping[str, float]) -> dict[str, float]:
        self._require_connected()
        require_driven(goals_rad, self._driving)
        self._advance()
        sent = {}
        for name, angle in goals_rad.items():
            k = self._encoder_index[name]
            sent[name] = self._codec.passive_rad(k, self._codec.passive_goal_ticks(k, float(angle)))
            self.passive_goal[k] = sent[name]
        return sent

    def torque_status(self) -> dict[str, bool]:
        self._cycle += 1  # one sync read on the Dynamixel bus
        self._advance()
        on = list(self._servo_torque) + list(self.passive_torque)
        return {self._names[i]: bool(t) for i, t in zip(self._ids, on, strict=True)}

    def _enable_passive(self, names: tuple[str, ...]) -> None:
        """Goal = present (quantized), then torque on, as for the joints."""
        self._require_connected()
        self._cycle += 1
        self._advance()
        present = self._codec.quantize_encoder_pos(self.passive_pos)
        for name in names:
            k = self._encoder_index[name]
            servo_id = self.config.encoders[k].id
            if servo_id in self._injector.silent:
                self._book.error("timeout")
                raise BusError(f"no answer from {name}, id {servo_id} writing TORQUE_ENABLE: timeout")
            self.passive_goal[k] = present[k]
            if servo_id not in self._errors:
                self.passive_torque[k] = True

    def _disable_passive(self, names: tuple[str, ...]) -> None:
        if not self._connected:
            return  # closed inside the block: close turned every driven servo off already
        self._advance()
        for name in names:
            self.passive_torque[self._encoder_index[name]] = False

    def hardware_errors(self) -> dict[str, HardwareError]:
        self._cycle += 1  # a sync read, as on the Dynamixel bus: it counts for cycle-triggered faults
        self._advance()
        return {self._names[i]: e for i, e in self._errors.items() if e}

    def reboot(self, names: Sequence[str] | None = None) -> None:
        self._advance()
        if names is None:
            names = list(self.hardware_errors())
        ids = [self._id_of(n) for n in names]
        for i in ids:
            if i in self._injector.silent:
                self._book.error("timeout")
                raise BusError(f"{self._names[i]} (id {i}) did not acknowledge REBOOT: timeout")
            self._errors.pop(i, None)
        joints = [k for k, j in enumerate(self.config.joints) if j.id in ids]
        self._servo_torque[joints] = False
        if self._connected and self._torque and joints:
            self._enable(joints)

    def set_bus_watchdog(self, timeout_s: float) -> None:
        """As the servos' Bus Watchdog: a gap between two calls longer than the timeout (rounded as the register
        rounds it) with torque on stops every joint where it is, and its goals are ignored until this is called
        with 0 (or a new timeout) again."""
        self._require_connected()
        self._advance()
        self.bus_watchdog_s = bus_watchdog_units(timeout_s) * S_PER_BUS_WATCHDOG_UNIT
        self.bus_watchdog_expired = False

    def close(self) -> None:
        if self._connected:
            self._advance()
            self._servo_torque[:] = False
            self.passive_torque[:] = False
            self._driving.clear()
        self._connected = False
        self._torque = False

    @property
    def read_transactions(self) -> int:
        """Read transactions so far, as the emulator counts them for cycle-triggered faults (retries included)."""
        return self._cycle

    def place(self, joint_pos: FloatArray, passive_pos: FloatArray) -> None:
        """Put the joints (rad) and passive joints (rad) at rest at once, every goal at its new position: the
        scene reset an emulated robot gets at an episode's start (see ``robot.hardware``)."""
        q = np.asarray(joint_pos, dtype=np.float64)
        p = np.asarray(passive_pos, dtype=np.float64)
        if q.shape != self.q.shape or p.shape != self.passive_pos.shape:
            raise ValueError(f"a placement has {self.q.size} joint and {self.passive_pos.size} passive positions; got "
                             f"shapes {q.shape} and {p.shape}")
        self._advance()
        self.q, self.qd = q.copy(), np.zeros_like(q)
        self.goal = self._codec.quantize_command(q)
        self.passive_pos, self.passive_vel = p.copy(), np.zeros_like(p)
        self.passive_goal = self.passive_pos.copy()

    def __enter__(self) -> MockBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals -----------------------------------------------------------------------------
    def _enable(self, joints: Sequence[int] | range) -> None:
        """Goal = present (quantized) first, then torque on, as the Dynamixel bus does; a joint whose servo
        is in a shutdown error stays off."""
        self._cycle += 1  # the Dynamixel bus reads the present positions in one sync read
        self._advance()
        idx = np.asarray(list(joints), dtype=np.int64)
        self.goal[idx] = self._codec.quantize_joint_pos(self.q)[idx]
        for k in idx:
            if self.config.joints[k].id not in self._errors:
                self._servo_torque[k] = True

    def _attempt(self) -> str | None:
        """Draw the fate of every status packet of one state read; the first failure (in ID order) wins."""
        failure: str | None = None
        for i in self._ids:
            fate = self._injector.fate()
            kind = None
            if i in self._injector.silent or fate.dropped or fate.delay_s > self._timeout_s:
                kind = "timeout"
            elif fate.corrupted:
                kind = "corrupt"
            if kind is not None and failure is None:
                failure = f"{kind} ({self._names[i]}, id {i})"
                self._book.error(kind)
        return failure

    def _advance(self) -> float:
        """Integrate the servos up to ``clock()`` and start due faults; returns the time."""
        now = self._clock()
        if (self.bus_watchdog_s > 0 and not self.bus_watchdog_expired and now - self._t > self.bus_watchdog_s
                and self._servo_torque.any()):
            self.bus_watchdog_expired = True  # stopped where the last call left them
            self.goal = np.where(self._servo_torque, self.q, self.goal)
        dt = max(0.0, now - self._t)
        self._t = max(self._t, now)
        if dt > 0:
            alpha = 1.0 - math.exp(-dt / self._tau)
            step = np.where(self._servo_torque, (self.goal - self.q) * alpha, 0.0)
            step = np.clip(step, -self._vel_limit * dt, self._vel_limit * dt)
            self.q = self.q + step
            self.qd = step / dt
            p_step = np.where(self.passive_torque, (self.passive_goal - self.passive_pos) * alpha, 0.0)
            p_step = np.clip(p_step, -PASSIVE_SERVO_SPEED_RAD_S * dt, PASSIVE_SERVO_SPEED_RAD_S * dt)
            self.passive_pos = self.passive_pos + p_step
            self.passive_vel = p_step / dt
        for f in self._injector.due(now - self._t_start, self._cycle):
            if f.kind in HARDWARE_BITS:
                self._errors[f.id] = self._errors.get(f.id, HardwareError(0)) | HARDWARE_BITS[f.kind]
                for k, j in enumerate(self.config.joints):
                    if j.id == f.id:
                        self._servo_torque[k] = False
                for k, e in enumerate(self.config.encoders):
                    if e.id == f.id:
                        self.passive_torque[k] = False
        return now
