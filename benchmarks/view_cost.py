"""What the live view (``s2r deploy --view``) costs the control loop: the Rerun view against the no-op view.

The controller runs episodes of a random policy on the in-process mock robot in lock-step (the mock's simulated
time: no waiting, so every microsecond measured is work), with three views:

- ``noop``: :data:`robot.view.NO_VIEW`, the default;
- ``rerun``: the live view as ``--view FILE.rrd`` opens it, :class:`robot.view.ProcessView` (Rerun in a process of
  its own, fed through a pipe), recording to a file in a temporary directory (the viewer is not started: streaming
  to it is the same work on this side);
- ``rerun_in_process``: for reference, the same Rerun view run inside the loop (what the process saves the loop).

Measured for each robot at its shipped control period and, for reference, at 100 Hz:

- ``view_call``: wall time of each call the controller makes to the view (every step, and each episode's end):
  p50/p99/max (us), and the mean per policy step;
- ``loop_wall_per_step_us``: the whole run's wall time per policy step (reset cycles included), which also catches
  what the view's process takes from the loop's core on a small machine;
- ``cost_fraction``: a view's mean per-step cost minus the no-op view's, as a fraction of the control period, from
  the calls (``calls``) and from the run's wall time (``wall``, noisier); ``worst_step_fraction``: the slowest single
  call over the period;
- ``rerun_process_real_time``: the view's process fed the run's steps at the control rate for ``--seconds`` (the
  lock-step runs feed it many times faster than a robot): its CPU time per step after its start, and
  ``process_cpu_fraction``, that over the period: its share of a core at that rate (a core of its own where the
  machine has one);
- ``dropped``: steps the view's process could not take in time (the lock-step loop runs many times faster than
  real time), ``rrd_bytes_per_step``: the recording's size.

The goal: the Rerun view's ``cost_fraction`` below 5 % of the shipped control period (``goals``). The machine's load
average is reported next to the numbers: other processes show up directly in wall times. The last stdout line is
one JSON object.

Usage: python benchmarks/view_cost.py [--quick] [--steps N] [--episodes E]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from robot.config import RobotConfig, load_config
from robot.controller import Controller, ControllerSettings, Stop
from robot.hardware import OpenOptions, open_robot
from robot.rerun_view import SEND_INTERVAL_S, RerunView
from robot.view import NO_VIEW, ProcessView, StepRecord, StepView, ViewLayout
from s2r.api import deploy_task

ROBOTS = ("dclaw", "dkitty")
FAST_PERIOD_S = 0.01
"""The reference rate's period (s): 100 Hz."""
GOAL_COST_FRACTION = 0.05
"""The view may cost at most this fraction of the shipped control period (-)."""


class TimedView:
    """Times each call into ``inner`` (perf_counter, s)."""

    def __init__(self, inner: StepView) -> None:
        self.inner = inner
        self.calls: list[float] = []
        self.records: list[StepRecord] = []

    def step(self, record: StepRecord) -> None:
        t0 = time.perf_counter()
        self.inner.step(record)
        self.calls.append(time.perf_counter() - t0)
        self.records.append(record)

    def episode_end(self, episode: int, meta: Mapping[str, Any]) -> None:
        t0 = time.perf_counter()
        self.inner.episode_end(episode, meta)
        self.calls.append(time.perf_counter() - t0)


def pct_us(samples_s: list[float]) -> dict[str, float]:
    a = np.asarray(samples_s) * 1e6
    return {"p50_us": round(float(np.percentile(a, 50)), 1), "p99_us": round(float(np.percentile(a, 99)), 1),
            "max_us": round(float(a.max()), 1)}


def run(config: RobotConfig, view: StepView, episodes: int, steps: int) -> dict[str, Any]:
    """``episodes`` episodes of ``steps`` steps with ``view``; the view's call times and the loop's wall time."""
    timed = TimedView(view)
    io = open_robot(config, "mock", OpenOptions(lockstep=True))
    rng = np.random.default_rng(0)
    spec = config.task_spec()
    try:
        io.bus.connect()
        ctrl = Controller(lambda obs: rng.normal(0.0, 0.5, spec.n_joints), io.bus,
                          deploy_task(config.task, None, None, spec), config,
                          settings=io.controller_settings(ControllerSettings(episode_steps=steps)),
                          imu=io.imu, placer=io.placer, clock=io.clock, sleep=io.sleep, view=timed)
        policy_steps = 0
        t0 = time.perf_counter()
        for _ in range(episodes):
            result = ctrl.episode(rng)
            policy_steps += result.steps
            if result.stop is not None:
                raise RuntimeError(f"the benchmark's run stopped: {result.stop.describe()}")
        wall = time.perf_counter() - t0
        ctrl.shutdown(Stop("completed", "benchmark"))
    finally:
        io.close()
    return {"view_call": pct_us(timed.calls), "view_call_mean_per_step_us": round(sum(timed.calls) / policy_steps
                                                                                   * 1e6, 1),
            "view_call_max_s": max(timed.calls), "loop_wall_per_step_us": round(wall / policy_steps * 1e6, 1),
            "policy_steps": policy_steps, "records": timed.records}


