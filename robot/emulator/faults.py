"""Fault injection for the servo emulator and the mock bus: what can go wrong on a Dynamixel bus.

A fault spec is a string (``--faults``) or a YAML file. The string is a list of items separated by
commas, semicolons or spaces::

    drop=P              each status packet is lost with probability P
    crc=P               each status packet is sent with a corrupted CRC with probability P
    late=P:DURATION     each status packet is delayed by DURATION with probability P (e.g. late=0.01:5ms)
    overload=ID@WHEN    servo ID raises an overload error (Hardware Error Status bit 5, alert bit 7 in every
                        status, torque off) at WHEN; REBOOT clears it
    overheat=ID@WHEN    the same with the overheating bit (2); Present Temperature reads the limit
    silent=ID@WHEN      servo ID stops answering (and acting on) every instruction from WHEN on
    imu_silent@WHEN     the IMU stops sending frames from WHEN on (config with an imu section)
    imu_corrupt=P       each IMU frame is sent with a corrupted payload (its CRC fails) with probability P
    imu_drop=P          each IMU frame is lost on the line with probability P (the receiver sees a sequence gap)
    seed=N              seed of the random draws (default 0)

    WHEN     := DURATION (time since the emulator started serving) | N cycle[s] (from the N-th read
                transaction on: SYNC_READ, FAST_SYNC_READ or BULK_READ, counted from 1)
    DURATION := number with unit s, ms or us (2.5s, 40ms)

Example: ``drop=0.01,late=0.005:8ms,overload=21@200cycles,seed=3``. Items may repeat (two overloads).
The IMU's draws use a random stream of their own, so adding IMU faults leaves the servo faults' draws as they were.
The YAML form holds the same things as a mapping::

    seed: 3
    drop: 0.01
    crc: 0.0
    late: {probability: 0.005, delay_s: 0.008}
    overload: [{id: 21, at_cycle: 200}]
    overheat: [{id: 31, at_s: 2.5}]
    silent: [{id: 12, at_s: 10.0}]
    imu_silent: {at_s: 2.0}        # or {at_cycle: 20}
    imu_corrupt: 0.05
    imu_drop: 0.0
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from robot.dynamixel.control_table import MAX_ID, HardwareError
from s2r.core.errors import UserError
from s2r.core.fields import Fields
from s2r.core.yamlfile import read_yaml_file

ServoFaultKind = Literal["overload", "overheat", "silent"]
SERVO_FAULT_KINDS: tuple[str, ...] = ("overload", "overheat", "silent")
HARDWARE_BITS: dict[str, HardwareError] = {
    "overload": HardwareError.OVERLOAD,
    "overheat": HardwareError.OVERHEATING,
}
_DURATION_UNITS_S = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
_DURATION = re.compile(r"^([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)(s|ms|us)$")
_CYCLES = re.compile(r"^([0-9]+)cycles?$")
IMU_SILENT = "imu_silent"
IMU_PROBABILITY_KEYS = ("imu_corrupt", "imu_drop")
_KNOWN_KEYS = f"drop, crc, late, {', '.join(SERVO_FAULT_KINDS)}, {IMU_SILENT}@WHEN, imu_corrupt, imu_drop, seed"


@dataclass(frozen=True)
class ServoFault:
    """A fault of one servo that starts at a time or a read cycle and lasts (until REBOOT for errors)."""

    kind: ServoFaultKind
    """``overload``, ``overheat`` (hardware errors) or ``silent`` (stops answering for good)."""
    id: int
    """Servo ID."""
    at_s: float | None = None
    """Start, in seconds after the emulator (or mock) started; ``None`` when ``at_cycle`` is used."""
    at_cycle: int | None = None
    """Start, as the number of the read transaction (1 = first); ``None`` when ``at_s`` is used."""

    def due(self, elapsed_s: float, cycle: int) -> bool:
        """Whether the fault has started at ``elapsed_s`` seconds and ``cycle`` read transactions."""
        if self.at_s is not None:
            return elapsed_s >= self.at_s
        return self.at_cycle is not None and cycle >= self.at_cycle


@dataclass(frozen=True)
class FaultSpec:
    """Every fault to inject; the default injects none."""

    drop: float = 0.0
    """Probability that a status packet is lost."""
    crc: float = 0.0
    """Probability that a status packet is sent with a corrupted CRC."""
    late: float = 0.0
    """Probability that a status packet is delayed by ``late_delay_s``."""
    late_delay_s: float = 0.0
    """Extra delay of a late status packet (s)."""
    servo_faults: tuple[ServoFault, ...] = ()
    """Hardware errors and silent servos, each with its start."""
    seed: int = 0
    """Seed of the random draws, so a faulty run can be repeated."""
    imu_corrupt: float = 0.0
    """Probability that an IMU frame is sent with a corrupted payload (its CRC fails)."""
    imu_drop: float = 0.0
    """Probability that an IMU frame is lost on the line."""
    imu_silent_at_s: float | None = None
    """The IMU stops sending, this long after the emulator (or mock) started (s); ``None``: never (by time)."""
    imu_silent_at_cycle: int | None = None
    """The IMU stops sending from this read transaction of the servo bus on (1 = first); ``None``: never."""

    @property
    def any(self) -> bool:
        """Whether anything is injected."""
        return bool(self.drop or self.crc or self.late or self.servo_faults) or self.any_imu

    @property
    def any_imu(self) -> bool:
        """Whether anything is injected into the IMU's stream."""
        return bool(self.imu_corrupt or self.imu_drop or self.imu_silent_at_s is not None
                    or self.imu_silent_at_cycle is not None)

    def describe(self) -> str:
        """The spec in the string syntax."""
        items = []
        if self.drop:
            items.append(f"drop={self.drop:g}")
        if self.crc:
            items.append(f"crc={self.crc:g}")
        if self.late:
            items.append(f"late={self.late:g}:{self.late_delay_s * 1e3:g}ms")
        for f in self.servo_faults:
            when = f"{f.at_s:g}s" if f.at_s is not None else f"{f.at_cycle}cycles"
            items.append(f"{f.kind}={f.id}@{when}")
        if self.imu_silent_at_s is not None:
            items.append(f"{IMU_SILENT}@{self.imu_silent_at_s:g}s")
        if self.imu_silent_at_cycle is not None:
            items.append(f"{IMU_SILENT}@{self.imu_silent_at_cycle}cycles")
        if self.imu_corrupt:
            items.append(f"imu_corrupt={self.imu_corrupt:g}")
        if self.imu_drop:
            items.append(f"imu_drop={self.imu_drop:g}")
        if self.seed:
            items.append(f"seed={self.seed}")
        return ",".join(items) or "none"


