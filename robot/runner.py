"""Runs N episodes with a :class:`~robot.controller.Controller`, logs each one, and sums the run up.

Each finished episode is written with :class:`s2r.core.trajlog.TrajectoryWriter` as soon as it ends
(temporary file, then rename), so a killed process loses at most the episode in progress. When the
run stops early the episode in progress is written too, marked ``complete: false`` in its meta, after
the torque is off: the robot is made safe first, then the logs are flushed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from robot.config import RobotConfig
from robot.controller import COMPLETED, Controller, Stop
from s2r.core.trajlog import RunInfo, TrajectoryWriter, config_hash


@dataclass(frozen=True)
class RunSummary:
    """What ``s2r deploy`` reports (``--json`` prints :meth:`to_json`)."""

    episodes: int
    """Episodes that ran every step."""
    episodes_logged: int
    """Episode files written by this run (complete ones, plus a partial one when stopped early)."""
    success_rate: float | None
    """Fraction of the complete episodes that succeeded; ``None`` when none completed."""
    return_mean: float | None
    """Mean return of the complete episodes; ``None`` when none completed."""
    loop: dict[str, Any]
    """Timing of every control cycle: period error p50/p99 (abs, us), cycle time p50/p99 (us), overruns."""
    comm_errors: int
    """Failed bus transactions counted during the run (every kind)."""
    comm_errors_by_kind: dict[str, int]
    """The same by kind (timeout, corrupt, ...), only kinds that occurred."""
    comm_errors_at_connect: int
    """Of ``comm_errors``, those counted before the controller started (connecting)."""
    comm_errors_at_shutdown: int
    """Of ``comm_errors``, those of the final hold and torque off; the rest are in the episode logs."""
    stale_reads: int
    """Readings that failed after their retries."""
    held_actions: int
    """Policy outputs refused by the safety filter for a NaN or infinity."""
    stop_kind: str
    """``completed``, ``requested``, ``safety`` or ``port_lost`` (see :class:`robot.controller.Stop`)."""
    stop_reason: str
    """Why the run ended, in words."""
    torque_off: bool
    """Whether the servos confirmed the torque off at the end (``s2r deploy`` exits non-zero when not)."""
    log_dir: str
    """Where the episodes were written."""
    imu: dict[str, Any] | None = None
    """The IMU's counters over the run (frames, corrupt frames by kind, sequence gaps, ...); ``None`` without one."""
    true_success_rate: float | None = None
    """An emulator's judgement: the fraction of the complete episodes that succeeded on its physics (the world's
    true state, not the robot's sensing; ``Controller.truth``); ``None`` on hardware and the mock."""
    resets: dict[str, int] | None = None
    """With a recovery reset (``reset: {kind: recovery}``): ``failed`` resets, ``righted`` (resets that righted a
    fallen robot and reached the start) and ``fallen`` episodes (ended by a fall); ``None`` with another reset."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """A few lines for people."""
        loop = self.loop

        def us(key: str) -> str:
            v = loop.get(key)
            return "-" if v is None else f"{v:.0f} us"

        rate = "-" if self.success_rate is None else f"{self.success_rate:.0%}"
        truth = "" if self.true_success_rate is None else f"   on the emulator's physics: {self.true_success_rate:.0%}"
        ret = "-" if self.return_mean is None else f"{self.return_mean:.1f}"
        kinds = ", ".join(f"{k} {v}" for k, v in self.comm_errors_by_kind.items()) or "none"
        imu = []
        if self.imu is not None:
            corrupt = sum(v for k, v in self.imu.items() if k.startswith("corrupt_"))
            imu = [f"imu: {self.imu['frames']} frames, {corrupt} corrupt, {self.imu['gaps']} sequence gaps "
                   f"({self.imu['frames_missed']} frames missed)"]
        return "\n".join([
            f"episodes: {self.episodes} complete ({self.episodes_logged} logged in {self.log_dir})",
            f"success rate: {rate}   mean return: {ret}{truth}",
            f"loop: period error p50 {us('period_error_p50_us')}, p99 {us('period_error_p99_us')}; "
            f"cycle time p50 {us('cycle_time_p50_us')}, p99 {us('cycle_time_p99_us')}; "
            f"overruns {loop.get('overruns', 0)} of {loop.get('cycles', 0)} cycles",
            f"comm errors: {self.comm_errors} ({kinds}); stale reads {self.stale_reads}; "
            f"held actions {self.held_actions}",
            *imu,
            *([] if self.resets is None else [
                f"resets: {self.resets['failed']} failed, {self.resets['righted']} righted a fallen robot; "
                f"{self.resets['fallen']} episodes ended by a fall"]),
            f"stop: {self.stop_kind if self.stop_kind == 'completed' else self.stop_kind + ': ' + self.stop_reason}; "
            f"torque {'off' if self.torque_off else 'NOT confirmed off'}",
        ])


def run_info(config: RobotConfig, source: str, episode_steps: int, extra: dict[str, Any] | None = None) -> RunInfo:
    """The ``run.json`` of a deploy run on ``config``'s robot (``source``: the bus driver)."""
    spec = config.task_spec()
    imu = {} if config.imu is None else {"imu": {
        "port": config.imu.port, "baud": config.imu.baud, "rate_hz": config.imu.rate_hz,
        "frame_version": config.imu.frame_version, "max_tilt_rad": config.imu.max_tilt_rad,
        "max_silence_s": config.imu.max_silence_s, "mounting_quat": list(config.imu.mounting_quat)}}
    return RunInfo(
        task=spec.name,
        robot=spec.robot,
        joint_names=spec.joint_names,
        passive_joints=spec.passive_joints,
        control_period=config.control_period_s,
        source=source,
        extra={"hardware_config": config.source, "episode_steps": episode_steps,
               "resettable_passive_joints": list(config.resettable_passive_joints), **imu, **(extra or {})},
        # The config's contents, not where it was loaded from: appending needs the same calibration and limits.
        config_hash=config_hash({k: v for k, v in asdict(config).items()
                                 if k != "source" and not (k == "recovery" and v is None)}),
    )


