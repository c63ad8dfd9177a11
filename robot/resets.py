"""Scripted resets: how the robot gets to an episode's start before its policy runs.

A reset drives the robot through :class:`ResetIO`, the controller's own control cycle, so every reset cycle is
timed, checked (a requested stop, the watchdogs, the servos' Bus Watchdog) and stopped as a policy cycle is; a
strategy only decides what to command and when the start is reached. It runs from the start
``task.sample_start(rng)`` drew (as ``SimEnv.reset`` does), and :func:`make_reset` picks one per robot:

:class:`JointReset` (a fixed base: the claw)

1. the joints move, rate-limited through the same safety filter, to the start pose, which the task places clear of
   the valve (the fingertips above the spokes), lifting them off it;
2. every passive joint whose encoder the config marks ``resettable`` is driven to its start angle
   (:class:`PassiveDrive`; ``Bus.passive_driven``: its servo's torque is on only for this phase), its goal
   rate-limited to the encoder's ``reset_velocity_limit_rad_s``, until it settles; then its torque goes off and the
   episode starts from the next reading. A joint the task sees modulo a turn (``spec.periodic_passive``, the valve)
   goes to the nearest angle equivalent to its start: at most half a turn, however many turns the last episode
   made. A passive joint that is not resettable stays where it is, the episode starts from there, and the episode
   meta says so (``passive_reset``);
3. the joints' settling is judged only now: a finger whose start pose lies where the last episode left a valve
   spoke rests on the spoke until the valve turns back.

:class:`PlacedReset` (a floating base: the legged robot), whose start also has a base pose that no servo can reach:
a scene placer (``robot.hardware``; the emulator and the mock have one) first puts the robot down there with its
joints at the start pose, and the servos hold that; without one (the real robot) a person has placed it and the
episode starts where it stands. The meta says which (``base_reset``). The joints' reset follows.

:class:`RecoveryReset` (a floating base with ``reset: {kind: recovery}`` in its hardware config), which needs no
placer and no person, as ROBEL's D'Kitty resets itself between episodes:

1. a torso tilted beyond ``fallen_tilt_rad`` (the IMU's) at the first reading has fallen: the scripted righting
   sequence runs at once (steps 2 and 3): folding a robot part-way over into the crouch rolls it on onto its back.
   An upright torso still turning (an episode can end with the robot rocking or tipping) is first watched, the legs
   held, until it comes to rest (``rest_rate_rad_s`` for ``rest_s``), falls, or ``rest_timeout_s`` passes. Then the
   legs fold, rate-limited, into the config's crouch, which is safe from any stance, and the torso comes to rest,
   and a torso tilted beyond ``fallen_tilt_rad`` then has fallen too;
2. a robot found fallen is likely still rolling, and a tenth of a second decides whether it stops on its side or
   rolls on onto its back: its first move goes out in the cycle of the reading that found the fall. With a
   ``catch_pose_rad`` that move is the catch (each joint at its own rate limit, the quickest way there: the legs
   tuck in under the torso), held ``hold_s`` unless the robot is already upright and calm; a robot caught upright
   then folds into the crouch;
3. a fallen robot runs the righting sequence (each pose reached rate-limited and held, then the crouch), at most
   ``righting_attempts`` times, until the crouched torso is within ``fallen_tilt_rad`` of upright;
4. the legs extend from the crouch to the start pose through evenly spaced waypoints;
5. the reset is done once every joint has been within ``joint_tolerance_rad`` of the start and the torso within
   ``upright_tilt_rad`` of upright for ``hold_s``, at rest as a simulated start is. The base is wherever the robot
   stands: the episode starts there, and the meta records its orientation (and its position, with a position
   source); the controller anchors the episode's frame there (``robot.tracker.source.EpisodeFrame``).

A robot still fallen after its attempts, or not upright at the start pose within the timeout, is a failed reset
(:class:`ResetFailed`): the controller counts it and stops the run safely after ``max_consecutive_failures`` in a row.
The controller's tilt stop is off during this reset (a fallen robot is what it is for); every other check runs.

Every reset fills the episode meta's reset fields as they become known, so a stop part-way leaves what was known.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

import numpy as np
from numpy.typing import NDArray

from robot.bus import Reading
from robot.config import RecoveryConfig, RobotConfig
from robot.safety import SafetyLimits, clip_to_limits, step_towards
from sim.rotations import tilt
from sim.tasks.actions import wrap_angle
from sim.tasks.spec import FloatArray, TaskSpec

Place = Callable[[FloatArray, FloatArray, FloatArray], None]
"""A scene placer's ``place(joint_pos, passive_pos, base_pose)`` (``robot.hardware.ScenePlacer``)."""
EXACT_ATOL = 1e-12
"""A rate-limited step this close to its target (rad) lands on it: prev + (target - prev) can miss by a rounding
step."""


