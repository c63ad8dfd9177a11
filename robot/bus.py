"""The bus protocol the controller talks to, the reading it returns, and the factory for the three drivers.

A fixed-rate loop calls, once per cycle, :meth:`Bus.read` (every joint and encoder in ONE transaction)
and :meth:`Bus.write` (every goal position in ONE sync write). Everything crossing this boundary is in
SI units (rad, rad/s, A, s of ``time.monotonic``); servo ticks stay inside ``robot.dynamixel``.

Drivers (:func:`make_bus`):

- ``dynamixel``: :class:`robot.dynamixel.DynamixelBus` on dynamixel-sdk, on a serial port.
- ``emulator``: the same DynamixelBus, talking over a pseudo-terminal to a physics-backed servo
  emulator (:class:`robot.emulator.Emulator`) that it starts, unless a port is given.
- ``mock``: :class:`robot.mock.MockBus`, in-process first-order servos for fast unit tests.

A robot with a torso IMU (a config with an ``imu`` section) is opened with :func:`robot.hardware.open_robot`,
which gives the same bus plus the IMU and, for the emulator and the mock, scene placement.
"""

from __future__ import annotations

import glob
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from robot.config import AUTO_PORT, RobotConfig
from robot.dynamixel.control_table import HardwareError
from robot.dynamixel.units import TORQUE_NM_PER_A
from s2r.core.errors import ParameterError, UserError
from sim.state import RobotState
from sim.tasks.spec import FloatArray

if TYPE_CHECKING:
    from robot.emulator.faults import FaultSpec
    from robot.emulator.reality import RealityConfig

Driver = Literal["dynamixel", "mock", "emulator"]
DRIVERS: tuple[str, ...] = ("dynamixel", "mock", "emulator")
SERIAL_BY_ID_GLOB = "/dev/serial/by-id/*"

ERROR_KINDS = ("timeout", "corrupt", "tx_fail", "port_busy", "status_error", "short_data", "implausible", "other")
"""Kinds of failed transactions counted in :attr:`Bus.comm_errors`:

``timeout`` no (complete) status packet in time; ``corrupt`` a status packet with a bad CRC or garbled;
``tx_fail`` the instruction could not be written to the port; ``port_busy`` the port was in use;
``status_error`` a servo answered with an error number in ERR (range, length, access, ...);
``short_data`` a status packet with fewer data bytes than asked for; ``implausible`` a reply that checked out
but reads a joint or encoder outside its physical range (``robot.dynamixel.calibration``); ``other`` any other
SDK result."""


class BusError(RuntimeError):
    """The bus could not do what was asked (no answer after the retries, a servo refused, not connected)."""


class PortLost(BusError):
    """The serial line itself is gone (a USB cable pulled, the emulator's process dead): the OS refused a read,
    write, flush or close of the port. No retry can help; the controller stops with the kind ``port_lost``."""


def port_lost(port: str, what: str, exc: BaseException) -> PortLost:
    """The :class:`PortLost` for an OS error (``OSError`` or ``termios.error``) while doing ``what`` on ``port``."""
    return PortLost(f"serial port {port} lost while {what}: {type(exc).__name__}: {exc}")


class HardwareFault(BusError):
    """Servos report hardware errors (overload, overheating, ...); :meth:`Bus.reboot` clears them."""

    def __init__(self, errors: Mapping[str, HardwareError]) -> None:
        self.errors = dict(errors)
        listing = ", ".join(f"{name}: {describe_hardware_error(e)}" for name, e in self.errors.items())
        super().__init__(f"servos report hardware errors ({listing}); reboot them to clear the errors")


def describe_hardware_error(error: HardwareError) -> str:
    """``"overload+overheating"`` for a set of hardware error bits."""
    return "+".join(str(b.name).lower() for b in HardwareError if b in error) or "none"