NO_FAULTS = FaultSpec()


def _probability(value: Any, where: str) -> float:
    try:
        p = float(value)
    except (TypeError, ValueError):
        raise UserError(f"fault {where} must be a probability in [0, 1]; got {value!r}") from None
    if not 0.0 <= p <= 1.0:
        raise UserError(f"fault {where} must be a probability in [0, 1]; got {value!r}")
    return p


def _duration(text: str, where: str) -> float:
    m = _DURATION.match(text.strip())
    if not m:
        raise UserError(f"fault {where} must be a duration like 5ms, 0.5s or 800us; got {text!r}")
    seconds = float(m.group(1)) * _DURATION_UNITS_S[m.group(2)]
    if not math.isfinite(seconds):  # 1e400s parses as infinity
        raise UserError(f"fault {where} must be a finite duration like 5ms, 0.5s or 800us; got {text!r}")
    return seconds


def _servo_id(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).strip().isdigit():
        raise UserError(f"fault {where} must be a servo ID in 0..{MAX_ID}; got {value!r}")
    i = int(value)
    if not 0 <= i <= MAX_ID:
        raise UserError(f"fault {where} must be a servo ID in 0..{MAX_ID}; got {value!r}")
    return i


def parse_faults(text: str) -> FaultSpec:
    """A :class:`FaultSpec` from the string syntax in this module's docstring (``""``/``none``: no faults)."""
    items = [t for t in re.split(r"[,;\s]+", text.strip()) if t]
    if items == ["none"]:
        return NO_FAULTS
    values: dict[str, Any] = {"servo_faults": []}
    for item in items:
        if item.startswith(IMU_SILENT):
            values.update(_imu_silence(item))
            continue
        key, sep, value = item.partition("=")
        if not sep or not value:
            raise UserError(f"fault item {item!r} must look like key=value or {IMU_SILENT}@WHEN (keys: {_KNOWN_KEYS})")
        if key in ("drop", "crc", *IMU_PROBABILITY_KEYS):
            values[key] = _probability(value, key)
        elif key == "late":
            p, sep, delay = value.partition(":")
            if not sep:
                raise UserError(f"fault late must be PROBABILITY:DURATION (e.g. late=0.01:5ms); got {value!r}")
            values["late"] = _probability(p, "late")
            values["late_delay_s"] = _duration(delay, "late delay")
        elif key in SERVO_FAULT_KINDS:
            ident, sep, when = value.partition("@")
            if not sep:
                raise UserError(f"fault {key} must be ID@WHEN (e.g. {key}=21@2s or {key}=21@100cycles); got {value!r}")
            values["servo_faults"].append(_servo_fault(key, _servo_id(ident, key), when))
        elif key == "seed":
            if not value.isdigit():
                raise UserError(f"fault seed must be a non-negative integer; got {value!r}")
            values["seed"] = int(value)
        else:
            raise UserError(f"unknown fault {key!r}; known: {_KNOWN_KEYS}")
    values["servo_faults"] = tuple(values["servo_faults"])
    return FaultSpec(**values)