@dataclass(frozen=True)
class ResetSettings:
    """When a reset phase counts as done (the controller's ``ControllerSettings.reset_*``)."""

    tolerance_rad: float = 0.05
    """A phase is settled when every joint it moves is this close to its start (rad)."""
    settle_speed_rad_s: float = 0.05
    """A driven passive joint is settled only once it is also this slow (rad/s): released while still moving, it
    would coast on past its start angle."""
    timeout_s: float = 5.0
    """Longest wait for a phase to settle (s): from the start of the joints' move, and for a driven passive joint
    from when its rate-limited goal reached the start angle; after it the episode starts from where things are."""
    agree_rad: float = 1.0
    """A driven passive joint's ramp starts from two consecutive readings this close together (rad)."""


@dataclass(frozen=True)
class ResetStart:
    """What a reset aims for: an episode start (``task.sample_start``) as the controller commands it."""

    joint_pos: FloatArray
    """The joints' start command (rad, task order), inside the safety limits."""
    passive_pos: FloatArray
    """The passive joints' start angles (rad, task order)."""
    base_pose: FloatArray | None
    """A floating base's start pose (position (m), quaternion (w, x, y, z)), or ``None``."""


class ResetIO(Protocol):
    """The controller's side of a reset: its control cycle and its last command. A requested stop, a watchdog or a
    bus failure raises out of these calls as the controller's stop, which a reset lets pass."""

    def now(self) -> float:
        """The controller's clock (s)."""
        ...

    def restart_timer(self) -> None:
        """The next cycle starts at once: the time since the last episode (logs written, a placement) is no
        overrun."""
        ...

    def begin_cycle(self, check_tilt: bool = True) -> Reading:
        """Wait for the cycle's deadline, read every joint and check the reading (the torso's tilt too unless
        ``check_tilt`` is false: a reset that rights a fallen robot watches the tilt itself)."""
        ...

    def end_cycle(self) -> None:
        """The cycle's work is done (its time is recorded)."""
        ...

    @property
    def command(self) -> FloatArray:
        """The joints' last command (rad): the rate limit's reference."""
        ...

    @property
    def commanded(self) -> bool:
        """Whether the servos were given a command since connect (else they hold where they were)."""
        ...

    def start_from(self, command: FloatArray) -> None:
        """Make ``command`` the rate limit's reference without sending it."""
        ...

    def write(self, command: FloatArray) -> None:
        """Make ``command`` the last command and send it (after checking the data is still fresh)."""
        ...

    def placed(self, command: FloatArray) -> None:
        """The servos hold ``command`` without a write (a scene placement left them there): the last command."""
        ...

    def passive_driven(self, names: tuple[str, ...]) -> AbstractContextManager[None]:
        """The named passive joints' servos on inside the block, off after it; a bus failure in it is a stop."""
        ...

    def write_passive(self, goals: dict[str, float]) -> None:
        """Send passive-joint goals (rad) inside :meth:`passive_driven` (after checking the data is still fresh)."""
        ...

    def safety_stop(self, reason: str) -> Exception:
        """The controller's safety stop for ``reason``, to raise."""
        ...


