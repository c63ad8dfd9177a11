"""Drift of the leg-odometry position source (``robot.tracker.estimator``) over a 16 s walk in simulation.

The walk is D'Kitty's walk task on MuJoCo driven by an open-loop trot (:func:`trot`: diagonal legs in phase, each
thigh swinging sinusoidally about the standing pose, each shin folding while its foot swings forward), which carries
the robot about 2 m forward in the task's 16 s, with whatever slipping and turning the contacts give it. The
estimator gets what the robot would give it: the joint angles and the IMU's orientation, sampled once per control
period (the controller polls its position source once per cycle), with the sensor noise of each case; the truth is
the simulated torso. Each case reports the final and the largest horizontal position error (m), the error as a
share of the distance walked, and the final heading error (rad).

Cases: ``ideal`` (noiseless sensors at the task's 10 Hz), ``noisy`` (2 mm-class joint noise of 0.005 rad and an
IMU attitude error of 0.01 rad per axis, the reality files' usual values), ``noisy_50hz`` (the same at a 0.02 s
control period: the estimator sees the stance phases more finely) and ``gyro_drift`` (noisy, plus an IMU yaw that
drifts by ``--gyro-drift-deg-min``, a cheap IMU without a magnetometer). The heading in simulation is the IMU's,
exact but for the noise: the heading error comes from the IMU alone.

Usage: python benchmarks/tracker_drift.py [--quick] [--seeds N] [--gyro-drift-deg-min 3]
The last line of stdout is one JSON object with everything measured.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from robot.config import DEFAULT_STANCE_TOLERANCE_M
from robot.tracker.estimator import LegOdometry
from sim.env import SimEnv
from sim.rotations import quat_from_rotvec, quat_from_yaw, quat_mul, yaw_of
from sim.state import RobotState
from sim.tasks.actions import normalize
from sim.tasks.dkitty import STAND_POSE_RAD, WALK_EPISODE_S, DKittyWalk
from sim.tasks.spec import FloatArray

TROT_PERIOD_S = 0.8
"""One gait cycle (s)."""
THIGH_AMPLITUDE_RAD = 0.2
"""Swing of every knee1 (thigh) about the standing pose (rad)."""
SHIN_FOLD_RAD = 0.4
"""Most extra fold of a knee2 (shin) while its foot swings forward (rad)."""
LEG_PHASE = (0.0, 0.5, 0.0, 0.5)
"""Phase of each leg (fr, fl, bl, br) in cycles: the diagonals fr+bl and fl+br alternate."""
STANCE_TOLERANCE_M = DEFAULT_STANCE_TOLERANCE_M
VELOCITY_WINDOW_S = 0.1


def trot(t: float) -> FloatArray:
    """The trot's joint targets (rad, task order) at time ``t`` (s)."""
    q = np.array(STAND_POSE_RAD, dtype=np.float64)
    for leg, phase in enumerate(LEG_PHASE):
        angle = 2.0 * math.pi * (t / TROT_PERIOD_S + phase)
        q[3 * leg + 1] += THIGH_AMPLITUDE_RAD * math.sin(angle)
        q[3 * leg + 2] -= SHIN_FOLD_RAD * max(0.0, -math.cos(angle))  # folded while the thigh swings forward
    return q


@dataclass(frozen=True)
class Case:
    """One way to feed the estimator."""

    name: str
    control_period_s: float
    joint_noise_rad: float = 0.0
    """Std of Gaussian noise on every joint angle the estimator reads (rad)."""
    attitude_noise_rad: float = 0.0
    """Std of each component of a random rotation of every IMU orientation (rad)."""
    gyro_drift_rad_s: float = 0.0
    """Rate at which the IMU's yaw drifts from the truth (rad/s)."""


