"""The X-series control table (XM430-W350, model number 1020) and the protocol 2.0 codes.

Source: ROBOTIS e-manual, "XM430-W350-T/R" control table (firmware v45 and later,
https://emanual.robotis.com/docs/en/dxl/x/xm430-w350/) and "Protocol 2.0"
(https://emanual.robotis.com/docs/en/dxl/protocol2/). Addresses below 64 are EEPROM: a servo refuses to write
them while Torque Enable is 1.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

EEPROM_END = 64
"""First RAM address; every register below it is EEPROM (write-locked while torque is on)."""
CONTROL_TABLE_SIZE = 148
"""Bytes of the control table modelled here (addresses 0..147; the indirect-address area is not)."""

BROADCAST_ID = 0xFE
MAX_ID = 0xFC
"""Largest ID a servo may have."""

XM430_W350_MODEL_NUMBER = 1020
XM430_W210_MODEL_NUMBER = 1030
SAME_TABLE_MODELS: dict[int, str] = {XM430_W350_MODEL_NUMBER: "XM430-W350", XM430_W210_MODEL_NUMBER: "XM430-W210"}
"""Model numbers whose control table is this one (e-manual: the XM430-W210 and -W350 share it and differ only in
their gearing: W210 212.6:1, about 3.0 N m stall and 77 rpm at 12 V; W350 353.5:1, 4.1 N m and 46 rpm)."""
XM430_W350_FIRMWARE_VERSION = 48
"""Firmware version the emulator reports (any v45+ firmware has this table)."""


class Instruction(enum.IntEnum):
    """Instruction codes of protocol 2.0."""

    PING = 0x01
    READ = 0x02
    WRITE = 0x03
    REG_WRITE = 0x04
    ACTION = 0x05
    FACTORY_RESET = 0x06
    REBOOT = 0x08
    CLEAR = 0x10
    STATUS = 0x55
    SYNC_READ = 0x82
    SYNC_WRITE = 0x83
    FAST_SYNC_READ = 0x8A
    BULK_READ = 0x92
    BULK_WRITE = 0x93
    FAST_BULK_READ = 0x9A


class StatusError(enum.IntEnum):
    """The low 7 bits of a status packet's ERR byte (a number, not bits)."""

    NONE = 0
    RESULT_FAIL = 1
    INSTRUCTION = 2
    CRC = 3
    DATA_RANGE = 4
    DATA_LENGTH = 5
    DATA_LIMIT = 6
    ACCESS = 7


ALERT_BIT = 0x80
"""Bit 7 of a status packet's ERR byte: the servo has a hardware error (see Hardware Error Status)."""


class HardwareError(enum.IntFlag):
    """Bits of the Hardware Error Status register (address 70)."""

    INPUT_VOLTAGE = 1 << 0
    OVERHEATING = 1 << 2
    MOTOR_ENCODER = 1 << 3
    ELECTRICAL_SHOCK = 1 << 4
    OVERLOAD = 1 << 5


class OperatingMode(enum.IntEnum):
    """Values of the Operating Mode register (address 11)."""

    CURRENT = 0
    VELOCITY = 1
    POSITION = 3
    EXTENDED_POSITION = 4
    CURRENT_BASED_POSITION = 5
    PWM = 16


BAUD_CODES: dict[int, int] = {
    9600: 0,
    57600: 1,
    115200: 2,
    1_000_000: 3,
    2_000_000: 4,
    3_000_000: 5,
    4_000_000: 6,
}
"""Baud rate (bit/s) -> value of the Baud Rate register (address 8). 4.5 Mbps (code 7) is left out:
dynamixel-sdk's PortHandler cannot open a port at that rate."""


S_PER_BUS_WATCHDOG_UNIT = 0.020
"""Unit of Bus Watchdog (98) (s). E-manual, XM430-W350 "Bus Watchdog (98)" (firmware v38 and later): while Torque
Enable is 1 the servo times the interval between instruction packets (any instruction of the protocol); when it
exceeds the register's value it stops (position modes hold where they are), the register reads
:data:`BUS_WATCHDOG_ERROR`, and Goal PWM/Current/Velocity/Position become read-only: a write of one is answered
with the Data Range Error. Writing 0 disarms it and clears the error."""
BUS_WATCHDOG_ERROR = -1
"""Bus Watchdog (98) after it expired ("Bus Watchdog Error", e-manual)."""
BUS_WATCHDOG_MAX_UNITS = 127
"""Longest Bus Watchdog time (units of 20 ms, so 2.54 s)."""
BUS_WATCHDOG_MAX_S = BUS_WATCHDOG_MAX_UNITS * S_PER_BUS_WATCHDOG_UNIT
"""Longest Bus Watchdog time (s)."""