class ResetFailed(Exception):
    """A reset that could not bring the robot to its start (a fallen robot it could not right); the controller
    counts it, and the episode does not run."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Reset(Protocol):
    """A scripted reset to an episode's start."""

    def run(self, io: ResetIO, start: ResetStart, info: dict[str, Any]) -> Reading:
        """Bring the robot to ``start`` through ``io``; returns the episode's first reading. ``info`` gets the
        episode meta's reset fields as they become known."""
        ...


def passive_settled(error_rad: float, velocity_rad_s: FloatArray, settings: ResetSettings) -> bool:
    """Whether driven passive joints may be released: near the start (largest ``error_rad``) and slow enough not to
    coast past it."""
    return (error_rad <= settings.tolerance_rad
            and float(np.max(np.abs(velocity_rad_s))) <= settings.settle_speed_rad_s)


@dataclass
class _Drive:
    """A passive drive in progress."""

    aim: FloatArray
    """The start angles (rad); a periodic joint's is moved to the nearest equivalent once the ramp starts."""
    t0: float
    """When the drive started (s)."""
    goal: FloatArray | None = None
    """The rate-limited goal last sent (rad); ``None`` until two readings agree."""
    previous: FloatArray | None = None
    """The last reading's angles while waiting for two to agree (rad)."""
    arrived_at: float | None = None
    """When the goal reached the aim (s)."""
    cycles: int = 0
    error: float = math.inf
    """The largest distance from the aim at the last good reading (rad)."""
    settled: bool = False


@dataclass(frozen=True)
class PassiveDrive:
    """Drives passive joints (the valve) to their start angles with their servos on, then releases them."""

    names: tuple[str, ...]
    """The driven joints (the config's ``resettable_passive_joints``)."""
    index: NDArray[np.intp]
    """Their places among the task's passive joints."""
    periodic: NDArray[np.bool_]
    """Which the task sees modulo a turn."""
    max_step_rad: FloatArray
    """The most each goal moves per control period (rad): the encoder's ``reset_velocity_limit_rad_s`` times it."""
    settings: ResetSettings
    log: logging.Logger

    def run(self, io: ResetIO, passive_start: FloatArray, report: dict[str, Any]) -> None:
        """Drive to ``passive_start`` (rad, task order), release, and read once more; ``report`` gets each joint's
        entry of the meta's ``passive_reset``."""
        drive = _Drive(aim=np.asarray(passive_start, dtype=np.float64)[self.index], t0=io.now())
        with io.passive_driven(self.names):
            while not self._cycle(io, drive):
                pass
        if not drive.settled:
            self.log.warning("%s did not settle at the start within %.1f s (largest error %.3f rad); starting the "
                             "episode from here", ", ".join(self.names), self.settings.timeout_s, drive.error)
        # Released: the episode starts from the next reading, with every passive joint free again.
        reading = io.begin_cycle()
        start_error = (np.abs(reading.passive_pos[self.index] - drive.aim) if not reading.stale
                       else np.full(len(self.names), math.nan))
        for k, name in enumerate(self.names):
            report[name] = {
                "driven": True, "start_rad": float(drive.aim[k]), "settled": drive.settled, "cycles": drive.cycles,
                "duration_s": io.now() - drive.t0, "error_at_release_rad": drive.error,
                "start_error_rad": float(start_error[k]),
            }

    def _cycle(self, io: ResetIO, drive: _Drive) -> bool:
        """One control cycle of the drive; returns whether the drive is over (settled, or timed out)."""
        s = self.settings
        reading = io.begin_cycle()
        drive.cycles += 1
        if reading.stale:
            io.end_cycle()
            return False
        pos = reading.passive_pos[self.index]
        if drive.goal is None:
            drive.goal = self._ramp_start(drive, pos)
            if drive.goal is None:
                io.end_cycle()
                return io.now() - drive.t0 >= s.timeout_s
        drive.error = float(np.max(np.abs(pos - drive.aim)))
        drive.settled = passive_settled(drive.error, reading.passive_vel[self.index], s)
        if drive.arrived_at is not None and (drive.settled or io.now() - drive.arrived_at >= s.timeout_s):
            io.end_cycle()
            return True
        if drive.arrived_at is None:
            self._step_goal(io, drive, drive.goal)
        io.end_cycle()
        return False

    def _ramp_start(self, drive: _Drive, pos: FloatArray) -> FloatArray | None:
        """The ramp's first goal, ``pos``, once two consecutive readings agree (``None`` before): one glitched
        reading (an emulated valve once read 1604 rad between two of 3.1) would otherwise send the servo that far."""
        agree = (drive.previous is not None
                 and float(np.max(np.abs(pos - drive.previous))) <= self.settings.agree_rad)
        drive.previous = pos.copy()
        if not agree:
            return None
        # Unwinding every turn of the last episode at the reset speed took minutes.
        drive.aim = np.where(self.periodic, pos + wrap_angle(drive.aim - pos), drive.aim)
        return pos.copy()  # the servo holds where it is (goal = present when its torque went on)

    def _step_goal(self, io: ResetIO, drive: _Drive, goal: FloatArray) -> None:
        """Move the goal one rate-limited step towards the aim and send it."""
        step = goal + np.clip(drive.aim - goal, -self.max_step_rad, self.max_step_rad)
        drive.goal = drive.aim.copy() if np.allclose(step, drive.aim, rtol=0, atol=EXACT_ATOL) else step
        io.write_passive(dict(zip(self.names, drive.goal.tolist(), strict=True)))
        if np.array_equal(drive.goal, drive.aim):
            drive.arrived_at = io.now()