@dataclass(frozen=True)
class Reading:
    """One read of every joint and encoder. A failed read is ``stale`` with NaN values, never old values."""

    time: float
    """When the reply arrived, or when the read was given up (s, ``time.monotonic``)."""
    request_time: float
    """When the last attempt's instruction was sent (s, ``time.monotonic``)."""
    joint_pos: FloatArray
    """Joint positions in task-spec order (rad); NaN when stale."""
    joint_vel: FloatArray
    """Joint velocities (rad/s); NaN when stale."""
    joint_current: FloatArray
    """Motor currents (A); NaN when stale."""
    passive_pos: FloatArray
    """Passive-joint (encoder) positions in task-spec order (rad); NaN when stale."""
    passive_vel: FloatArray
    """Passive-joint velocities (rad/s); NaN when stale."""
    ok: bool
    """Whether every servo answered; ``False`` means stale."""
    attempts: int
    """Transactions tried (1 + retries used)."""
    error: str | None = None
    """Kind and servo of the last failed attempt (``"timeout (f1_mid, id 21)"``), or ``None``."""
    alerts: tuple[str, ...] = ()
    """Joints/encoders whose status packet had the hardware-alert bit: read :meth:`Bus.hardware_errors`."""
    base_quat: FloatArray = field(default_factory=lambda: np.zeros(0))
    """A legged robot's torso orientation from its IMU (w, x, y, z), attached by the controller; NaN before the
    IMU's first valid frame; empty for a robot without an IMU (the bus itself never fills it)."""
    base_angvel: FloatArray = field(default_factory=lambda: np.zeros(0))
    """The torso's angular velocity in its own frame from the IMU (rad/s); as ``base_quat``."""
    imu_time: float = math.nan
    """When the IMU sample in ``base_quat``/``base_angvel`` was received (s, ``time.monotonic``); NaN without one."""
    base_pos: FloatArray = field(default_factory=lambda: np.zeros(0))
    """The torso's position in the world from the position source (m; ``robot.tracker``), attached by the controller;
    NaN before its first valid pose; empty for a robot without one."""
    base_linvel: FloatArray = field(default_factory=lambda: np.zeros(0))
    """The torso's velocity in the world frame from the position source (m/s); as ``base_pos``."""
    pose_time: float = math.nan
    """When the pose in ``base_pos`` was received (s, ``time.monotonic``); NaN without one."""

    @property
    def stale(self) -> bool:
        """The read failed; the values are NaN."""
        return not self.ok

    @property
    def latency(self) -> float:
        """Transaction time of the last attempt (s)."""
        return self.time - self.request_time

    def state(self) -> RobotState:
        """This reading as the task's :class:`~sim.state.RobotState` (effort = current * torque constant)."""
        return RobotState(
            time=self.time,
            joint_pos=self.joint_pos,
            joint_vel=self.joint_vel,
            passive_pos=self.passive_pos,
            passive_vel=self.passive_vel,
            joint_effort=self.joint_current * TORQUE_NM_PER_A,
            base_quat=self.base_quat,
            base_angvel=self.base_angvel,
            base_pos=self.base_pos,
            base_linvel=self.base_linvel,
        )

    @staticmethod
    def failed(n_joints: int, n_passive: int, t_request: float, t_done: float, attempts: int,
               error: str | None) -> Reading:
        """A stale reading: NaN everywhere, so nothing downstream can mistake it for data."""
        nan_j = np.full(n_joints, np.nan)
        nan_p = np.full(n_passive, np.nan)
        return Reading(t_done, t_request, nan_j, nan_j.copy(), nan_j.copy(), nan_p, nan_p.copy(), False,
                       attempts, error)


@dataclass(frozen=True)
class BusCounters:
    """A snapshot of a bus's counters since it was created."""

    reads: int
    """Calls of ``read``."""
    stale_reads: int
    """Readings returned stale."""
    consecutive_stale_reads: int
    """Stale readings since the last good one."""
    read_attempts: int
    """State-read transactions tried (reads + retries)."""
    writes: int
    """Calls of ``write``."""
    alert_readings: int
    """Good readings in which at least one servo raised the hardware-alert bit."""
    last_ok_time: float | None
    """``time`` of the newest good reading (s, monotonic), ``None`` before the first."""
    comm_errors: dict[str, int] = field(default_factory=dict)
    """Failed transactions by kind (see :data:`ERROR_KINDS`); every failure counts once."""

    @property
    def total_comm_errors(self) -> int:
        """Sum over all kinds."""
        return sum(self.comm_errors.values())

    def data_age(self, now: float) -> float:
        """Seconds since the newest good reading (infinite before the first)."""
        return math.inf if self.last_ok_time is None else now - self.last_ok_time


class CounterBook:
    """The mutable counters behind :class:`BusCounters`; shared bookkeeping of every bus driver."""

    def __init__(self) -> None:
        self.comm_errors: dict[str, int] = dict.fromkeys(ERROR_KINDS, 0)
        self.reads = 0
        self.stale_reads = 0
        self.consecutive_stale_reads = 0
        self.read_attempts = 0
        self.writes = 0
        self.alert_readings = 0
        self.last_ok_time: float | None = None

    def error(self, kind: str) -> None:
        """Count one failed transaction."""
        self.comm_errors[kind] = self.comm_errors.get(kind, 0) + 1

    def reading(self, r: Reading) -> Reading:
        """Count a finished read; returns it for chaining."""
        self.reads += 1
        self.read_attempts += r.attempts
        if r.ok:
            self.consecutive_stale_reads = 0
            self.last_ok_time = r.time
            if r.alerts:
                self.alert_readings += 1
        else:
            self.stale_reads += 1
            self.consecutive_stale_reads += 1
        return r

    def snapshot(self) -> BusCounters:
        """The current values."""
        return BusCounters(self.reads, self.stale_reads, self.consecutive_stale_reads, self.read_attempts,
                           self.writes, self.alert_readings, self.last_ok_time, dict(self.comm_errors))


