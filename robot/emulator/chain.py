"""The servo chain: protocol 2.0 instructions in, status packets out, servos coupled to the physics.

Timing is not decided here: :meth:`ServoChain.handle` returns the replies in bus order with what each
servo adds (its Return Delay Time, a fault's delay); the server puts them on the wire.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from robot.config import RobotConfig
from robot.dynamixel.calibration import ServoCodec
from robot.dynamixel.control_table import (
    BAUD_CODES,
    BROADCAST_ID,
    BUS_WATCHDOG_MAX_UNITS,
    S_PER_BUS_WATCHDOG_UNIT,
    STATE_BLOCK_DTYPE,
    Instruction,
    Register,
    StatusError,
)
from robot.dynamixel.protocol import Packet, encode_fast_sync_status, encode_status
from robot.dynamixel.units import (
    S_PER_RETURN_DELAY_UNIT,
    TORQUE_NM_PER_A,
    current_a_to_units,
    joint_to_ticks,
    joint_velocity_to_units,
    ticks_to_joint,
)
from robot.emulator.faults import HARDWARE_BITS, Fate, FaultInjector, FaultSpec
from robot.emulator.physics import RealTimePhysics
from robot.emulator.reality import RealityConfig
from robot.emulator.servo import EmulatedServo
from sim.tasks.spec import FloatArray

READ_INSTRUCTIONS = frozenset({Instruction.SYNC_READ, Instruction.FAST_SYNC_READ, Instruction.BULK_READ})
"""Instructions that count as one read cycle for cycle-triggered faults."""
_INT16 = (-(1 << 15), (1 << 15) - 1)
_INT32 = (-(1 << 31), (1 << 31) - 1)
_REALTIME_TICK_WRAP_MS = 32768
_STATE_DTYPE = STATE_BLOCK_DTYPE
_STATE_AT = Register.PRESENT_CURRENT.address
_TICKER_DTYPE = np.dtype([("tick", "<u2"), ("moving", "u1")])
_TICKER_AT = Register.REALTIME_TICK.address


@dataclass(frozen=True)
class Reply:
    """One status packet to put on the wire."""

    servo_id: int
    """Who sends it."""
    packet: bytes
    """The bytes (already corrupted when the fate says so)."""
    delay_s: float
    """Wait before it starts, after the previous traffic: return delay + any fault delay (s)."""
    dropped: bool
    """Sent by the servo but lost: takes its wire time, never arrives."""
    corrupted: bool
    """Sent with a bad CRC."""


class ServoChain:
    """Every servo of a hardware config, sharing one simulated robot."""

    def __init__(
        self,
        config: RobotConfig,
        physics: RealTimePhysics,
        reality: RealityConfig,
        faults: FaultSpec,
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.physics = physics
        self.reality = reality
        self.codec = ServoCodec(config)
        self.injector = FaultInjector(faults)
        self.clock = clock
        self.t_start = clock()
        self.rng = np.random.default_rng(reality.seed)
        self.baud_code = BAUD_CODES[config.baud]
        self.servos = [EmulatedServo(i, self.baud_code, config.servo.model_number) for i in config.all_ids]
        self.n_joints = len(config.joints)
        # The servos as really mounted: the reality's where it says, else exactly as the config is calibrated.
        mount = [reality.mounting.get(j.name) for j in config.joints]
        joint_scale = [j.scale if m is None else m.scale for j, m in zip(config.joints, mount, strict=True)]
        joint_offset = [j.offset_rad if m is None else m.offset_rad for j, m in zip(config.joints, mount, strict=True)]
        self._scale = np.concatenate([joint_scale, self.codec.encoder_scale])
        self._offset = np.concatenate([joint_offset, self.codec.encoder_offset])
        self.cycle = 0
        """Read transactions received (the cycle count of cycle-triggered faults)."""
        self.stats: Counter[str] = Counter()
        """What happened: instructions, replies, injected faults, CRC errors received, ..."""
        self._targets = np.full(self.n_joints, np.nan)
        self._passive_targets = np.full(len(config.encoders), np.nan)
        self._by_id: dict[int, EmulatedServo] = {}
        self._homing = self._torque = self._threshold = self._watchdog_s = np.zeros(0)
        self._last_instruction = clock()
        """When the servos last received an instruction packet (s): what their Bus Watchdogs time."""
        self._reindex()
        self._sampled = False
        self.refresh(clock())
        for s in self.servos:
            s.set(Register.GOAL_POSITION, s.get(Register.PRESENT_POSITION))

    # --- physics coupling ------------------------------------------------------------------------
    def idle(self, now: float, sample: bool = True) -> None:
        """Advance the physics (and the present registers) and start time-triggered faults while no request is
        pending. ``sample=False`` leaves the present registers to be sampled when something next needs them (a read,
        a Bus Watchdog stop): the same values, as they are a sample of the latest physics step either way, without
        the cost of sampling every step (lock-step, where no host is waiting)."""
        if sample:
            self.refresh(now)
        elif self.physics.advance_to(now):
            self._sampled = False
        self._start_faults(now)
        self._bus_watchdog(now)

    def _bus_watchdog(self, now: float) -> None:
        """Stop every servo whose armed Bus Watchdog has run out with its torque on (e-manual, Bus Watchdog (98))."""
        expired = (self._watchdog_s > 0) & (now - self._last_instruction > self._watchdog_s) & (self._torque != 0)
        if not expired.any():
            return
        self.refresh(now)  # the servos stop at their present positions
        for k in np.flatnonzero(expired):
            self.servos[k].bus_watchdog_expired()
        self.stats["bus_watchdog_stops"] += int(expired.sum())
        self._reindex()
        self._push_targets(now)

    def refresh(self, now: float) -> None:
        """Advance the physics to ``now``; when it stepped, the present registers of every servo from it,
        quantized like the real encoders.

        The registers are a sample-and-hold of the physics at its step rate (2.5 ms by default), like a servo's
        own sampling; the serving loop steps on time while the line is idle, so a request rarely waits for a
        physics step and its reply is at most one step old. Sensor noise is drawn once per sample.
        """
        stepped = self.physics.advance_to(now)
        if not stepped and self._sampled:
            return
        self._sampled = True
        st = self.physics.state()
        r = self.reality
        n = len(self.servos)
        pos_rad = np.concatenate([st.joint_pos, st.passive_pos])
        vel_rad_s = np.concatenate([st.joint_vel, st.passive_vel])
        if r.position_noise_std_rad:
            pos_rad = pos_rad + self.rng.normal(0.0, r.position_noise_std_rad, n)
        if r.velocity_noise_std_rad_s:
            vel_rad_s = vel_rad_s + self.rng.normal(0.0, r.velocity_noise_std_rad_s, n)
        effort = np.zeros(n)
        if st.joint_effort.size == self.n_joints:
            effort[:self.n_joints] = st.joint_effort
        effort[self.n_joints:] = self.physics.passive_effort
        amps = effort / self._scale / TORQUE_NM_PER_A
        if r.current_noise_std_a:
            amps[:self.n_joints] += self.rng.normal(0.0, r.current_noise_std_a, self.n_joints)
        pos = joint_to_ticks(pos_rad, self._scale, self._offset)
        vel = joint_velocity_to_units(vel_rad_s, self._scale)
        cur = current_a_to_units(amps)
        # Present Current/Velocity/Position (126..135) and Realtime Tick/Moving (120..122) are contiguous:
        # write each servo's bytes in two slices.
        state = np.empty(len(self.servos), dtype=_STATE_DTYPE)
        state["current"] = np.clip(np.where(self._torque, cur, 0), *_INT16)
        state["velocity"] = np.clip(vel, *_INT32)
        state["position"] = np.clip(pos + self._homing, *_INT32)
        ticker = np.empty(len(self.servos), dtype=_TICKER_DTYPE)
        ticker["tick"] = int((now - self.t_start) * 1000) % _REALTIME_TICK_WRAP_MS
        ticker["moving"] = np.abs(state["velocity"]) > self._threshold
        state_bytes, ticker_bytes = state.tobytes(), ticker.tobytes()
        n_s, n_t = _STATE_DTYPE.itemsize, _TICKER_DTYPE.itemsize
        for k, s in enumerate(self.servos):
            s.mem[_STATE_AT:_STATE_AT + n_s] = state_bytes[k * n_s:(k + 1) * n_s]
            s.mem[_TICKER_AT:_TICKER_AT + n_t] = ticker_bytes[k * n_t:(k + 1) * n_t]

    def place(self, now: float, joint_pos: FloatArray, passive_pos: FloatArray, base_pose: FloatArray | None) -> None:
        """Reset the scene: the robot at rest in this state (rad; a floating base's pose, position (m) and
        quaternion (w, x, y, z), or ``None``), with every servo's goal at its new present position, so that the
        servos hold the placed pose. What the controller of an emulated legged robot asks for at an episode's
        start, where a human would put the real robot down; no servo could do it."""
        self.physics.place(joint_pos, passive_pos, base_pose)
        pos = joint_to_ticks(np.concatenate([np.asarray(joint_pos, dtype=np.float64),
                                             np.asarray(passive_pos, dtype=np.float64)]), self._scale, self._offset)
        for k, s in enumerate(self.servos):
            s.set(Register.GOAL_POSITION, int(pos[k] + self._homing[k]))
        self._sampled = False
        self.refresh(now)
        self._targets = np.full(self.n_joints, np.nan)  # forces the goals to the physics, even if unchanged
        self._push_targets(now)
        self.stats["placements"] += 1

    def _push_targets(self, now: float) -> None:
        """Send the servos' goals to the physics if any changed (NaN where torque is off): the joint servos'
        position targets, and the encoder servos' goals, which drive their passive joints while torque is on."""
        raw = np.array([s.get(Register.GOAL_POSITION) for s in self.servos]) - self._homing
        angles = np.where(self._torque, ticks_to_joint(raw, self._scale, self._offset), np.nan)
        targets, passive = angles[:self.n_joints], angles[self.n_joints:]
        if not (np.array_equal(targets, self._targets, equal_nan=True)
                and np.array_equal(passive, self._passive_targets, equal_nan=True)):
            self._targets, self._passive_targets = targets, passive
            self.physics.set_targets(now, targets, passive)

    def _start_faults(self, now: float) -> None:
        for f in self.injector.due(now - self.t_start, self.cycle):
            self.stats[f"fault_{f.kind}"] += 1
            if f.kind in HARDWARE_BITS:
                for s in self.servos:
                    if s.id == f.id:
                        s.raise_hardware_error(HARDWARE_BITS[f.kind])
                self._reindex()
                self._push_targets(now)

    # --- instructions ------------------------------------------------------------------------------
    def _reindex(self) -> None:
        """Settings read back after anything may have written them: which servo answers to which ID (those at
        the line's baud rate), homing offsets, torque states and moving thresholds."""
        self._by_id = {s.id: s for s in self.servos if s.get(Register.BAUD_RATE) == self.baud_code}
        self._homing = np.array([s.get(Register.HOMING_OFFSET) for s in self.servos])
        self._torque = np.array([s.torque_on for s in self.servos])
        self._threshold = np.array([s.get(Register.MOVING_THRESHOLD) for s in self.servos])
        units = np.array([s.get(Register.BUS_WATCHDOG) for s in self.servos])
        self._watchdog_s = np.where((units >= 1) & (units <= BUS_WATCHDOG_MAX_UNITS),
                                    units * S_PER_BUS_WATCHDOG_UNIT, 0.0)
        # The present registers hold the homing offset and the torque state too: a servo applies a new one at
        # once, so the next read resamples instead of waiting for the next physics step.
        self._sampled = False

    def _answering(self, servo_id: int) -> EmulatedServo | None:
        """The servo with this ID if it hears the line (right baud rate, not silent)."""
        if servo_id in self.injector.silent:
            return None
        return self._by_id.get(servo_id)

    def _ordered(self) -> list[EmulatedServo]:
        return [self._by_id[i] for i in sorted(self._by_id) if i not in self.injector.silent]

    def handle(self, packet: Packet, now: float) -> list[Reply]:
        """Act on one instruction packet; the status packets it causes, in bus order."""
        self.stats["instructions"] += 1
        if not packet.crc_ok:
            # A real servo drops a packet with a bad CRC without answering.
            self.stats["crc_errors_received"] += 1
            return []
        self._bus_watchdog(now)  # a packet after the timeout comes too late for it
        self._last_instruction = now
        inst = packet.instruction
        if inst in READ_INSTRUCTIONS:
            self.cycle += 1
            self.stats["read_transactions"] += 1
        self._start_faults(now)
        if inst in (Instruction.READ, Instruction.PING, Instruction.REBOOT, *READ_INSTRUCTIONS):
            self.refresh(now)
        else:
            self.physics.advance_to(now)
        out = self._dispatch(packet)
        if inst not in READ_INSTRUCTIONS and inst not in (Instruction.READ, Instruction.PING):
            if _may_change_settings(packet):
                self._reindex()
            self._push_targets(now)
        replies = [self._with_fate(sid, body) for sid, body in out]
        if inst in READ_INSTRUCTIONS and any(r.dropped or r.corrupted for r in replies):
            self.stats["read_transactions_faulted"] += 1
        self.stats["replies"] += len(replies)
        return replies

    def _with_fate(self, servo_id: int, packet: bytes) -> Reply:
        fate: Fate = self.injector.fate()
        servo = self._answering(servo_id) if servo_id != BROADCAST_ID else None
        delay = self.reality.reply_latency_s
        if self.reality.return_delay and servo is not None:
            delay += servo.get(Register.RETURN_DELAY_TIME) * S_PER_RETURN_DELAY_UNIT
        if fate.dropped:
            self.stats["dropped_replies"] += 1
        if fate.corrupted:
            self.stats["corrupted_replies"] += 1
            packet = packet[:-2] + bytes((packet[-2] ^ 0xFF, packet[-1]))
        if fate.delay_s:
            self.stats["late_replies"] += 1
        return Reply(servo_id, packet, delay + fate.delay_s, fate.dropped, fate.corrupted)

    def _dispatch(self, p: Packet) -> list[tuple[int, bytes]]:
        inst, params = p.instruction, p.params
        if inst == Instruction.PING:
            targets = self._ordered() if p.id == BROADCAST_ID else [s for s in [self._answering(p.id)] if s]
            if not targets:
                self.stats["unknown_id"] += 1
            return [(s.id, self._status(s, StatusError.NONE, self._ping_data(s))) for s in targets]
        if inst in (Instruction.SYNC_READ, Instruction.FAST_SYNC_READ):
            return self._sync_read(p)
        if inst == Instruction.SYNC_WRITE:
            self._sync_write(params)
            return []
        if inst == Instruction.BULK_READ:
            return self._bulk_read(params)
        if inst == Instruction.BULK_WRITE:
            self._bulk_write(params)
            return []
        if p.id == BROADCAST_ID:
            for s in self._ordered():
                self._unicast(s, inst, params)
            return []
        servo = self._answering(p.id)
        if servo is None:
            self.stats["unknown_id"] += 1
            return []
        error, data = self._unicast(servo, inst, params)
        level = servo.get(Register.STATUS_RETURN_LEVEL)
        if level == 0 or (level == 1 and inst != Instruction.READ):
            return []
        return [(servo.id, self._status(servo, error, data))]

    def _unicast(self, s: EmulatedServo, inst: int, params: bytes) -> tuple[int, bytes]:
        if inst == Instruction.READ:
            if len(params) != 4:
                return StatusError.DATA_LENGTH, b""
            address, length = _u16(params, 0), _u16(params, 2)
            return s.read(address, length)
        if inst == Instruction.WRITE:
            if len(params) < 3:
                return StatusError.DATA_LENGTH, b""
            return s.write(_u16(params, 0), params[2:]), b""
        if inst == Instruction.REG_WRITE:
            if len(params) < 3:
                return StatusError.DATA_LENGTH, b""
            error = s.check_write(_u16(params, 0), params[2:])
            if not error:
                s.registered = (_u16(params, 0), bytes(params[2:]))
                s.set(Register.REGISTERED_INSTRUCTION, 1)
            return error, b""
        if inst == Instruction.ACTION:
            if s.registered is None:
                return StatusError.INSTRUCTION, b""
            address, data = s.registered
            s.registered = None
            s.set(Register.REGISTERED_INSTRUCTION, 0)
            return s.write(address, data), b""
        if inst == Instruction.REBOOT:
            s.reboot()
            self.stats["reboots"] += 1
            return StatusError.NONE, b""
        if inst in (Instruction.FACTORY_RESET, Instruction.CLEAR, Instruction.FAST_BULK_READ):
            return StatusError.RESULT_FAIL, b""  # known instructions this emulator does not implement
        return StatusError.INSTRUCTION, b""

    def _status(self, s: EmulatedServo, error: int, data: bytes) -> bytes:
        return encode_status(s.id, s.status_error(error), data)

    @staticmethod
    def _ping_data(s: EmulatedServo) -> bytes:
        return (s.get(Register.MODEL_NUMBER).to_bytes(2, "little")
                + bytes((s.get(Register.FIRMWARE_VERSION),)))

    def _sync_read(self, p: Packet) -> list[tuple[int, bytes]]:
        params = p.params
        if p.id != BROADCAST_ID or len(params) < 5:
            self.stats["malformed"] += 1
            return []
        address, length = _u16(params, 0), _u16(params, 2)
        ids = list(params[4:])
        if p.instruction == Instruction.FAST_SYNC_READ:
            return self._fast_sync_read(address, length, ids)
        out = []
        for i in ids:
            s = self._answering(i)
            if s is None or s.get(Register.STATUS_RETURN_LEVEL) == 0:
                continue
            error, data = s.read(address, length)
            out.append((s.id, self._status(s, error, data)))
        return out

    def _fast_sync_read(self, address: int, length: int, ids: list[int]) -> list[tuple[int, bytes]]:
        """One combined status: per servo ERR, ID, data and a running CRC (the last one is the packet's CRC).

        Not byte-stuffed, with LEN counting exactly the bytes sent, as the firmware does (ROBOTIS e-manual,
        Protocol 2.0, "Fast Sync Read (0x8A)", https://emanual.robotis.com/docs/en/dxl/protocol2/#fast-sync-read-0x8a:
        "Fast Sync Read Status Packet does not perform Byte Stuffing(0xFD) process"); dynamixel-sdk's
        rxPacket(port, True) does not unstuff it either.
        """
        found = [self._answering(i) for i in ids]
        servos = [s for s in found if s is not None]
        if not ids or len(servos) != len(ids):
            return []  # a missing servo breaks the chained reply; the client sees nothing
        segments = []
        for s in servos:
            error, data = s.read(address, length)
            segments.append((s.status_error(error), s.id, data if not error else bytes(length)))
        return [(BROADCAST_ID, encode_fast_sync_status(segments))]

    def _sync_write(self, params: bytes) -> None:
        if len(params) < 4:
            self.stats["malformed"] += 1
            return
        address, length = _u16(params, 0), _u16(params, 2)
        step = 1 + length
        rest = params[4:]
        if length == 0 or len(rest) % step:
            self.stats["malformed"] += 1
            return
        for k in range(0, len(rest), step):
            s = self._answering(rest[k])
            if s is not None and s.write(address, rest[k + 1:k + step]):
                self.stats["refused_writes"] += 1

    def _bulk_read(self, params: bytes) -> list[tuple[int, bytes]]:
        if not params or len(params) % 5:
            self.stats["malformed"] += 1
            return []
        out = []
        for k in range(0, len(params), 5):
            s = self._answering(params[k])
            if s is None or s.get(Register.STATUS_RETURN_LEVEL) == 0:
                continue
            error, data = s.read(_u16(params, k + 1), _u16(params, k + 3))
            out.append((s.id, self._status(s, error, data)))
        return out

    def _bulk_write(self, params: bytes) -> None:
        k = 0
        while k + 5 <= len(params):
            servo_id, address, length = params[k], _u16(params, k + 1), _u16(params, k + 3)
            data = params[k + 5:k + 5 + length]
            k += 5 + length
            s = self._answering(servo_id)
            if len(data) == length and s is not None and s.write(address, data):
                self.stats["refused_writes"] += 1


_SETTINGS_INDEXED = (Register.ID, Register.BAUD_RATE, Register.HOMING_OFFSET, Register.MOVING_THRESHOLD,
                     Register.TORQUE_ENABLE, Register.BUS_WATCHDOG)
"""Registers :meth:`ServoChain._reindex` reads back."""


def _may_change_settings(packet: Packet) -> bool:
    """Whether an instruction may have written a register :meth:`ServoChain._reindex` reads (any but a sync write
    that stays clear of them, such as the goal positions of every control cycle)."""
    if packet.instruction != Instruction.SYNC_WRITE or len(packet.params) < 4:
        return True
    start, length = _u16(packet.params, 0), _u16(packet.params, 2)
    return any(r.address < start + length and start < r.address + r.size for r in _SETTINGS_INDEXED)


def _u16(data: bytes, offset: int) -> int:
    return data[offset] | (data[offset + 1] << 8)