@dataclass(frozen=True)
class JointReset:
    """The joints to the start pose and the resettable passive joints to their start angles (module docstring)."""

    limits: SafetyLimits
    settings: ResetSettings
    passive_joints: tuple[str, ...]
    """The task's passive joints."""
    drive: PassiveDrive | None
    """The resettable ones' drive; ``None`` when none is resettable."""
    source: str
    """The hardware config's source, for the meta of a passive joint left where it is."""
    imu_frame_period_s: float | None
    """The IMU's frame period (s); ``None`` without an IMU."""
    log: logging.Logger

    def run(self, io: ResetIO, start: ResetStart, info: dict[str, Any]) -> Reading:
        return self.reach(io, start, info)

    def reach(self, io: ResetIO, start: ResetStart, info: dict[str, Any], placed_at: float | None = None) -> Reading:
        """:meth:`run`, after a scene placement at ``placed_at`` (s) when not ``None`` (see :meth:`_move`)."""
        target = start.joint_pos
        # With a passive joint to drive, its reset comes before the joints' settling is judged: a finger whose
        # start pose lies where the last episode left a valve spoke rests on the spoke until the valve turns back,
        # and waiting for it first only ran out the timeout (about one reset in three on the PyBullet reality).
        io.restart_timer()
        reading = self._move(io, target, info, placed_at, settle=self.drive is None)
        report: dict[str, Any] = {
            name: {"driven": False, "start_rad": float(start.passive_pos[k]),
                   "why": f"not resettable in {self.source}: the episode starts where it is"}
            for k, name in enumerate(self.passive_joints) if self.drive is None or name not in self.drive.names
        }
        if self.drive is not None:
            self.drive.run(io, start.passive_pos, report)
            reading = self._move(io, target, info, placed_at)
        info["passive_reset"] = report
        return reading

    def _move(self, io: ResetIO, target: FloatArray, info: dict[str, Any], placed_at: float | None,
              settle: bool = True) -> Reading:
        """Move the joints to ``target`` through the safety filter; returns the settled reading (with ``settle``
        False, the first reading once the command is ``target``). ``info``'s reset fields add up over calls."""
        t0 = io.now()
        cycles = 0
        while True:
            reading = io.begin_cycle()
            cycles += 1
            if not io.commanded and not reading.stale:
                # The first move starts from where the joints are (the servos hold that since connect).
                io.start_from(clip_to_limits(reading.joint_pos, self.limits))
            arrived = bool(np.array_equal(io.command, target))
            error = float(np.max(np.abs(reading.joint_pos - target))) if not reading.stale else math.inf
            timed_out = io.now() - t0 >= self.settings.timeout_s
            settled = self._settled(reading, error, placed_at)
            if arrived and (settled or timed_out or not settle):
                info.update(reset_cycles=info.get("reset_cycles", 0) + cycles, reset_error_rad=error,
                            reset_settled=settled,
                            reset_duration_s=info.get("reset_duration_s", 0.0) + io.now() - t0)
                if settle and not settled:
                    self.log.warning("reset did not settle within %.1f s (largest joint error %.3f rad); "
                                     "starting the episode from here", self.settings.timeout_s, error)
                return reading
            self._step(io, reading, target)
            io.end_cycle()

    def _settled(self, reading: Reading, error: float, placed_at: float | None) -> bool:
        """Whether the joints are at the start. After a scene placement (at ``placed_at``) they are, and the servos
        hold it: weight-bearing legs sag under load by more than the tolerance and would only wait out the timeout.
        The reset is then done at an IMU sample received at least a frame period after the placement (an older one
        may show the robot before it was placed)."""
        if placed_at is None:
            return error <= self.settings.tolerance_rad
        return not reading.stale and (self.imu_frame_period_s is None
                                      or reading.imu_time >= placed_at + self.imu_frame_period_s)

    def _step(self, io: ResetIO, reading: Reading, target: FloatArray) -> None:
        _step(io, reading, target, self.limits)