def walk(case: Case, seed: int) -> dict[str, float]:
    """One 16 s trot; the estimator's errors against the simulated torso."""
    task = DKittyWalk()
    env = SimEnv(task, control_period=case.control_period_s)
    rng = np.random.default_rng([seed, 7])
    try:
        env.reset(seed=seed)
        spec = env.spec_
        odo = LegOdometry(task, stance_tolerance_m=STANCE_TOLERANCE_M, velocity_window_s=VELOCITY_WINDOW_S,
                          clock=lambda: 0.0)

        def sensed(st: RobotState) -> RobotState:
            quat = quat_mul(quat_from_yaw(case.gyro_drift_rad_s * st.time), st.base_quat)
            if case.attitude_noise_rad:
                quat = quat_mul(quat, quat_from_rotvec(rng.normal(0.0, case.attitude_noise_rad, 3)))
            joints = st.joint_pos + rng.normal(0.0, case.joint_noise_rad, st.joint_pos.shape)
            return RobotState(st.time, joints, st.joint_vel, st.passive_pos, st.passive_vel, base_quat=quat,
                              base_angvel=st.base_angvel)

        first = env.read()
        start = np.concatenate([first.base_pos, first.base_quat])
        odo.start_episode(start, sensed(first))
        odo.poll(sensed(first))
        path = 0.0
        previous = first.base_pos[:2].copy()
        errors: list[float] = []
        steps = round(WALK_EPISODE_S / case.control_period_s)
        pose = None
        for k in range(steps):
            env.step(normalize(trot((k + 1) * case.control_period_s), spec.low, spec.high))
            truth = env.read()
            pose = odo.poll(sensed(truth))
            assert pose is not None
            errors.append(float(np.linalg.norm(pose.position[:2] - truth.base_pos[:2])))
            path += float(np.linalg.norm(truth.base_pos[:2] - previous))
            previous = truth.base_pos[:2].copy()
        assert pose is not None
        heading_error = math.remainder(pose.yaw - yaw_of(truth.base_quat), 2.0 * math.pi)
        return {
            "distance_m": float(np.linalg.norm(truth.base_pos[:2] - first.base_pos[:2])),
            "path_m": path,
            "final_error_m": errors[-1],
            "max_error_m": max(errors),
            "final_error_pct_of_path": 100.0 * errors[-1] / path if path > 0 else math.nan,
            "heading_error_rad": abs(heading_error),
            "fell": bool(truth.base_pos[2] < 0.5 * first.base_pos[2]),
        }
    finally:
        env.close()


def summarize(runs: list[dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": len(runs)}
    for key in ("distance_m", "path_m", "final_error_m", "max_error_m", "final_error_pct_of_path",
                "heading_error_rad"):
        values = np.array([r[key] for r in runs], dtype=np.float64)
        out[f"{key}_mean"] = round(float(np.mean(values)), 4)
        out[f"{key}_max"] = round(float(np.max(values)), 4)
    out["fell"] = int(sum(bool(r["fell"]) for r in runs))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed, the ideal and noisy cases (under a minute)")
    parser.add_argument("--seeds", type=int, default=5, help="walks per case (start noise differs)")
    parser.add_argument("--gyro-drift-deg-min", type=float, default=3.0,
                        help="yaw drift of the gyro_drift case's IMU (deg/min)")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        print("tracker_drift: --seeds must be at least 1", file=sys.stderr)
        return 2
    noisy = {"joint_noise_rad": 0.005, "attitude_noise_rad": 0.01}
    cases = [Case("ideal", 0.1), Case("noisy", 0.1, **noisy)]
    if not args.quick:
        drift = math.radians(args.gyro_drift_deg_min) / 60.0
        cases += [Case("noisy_50hz", 0.02, **noisy), Case("gyro_drift", 0.1, **noisy, gyro_drift_rad_s=drift)]
    seeds = 1 if args.quick else args.seeds
    started = time.perf_counter()
    results: dict[str, Any] = {}
    for case in cases:
        summary = summarize([walk(case, seed) for seed in range(seeds)])
        results[case.name] = summary
        print(f"{case.name:>11}: walked {summary['distance_m_mean']:.2f} m, final error "
              f"{summary['final_error_m_mean']:.3f} m (max {summary['final_error_m_max']:.3f}; "
              f"{summary['final_error_pct_of_path_mean']:.1f} % of the path), largest during the walk "
              f"{summary['max_error_m_max']:.3f} m, heading error {summary['heading_error_rad_mean']:.4f} rad",
              flush=True)
    print(json.dumps({"benchmark": "tracker_drift", "walk_s": WALK_EPISODE_S, "seeds": seeds,
                      "gyro_drift_deg_min": args.gyro_drift_deg_min, "cases": results,
                      "wall_s": round(time.perf_counter() - started, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
