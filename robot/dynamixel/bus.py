"""The Dynamixel bus on the official dynamixel-sdk (protocol 2.0): connect, read, write, torque, recovery.

Per control cycle the loop uses two transactions: a SYNC_READ of the 10-byte block at address 126
(Present Current, Velocity, Position) from every joint servo and encoder, and a SYNC_WRITE of Goal
Position (address 116) to every joint servo. Failed transactions are retried a bounded number of times;
every failure is counted by kind; a read that still fails is returned stale (NaN), never as old values.

An encoder the config marks ``resettable`` runs in extended position mode (set at connect while its torque
is off): its torque is on only inside :meth:`DynamixelBus.passive_driven`, and extended mode takes a goal on
any turn, so a valve turned a few times over can be driven back to its start angle (position mode limits
goals to one turn).
"""

from __future__ import annotations

import os
import select
import termios
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import dynamixel_sdk as sdk
import numpy as np

from robot.bus import (
    BusError,
    CounterBook,
    HardwareFault,
    PortLost,
    Reading,
    port_lost,
    require_driven,
)
from robot.busbase import ServoBusBase
from robot.config import RobotConfig
from robot.dynamixel.calibration import ServoCodec
from robot.dynamixel.control_table import (
    ALERT_BIT,
    STATE_BLOCK_DTYPE,
    STATE_BLOCK_SIZE,
    STATE_BLOCK_START,
    HardwareError,
    OperatingMode,
    Register,
    bus_watchdog_units,
    decode,
    encode,
)
from robot.dynamixel.protocol import parse_fast_sync_status
from robot.dynamixel.timing import (
    DRAIN_LONGEST_FACTOR,
    drain_quiet_s,
    packet_timeout_s,
    state_read_attempt_s,
)
from robot.dynamixel.units import (
    A_PER_CURRENT_UNIT,
    FloatArray,
    IntArray,
    return_delay_s_to_units,
    speed_rad_s_to_units,
    ticks_to_joint,
)
from s2r.core.errors import UserError

MS_PER_S = 1000.0
SDK_ERROR_KIND = {
    sdk.COMM_RX_TIMEOUT: "timeout",
    sdk.COMM_RX_CORRUPT: "corrupt",
    sdk.COMM_TX_FAIL: "tx_fail",
    sdk.COMM_TX_ERROR: "tx_fail",
    sdk.COMM_PORT_BUSY: "port_busy",
}
"""dynamixel-sdk communication results -> the bus's error kinds (anything else is ``other``)."""
STATUS_ERROR_MASK = 0x7F
"""ERR bits that mean the servo refused the instruction (bit 7, the alert, does not)."""
REBOOT_WAIT_S = 2.0
"""Longest wait for a rebooted servo to answer PING again (s)."""
REBOOT_POLL_S = 0.01
"""Pause between PINGs while waiting for a rebooted servo (s)."""
WRITE_TIMEOUT_S = 0.05
"""Longest wait for room in the port's output buffer before a packet counts as not sent (s)."""
POLL_WAIT_S = 0.0005
"""Longest block in one empty port read; the SDK re-checks its timeout after each (s)."""