@dataclass(frozen=True)
class PlacedReset:
    """A floating base put down at the start's base pose, then the joints' reset (module docstring)."""

    joints: JointReset
    place: Place | None
    """The scene placer's ``place``; ``None`` where a person places the robot (the real one)."""

    def run(self, io: ResetIO, start: ResetStart, info: dict[str, Any]) -> Reading:
        placed_at = None
        if start.base_pose is not None:
            info["base_reset"] = self._place(io, start, start.base_pose)
            placed_at = io.now() if info["base_reset"]["placed"] else None
        return self.joints.reach(io, start, info, placed_at)

    def _place(self, io: ResetIO, start: ResetStart, base_pose: FloatArray) -> dict[str, Any]:
        """Put the base down through the placer; what happened, for the meta."""
        pose = [float(v) for v in base_pose]
        if self.place is None:
            return {"placed": False, "base_pose": pose,
                    "why": "no scene placement on this driver: a person places the robot, and the episode starts "
                           "where it stands"}
        try:
            self.place(start.joint_pos, start.passive_pos, base_pose)
        except Exception as exc:  # the emulator gone, a refused request: either way the start is unknown
            raise io.safety_stop(f"scene placement failed: {type(exc).__name__}: {exc}") from exc
        # The placer left every servo holding the start pose: that is now the last command (the rate limit's
        # reference, and what a safety stop holds or folds from), not what was sent before the placement.
        io.placed(start.joint_pos.copy())
        return {"placed": True, "base_pose": pose}


