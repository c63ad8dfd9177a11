"""An excitation signal for system identification: a per-joint multi-sine inside the joint limits.

Random actions are a poor experiment to rely on: the rate limit turns almost every one into a full-size step
in a random direction (hard on real gearboxes), and which poses and loads the joints visit is left to chance.
The multi-sine is smooth and designed:

- each joint follows a sum of sines whose frequencies no other joint uses (an interleaved, log-spaced grid),
  so the joints' responses are separable, in time and in frequency;
- the low frequencies carry the joints slowly across most of their ranges, changing the gravity and contact
  loads the servos hold against (at rest, the tracking error under a load depends on the servo gain, not on
  the damping);
- the high frequencies make the zero-order-held command jump every control period, so each period also
  shows a step response (damping, inertia, latency);
- the amplitudes keep every target inside the limits with a margin and the slope under the task's joint
  velocity limit, so the rate limit and the safety filter pass the signal unchanged.

For the claw the slow sweeps through the middle of the ranges also bring the fingertips onto the valve's
spokes and turn it, so the valve's parameters leave a trace too (see ``randomization.adapt``'s notes on
which parameter is identified from what).

On a legged robot the legs sweep most of their ranges too, with no regard for balance: run it with the
robot hung in a harness, feet free.

The signal is a pure function of the step index and the seed: ``s2r deploy scripted:excite --seed S`` and
the in-process simulated logs replay the same targets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.tasks.actions import normalize
from sim.tasks.spec import FloatArray, TaskSpec

NYQUIST_FRACTION = 0.8
"""Highest excitation frequency as a fraction of the loop's Nyquist frequency (-): an aliased sine would not be
the signal the joints were meant to follow."""


@dataclass(frozen=True)
class ExcitationConfig:
    """Shape of the multi-sine (see the module docstring)."""

    components: int = 3
    """Sines per joint (-)."""
    lowest_hz: float = 0.12
    """Lowest frequency of the grid (Hz); about half a cycle per 4 s episode."""
    highest_hz: float = 2.0
    """Highest frequency of the grid (Hz); below the Nyquist frequency of a 10 Hz loop with room to spare.
    A slower loop lowers it to 0.4 / control period (80 % of its Nyquist frequency)."""
    range_fraction: float = 0.8
    """Largest excursion from the middle of the limits, as a fraction of their half width (-)."""
    speed_fraction: float = 0.9
    """Largest target speed, as a fraction of the task's joint velocity limit (-)."""

    def __post_init__(self) -> None:
        if self.components < 1:
            raise ValueError(f"components must be at least 1, got {self.components}")
        if not 0.0 < self.lowest_hz < self.highest_hz < math.inf:
            raise ValueError(f"need 0 < lowest_hz < highest_hz; got {self.lowest_hz} and {self.highest_hz}")
        if not 0.0 < self.range_fraction < 1.0:
            raise ValueError(f"range_fraction must be in (0, 1), got {self.range_fraction}")
        if not 0.0 < self.speed_fraction <= 1.0:
            raise ValueError(f"speed_fraction must be in (0, 1], got {self.speed_fraction}")


class MultiSine:
    """Joint targets (rad) of a per-joint multi-sine, a pure function of the control step index.

    ``low``/``high`` are the joint limits to stay inside (default: the task's ranges); the robot passes its
    hardware config's, which lie inside them.
    """

    def __init__(self, spec: TaskSpec, seed: int, config: ExcitationConfig | None = None,
                 low: FloatArray | None = None, high: FloatArray | None = None) -> None:
        cfg = config or ExcitationConfig()
        n, k = spec.n_joints, cfg.components
        lo = np.asarray(spec.low if low is None else low, dtype=np.float64)
        hi = np.asarray(spec.high if high is None else high, dtype=np.float64)
        if lo.shape != (n,) or hi.shape != (n,) or np.any(lo >= hi):
            raise ValueError(f"joint limits must be ({n},) arrays with low < high")
        self.spec = spec
        self.period = spec.control_period
        # One log-spaced grid of n * k frequencies, dealt out round-robin: joint j gets grid points j, j + n,
        # j + 2n, ..., one per band, and no two joints share a frequency.
        top = min(cfg.highest_hz, NYQUIST_FRACTION * 0.5 / spec.control_period)
        grid = np.geomspace(min(cfg.lowest_hz, 0.5 * top), top, n * k)
        self.freq_hz = grid.reshape(k, n).T.copy()  # (n, k)
        self.centre = 0.5 * (lo + hi)
        half = 0.5 * (hi - lo)
        # Equal-speed components (amplitude ~ 1/f): slow ones travel far, fast ones still step every period.
        shape = 1.0 / self.freq_hz
        by_range = cfg.range_fraction * half / shape.sum(axis=1)
        max_speed = cfg.speed_fraction * spec.max_step / spec.control_period
        by_speed = max_speed / (2.0 * math.pi * (shape * self.freq_hz).sum(axis=1))
        self.amplitude = np.minimum(by_range, by_speed)[:, None] * shape  # (n, k), rad
        self.phase = np.random.default_rng(seed).uniform(0.0, 2.0 * math.pi, (n, k))

    def target(self, step: int) -> FloatArray:
        """Joint targets (rad) at control step ``step`` (0-based)."""
        t = step * self.period
        return self.centre + (self.amplitude * np.sin(2.0 * math.pi * self.freq_hz * t + self.phase)).sum(axis=1)


class ExcitePolicy:
    """``scripted:excite``: the multi-sine as normalized actions; one step per call, continuing across episodes."""

    def __init__(self, signal: MultiSine) -> None:
        self.signal = signal
        self.step = 0

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        target = self.signal.target(self.step)
        self.step += 1
        return normalize(target, self.signal.spec.low, self.signal.spec.high)
