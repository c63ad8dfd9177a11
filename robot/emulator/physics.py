"""The simulated claw behind the emulator, advanced so that simulated time tracks the wall clock.

Stepping happens on the emulator's one serving thread: before every request is answered, and when the
line is idle (the serving loop wakes every few milliseconds). A background physics thread would fight
the serving thread for the GIL and delay replies by up to the interpreter's 5 ms switch interval; one
thread keeps replies prompt, orders commands and readings exactly, and bounds any catch-up to a few
steps. If the host cannot keep up for a while (more than ``MAX_CATCH_UP_S`` behind), the missing time
is skipped and reported as ``lag_s`` instead of stalling the bus.

A passive joint's encoder servo with its torque on (a reset driving the valve) pushes the joint towards its
goal with a PD torque applied through :meth:`~sim.engines.base.Engine.set_passive_torque`, recomputed every
physics step (see :class:`PassiveServoModel`). Why a torque and not a kinematic move: the scene has no
actuator on the valve, and a torque is what the real servo applies, so a driven valve keeps its inertia,
damping and friction, accelerates and settles like a servo, and cannot pass through a finger in the way
(contacts push back) -- a move through ``set_state`` would teleport it, and is a world rebuild on PyBullet.
With the servo's torque off the torque is zero and the valve is free, as before.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from robot.dynamixel.control_table import SPEC, Register
from robot.dynamixel.units import RAD_PER_TICK
from sim.engines import Engine, make_engine
from sim.params import ParameterSet
from sim.state import RobotState
from sim.tasks.base import Task
from sim.tasks.spec import FloatArray

MAX_CATCH_UP_S = 0.1
"""Most simulated time one call may run to catch up with the wall clock (s)."""
POSITION_P_GAIN_DIVISOR = 128
"""The firmware's scale of the Position P Gain register: PWM units per tick of error = gain / 128 (e-manual)."""
XM430_STALL_TORQUE_NM = 4.1
"""Stall torque of an XM430-W350 at 12 V (N m), reached at full PWM."""
XM430_KP_NM_PER_RAD = (SPEC[Register.POSITION_P_GAIN].default / POSITION_P_GAIN_DIVISOR
                       * XM430_STALL_TORQUE_NM / SPEC[Register.PWM_LIMIT].default / RAD_PER_TICK)
"""Stiffness of an XM430-W350 in position mode at its factory gains (N m/rad), about 18.9: the firmware's PWM is
``Position P Gain / 128`` per tick of error (800 / 128), full PWM (885) is the stall torque. A servo this stiff
holds the valve within a tick against its dry friction, as the real one does; the scene's softer finger gain
(``finger_kp``, 4 N m/rad) would leave it friction / kp = 1.6 ticks short of every goal."""
XM430_KD_NM_S_PER_RAD = 0.25
"""Derivative gain of a driven passive joint's servo (N m s/rad): with the valve's own damping, about critical
damping of the driven valve (inertia about 1.1e-3 kg m^2 with the gearbox armature). The real servo's damping
is its motor's back-EMF (stall torque / no-load speed, about 0.85 N m s/rad); an explicit torque that large at
the 2.5 ms physics step would ring (c dt / I about 2), and the settled position does not depend on it."""
XM430_TORQUE_LIMIT_NM = XM430_STALL_TORQUE_NM
"""Largest torque of the servo (N m)."""


@dataclass(frozen=True)
class PassiveServoModel:
    """The servo of a passive joint (the valve's encoder) while its torque is on: a PD position servo.

    Torque ``clip(kp * (goal - q) - kd * qd, -limit, limit)``, evaluated at the start of every physics step,
    as the scene's finger servos are (MuJoCo's position actuator: ``kp * (ctrl - q)``, clipped). The defaults
    are an XM430-W350 at its factory gains (see the constants).
    """

    kp_nm_per_rad: float = XM430_KP_NM_PER_RAD
    """Proportional gain (N m/rad)."""
    kd_nm_s_per_rad: float = XM430_KD_NM_S_PER_RAD
    """Derivative gain on the joint velocity (N m s/rad)."""
    torque_limit_nm: float = XM430_TORQUE_LIMIT_NM
    """Largest torque magnitude (N m)."""

    def torque(self, goal: FloatArray, pos: FloatArray, vel: FloatArray) -> FloatArray:
        """The torque (N m) per joint; zero where ``goal`` is NaN (torque off)."""
        driven = ~np.isnan(goal)
        raw = self.kp_nm_per_rad * (np.where(driven, goal, pos) - pos) - self.kd_nm_s_per_rad * vel
        return np.where(driven, np.clip(raw, -self.torque_limit_nm, self.torque_limit_nm), 0.0)


XM430_PASSIVE_SERVO = PassiveServoModel()