def bus_watchdog_units(timeout_s: float) -> int:
    """Bus Watchdog (98) register value for a timeout (s): rounded up to its 20 ms step, at most its longest; 0 off."""
    if not timeout_s >= 0:
        raise ValueError(f"a bus watchdog timeout must be >= 0 s; got {timeout_s!r}")
    if timeout_s == 0:
        return 0
    # Less a nanosecond: a whole number of steps must not round up one step for a float error.
    return min(BUS_WATCHDOG_MAX_UNITS, max(1, math.ceil((timeout_s - 1e-9) / S_PER_BUS_WATCHDOG_UNIT)))


@dataclass(frozen=True)
class RegisterSpec:
    """One control-table entry."""

    address: int
    """First byte of the register."""
    size: int
    """Length in bytes (1, 2 or 4), little endian."""
    writable: bool
    """Whether WRITE may change it."""
    signed: bool
    """Whether the bytes hold a two's-complement value."""
    default: int
    """Value after power-on or REBOOT (RAM) / factory setting (EEPROM), in register units."""
    low: int
    """Smallest value a WRITE may store (register units)."""
    high: int
    """Largest value a WRITE may store (register units)."""

    @property
    def eeprom(self) -> bool:
        """Whether the register lies in the EEPROM area (write-locked while torque is on)."""
        return self.address < EEPROM_END


def _r(address: int, size: int, default: int = 0, low: int = 0, high: int | None = None, *,
       writable: bool = True, signed: bool = False) -> RegisterSpec:
    top = high if high is not None else (1 << (8 * size - (1 if signed else 0))) - 1
    return RegisterSpec(address, size, writable, signed, default, low, top)