@dataclass(frozen=True)
class RecoveryReset:
    """Fold to the crouch, right a fallen robot, stand up to the start pose; no placer (module docstring)."""

    limits: SafetyLimits
    settings: ResetSettings
    """``timeout_s``: the longest wait for the torso and joints to settle at the start pose."""
    recovery: RecoveryConfig
    log: logging.Logger

    def run(self, io: ResetIO, start: ResetStart, info: dict[str, Any]) -> Reading:
        r = self.recovery
        t0 = io.now()
        report: dict[str, Any] = {"placed": False, "kind": "recovery", "fallen": False, "righting_attempts": 0,
                                  "why": "no scene placement: the robot rights itself and stands up where it is"}
        info["base_reset"] = report
        info["reset_cycles"] = 0
        io.restart_timer()
        crouch = self._limited(r.crouch_pose_rad)
        reading = self._look(io, info, t0)
        report["start_tilt_rad"] = _tilt(reading)
        if _tilt(reading) <= r.fallen_tilt_rad:
            reading = self._rest(io, reading, info, report)
        if _tilt(reading) <= r.fallen_tilt_rad:
            reading = self._move(io, crouch, r.hold_s, info)
            report["crouched_tilt_rad"] = _tilt(reading)
        # A robot found fallen is likely still rolling: its first move goes out in the cycle of the reading that found
        # the fall (a cycle later, a tenth of a second, it has rolled on). NaN (no IMU sample) cannot happen here:
        # every phase above waits for one.
        found: Reading | None = reading  # the reading whose cycle is still open, until a move has used it
        if not _tilt(reading) <= r.fallen_tilt_rad and r.catch_pose_rad is not None:
            report["fallen"] = True
            catch = self._limited(r.catch_pose_rad)
            reading = self._move(io, catch, 0.0, info, first=found, together=False)
            found = None
            # Held for a robot still on its way down; one already upright and calm goes on into the crouch at once:
            # the catch's stance is narrow, and a robot held upright in it tipped slowly over onto its back.
            if not (_tilt(reading) <= r.fallen_tilt_rad and _rate(reading) <= r.rest_rate_rad_s):
                reading = self._move(io, catch, r.hold_s, info, first=reading)
            report["caught_tilt_rad"] = _tilt(reading)  # the torso's tilt once the catch pose was reached or held
            if _tilt(reading) <= r.fallen_tilt_rad:  # caught upright: the stand-up starts from the crouch
                reading = self._move(io, crouch, r.hold_s, info)
        # A torso already fallen goes straight to the sequence: folding a robot part-way over into the crouch rolls it
        # on over its side onto its back, where no leg reaches the floor; the first pose of the sequence stops that.
        while not _tilt(reading) <= r.fallen_tilt_rad:
            report["fallen"] = True
            if report["righting_attempts"] >= r.righting_attempts:
                self._fail(io, info, t0, f"still fallen after {r.righting_attempts} righting attempts (tilt "
                           f"{_tilt(reading):.2f} rad, more than fallen_tilt_rad {r.fallen_tilt_rad:g})")
            report["righting_attempts"] += 1
            tilts = []
            for pose in r.righting_poses_rad:
                reading = self._move(io, self._limited(pose), r.hold_s, info, first=found)
                found = None
                tilts.append(_tilt(reading))
            reading = self._move(io, crouch, r.hold_s, info)
            # The torso's tilt after each pose of the sequence and after the crouch (rad): where a sequence fails.
            report.setdefault("righting_tilts_rad", []).append([*tilts, _tilt(reading)])
        report["righted"] = report["fallen"]
        target = start.joint_pos
        for k in range(1, r.stand_waypoints + 1):
            reading = self._move(io, crouch + (target - crouch) * (k / r.stand_waypoints), 0.0, info)
        reading = self._settle(io, target, info, t0)
        report["tilt_rad"] = _tilt(reading)
        report["base_quat"] = [float(v) for v in reading.base_quat]
        if reading.base_pos.shape == (3,) and np.all(np.isfinite(reading.base_pos)):
            report["base_pos"] = [float(v) for v in reading.base_pos]
        return reading

    def _limited(self, pose: tuple[float, ...]) -> FloatArray:
        return clip_to_limits(np.asarray(pose, dtype=np.float64), self.limits)

    def _look(self, io: ResetIO, info: dict[str, Any], since: float) -> Reading:
        """The first reading with an IMU sample received after ``since`` (s), holding the last command: a fall is
        judged on how the torso lies now, before anything moves."""
        while True:
            reading = io.begin_cycle(check_tilt=False)
            info["reset_cycles"] += 1
            if not io.commanded and not reading.stale:
                io.start_from(clip_to_limits(reading.joint_pos, self.limits))
            if not reading.stale and np.all(np.isfinite(reading.base_quat)) and reading.imu_time > since:
                return reading
            _step(io, reading, io.command, self.limits)
            io.end_cycle()

    def _rest(self, io: ResetIO, reading: Reading, info: dict[str, Any], report: dict[str, Any]) -> Reading:
        """Hold the last command until the torso has turned slower than ``rest_rate_rad_s`` for ``rest_s``, has
        fallen, or ``rest_timeout_s`` has passed; returns the last reading. An episode can end with the robot
        still tipping, and folding it then throws it over."""
        r = self.recovery
        since = io.now()
        calm_since: float | None = None
        while True:
            rate = _rate(reading)
            if not rate <= r.rest_rate_rad_s:  # NaN (no gyroscope sample) is not at rest either
                calm_since = None
            elif calm_since is None:
                calm_since = io.now()
            waited = io.now() - since
            at_rest = calm_since is not None and io.now() - calm_since >= r.rest_s - EXACT_ATOL
            if at_rest or not _tilt(reading) <= r.fallen_tilt_rad or waited >= r.rest_timeout_s - EXACT_ATOL:
                # How long the robot was watched before anything moved (s), and whether it came to rest.
                report.update(rest_wait_s=waited, at_rest=at_rest)
                return reading
            _step(io, reading, io.command, self.limits)
            io.end_cycle()
            reading = io.begin_cycle(check_tilt=False)
            info["reset_cycles"] += 1

    def _move(self, io: ResetIO, target: FloatArray, hold_s: float, info: dict[str, Any],
              first: Reading | None = None, together: bool = True) -> Reading:
        """Rate-limited to ``target`` through the safety filter, then held ``hold_s``; returns the last reading, one
        with an IMU sample (the silence watchdog bounds the wait for one), its cycle still open. ``first``: that
        reading of the phase before, whose cycle the move's first command goes out in. ``together``: every joint
        arrives at once (:func:`_waypoints`); otherwise each moves at its own rate limit, the quickest way there."""
        arrived_at: float | None = None
        path: list[FloatArray] = []
        while True:
            if first is not None:
                reading, first = first, None
            else:
                reading = io.begin_cycle(check_tilt=False)
                info["reset_cycles"] += 1
            if not io.commanded and not reading.stale:
                io.start_from(clip_to_limits(reading.joint_pos, self.limits))
            if together and not path and not np.array_equal(io.command, target):
                path = _waypoints(io.command, target, self.limits)
            if arrived_at is None and np.array_equal(io.command, target):
                arrived_at = io.now()
            if (arrived_at is not None and io.now() - arrived_at >= hold_s - EXACT_ATOL and not reading.stale
                    and np.all(np.isfinite(reading.base_quat))):
                return reading
            _step(io, reading, path[0] if path else target, self.limits)
            if path and np.array_equal(io.command, path[0]):
                path.pop(0)
            io.end_cycle()

    def _settle(self, io: ResetIO, target: FloatArray, info: dict[str, Any], t0: float) -> Reading:
        """Wait at the start pose for the joints and the torso to be there; a failed reset after the timeout."""
        r = self.recovery
        since = io.now()
        there_since: float | None = None
        while True:
            reading = io.begin_cycle(check_tilt=False)
            info["reset_cycles"] += 1
            error = float(np.max(np.abs(reading.joint_pos - target))) if not reading.stale else math.inf
            angle = _tilt(reading)
            info.update(reset_error_rad=error, reset_settled=False)
            if not (error <= r.joint_tolerance_rad and angle <= r.upright_tilt_rad):
                there_since = None
            elif there_since is None:
                there_since = io.now()
            # Held there for hold_s: the legs and the torso come to rest, as every start in simulation is.
            if there_since is not None and io.now() - there_since >= r.hold_s - EXACT_ATOL:
                info.update(reset_settled=True, reset_duration_s=io.now() - t0)
                return reading
            if io.now() - since >= self.settings.timeout_s:
                self._fail(io, info, t0, f"not at the start pose within {self.settings.timeout_s:g} s (largest joint "
                           f"error {error:.3f} rad, tilt {angle:.2f} rad)")
            _step(io, reading, target, self.limits)
            io.end_cycle()

    def _fail(self, io: ResetIO, info: dict[str, Any], t0: float, reason: str) -> NoReturn:
        io.end_cycle()
        info.update(reset_failed=reason, reset_settled=False, reset_duration_s=io.now() - t0)
        self.log.warning("reset failed: %s", reason)
        raise ResetFailed(reason)