class TunedPortHandler(sdk.PortHandler):
    """dynamixel-sdk's PortHandler with the packet timeout computed from the configured latency timer, and
    waiting for bytes instead of spinning.

    The SDK hard-codes a 16 ms USB latency timer (timeout = bytes * byte time + 2 * 16 ms + 2 ms, about
    34 ms); with the adapter's timer set to 1 ms a missing reply is known after about 4 ms instead. The
    SDK polls the port in a tight loop while it waits; here an empty read blocks in ``select`` until bytes
    arrive (no added latency) or ``POLL_WAIT_S`` passes, so the wait leaves the CPU to other work, such as
    the servo emulator on a small machine.
    """

    def __init__(self, port_name: str, latency_timer_s: float, reply_delays_s: float = 0.0,
                 spin_s: float = 0.0) -> None:
        super().__init__(port_name)
        self.latency_timer_s = latency_timer_s
        self.reply_delays_s = reply_delays_s
        """Return delays of every servo added up (s): a sync read waits for each of them in turn."""
        self.spin_s = spin_s
        """How long after a request the wait for its reply spins before it blocks in ``select`` (s)."""
        self.lost: PortLost | None = None
        """Why the port is gone, once the OS refused it; every later use raises it again."""

    # The SDK sets ``is_using`` first in every transaction, so raising here stops any use of a lost port before
    # it reaches the dead descriptor (and before a transaction the loss interrupted could report "port busy").
    @property
    def is_using(self) -> bool:
        if self.lost is not None:
            raise self.lost
        return self._is_using

    @is_using.setter
    def is_using(self, value: bool) -> None:
        self._is_using = value

    def _lose(self, what: str, exc: BaseException) -> PortLost:
        """Remember the port as lost (the first cause is kept) and return the error to raise."""
        if self.lost is None:
            self.lost = port_lost(self.port_name, what, exc)
        return self.lost

    def _require_alive(self) -> None:
        if self.lost is not None:
            raise self.lost

    def readPort(self, length: int) -> bytes:
        self._require_alive()
        try:
            fd = self.ser.fileno()
            try:
                data = os.read(fd, length) if length > 0 else b""
            except BlockingIOError:
                data = b""
            if not data and length > 0:
                if self.getCurrentTime() - self.packet_start_time < self.spin_s * 1000.0:  # SDK times are in ms
                    return data  # the SDK polls again at once: a spinning core answers faster than one woken up
                select.select([fd], [], [], POLL_WAIT_S)
                try:
                    data = os.read(fd, length)
                except BlockingIOError:
                    data = b""
        except (OSError, ValueError) as exc:  # ValueError: pyserial's fileno() after its port was closed
            raise self._lose("reading", exc) from exc
        return data

    def writePort(self, packet: Sequence[int]) -> int:
        """Write the packet straight to the descriptor: pyserial's write adds tens of microseconds of Python
        per packet, twice per control cycle."""
        self._require_alive()
        data = memoryview(bytes(packet))
        written = 0
        give_up = time.monotonic() + WRITE_TIMEOUT_S
        try:
            fd = self.ser.fileno()
            while written < len(data):
                try:
                    written += os.write(fd, data[written:])
                except BlockingIOError:
                    if time.monotonic() > give_up:
                        break  # the SDK reports the short write as a failed transmission
                    select.select([], [fd], [], POLL_WAIT_S)
        except (OSError, ValueError) as exc:
            raise self._lose("writing", exc) from exc
        return written

    def clearPort(self) -> None:
        self._require_alive()
        try:
            super().clearPort()
        except (OSError, termios.error, ValueError) as exc:  # tcflush on a pty whose master is gone: termios.error
            raise self._lose("flushing its input", exc) from exc

    def getBytesAvailable(self) -> int:
        self._require_alive()
        try:
            return int(super().getBytesAvailable())
        except (OSError, termios.error, ValueError) as exc:
            raise self._lose("asking for waiting bytes", exc) from exc

    def closePort(self) -> None:
        """Close the descriptor; quiet on a lost port, whose close can fail as its flush did (nothing is left to
        release but the descriptor, which pyserial drops either way)."""
        try:
            super().closePort()
        except (OSError, termios.error, ValueError):
            if self.lost is None:
                raise
            self.is_open = False

    def setPacketTimeout(self, packet_length: int) -> None:
        self.packet_start_time = self.getCurrentTime()
        # The SDK keeps its times in ms.
        self.packet_timeout = MS_PER_S * packet_timeout_s(self.baudrate, packet_length, self.latency_timer_s,
                                                          self.reply_delays_s)

    def drain(self, quiet_s: float, longest_s: float) -> int:
        """Discard input until the line has been quiet for ``quiet_s`` (at most ``longest_s``); bytes dropped.

        After a failed transaction the rest of its replies may still be on their way; a retry must not take
        one of them for its own answer.
        """
        self._require_alive()
        dropped = 0
        end = time.monotonic() + longest_s
        try:
            while time.monotonic() < end:
                ready, _, _ = select.select([self.ser.fileno()], [], [], quiet_s)
                if not ready:
                    break
                dropped += len(self.ser.read(self.ser.in_waiting or 1))
        except (OSError, termios.error, ValueError) as exc:  # serial.SerialException is an OSError
            raise self._lose("draining", exc) from exc
        self.clearPort()
        return dropped


def sdk_error_kind(result: int) -> str:
    """The counted kind of a failed dynamixel-sdk result."""
    return SDK_ERROR_KIND.get(result, "other")