class RealTimePhysics:
    """A task's scene on an engine, with position targets applied after a latency, in wall-clock time.

    A NaN target means "torque off": the joint holds the position it had when its torque went off,
    as the XM430's 353:1 gearbox is not back-driven by a finger's own weight. Passive joints have targets
    too (NaN = free, the normal case); a finite one drives the joint through ``passive_servo``.
    """

    def __init__(
        self,
        task: Task,
        engine: str,
        timestep_s: float,
        params: Mapping[str, float],
        latency_s: float,
        joint_pos: FloatArray,
        passive_pos: FloatArray,
        clock: Callable[[], float],
        make: Callable[[str, Task, float], Engine] = make_engine,
        passive_servo: PassiveServoModel = XM430_PASSIVE_SERVO,
        base_pose: FloatArray | None = None,
    ) -> None:
        self.engine = make(engine, task, timestep_s)
        self.params = ParameterSet(task.param_specs(), self.engine)
        self.params.set_many(params)
        self.dt = self.engine.timestep
        self.latency_s = latency_s
        self._clock = clock
        self.engine.reset(np.asarray(joint_pos, dtype=np.float64), np.asarray(passive_pos, dtype=np.float64),
                          base_pose)
        self._command = np.asarray(joint_pos, dtype=np.float64).copy()
        self._holding = np.ones(len(self._command), dtype=bool)
        self.passive_servo = passive_servo
        n_passive = len(np.atleast_1d(passive_pos))
        self._passive_goal = np.full(n_passive, np.nan)
        self._passive_on = False
        self.passive_effort: FloatArray = np.zeros(n_passive)
        """Torque (N m) the passive joints' servos applied during the last step; 0 while free."""
        self._pending: deque[tuple[float, FloatArray, FloatArray]] = deque()
        self._t0 = clock()
        self.steps = 0
        """Physics steps taken."""
        self.lag_s = 0.0
        """Simulated time skipped because the host fell behind (s)."""
        self._state = self.engine.read()

    @property
    def sim_time(self) -> float:
        """Simulated time since start (s)."""
        return self.steps * self.dt

    def _wall_to_sim(self, now: float) -> float:
        return now - self._t0 - self.lag_s

    def set_targets(self, now: float, targets: FloatArray, passive_targets: FloatArray | None = None) -> None:
        """Position targets (rad, NaN = hold) and passive-joint targets (rad, NaN or ``None`` = free) that take
        effect ``latency_s`` after ``now``."""
        passive = (np.full(self._passive_goal.shape, np.nan) if passive_targets is None
                   else np.asarray(passive_targets, dtype=np.float64).copy())
        if passive.shape != self._passive_goal.shape:
            raise ValueError(f"passive targets have shape {passive.shape}, expected {self._passive_goal.shape}")
        self._pending.append((self._wall_to_sim(now) + self.latency_s, np.asarray(targets, dtype=np.float64).copy(),
                              passive))

    @property
    def passive_driven(self) -> bool:
        """Whether a passive joint's servo is on (its torque is recomputed every physics step)."""
        return self._passive_on

    def next_step_due(self) -> float:
        """Wall-clock time (s, on the physics clock) at which the next physics step falls due."""
        return self._t0 + self.lag_s + (self.steps + 1) * self.dt

    def advance_to(self, now: float) -> bool:
        """Step until simulated time reaches ``now`` (wall clock), applying due targets on the way; whether
        any step was taken."""
        goal = math.floor(self._wall_to_sim(now) / self.dt + 1e-9)
        most = self.steps + max(1, round(MAX_CATCH_UP_S / self.dt))
        if goal > most:
            self.lag_s += (goal - most) * self.dt
            goal = most
        stepped = False
        while self.steps < goal:
            self._apply_due()
            nxt = goal
            if self._pending:
                nxt = min(goal, max(self.steps + 1, math.ceil(self._pending[0][0] / self.dt - 1e-9)))
            if self.passive_driven:
                # A servo's torque follows the state: one step at a time, as MuJoCo evaluates its actuators.
                nxt = self.steps + 1
                st = self.engine.read()
                self.passive_effort = self.passive_servo.torque(self._passive_goal, st.passive_pos, st.passive_vel)
                self.engine.set_passive_torque(self.passive_effort)
            self.engine.step(nxt - self.steps)
            self.steps = nxt
            stepped = True
        self._apply_due()
        if stepped:
            self._state = self.engine.read()
        return stepped

    def _apply_due(self) -> None:
        changed = False
        while self._pending and self._pending[0][0] <= self.sim_time + 1e-12:
            _, targets, passive = self._pending.popleft()
            if self.passive_driven and not np.any(~np.isnan(passive)):
                self.passive_effort = np.zeros_like(self.passive_effort)
                self.engine.set_passive_torque(self.passive_effort)  # every servo off: the valve is free again
            self._passive_goal = passive
            self._passive_on = bool(np.any(~np.isnan(passive)))
            hold = np.isnan(targets)
            start_hold = hold & ~self._holding
            if start_hold.any():
                self._command[start_hold] = self.engine.read().joint_pos[start_hold]
            self._command[~hold] = targets[~hold]
            self._holding = hold
            changed = True
        if changed:
            self.engine.set_command(self._command)

    def state(self) -> RobotState:
        """The state after the last step."""
        return self._state

    def place(self, joint_pos: FloatArray, passive_pos: FloatArray, base_pose: FloatArray | None) -> None:
        """Put the robot at rest in this state at once (the scene reset of ``ServoChain.place``): joints and passive
        joints (rad), and a floating base's pose (position (m), quaternion (w, x, y, z); ``None`` = the scene's).

        Targets still waiting out the latency are dropped; the motors then hold the placed joints (the caller
        sets the servos' goals to match). The physics clock goes on: placing takes no simulated time.
        """
        joints = np.asarray(joint_pos, dtype=np.float64)
        if joints.shape != self._command.shape:
            raise ValueError(f"a placement has {self._command.size} joint positions, got shape {joints.shape}")
        self.engine.reset(joints, np.asarray(passive_pos, dtype=np.float64), base_pose)
        self._pending.clear()
        self._command = joints.copy()
        # A driven passive joint's servo torque (cleared by the reset) is recomputed before the next step anyway.
        self._state = self.engine.read()

    def close(self) -> None:
        """Free the engine."""
        self.engine.close()