class Bus(Protocol):
    """What the controller needs from a robot's servo bus; Dynamixel and mock implement it alike."""

    config: RobotConfig
    """The hardware config the bus was made for."""

    def connect(self, torque_on: bool = True) -> None:
        """Open the port, PING and check every servo, apply settings with torque off, then (by default) set
        each goal to the present position and enable torque. A servo with a hardware error raises
        :class:`HardwareFault` (the port stays open: :meth:`reboot`, then connect again)."""
        ...

    def read(self) -> Reading:
        """Every joint and encoder in one transaction, with bounded retries; a failure is a stale reading."""
        ...

    def write(self, command_rad: FloatArray) -> FloatArray:
        """Send goal positions (rad, task order) in one sync write, clamped to the joint limits; returns the
        command actually sent after tick quantization (rad). Non-finite values raise ``ValueError``."""
        ...

    def torque(self, enabled: bool) -> None:
        """Enable (goal = present position first) or disable the joint servos' torque; disabling also turns off
        any passive joint being driven (see :meth:`passive_driven`)."""
        ...

    @property
    def torque_enabled(self) -> bool:
        """Whether the joints' torque is on, as last set through this bus."""
        ...

    def torque_disabled(self) -> AbstractContextManager[None]:
        """Torque off inside the block, restored (goal = present first) on exit."""
        ...

    def passive_driven(self, *names: str) -> AbstractContextManager[None]:
        """Torque on for the servos of the named passive joints inside the block, so :meth:`write_passive` can
        position them (a reset driving the valve): goal = present position first, as for the joints. On exit
        the torque goes off (confirmed by each servo), also when the block raises. Only encoders the config
        marks ``resettable`` may be driven (:class:`~s2r.core.errors.UserError` otherwise); a joint already driven
        is a :class:`BusError`."""
        ...

    def write_passive(self, goals_rad: Mapping[str, float]) -> dict[str, float]:
        """Goal positions (rad) of passive joints being driven, in one sync write; returns the goals actually sent
        after tick quantization (rad). A joint not inside :meth:`passive_driven` is a :class:`BusError`, a
        non-finite goal a ``ValueError``."""
        ...

    @property
    def passive_driving(self) -> tuple[str, ...]:
        """Passive joints whose servo torque is on (inside :meth:`passive_driven`), as last set through this bus."""
        ...

    def torque_status(self) -> dict[str, bool]:
        """Torque Enable as every servo reports it now (joint and encoder name -> on), in one transaction."""
        ...

    def set_bus_watchdog(self, timeout_s: float) -> None:
        """Arm every servo's own watchdog (the encoders' too, which acts while a reset drives them): it stops (holds
        where it is) when no instruction reaches it for ``timeout_s`` (s; rounded up to the servo's step, at most its
        longest) with its torque on, so a host that dies mid-episode leaves no servo chasing its last goal. 0 disarms
        it and clears a watchdog stop (which refuses goals until then); :meth:`connect` clears it too. Raises
        :class:`BusError` when a servo refuses."""
        ...

    def hardware_errors(self) -> dict[str, HardwareError]:
        """Hardware Error Status of every servo, for those that report one (name -> bits)."""
        ...

    def reboot(self, names: Sequence[str] | None = None) -> None:
        """REBOOT the named servos (default: those reporting hardware errors), wait for them to answer, and
        re-enable their torque (goal = present) if the bus has torque on."""
        ...

    def close(self) -> None:
        """Torque off and release the port; idempotent."""
        ...

    @property
    def comm_errors(self) -> Mapping[str, int]:
        """Failed transactions by kind since the bus was made."""
        ...

    @property
    def counters(self) -> BusCounters:
        """Every counter, as a snapshot."""
        ...


@contextmanager
def torque_disabled_block(bus: Bus) -> Iterator[None]:
    """The body of :meth:`Bus.torque_disabled` for any bus: off now, previous state back on exit."""
    was_on = bus.torque_enabled
    if was_on:
        bus.torque(False)
    try:
        yield
    finally:
        if was_on:
            bus.torque(True)