def _rate(reading: Reading) -> float:
    """The torso's angular speed (rad/s) from the IMU sample the reading carries (a failed servo read still carries
    one; the IMU's silence watchdog bounds its age); NaN without one."""
    if reading.base_angvel.shape != (3,):
        return math.nan
    return float(np.linalg.norm(reading.base_angvel))


def _tilt(reading: Reading) -> float:
    """The torso's tilt from upright (rad); NaN without an IMU sample."""
    q = reading.base_quat
    return tilt(q) if q.shape == (4,) and np.all(np.isfinite(q)) else math.nan


def _waypoints(start: FloatArray, target: FloatArray, limits: SafetyLimits) -> list[FloatArray]:
    """Evenly spaced commands from ``start`` to ``target``, each within one rate-limited step of the last: every
    joint moves at once and arrives together (a rate limit alone moves the shortest move's joints first, and a
    fold in that order can tip the torso)."""
    steps = max(1, math.ceil(float(np.max(np.abs(target - start))) / limits.max_step - EXACT_ATOL))
    return [target.copy() if k == steps else start + (target - start) * (k / steps) for k in range(1, steps + 1)]


def _step(io: ResetIO, reading: Reading, target: FloatArray, limits: SafetyLimits) -> None:
    """One rate-limited command towards ``target``; a stale reading holds the last command."""
    if reading.stale:
        if io.commanded:
            io.write(io.command)
        return
    command = step_towards(target, io.command, limits)
    io.write(target.copy() if np.allclose(command, target, rtol=0, atol=EXACT_ATOL) else command)


def make_reset(spec: TaskSpec, config: RobotConfig, settings: ResetSettings, limits: SafetyLimits,
               log: logging.Logger, place: Place | None = None) -> Reset:
    """The reset of ``config``'s robot on ``spec``'s task: :class:`RecoveryReset` for a floating base whose config
    chooses it (``reset: {kind: recovery}``; ``place`` is not used), :class:`PlacedReset` for another floating base
    (``place``: the scene placer's, ``None`` where a person places it), else :class:`JointReset`."""
    if spec.base_joint is not None and config.recovery is not None:
        return RecoveryReset(limits, settings, config.recovery, log)
    names = config.resettable_passive_joints
    drive = None
    if names:
        drive = PassiveDrive(
            names=names,
            index=np.array([spec.passive_joints.index(n) for n in names]),
            periodic=np.array([n in spec.periodic_passive for n in names]),
            max_step_rad=np.array([config.encoder(n).reset_velocity_limit_rad_s for n in names])
            * config.control_period_s,
            settings=settings, log=log)
    joints = JointReset(limits, settings, spec.passive_joints, drive, config.source,
                        config.imu.frame_period_s if config.imu is not None else None, log)
    return joints if spec.base_joint is None else PlacedReset(joints, place)