class DynamixelBus(ServoBusBase):
    """The servo bus of one robot on a serial port (or an emulator's pseudo-terminal); see :class:`robot.bus.Bus`.

    ``port_handler``/``packet_handler`` replace the SDK objects (tests pass recording wrappers);
    ``on_close`` runs after the port is closed (e.g. stopping an emulator the bus owns); ``interrupt`` is polled
    before each retry of a state read, and a true result gives the read up (stale), so a requested stop acts
    after one transaction instead of every retry. ``clock`` and ``sleep`` are the bus's time (a lock-step emulator's
    simulated time with its port handler). Not thread-safe: one loop owns the bus.
    """

    def __init__(
        self,
        config: RobotConfig,
        port: str,
        *,
        port_handler: Any = None,
        packet_handler: Any = None,
        on_close: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        interrupt: Callable[[], object] | None = None,
    ) -> None:
        if config.protocol != 2.0:
            raise UserError(f"{config.source}: protocol {config.protocol} is not supported; expected 2.0")
        self.config = config
        self.port = port
        self._codec = ServoCodec(config)
        self._port = port_handler if port_handler is not None else TunedPortHandler(
            port, config.latency_timer_s, len(config.all_ids) * config.return_delay_s, config.reply_spin_s)
        self._ph = packet_handler if packet_handler is not None else sdk.PacketHandler(2.0)
        self._on_close = on_close
        self._clock = clock
        self._sleep = sleep
        self._interrupt = interrupt
        self._book = CounterBook()
        self._opened = False
        self._connected = False
        self._torque = False
        self._ids = config.all_ids
        self._names = {i: config.name_of(i) for i in self._ids}
        self._n_joints = len(config.joints)
        self._state_read = sdk.GroupSyncRead(self._port, self._ph, STATE_BLOCK_START, STATE_BLOCK_SIZE)
        for i in self._ids:
            self._state_read.addParam(i)
        self._error_read = sdk.GroupSyncRead(self._port, self._ph, Register.HARDWARE_ERROR_STATUS.address,
                                             Register.HARDWARE_ERROR_STATUS.size)
        for i in self._ids:
            self._error_read.addParam(i)
        self._torque_read = sdk.GroupSyncRead(self._port, self._ph, Register.TORQUE_ENABLE.address,
                                              Register.TORQUE_ENABLE.size)
        for i in self._ids:
            self._torque_read.addParam(i)
        self._goal_write = sdk.GroupSyncWrite(self._port, self._ph, Register.GOAL_POSITION.address,
                                              Register.GOAL_POSITION.size)
        self._encoder_index = {e.name: k for k, e in enumerate(config.encoders)}
        self._driving: set[str] = set()
        self._watchdog_armed = False
        self._read_deadline: float | None = None
        """While a state read runs: when it must be done (s, ``clock``)."""
        self._attempt_s = state_read_attempt_s(config.baud, len(self._ids), config.latency_timer_s,
                                               config.return_delay_s)
        """The longest one failing state-read attempt takes, its drain included (s)."""

    # --- Bus protocol --------------------------------------------------------------------------
    def connect(self, torque_on: bool = True) -> None:
        if self._connected_already(torque_on):
            return
        self._open()
        self._ping_all()
        n = self.config.retries.connect
        for i in self._ids:
            self._write(i, Register.TORQUE_ENABLE, 0, n)
        self._torque = False
        # The return delay first: the factory 500 us per servo would make a sync read of all of them time out.
        delay = return_delay_s_to_units(self.config.return_delay_s)
        for i in self._ids:
            self._ensure(i, Register.RETURN_DELAY_TIME, delay, n)
        errors = self.hardware_errors()
        if errors:
            raise HardwareFault(errors)
        self._apply_settings()
        # A host that died with the watchdog armed left it armed, or expired (goals refused until cleared).
        for i in self._ids:
            self._ensure(i, Register.BUS_WATCHDOG, 0, n)
        self._watchdog_armed = False
        self._connected = True
        if torque_on:
            self.torque(True)

    def read(self) -> Reading:
        self._require_connected()
        return self._book.reading(self._read_state()[0])

    def write(self, command_rad: FloatArray) -> FloatArray:
        self._require_connected()
        ticks = self._codec.command_ticks(command_rad)
        self._write_goal_ticks(self.config.joint_ids, ticks)
        self._book.writes += 1
        return self._codec.joint_rad(ticks)

    def torque(self, enabled: bool) -> None:
        self._require_connected()
        if enabled:
            self._enable_torque(self.config.joint_ids)
        else:
            driven = self._driven_ids()
            self._disable_torque([*self.config.joint_ids, *driven])
            self._driving.clear()
        self._torque = enabled

    def write_passive(self, goals_rad: Mapping[str, float]) -> dict[str, float]:
        self._require_connected()
        require_driven(goals_rad, self._driving)
        ids, ticks, sent = [], [], {}
        for name, angle in goals_rad.items():
            k = self._encoder_index[name]
            t = self._codec.passive_goal_ticks(k, float(angle))
            ids.append(self.config.encoders[k].id)
            ticks.append(t)
            sent[name] = self._codec.passive_rad(k, t)
        self._write_goal_ticks(ids, np.array(ticks, dtype=np.int64))
        return sent

    def torque_status(self) -> dict[str, bool]:
        self._require_open()
        values = self._sync_read_registers(self._torque_read, Register.TORQUE_ENABLE, "torque enable")
        return {self._names[i]: v == 1 for i, v in values.items()}

    def servo_angles(self) -> FloatArray:
        """The joint servos' own angles (rad, task order): Present Position before the config's calibration, 0 at
        2048 ticks, in the servo's direction (``joint = angle * scale + offset_rad``). What calibration measures, so
        no reading is refused as implausible: a robot not yet calibrated reads anywhere. One READ per servo, with
        the read retries; raises :class:`BusError` when a servo does not answer."""
        self._require_open()
        ticks = [self._read_register(j.id, Register.PRESENT_POSITION, self.config.retries.read)
                 for j in self.config.joints]
        return ticks_to_joint(np.array(ticks, dtype=np.int64), 1.0, 0.0)

    def ping_models(self) -> dict[str, int | None]:
        """PING every servo (with the connect retries): joint or encoder name -> the model number it reports, or
        ``None`` when it does not answer. Opens the port if needed; writes nothing."""
        self._require_open()
        out: dict[str, int | None] = {}
        for i in self._ids:
            model, kind = self._ping(i, 1 + self.config.retries.connect)
            out[self._names[i]] = None if kind is not None else model
        return out

    def settings_mismatches(self) -> list[str]:
        """Every setting :meth:`connect` writes (operating mode, homing offset, drive mode, position, velocity and
        current limits, return delay, bus watchdog) read back from the servos: one line per register that differs
        from what the config implies, empty when all match. Writes nothing."""
        self._require_open()
        n = self.config.retries.connect
        problems = []
        for i, register, want in self._expected_settings():
            got = self._read_register(i, register, n)
            if got != want:
                problems.append(f"{self._label(i)}: {register.name} reads {got}, expected {want}")
        return problems

    def set_bus_watchdog(self, timeout_s: float) -> None:
        self._require_connected()
        units = bus_watchdog_units(timeout_s)
        for i in self._ids:
            self._write(i, Register.BUS_WATCHDOG, units, self.config.retries.write)
        self._watchdog_armed = units > 0

    def _enable_passive(self, names: tuple[str, ...]) -> None:
        self._require_connected()
        self._enable_torque([self.config.encoder(n).id for n in names])

    def _disable_passive(self, names: tuple[str, ...]) -> None:
        if not self._connected:
            return  # closed inside the block: close turned every driven servo off already
        self._disable_torque([self.config.encoder(n).id for n in names])

    def _driven_ids(self) -> list[int]:
        return [e.id for e in self.config.encoders if e.name in self._driving]

    def _disable_torque(self, ids: Sequence[int]) -> None:
        """Torque off on every servo in ``ids``, even when some do not answer.

        One sync write reaches every live servo in a single packet and needs no reply; each servo is
        then told again and must acknowledge, so one silent servo cannot keep the others powered.
        """
        group = sdk.GroupSyncWrite(self._port, self._ph, Register.TORQUE_ENABLE.address, Register.TORQUE_ENABLE.size)
        for i in ids:
            group.addParam(i, list(encode(Register.TORQUE_ENABLE, 0)))
        result = group.txPacket()
        if result != sdk.COMM_SUCCESS:
            self._failed(sdk_error_kind(result))
        unconfirmed = []
        for i in ids:
            try:
                self._write(i, Register.TORQUE_ENABLE, 0, self.config.retries.write)
            except BusError as exc:
                unconfirmed.append(str(exc))
        if unconfirmed:
            raise BusError("torque off not confirmed: " + "; ".join(unconfirmed))

    def hardware_errors(self) -> dict[str, HardwareError]:
        self._require_open()
        values = self._sync_read_registers(self._error_read, Register.HARDWARE_ERROR_STATUS, "hardware error status")
        return {self._names[i]: HardwareError(v) for i, v in values.items() if v}

    def reboot(self, names: Sequence[str] | None = None) -> None:
        self._require_open()
        if names is None:
            names = list(self.hardware_errors())
        ids = [self._id_of(n) for n in names]
        for i in ids:
            self._reboot_one(i)
        joint_ids = [i for i in ids if i in self.config.joint_ids]
        if self._connected and self._torque and joint_ids:
            self._enable_torque(joint_ids)

    def close(self) -> None:
        try:
            if self._connected and self._watchdog_armed:
                try:
                    self.set_bus_watchdog(0.0)  # the next connect finds it off, and nothing stops mid-close
                except BusError:
                    pass  # counted already; the torque goes off next either way
            if self._connected and (self._torque or self._driving):
                try:
                    self.torque(False)
                except BusError:
                    pass  # counted already; closing must not fail on an unreachable servo
        finally:
            self._connected = False
            self._torque = False
            if self._opened:
                self._port.closePort()
                self._opened = False
            if self._on_close is not None:
                on_close, self._on_close = self._on_close, None
                on_close()

    def __enter__(self) -> DynamixelBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- connecting -------------------------------------------------------------------------------
    def _open(self) -> None:
        if self._opened:
            return
        try:
            ok = self._port.openPort() and self._port.setBaudRate(self.config.baud)
        except OSError as exc:  # serial.SerialException is an OSError
            raise UserError(f"cannot open serial port {self.port!r}: {exc}") from None
        if not ok:
            raise UserError(f"cannot open serial port {self.port!r} at {self.config.baud} baud")
        self._opened = True

    def _ping_all(self) -> None:
        problems = []
        for i in self._ids:
            model, kind = self._ping(i, 1 + self.config.retries.connect)
            if kind is not None:
                problems.append(f"{self._label(i)}: no answer to PING ({kind})")
            elif model != self.config.servo.model_number:
                problems.append(f"{self._label(i)}: model number {model}, expected {self.config.servo.model_number} "
                                f"({self.config.servo.name})")
        if problems:
            raise BusError(f"servos on {self.port} do not match {self.config.source}: " + "; ".join(problems))

    def _ping(self, servo_id: int, attempts: int) -> tuple[int, str | None]:
        kind: str | None = None
        for _ in range(attempts):
            model, result, _error = self._ph.ping(self._port, servo_id)
            if result == sdk.COMM_SUCCESS:
                return int(model), None
            kind = sdk_error_kind(result)
            self._failed(kind)
        return 0, kind

    def _apply_settings(self) -> None:
        """Every EEPROM setting the config implies, written only where the servo differs (EEPROM wears)."""
        n = self.config.retries.connect
        for i, register, value in self._eeprom_settings():
            self._ensure(i, register, value, n)

    def _eeprom_settings(self) -> list[tuple[int, Register, int]]:
        """(servo id, register, value) of every EEPROM setting the config implies, in the order they are written."""
        cfg = self.config
        out: list[tuple[int, Register, int]] = []
        for e in cfg.encoders:
            out += [(e.id, Register.HOMING_OFFSET, 0), (e.id, Register.DRIVE_MODE, 0)]
            if e.resettable:
                out.append((e.id, Register.OPERATING_MODE, int(OperatingMode.EXTENDED_POSITION)))
        mode = cfg.operating_mode_value
        for k, j in enumerate(cfg.joints):
            # Calibration lives in the config, so the servo's own offset and direction must be neutral.
            out += [(j.id, Register.OPERATING_MODE, int(mode)), (j.id, Register.HOMING_OFFSET, 0),
                    (j.id, Register.DRIVE_MODE, 0)]
            if mode != OperatingMode.EXTENDED_POSITION:
                out += [(j.id, Register.MAX_POSITION_LIMIT, int(self._codec.tick_high[k])),
                        (j.id, Register.MIN_POSITION_LIMIT, int(self._codec.tick_low[k]))]
            out += [(j.id, Register.VELOCITY_LIMIT, speed_rad_s_to_units(j.velocity_limit_rad_s)),
                    (j.id, Register.CURRENT_LIMIT, int(j.current_limit_a / A_PER_CURRENT_UNIT))]
        return out

    def _expected_settings(self) -> list[tuple[int, Register, int]]:
        """What :meth:`connect` leaves in every servo: the EEPROM settings, the return delay and a disarmed bus
        watchdog (while this bus has not armed it)."""
        delay = return_delay_s_to_units(self.config.return_delay_s)
        watchdog = [] if self._watchdog_armed else [(i, Register.BUS_WATCHDOG, 0) for i in self._ids]
        return [*[(i, Register.RETURN_DELAY_TIME, delay) for i in self._ids], *self._eeprom_settings(), *watchdog]

    # --- transactions -----------------------------------------------------------------------------
    def _read_state(self) -> tuple[Reading, IntArray | None]:
        """One state read with retries: the reading, and every servo's Present Position (ticks, in ``all_ids``
        order) when it worked."""
        t_request = self._clock()
        # The read's deadline is the watchdog's data-age bound: a retry that could not finish by then is not
        # started (the config validator makes every configured retry fit, so only a stalled host gets here).
        self._read_deadline = t_request + self.config.watchdog.max_data_age_s
        try:
            return self._read_state_attempts(t_request, self._read_deadline)
        finally:
            self._read_deadline = None  # also when the port is lost mid-read: later drains are not cut short

    def _read_state_attempts(self, t_request: float, deadline: float) -> tuple[Reading, IntArray | None]:
        """The attempts of :meth:`_read_state`, the first at ``t_request``, none started that could not end by
        ``deadline`` (s, ``clock``)."""
        n_j, n_p = self._n_joints, len(self.config.encoders)
        attempts = 1 + self.config.retries.read
        last_error: str | None = None
        for attempt in range(1, attempts + 1):
            if attempt > 1 and self._clock() + self._attempt_s > deadline:
                last_error = f"{last_error}; read deadline of {self.config.watchdog.max_data_age_s:g} s reached"
                attempts = attempt - 1
                break
            if attempt > 1 and self._interrupt is not None and self._interrupt():
                last_error = f"{last_error}; retries given up for a requested stop"
                attempts = attempt - 1
                break
            # A failed fast read cannot say which servo broke the chained reply; the retries are plain sync
            # reads, whose per-servo replies name it.
            fast = self.config.fast_sync_read and attempt == 1
            name = "fast sync read" if fast else "sync read"
            t_request = self._clock()
            result = self._state_read.fastSyncReadTxPacket() if fast else self._state_read.txPacket()
            if result != sdk.COMM_SUCCESS:
                kind = sdk_error_kind(result)
                self._failed(kind)
                last_error = f"{kind} ({name})"
                continue
            blocks, alerts, failure = self._receive_fast_blocks() if fast else self._receive_blocks()
            if failure is not None:
                last_error = failure
                continue
            t_done = self._clock()
            block = np.frombuffer(b"".join(blocks), dtype=STATE_BLOCK_DTYPE)
            cur = block["current"].astype(np.int64)
            vel = block["velocity"].astype(np.int64)
            pos = block["position"].astype(np.int64)
            jp, jv, jc = self._codec.joint_state(cur[:n_j], vel[:n_j], pos[:n_j])
            pp, pv = self._codec.encoder_state(vel[n_j:], pos[n_j:])
            implausible = self._implausible(jp, pp)
            if implausible is not None:
                last_error = implausible
                continue
            reading = Reading(t_done, t_request, jp, jv, jc, pp, pv, True, attempt, last_error, tuple(alerts))
            return reading, pos
        return Reading.failed(n_j, n_p, t_request, self._clock(), attempts, last_error), None

    def _receive_blocks(self) -> tuple[list[bytes], list[str], str | None]:
        """The status packets of one sync read, in ID order; the first failure ends it (and is counted)."""
        blocks: list[bytes] = []
        alerts: list[str] = []
        for i in self._ids:
            data, result, error = self._ph.readRx(self._port, i, STATE_BLOCK_SIZE)
            kind: str | None = None
            if result != sdk.COMM_SUCCESS:
                kind = sdk_error_kind(result)
            elif error & STATUS_ERROR_MASK:
                kind = "status_error"
            elif len(data) != STATE_BLOCK_SIZE:
                kind = "short_data"
            if kind is not None:
                self._failed(kind)
                return blocks, alerts, f"{kind} ({self._label(i)})"
            if error & ALERT_BIT:
                alerts.append(self._names[i])
            blocks.append(bytes(data))
        return blocks, alerts, None

    def _receive_fast_blocks(self) -> tuple[list[bytes], list[str], str | None]:
        """The combined status of one FAST_SYNC_READ, every servo's segment checked on its own (ID and CRC, see
        :func:`parse_fast_sync_status`): the blocks in ID order, or the failure (counted once) naming each servo
        whose segment was bad; a bad segment is never read at a shifted offset.

        The raw packet comes from the SDK's ``rxPacket`` rather than ``fastSyncReadRx``, which drops a packet whose
        final CRC fails and would hide which segments were still right.
        """
        packet, result = self._ph.rxPacket(self._port, True)
        segments = parse_fast_sync_status(packet, self._ids, STATE_BLOCK_SIZE)
        bad = [seg for seg in segments if seg.failure is not None]
        if not packet or (result != sdk.COMM_SUCCESS and not bad):
            kind = sdk_error_kind(result)  # nothing arrived, or more than the segments asked for
            self._failed(kind)
            return [], [], f"{kind} (fast sync read)"
        if bad:
            # Only a whole reading can be stale (the controller holds on a stale one), so one bad segment fails
            # the attempt; the retry is a plain sync read, whose per-servo replies are checked on their own too.
            kind = "short_data" if all(str(seg.failure).startswith("short_data") for seg in bad) else "corrupt"
            self._failed(kind)
            detail = "; ".join(f"{self._label(seg.servo_id)}: {seg.failure}" for seg in bad)
            return [], [], f"{kind} (fast sync read: {detail})"
        blocks: list[bytes] = []
        alerts: list[str] = []
        for seg in segments:
            if seg.error & STATUS_ERROR_MASK:
                self._failed("status_error")
                return [], [], f"status_error ({self._label(seg.servo_id)})"
            if seg.error & ALERT_BIT:
                alerts.append(self._names[seg.servo_id])
            blocks.append(seg.data)
        return blocks, alerts, None

    def _present_ticks(self) -> IntArray:
        """Present Position (ticks) of every servo (``all_ids`` order), read for a torque change; raises when the
        read fails."""
        reading, ticks = self._read_state()
        if ticks is None:
            raise BusError(f"cannot read the present positions on {self.port}: {reading.error}")
        return ticks

    def _enable_torque(self, servo_ids: Iterable[int]) -> None:
        """Goal = present position first, so enabling torque cannot jump to a stale goal; then torque on.

        The present position comes from a checked reading only (segment CRCs, plausible ranges) and a joint's
        goal is clamped into its limit ticks: a servo in position mode refuses a goal outside them, and would keep
        its old one.
        """
        ids = list(servo_ids)
        present = self._present_ticks()
        present[:self._n_joints] = self._codec.clamp_joint_ticks(present[:self._n_joints])  # all_ids: joints first
        index = {i: k for k, i in enumerate(self._ids)}
        self._write_goal_ticks(ids, present[[index[i] for i in ids]])
        for i in ids:
            self._write(i, Register.TORQUE_ENABLE, 1, self.config.retries.write)

    def _write_goal_ticks(self, ids: Sequence[int], ticks: IntArray) -> None:
        group = self._goal_write
        group.clearParam()
        for i, t in zip(ids, ticks, strict=True):
            group.addParam(i, list(encode(Register.GOAL_POSITION, int(t))))
        kind = "tx_fail"
        for _ in range(1 + self.config.retries.write):
            result = group.txPacket()
            if result == sdk.COMM_SUCCESS:
                return
            kind = sdk_error_kind(result)
            self._failed(kind)
        raise BusError(f"cannot send goal positions on {self.port}: {kind}")

    def _sync_read_registers(self, group: Any, register: Register, what: str) -> dict[int, int]:
        kind = "timeout"
        for _ in range(1 + self.config.retries.read):
            result = group.txRxPacket()
            if result == sdk.COMM_SUCCESS:
                return {i: int(group.getData(i, register.address, register.size)) for i in self._ids}
            kind = sdk_error_kind(result)
            self._failed(kind)
        raise BusError(f"cannot read the {what} of the servos on {self.port}: {kind}")

    def _write(self, servo_id: int, register: Register, value: int, retries: int) -> None:
        data = list(encode(register, value))
        kind = "timeout"
        for _ in range(1 + retries):
            result, error = self._ph.writeTxRx(self._port, servo_id, register.address, register.size, data)
            if result != sdk.COMM_SUCCESS:
                kind = sdk_error_kind(result)
                self._failed(kind)
                continue
            if error & STATUS_ERROR_MASK:
                self._book.error("status_error")
                raise BusError(f"{self._label(servo_id)} refused {register.name} = {value}: "
                               f"{self._ph.getRxPacketError(error & STATUS_ERROR_MASK)}")
            return
        raise BusError(f"no answer from {self._label(servo_id)} writing {register.name}: {kind}")

    def _read_register(self, servo_id: int, register: Register, retries: int) -> int:
        kind = "timeout"
        for _ in range(1 + retries):
            data, result, error = self._ph.readTxRx(self._port, servo_id, register.address, register.size)
            if result != sdk.COMM_SUCCESS:
                kind = sdk_error_kind(result)
            elif error & STATUS_ERROR_MASK:
                self._book.error("status_error")
                raise BusError(f"{self._label(servo_id)} refused reading {register.name}: "
                               f"{self._ph.getRxPacketError(error & STATUS_ERROR_MASK)}")
            elif len(data) != register.size:
                kind = "short_data"
            else:
                return decode(register, bytes(data))
            self._failed(kind)
        raise BusError(f"no answer from {self._label(servo_id)} reading {register.name}: {kind}")

    def _ensure(self, servo_id: int, register: Register, value: int, retries: int) -> None:
        if self._read_register(servo_id, register, retries) != value:
            self._write(servo_id, register, value, retries)

    def _reboot_one(self, servo_id: int) -> None:
        kind = "timeout"
        for _ in range(1 + self.config.retries.write):
            result, error = self._ph.reboot(self._port, servo_id)
            if result == sdk.COMM_SUCCESS and not error & STATUS_ERROR_MASK:
                break
            kind = sdk_error_kind(result) if result != sdk.COMM_SUCCESS else "status_error"
            self._failed(kind)
        else:
            raise BusError(f"{self._label(servo_id)} did not acknowledge REBOOT: {kind}")
        deadline = self._clock() + REBOOT_WAIT_S
        while True:
            _model, kind_or_none = self._ping(servo_id, 1)
            if kind_or_none is None:
                return
            if self._clock() > deadline:
                raise BusError(f"{self._label(servo_id)} did not answer within {REBOOT_WAIT_S} s of REBOOT")
            self._sleep(REBOOT_POLL_S)

    # --- helpers ----------------------------------------------------------------------------------
    def _implausible(self, joint_pos: FloatArray, passive_pos: FloatArray) -> str | None:
        """``None`` when every position lies in its physical range; else the failure, counted as ``implausible``
        (a finished transaction: nothing to drain)."""
        problem = self._codec.implausible(joint_pos, passive_pos)
        if problem is None:
            return None
        self._book.error("implausible")
        return f"implausible ({problem})"

    def _failed(self, kind: str) -> None:
        """Count a failed transaction and let the rest of its replies pass before anything is retried."""
        self._book.error(kind)
        quiet = drain_quiet_s(self.config.latency_timer_s)
        longest = DRAIN_LONGEST_FACTOR * quiet
        if self._read_deadline is not None:  # a babbling line must not hold a state read past its deadline
            longest = max(quiet, min(longest, self._read_deadline - self._clock()))
        drain = getattr(self._port, "drain", None)
        if drain is not None:
            drain(quiet, longest)
        else:
            self._port.clearPort()

    def _label(self, servo_id: int) -> str:
        return f"{self._names.get(servo_id, '?')}, id {servo_id}"

    def _require_open(self) -> None:
        if not self._opened:
            self._open()