def _imu_silence(item: str) -> dict[str, Any]:
    """``imu_silent@2s`` / ``imu_silent@20cycles`` -> the FaultSpec fields."""
    name, sep, when = item.partition("@")
    if name != IMU_SILENT or not sep or not when:
        raise UserError(f"fault {item!r} must be {IMU_SILENT}@WHEN (e.g. {IMU_SILENT}@2s or {IMU_SILENT}@20cycles)")
    m = _CYCLES.match(when.strip())
    if m:
        cycle = int(m.group(1))
        if cycle < 1:
            raise UserError(f"fault {IMU_SILENT} cycle must be >= 1; got {when!r}")
        return {"imu_silent_at_cycle": cycle, "imu_silent_at_s": None}
    return {"imu_silent_at_s": _duration(when, f"{IMU_SILENT} time"), "imu_silent_at_cycle": None}


def _servo_fault(kind: str, servo_id: int, when: str) -> ServoFault:
    m = _CYCLES.match(when.strip())
    if m:
        cycle = int(m.group(1))
        if cycle < 1:
            raise UserError(f"fault {kind} cycle must be >= 1; got {when!r}")
        return ServoFault(kind, servo_id, at_cycle=cycle)  # type: ignore[arg-type]
    return ServoFault(kind, servo_id, at_s=_duration(when, f"{kind} time"))  # type: ignore[arg-type]