class Register(enum.Enum):
    """The XM430-W350 control table: name -> :class:`RegisterSpec` (units are the servo's raw units)."""

    # Members are singletons compared by identity; hashing by identity (in C) instead of Enum's
    # Python-level hash of the name makes register lookups several times faster in the emulator.
    __hash__ = object.__hash__

    MODEL_NUMBER = _r(0, 2, XM430_W350_MODEL_NUMBER, writable=False)
    MODEL_INFORMATION = _r(2, 4, writable=False)
    FIRMWARE_VERSION = _r(6, 1, XM430_W350_FIRMWARE_VERSION, writable=False)
    ID = _r(7, 1, 1, 0, MAX_ID)
    BAUD_RATE = _r(8, 1, 1, 0, 7)
    RETURN_DELAY_TIME = _r(9, 1, 250, 0, 254)
    """Unit 2 us."""
    DRIVE_MODE = _r(10, 1, 0, 0, 13)
    OPERATING_MODE = _r(11, 1, int(OperatingMode.POSITION), 0, 16)
    SECONDARY_ID = _r(12, 1, 255, 0, 255)
    PROTOCOL_TYPE = _r(13, 1, 2, 1, 2)
    HOMING_OFFSET = _r(20, 4, 0, -1_044_479, 1_044_479, signed=True)
    """Added to the raw position to give Present Position (ticks)."""
    MOVING_THRESHOLD = _r(24, 4, 10, 0, 1023)
    """Unit 0.229 rpm."""
    TEMPERATURE_LIMIT = _r(31, 1, 80, 0, 100)
    """Deg C."""
    MAX_VOLTAGE_LIMIT = _r(32, 2, 160, 95, 160)
    """Unit 0.1 V."""
    MIN_VOLTAGE_LIMIT = _r(34, 2, 95, 95, 160)
    """Unit 0.1 V."""
    PWM_LIMIT = _r(36, 2, 885, 0, 885)
    CURRENT_LIMIT = _r(38, 2, 1193, 0, 1193)
    """Unit 2.69 mA."""
    VELOCITY_LIMIT = _r(44, 4, 200, 0, 1023)
    """Unit 0.229 rpm."""
    MAX_POSITION_LIMIT = _r(48, 4, 4095, 0, 4095)
    """Ticks."""
    MIN_POSITION_LIMIT = _r(52, 4, 0, 0, 4095)
    """Ticks."""
    STARTUP_CONFIGURATION = _r(60, 1, 0, 0, 3)
    SHUTDOWN = _r(63, 1, 52, 0, 63)
    """Hardware-error bits that switch the torque off."""
    TORQUE_ENABLE = _r(64, 1, 0, 0, 1)
    LED = _r(65, 1, 0, 0, 1)
    STATUS_RETURN_LEVEL = _r(68, 1, 2, 0, 2)
    """0: reply to PING only, 1: also to reads, 2: to every instruction."""
    REGISTERED_INSTRUCTION = _r(69, 1, writable=False)
    HARDWARE_ERROR_STATUS = _r(70, 1, writable=False)
    VELOCITY_I_GAIN = _r(76, 2, 1920, 0, 16383)
    VELOCITY_P_GAIN = _r(78, 2, 100, 0, 16383)
    POSITION_D_GAIN = _r(80, 2, 0, 0, 16383)
    POSITION_I_GAIN = _r(82, 2, 0, 0, 16383)
    POSITION_P_GAIN = _r(84, 2, 800, 0, 16383)
    FEEDFORWARD_2ND_GAIN = _r(88, 2, 0, 0, 16383)
    FEEDFORWARD_1ST_GAIN = _r(90, 2, 0, 0, 16383)
    BUS_WATCHDOG = _r(98, 1, 0, 0, 127, signed=True)
    """Unit 20 ms (:data:`S_PER_BUS_WATCHDOG_UNIT`); 0 off (and clears the error), 1..127 armed,
    :data:`BUS_WATCHDOG_ERROR` after it expired."""
    GOAL_PWM = _r(100, 2, 0, -885, 885, signed=True)
    GOAL_CURRENT = _r(102, 2, 0, -1193, 1193, signed=True)
    """Unit 2.69 mA."""
    GOAL_VELOCITY = _r(104, 4, 0, -1023, 1023, signed=True)
    """Unit 0.229 rpm."""
    PROFILE_ACCELERATION = _r(108, 4, 0, 0, 32767)
    PROFILE_VELOCITY = _r(112, 4, 0, 0, 32767)
    GOAL_POSITION = _r(116, 4, 2048, -1_048_575, 1_048_575, signed=True)
    """Ticks; in position mode also bounded by the Min/Max Position Limit registers."""
    REALTIME_TICK = _r(120, 2, writable=False)
    """Ms, wraps at 32768."""
    MOVING = _r(122, 1, writable=False)
    MOVING_STATUS = _r(123, 1, writable=False)
    PRESENT_PWM = _r(124, 2, writable=False, signed=True)
    PRESENT_CURRENT = _r(126, 2, writable=False, signed=True)
    """Unit 2.69 mA."""
    PRESENT_VELOCITY = _r(128, 4, writable=False, signed=True)
    """Unit 0.229 rpm."""
    PRESENT_POSITION = _r(132, 4, writable=False, signed=True)
    """Ticks, 4096 per turn, 2048 = centre."""
    VELOCITY_TRAJECTORY = _r(136, 4, writable=False, signed=True)
    POSITION_TRAJECTORY = _r(140, 4, writable=False, signed=True)
    PRESENT_INPUT_VOLTAGE = _r(144, 2, 120, writable=False)
    """Unit 0.1 V."""
    PRESENT_TEMPERATURE = _r(146, 1, 35, writable=False)
    """Deg C."""
    BACKUP_READY = _r(147, 1, writable=False)

    @property
    def spec(self) -> RegisterSpec:
        """The register's address, size, access and range."""
        value: RegisterSpec = self.value
        return value

    @property
    def address(self) -> int:
        """First byte of the register."""
        return self.spec.address

    @property
    def size(self) -> int:
        """Length in bytes."""
        return self.spec.size


SPEC: dict[Register, RegisterSpec] = {r: r.value for r in Register}
"""Each register's spec, for hot paths (``Register.X.spec`` goes through the Enum's slow ``value``)."""
REGISTER_AT: dict[int, Register] = {r.address: r for r in Register}
"""The register that starts at each address."""

STATE_BLOCK_START = Register.PRESENT_CURRENT.address
STATE_BLOCK_SIZE = (
    Register.PRESENT_POSITION.address + Register.PRESENT_POSITION.size - Register.PRESENT_CURRENT.address
)
"""Present Current, Velocity and Position in one 10-byte read starting at address 126."""
STATE_BLOCK_DTYPE = np.dtype([("current", "<i2"), ("velocity", "<i4"), ("position", "<i4")])
"""The state block's layout (little endian, signed), for decoding many servos' blocks at once."""


def decode(register: Register, data: bytes | bytearray, offset: int = 0) -> int:
    """The value of ``register`` from little-endian ``data`` starting at byte ``offset``."""
    s = SPEC[register]
    return int.from_bytes(data[offset:offset + s.size], "little", signed=s.signed)


def encode(register: Register, value: int) -> bytes:
    """``value`` as the register's little-endian bytes (two's complement when signed)."""
    s = SPEC[register]
    return int(value).to_bytes(s.size, "little", signed=s.signed)