def run_episodes(controller: Controller, writer: TrajectoryWriter, episodes: int,
                 rng: np.random.Generator, goals: Sequence[Mapping[str, float]] | None = None) -> RunSummary:
    """Run up to ``episodes`` episodes, writing each; always ends with the torque off (or trying to).

    ``goals``: episode ``i``'s commanded goal is ``goals[i]`` (at least ``episodes`` of them, checked against the
    task by the caller); ``None``: the task draws each episode's goal."""
    if episodes < 0:
        raise ValueError(f"episodes must be >= 0; got {episodes}")
    if goals is not None and len(goals) < episodes:
        raise ValueError(f"{episodes} episodes need as many goals; got {len(goals)}")
    successes: list[bool] = []
    true_successes: list[bool] = []
    returns: list[float] = []
    imu_start = controller.imu.counters if controller.imu is not None else None
    logged = 0
    stop: Stop = COMPLETED
    torque_off = False
    shut = False
    shutdown_errors = 0

    def shutdown(why: Stop) -> bool:
        nonlocal shutdown_errors
        before = controller.bus.counters.total_comm_errors
        try:
            return controller.shutdown(why)
        finally:
            shutdown_errors += controller.bus.counters.total_comm_errors - before

    try:
        for i in range(episodes):
            result = controller.episode(rng, None if goals is None else goals[i])
            if result.stop is not None:
                stop = result.stop
                torque_off, shut = shutdown(stop), True
            if result.steps > 0:
                writer.write_episode(result.arrays, result.meta)
                logged += 1
            else:
                writer.write_unstarted(result.meta)
            if result.complete:
                successes.append(result.success)
                returns.append(result.episode_return)
                if result.true_success is not None:
                    true_successes.append(result.true_success)
            if result.stop is not None:
                break
    except BaseException as exc:
        if not shut:
            stop = Stop("safety", f"controller error: {type(exc).__name__}: {exc}", controller.clock())
            torque_off, shut = shutdown(stop), True
        raise
    finally:
        if not shut:
            torque_off = shutdown(stop)
    counters = controller.bus.counters
    return RunSummary(
        episodes=len(successes),
        episodes_logged=logged,
        success_rate=float(np.mean(successes)) if successes else None,
        return_mean=_finite_or_none(float(np.mean(returns))) if returns else None,
        loop=controller.stats.summary(),
        comm_errors=counters.total_comm_errors,
        comm_errors_by_kind={k: v for k, v in counters.comm_errors.items() if v},
        comm_errors_at_connect=controller.errors_before_start,
        comm_errors_at_shutdown=shutdown_errors,
        stale_reads=counters.stale_reads,
        held_actions=controller.held_actions,
        stop_kind=stop.kind,
        stop_reason=stop.reason,
        torque_off=torque_off,
        log_dir=str(writer.directory),
        true_success_rate=float(np.mean(true_successes)) if true_successes else None,
        imu=None if controller.imu is None or imu_start is None else controller.imu.counters.since(imu_start),
        resets=None if controller.config.recovery is None else {
            "failed": controller.failed_resets, "righted": controller.righted_resets,
            "fallen": controller.fallen_episodes},
    )


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None