def process_cpu_s(pid: int | None) -> float | None:
    """CPU time (user and system) process ``pid`` has used so far (s), from Linux's /proc; ``None`` elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_in_real_time(layout: ViewLayout, records: list[StepRecord], seconds: float, path: Path) -> dict[str, Any]:
    """The view's process fed ``records`` at the control rate for ``seconds`` (as a robot feeds it; the lock-step
    runs feed it faster): its CPU time per step after its start, and that as a share of a core."""
    period = layout.period_s
    n = min(len(records), max(1, round(seconds / period)))
    view = ProcessView(layout, path, "s2r view_cost")
    try:
        start = process_cpu_s(view.pid)
        deadline = time.monotonic()
        for record in records[:n]:
            deadline += period
            time.sleep(max(0.0, deadline - time.monotonic()))
            view.step(record)
        time.sleep(2 * SEND_INTERVAL_S)  # its last send
        end = process_cpu_s(view.pid)
    finally:
        view.close()
    work = None if start is None or end is None else end - start
    return {"steps": n, "dropped": view.dropped,
            "process_cpu_per_step_us": None if work is None else round(work / n * 1e6, 1),
            "process_cpu_fraction": None if work is None else round(work / n / period, 5)}


class InProcess:
    """The Rerun view inside the loop (the reference ``rerun_in_process``)."""

    def __init__(self, view: RerunView) -> None:
        self.view = view

    def step(self, record: StepRecord) -> None:
        self.view.send(self.view.layout.row(record)[None])

    def episode_end(self, episode: int, meta: Mapping[str, Any]) -> None:
        self.view.episode_end({"episode": episode, **meta})


def cost(view: dict[str, Any], noop: dict[str, Any], period: float) -> dict[str, Any]:
    worst = view.pop("view_call_max_s")
    return {**view, "cost_fraction": {
        "calls": round((view["view_call_mean_per_step_us"] - noop["view_call_mean_per_step_us"]) * 1e-6 / period, 5),
        "wall": round((view["loop_wall_per_step_us"] - noop["loop_wall_per_step_us"]) * 1e-6 / period, 5)},
        "worst_step_fraction": round(worst / period, 5)}


def measure(config: RobotConfig, episodes: int, steps: int, seconds: float, scratch: Path) -> dict[str, Any]:
    """The three views on ``config``, with the Rerun views' costs as fractions of the period."""
    period = config.control_period_s
    layout = ViewLayout.of(config)
    noop = run(config, NO_VIEW, episodes, steps)
    noop.pop("view_call_max_s")
    noop.pop("records")
    rrd = scratch / f"{config.task}-{period:g}.rrd"
    process = ProcessView(layout, rrd, "s2r view_cost")
    try:
        with_process = run(config, process, episodes, steps)
    finally:
        process.close()
    records = with_process.pop("records")
    with_process.update(dropped=process.dropped, rrd_bytes_per_step=round(
        rrd.stat().st_size / (with_process["policy_steps"] - process.dropped), 1))
    inline = RerunView.record(layout, "s2r view_cost", scratch / f"inline-{config.task}-{period:g}.rrd")
    try:
        in_process = run(config, InProcess(inline), episodes, steps)
    finally:
        inline.close()
    in_process.pop("records")
    return {"control_period_s": period, "noop": noop, "rerun": cost(with_process, noop, period),
            "rerun_in_process": cost(in_process, noop, period),
            "rerun_process_real_time": process_in_real_time(layout, records, seconds, scratch / f"rt-{rrd.name}")}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 episodes of 100 steps per run (< 1 min)")
    parser.add_argument("--steps", type=int, help="policy steps per episode (default 400, quick 100)")
    parser.add_argument("--episodes", type=int, help="episodes per run (default 5, quick 2)")
    parser.add_argument("--seconds", type=float, help="seconds of the real-time feed of the view's process (default "
                        "10, quick 2)")
    args = parser.parse_args()
    steps = args.steps or (100 if args.quick else 400)
    episodes = args.episodes or (2 if args.quick else 5)
    seconds = args.seconds or (2.0 if args.quick else 10.0)
    if steps < 1 or episodes < 1:
        parser.error("--steps and --episodes must be at least 1")
    out: dict[str, Any] = {"benchmark": "view_cost", "quick": args.quick, "steps": steps, "episodes": episodes,
                           "seconds": seconds,
                           "cpu_count": os.cpu_count(), "python": platform.python_version(),
                           "load_average_start": [round(x, 2) for x in os.getloadavg()], "robots": {}}
    goals = {}
    with tempfile.TemporaryDirectory() as scratch:
        for robot in ROBOTS:
            shipped = load_config(robot)
            fast = replace(shipped, control_period_s=FAST_PERIOD_S, control_period_override=True)
            section = {}
            for label, config in (("shipped", shipped), ("100hz", fast)):
                r = measure(config, episodes, steps, seconds, Path(scratch))
                section[label] = r
                for name in ("rerun", "rerun_in_process"):
                    v = r[name]
                    print(f"{robot} at {config.control_period_s * 1e3:g} ms, {name}: view call p50 "
                          f"{v['view_call']['p50_us']} us, mean per step {v['view_call_mean_per_step_us']} us "
                          f"(no-op {r['noop']['view_call_mean_per_step_us']} us); cost "
                          f"{v['cost_fraction']['calls']:.2%} of the period by the calls, "
                          f"{v['cost_fraction']['wall']:.2%} by the wall time; worst step "
                          f"{v['worst_step_fraction']:.2%}" + (f"; dropped {v['dropped']}" if "dropped" in v else ""))
                rt = r["rerun_process_real_time"]
                print(f"{robot} at {config.control_period_s * 1e3:g} ms, the view's process fed in real time: "
                      f"{rt['process_cpu_per_step_us']} us of CPU per step, {rt['process_cpu_fraction']} of a core")
            out["robots"][robot] = section
            c = section["shipped"]["rerun"]["cost_fraction"]
            goals[f"{robot}_cost_below_5_percent_of_the_period"] = max(c["calls"], c["wall"]) < GOAL_COST_FRACTION
    out["goals"] = goals
    out["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
