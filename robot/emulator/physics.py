"""The simulated claw behind the emulator, advanced so that simulated time tracks the wall clock.

Stepping happens on the emulator's one serving thread: before every request is answered, and when the
line is idle (the serving loop wakes every few milliseconds). A background physics thread would fight
the serving thread for the GIL and delay replies by up to the interpreter's 5 ms switch interval; one
thread keeps replies prompt, orders commands and readings exactly, and bounds any catch-up to a few
steps. If the host cannot keep up for a while (more than ``MAX_CATCH_UP_S`` behind), the missing time
is skipped and reported as ``lag_s`` instead of stalling the bus.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping

import numpy as np

from sim.engines import Engine, make_engine
from sim.params import ParameterSet
from sim.state import RobotState
from sim.tasks.base import Task
from sim.tasks.spec import FloatArray

MAX_CATCH_UP_S = 0.1
"""Most simulated time one call may run to catch up with the wall clock (s)."""


class RealTimePhysics:
    """A task's scene on an engine, with position targets applied after a latency, in wall-clock time.

    A NaN target means "torque off": the joint holds the position it had when its torque went off,
    as the XM430's 353:1 gearbox is not back-driven by a finger's own weight.
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
    ) -> None:
        self.engine = make(engine, task, timestep_s)
        self.params = ParameterSet(task.param_specs(), self.engine)
        self.params.set_many(params)
        self.dt = self.engine.timestep
        self.latency_s = latency_s
        self._clock = clock
        self.engine.reset(np.asarray(joint_pos, dtype=np.float64), np.asarray(passive_pos, dtype=np.float64))
        self._command = np.asarray(joint_pos, dtype=np.float64).copy()
        self._holding = np.ones(len(self._command), dtype=bool)
        self._pending: deque[tuple[float, FloatArray]] = deque()
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

    def set_targets(self, now: float, targets: FloatArray) -> None:
        """Position targets (rad, NaN = hold) that take effect ``latency_s`` after ``now``."""
        self._pending.append((self._wall_to_sim(now) + self.latency_s, np.asarray(targets, dtype=np.float64).copy()))

    def advance_to(self, now: float) -> None:
        """Step until simulated time reaches ``now`` (wall clock), applying due targets on the way."""
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
            self.engine.step(nxt - self.steps)
            self.steps = nxt
            stepped = True
        self._apply_due()
        if stepped:
            self._state = self.engine.read()

    def _apply_due(self) -> None:
        changed = False
        while self._pending and self._pending[0][0] <= self.sim_time + 1e-12:
            targets = self._pending.popleft()[1]
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

    def close(self) -> None:
        """Free the engine."""
        self.engine.close()
