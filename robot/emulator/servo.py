"""One emulated XM430 (W350 or W210: one control table): its control table and what a servo does on READ, WRITE
and REBOOT.

Error numbers follow the e-manual: a register range that is not defined or is read-only is an access
error, as is any EEPROM write while Torque Enable is 1; a write that covers part of a register is a
data length error, one that starts inside a register or runs past the table a data range error, a value
outside the register's range a data range error, and a goal outside the position limits a data limit
error. A write is checked completely before anything is stored.
"""

from __future__ import annotations

from robot.dynamixel.control_table import (
    ALERT_BIT,
    BUS_WATCHDOG_ERROR,
    CONTROL_TABLE_SIZE,
    EEPROM_END,
    REGISTER_AT,
    SPEC,
    XM430_W350_MODEL_NUMBER,
    HardwareError,
    OperatingMode,
    Register,
    StatusError,
    decode,
)

EMULATED_MODES = frozenset({OperatingMode.POSITION, OperatingMode.EXTENDED_POSITION,
                            OperatingMode.CURRENT_BASED_POSITION})
"""Operating modes the emulator's physics implements (all act as position control)."""
POSITION_LIMITED_MODES = frozenset({OperatingMode.POSITION, OperatingMode.CURRENT_BASED_POSITION})
_HARDWARE_ERROR_AT = Register.HARDWARE_ERROR_STATUS.address
OVERHEATED_C = 80
"""Present Temperature reported while the overheating error is set (deg C, the default limit)."""


_EMULATED_MODE_VALUES = frozenset(int(m) for m in EMULATED_MODES)
_POSITION_LIMITED_VALUES = frozenset(int(m) for m in POSITION_LIMITED_MODES)
_OPERATING_MODE_AT = SPEC[Register.OPERATING_MODE].address
GOAL_REGISTERS = frozenset({Register.GOAL_PWM, Register.GOAL_CURRENT, Register.GOAL_VELOCITY, Register.GOAL_POSITION})
"""The Goal Values a Bus Watchdog Error makes read-only (e-manual, Bus Watchdog (98))."""