def drivable_passive_joints(config: RobotConfig, names: Sequence[str]) -> tuple[str, ...]:
    """``names`` checked for :meth:`Bus.passive_driven`: passive joints of ``config`` whose encoder is resettable."""
    if not names:
        raise ValueError("passive_driven needs at least one passive joint name")
    for name in names:
        try:
            encoder = config.encoder(name)
        except KeyError as exc:
            raise UserError(str(exc.args[0])) from None
        if not encoder.resettable:
            raise UserError(f"{config.source}: the encoder of {name!r} (id {encoder.id}) is not resettable, so its "
                            f"servo must stay torque-off; set encoders.{name}.resettable: true to let resets drive it")
    if len(set(names)) != len(names):
        raise ValueError(f"passive joint named twice: {', '.join(names)}")
    return tuple(names)


def require_driven(names: Iterable[str], driving: set[str]) -> None:
    """The check of :meth:`Bus.write_passive` for any bus: every named passive joint must be driven now."""
    idle = [n for n in names if n not in driving]
    if idle:
        raise BusError(f"passive joint(s) {', '.join(idle)} not driven: write_passive only inside passive_driven")


@contextmanager
def passive_driven_block(config: RobotConfig, names: Sequence[str], driving: set[str],
                         enable: Callable[[tuple[str, ...]], None],
                         disable: Callable[[tuple[str, ...]], None]) -> Iterator[None]:
    """The body of :meth:`Bus.passive_driven` for any bus: ``enable``/``disable`` switch the named servos.

    ``driving`` is the bus's set of driven joints. The names join it before ``enable`` runs, so a servo
    switched on by a partly failed enable is switched off again; they leave it only once ``disable``
    has succeeded, so a later ``close`` tries again after a failed torque off.
    """
    chosen = drivable_passive_joints(config, names)
    busy = [n for n in chosen if n in driving]
    if busy:
        raise BusError(f"passive joint(s) {', '.join(busy)} already driven (passive_driven blocks do not nest)")
    driving.update(chosen)
    try:
        enable(chosen)
        yield
    finally:
        disable(chosen)
        driving.difference_update(chosen)


def resolve_port(port: str) -> str:
    """The serial device for ``port``; ``"auto"`` is the one adapter under /dev/serial/by-id."""
    if port != AUTO_PORT:
        return port
    found = sorted(glob.glob(SERIAL_BY_ID_GLOB))
    if len(found) == 1:
        return found[0]
    listing = ", ".join(found) if found else "none"
    raise ParameterError("port", f"'auto' needs exactly one USB serial adapter under /dev/serial/by-id (found: "
                         f"{listing}); name the port in the hardware config or with {{port}}, or use the emulator "
                         "driver")


def make_bus(
    config: RobotConfig,
    driver: str,
    port: str | None = None,
    *,
    reality: RealityConfig | None = None,
    faults: FaultSpec | None = None,
    clock: Callable[[], float] = time.monotonic,
    interrupt: Callable[[], object] | None = None,
) -> Bus:
    """A bus for ``config``; not yet connected.

    ``driver="emulator"`` without a port starts an emulator (with ``reality`` and ``faults``) that stops when
    the bus closes; with a port (e.g. from ``s2r emulate``) it connects to that one. ``port`` overrides
    ``config.port``. ``faults`` also applies to the mock; ``clock`` is the mock's time source. ``interrupt``
    (e.g. a stop request's poll) ends a Dynamixel bus's read retries once it returns something true, so a
    requested stop waits for one transaction, not every retry; the mock's reads take no time.
    """
    if driver == "mock":
        from robot.mock import MockBus

        return MockBus(config, faults=faults, clock=clock)
    if driver == "dynamixel":
        from robot.dynamixel.bus import DynamixelBus

        return DynamixelBus(config, resolve_port(port or config.port), interrupt=interrupt)
    if driver == "emulator":
        from robot.dynamixel.bus import DynamixelBus

        if port is not None:
            if reality is not None or faults is not None:
                raise ParameterError("reality" if reality is not None else "faults", "applies to an emulator the bus "
                                     f"starts itself; the emulator on {port} was started with its own reality and "
                                     "faults")
            return DynamixelBus(config, port, interrupt=interrupt)
        from robot.emulator import Emulator

        emulator = Emulator(config, reality=reality, faults=faults)
        path = emulator.start()
        try:
            return DynamixelBus(config, path, on_close=emulator.stop, interrupt=interrupt)
        except BaseException:
            emulator.stop()
            raise
    raise UserError(f"unknown bus driver {driver!r}; expected one of {', '.join(DRIVERS)}")