def faults_from_mapping(data: Any, source: str = "<memory>") -> FaultSpec:
    """A :class:`FaultSpec` from the YAML form."""
    if data is None:
        return NO_FAULTS
    root = Fields(data, "", source)
    known = {"drop", "crc", "late", "seed", *SERVO_FAULT_KINDS, IMU_SILENT, *IMU_PROBABILITY_KEYS}
    for key in root.data:
        if key not in known:
            raise UserError(f"{source}: unknown fault {key!r}; known: {', '.join(sorted(known))}")
    late = root.child("late", optional=True)
    delay = late.raw("delay_s", 0.0)
    if isinstance(delay, bool) or not isinstance(delay, int | float) or not (delay >= 0 and math.isfinite(delay)):
        late.fail("delay_s", "a duration >= 0 s", delay)
    late_probability = late.raw("probability", 0.0)
    late.done()
    faults: list[ServoFault] = []
    for kind in SERVO_FAULT_KINDS:
        entries = root.raw(kind, [])
        if not isinstance(entries, list):
            root.fail(kind, "a list of {id, at_s | at_cycle}", entries)
        for k, e in enumerate(entries):
            where = f"{kind}[{k}]"
            if not isinstance(e, Mapping) or set(e) - {"id", "at_s", "at_cycle"} or len(e) != 2 or "id" not in e:
                root.fail(where, "{id: ID, at_s: S} or {id: ID, at_cycle: N}", e)
            servo_id = _servo_id(e["id"], f"{where}.id")
            if "at_s" in e:
                at_s = e["at_s"]
                if isinstance(at_s, bool) or not isinstance(at_s, int | float) or not 0 <= at_s < math.inf:
                    root.fail(f"{where}.at_s", "a finite time >= 0 s", at_s)
                faults.append(ServoFault(kind, servo_id, at_s=float(at_s)))  # type: ignore[arg-type]
            else:
                cycle = e["at_cycle"]
                if isinstance(cycle, bool) or not isinstance(cycle, int) or cycle < 1:
                    root.fail(f"{where}.at_cycle", "an integer >= 1", cycle)
                faults.append(ServoFault(kind, servo_id, at_cycle=cycle))  # type: ignore[arg-type]
    seed = root.raw("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        root.fail("seed", "a non-negative integer", seed)
    silence = root.raw(IMU_SILENT)
    silent_at_s: float | None = None
    silent_at_cycle: int | None = None
    if silence is not None:
        if not isinstance(silence, Mapping) or len(silence) != 1 or not set(silence) <= {"at_s", "at_cycle"}:
            root.fail(IMU_SILENT, "{at_s: S} or {at_cycle: N}", silence)
        if "at_s" in silence:
            value = silence["at_s"]
            if isinstance(value, bool) or not isinstance(value, int | float) or not (0 <= value < math.inf):
                root.fail(f"{IMU_SILENT}.at_s", "a time >= 0 s", value)
            silent_at_s = float(value)
        else:
            value = silence["at_cycle"]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                root.fail(f"{IMU_SILENT}.at_cycle", "an integer >= 1", value)
            silent_at_cycle = value
    return FaultSpec(
        drop=_probability(data.get("drop", 0.0), f"{source}: drop"),
        crc=_probability(data.get("crc", 0.0), f"{source}: crc"),
        late=_probability(late_probability, f"{source}: late.probability"),
        late_delay_s=float(delay),
        servo_faults=tuple(faults),
        seed=seed,
        imu_corrupt=_probability(data.get("imu_corrupt", 0.0), f"{source}: imu_corrupt"),
        imu_drop=_probability(data.get("imu_drop", 0.0), f"{source}: imu_drop"),
        imu_silent_at_s=silent_at_s,
        imu_silent_at_cycle=silent_at_cycle,
    )


def load_faults(path: str | Path) -> FaultSpec:
    """A :class:`FaultSpec` from a YAML file."""
    return faults_from_mapping(read_yaml_file(path, "fault file"), source=str(path))


def faults_from_arg(arg: str | None) -> FaultSpec:
    """``--faults``: a path to a YAML file (``.yaml``/``.yml`` or an existing file) or an inline spec string."""
    if arg is None:
        return NO_FAULTS
    if arg.endswith((".yaml", ".yml")) or Path(arg).is_file():
        return load_faults(arg)
    return parse_faults(arg)


@dataclass(frozen=True)
class Fate:
    """What happens to one status packet."""

    dropped: bool = False
    """Never arrives."""
    corrupted: bool = False
    """Arrives with a bad CRC."""
    delay_s: float = 0.0
    """Arrives this much later (s)."""


ON_TIME = Fate()


@dataclass
class FaultInjector:
    """The running state of a :class:`FaultSpec`: random draws, started servo faults, silent servos."""

    spec: FaultSpec
    """What to inject."""
    rng: random.Random = field(init=False)
    started: set[int] = field(default_factory=set)
    """Indices into ``spec.servo_faults`` of the faults that have started."""
    silent: set[int] = field(default_factory=set)
    """IDs of servos that no longer answer."""

    def __post_init__(self) -> None:
        self.rng = random.Random(self.spec.seed)

    def fate(self) -> Fate:
        """Draw the fate of the next status packet."""
        s = self.spec
        if not (s.drop or s.crc or s.late):
            return ON_TIME
        if s.drop and self.rng.random() < s.drop:
            return Fate(dropped=True)
        corrupted = bool(s.crc) and self.rng.random() < s.crc
        delay = s.late_delay_s if s.late and self.rng.random() < s.late else 0.0
        return Fate(corrupted=corrupted, delay_s=delay) if (corrupted or delay) else ON_TIME

    def due(self, elapsed_s: float, cycle: int) -> Iterable[ServoFault]:
        """Servo faults that start now (each is returned once); silent ones are recorded here."""
        out = []
        for k, f in enumerate(self.spec.servo_faults):
            if k not in self.started and f.due(elapsed_s, cycle):
                self.started.add(k)
                if f.kind == "silent":
                    self.silent.add(f.id)
                out.append(f)
        return out


@dataclass
class ImuFaultInjector:
    """The running state of a :class:`FaultSpec`'s IMU faults: silence, and the fate of every frame."""

    spec: FaultSpec
    """What to inject (only the ``imu_*`` fields are used)."""
    rng: random.Random = field(init=False)
    silent: bool = False
    """Whether the IMU has gone silent (for good)."""

    def __post_init__(self) -> None:
        # A stream of its own: the servo faults' draws stay as they were without IMU faults.
        self.rng = random.Random(f"imu-{self.spec.seed}")

    def silent_now(self, elapsed_s: float, cycle: int) -> bool:
        """Whether the IMU is silent at ``elapsed_s`` seconds and ``cycle`` read transactions."""
        s = self.spec
        if not self.silent and ((s.imu_silent_at_s is not None and elapsed_s >= s.imu_silent_at_s)
                                or (s.imu_silent_at_cycle is not None and cycle >= s.imu_silent_at_cycle)):
            self.silent = True
        return self.silent

    def fate(self) -> Fate:
        """Draw the fate of the next frame (``dropped`` or ``corrupted``)."""
        s = self.spec
        if not (s.imu_drop or s.imu_corrupt):
            return ON_TIME
        if s.imu_drop and self.rng.random() < s.imu_drop:
            return Fate(dropped=True)
        if s.imu_corrupt and self.rng.random() < s.imu_corrupt:
            return Fate(corrupted=True)
        return ON_TIME


CORRUPTED_FRAME_OFFSET = 12
"""Byte of an IMU frame that a corruption flips: inside the orientation, so only the CRC can tell."""


def corrupt_imu_frame(frame: bytes) -> bytes:
    """``frame`` with one payload byte's bits flipped, as line noise would leave it."""
    k = CORRUPTED_FRAME_OFFSET
    return frame[:k] + bytes((frame[k] ^ 0xFF,)) + frame[k + 1:]