class EmulatedServo:
    """The control table of one servo, with the write rules of the real firmware."""

    def __init__(self, servo_id: int, baud_code: int, model_number: int = XM430_W350_MODEL_NUMBER) -> None:
        self.mem = bytearray(CONTROL_TABLE_SIZE)
        for reg in Register:
            self.set(reg, SPEC[reg].default)
        self.set(Register.MODEL_NUMBER, model_number)
        self.set(Register.ID, servo_id)
        self.set(Register.BAUD_RATE, baud_code)
        self.registered: tuple[int, bytes] | None = None
        """A REG_WRITE waiting for ACTION: (address, data)."""

    # --- raw access (no rules: the servo's own side) ---------------------------------------------
    def get(self, reg: Register) -> int:
        """A register's value."""
        s = SPEC[reg]
        return int.from_bytes(self.mem[s.address:s.address + s.size], "little", signed=s.signed)

    def set(self, reg: Register, value: int) -> None:
        """Store a value, wrapping it to the register's width (as the hardware's integers do)."""
        s = SPEC[reg]
        self.mem[s.address:s.address + s.size] = (int(value) & ((1 << (8 * s.size)) - 1)).to_bytes(s.size, "little")

    @property
    def id(self) -> int:
        """Current ID."""
        return self.mem[SPEC[Register.ID].address]

    @property
    def torque_on(self) -> bool:
        """Torque Enable is 1."""
        return self.get(Register.TORQUE_ENABLE) == 1

    @property
    def hardware_error(self) -> HardwareError:
        """The Hardware Error Status bits."""
        return HardwareError(self.get(Register.HARDWARE_ERROR_STATUS))

    def status_error(self, error: int = StatusError.NONE) -> int:
        """ERR byte of a status packet: the error number plus the alert bit when a hardware error is set."""
        return int(error) | (ALERT_BIT if self.mem[_HARDWARE_ERROR_AT] else 0)

    # --- instructions --------------------------------------------------------------------------
    def read(self, address: int, length: int) -> tuple[int, bytes]:
        """READ: (error number, data). Reserved bytes inside the table read as 0."""
        if length <= 0:
            return StatusError.DATA_LENGTH, b""
        if address < 0 or address + length > CONTROL_TABLE_SIZE:
            return StatusError.DATA_RANGE, b""
        return StatusError.NONE, bytes(self.mem[address:address + length])

    def check_write(self, address: int, data: bytes) -> int:
        """The error a WRITE of ``data`` at ``address`` would give (``NONE`` if it is allowed)."""
        if not data:
            return StatusError.DATA_LENGTH
        end = address + len(data)
        if address < 0 or end > CONTROL_TABLE_SIZE:
            return StatusError.DATA_RANGE
        pos = address
        while pos < end:
            reg = REGISTER_AT.get(pos)
            if reg is None:
                inside = any(r.address < pos < r.address + r.size for r in Register)
                return StatusError.DATA_RANGE if inside else StatusError.ACCESS
            s = SPEC[reg]
            if pos + s.size > end:
                return StatusError.DATA_LENGTH
            if not s.writable:
                return StatusError.ACCESS
            if s.eeprom and self.torque_on:
                return StatusError.ACCESS
            value = decode(reg, data, pos - address)
            error = self._check_value(reg, value, data, address)
            if error:
                return error
            pos += s.size
        return StatusError.NONE

    def write(self, address: int, data: bytes) -> int:
        """WRITE: check, then store; returns the error number."""
        error = self.check_write(address, data)
        if error:
            return error
        self.mem[address:address + len(data)] = data
        return StatusError.NONE

    def _check_value(self, reg: Register, value: int, data: bytes, address: int) -> int:
        s = SPEC[reg]
        if not s.low <= value <= s.high:
            return StatusError.DATA_RANGE
        if reg in GOAL_REGISTERS and self.get(Register.BUS_WATCHDOG) == BUS_WATCHDOG_ERROR:
            return StatusError.DATA_RANGE
        if reg is Register.OPERATING_MODE and value not in _EMULATED_MODE_VALUES:
            return StatusError.DATA_RANGE
        if reg is Register.TORQUE_ENABLE and value == 1 and self.hardware_error & self.get(Register.SHUTDOWN):
            return StatusError.RESULT_FAIL
        if reg is Register.GOAL_POSITION and self.mem[_OPERATING_MODE_AT] in _POSITION_LIMITED_VALUES:
            low = self._value_after_write(Register.MIN_POSITION_LIMIT, data, address)
            high = self._value_after_write(Register.MAX_POSITION_LIMIT, data, address)
            if not low <= value <= high:
                return StatusError.DATA_LIMIT
        return StatusError.NONE

    def _value_after_write(self, reg: Register, data: bytes, address: int) -> int:
        a = reg.address
        if address <= a and a + reg.size <= address + len(data):
            return decode(reg, data, a - address)
        return self.get(reg)

    def bus_watchdog_expired(self) -> None:
        """The Bus Watchdog ran out with torque on: stop where it is and report the error (e-manual, Bus Watchdog
        (98)); its goals are refused until the register is written 0."""
        self.set(Register.GOAL_POSITION, self.get(Register.PRESENT_POSITION))
        self.set(Register.BUS_WATCHDOG, BUS_WATCHDOG_ERROR)

    def raise_hardware_error(self, bits: HardwareError) -> None:
        """Set hardware error bits; those in the Shutdown register switch the torque off."""
        self.set(Register.HARDWARE_ERROR_STATUS, int(self.hardware_error | bits))
        if bits & HardwareError.OVERHEATING:
            self.set(Register.PRESENT_TEMPERATURE, OVERHEATED_C)
        if int(bits) & self.get(Register.SHUTDOWN):
            self.set(Register.TORQUE_ENABLE, 0)

    def reboot(self) -> None:
        """REBOOT: hardware errors cleared, RAM back to its power-on values, goal = present position."""
        keep = self.mem[:EEPROM_END]
        present = self.get(Register.PRESENT_POSITION)
        for reg in Register:
            if not SPEC[reg].eeprom:
                self.set(reg, SPEC[reg].default)
        self.mem[:EEPROM_END] = keep
        self.set(Register.PRESENT_POSITION, present)
        self.set(Register.GOAL_POSITION, present)
        self.registered = None
