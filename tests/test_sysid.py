"""System identification from five ``scripted:excite`` episodes on the emulated claw (issue 15).

Each case writes a reality file of its own (values chosen for this test, not the ones the excitation or the
adaptation budget were tried on), deploys ``scripted:excite`` on the servo emulator for five episodes exactly
as ``s2r deploy`` does, adapts the shipped prior (``randomization/configs/dclaw.yaml``) to the logs with the
default ``AdaptConfig``, and checks every parameter ``randomization.adapt.IDENTIFIED_BY_EXCITATION`` names:
posterior mean within 10 % of the truth, posterior std at least 3x narrower than the prior's.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from randomization.adapt import IDENTIFIED_BY_EXCITATION, AdaptConfig
from randomization.adapt import adapt as run_adapt
from randomization.distributions import load_distribution
from randomization.parallel import ExecutorConfig
from s2r.cli import main as s2r_main

ROOT = Path(__file__).resolve().parents[1]
PRIOR = ROOT / "randomization" / "configs" / "dclaw.yaml"
ROBOT = ROOT / "hardware_configs" / "dclaw.yaml"
EPISODES = 5

REALITIES = {
    # A soft servo and a stiff, greasy valve, on MuJoCo.
    "soft_servos": {"finger_kp": 2.6, "finger_damping": 0.12, "valve_damping": 0.15, "valve_frictionloss": 0.012,
                    "valve_mass": 0.085, "tip_friction": 0.9, "finger_mass_scale": 1.1, "action_latency": 0.005,
                    "obs_noise_std": 0.002},
    # A stiff servo with little damping and a free-running valve.
    "stiff_servos": {"finger_kp": 5.2, "finger_damping": 0.05, "valve_damping": 0.03, "valve_frictionloss": 0.006,
                     "valve_mass": 0.075, "tip_friction": 1.15, "finger_mass_scale": 0.85, "action_latency": 0.015,
                     "obs_noise_std": 0.002},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REALITIES))
def test_five_excitation_episodes_identify_the_emulated_claw(name: str, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    truth = REALITIES[name]
    reality = tmp_path / "reality.yaml"
    reality.write_text(yaml.safe_dump({"engine": "mujoco", "seed": 11, "params": truth,
                                       "velocity_noise_std_rad_s": 0.01}))
    # The shipped config in lock-step: the episodes do not depend on how busy the machine is.
    logs = tmp_path / "logs"
    code = s2r_main(["deploy", "scripted:excite", "--robot", str(ROBOT), "--driver", "emulator", "--lockstep",
                     "--reality", str(reality), "--episodes", str(EPISODES), "--log-dir", str(logs), "--seed", "0",
                     "--json"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and summary["episodes"] == EPISODES, summary

    prior = load_distribution(PRIOR, task="dclaw-turn")
    start = time.perf_counter()
    result = run_adapt(prior, logs, AdaptConfig(seed=0), executor=ExecutorConfig(workers=2))
    wall = time.perf_counter() - start
    print(f"{name}: adaptation of {result.transitions} transitions took {wall:.0f} s")
    failures = []
    for n in result.names:
        (pm, ps), (qm, qs) = result.prior_moments[n], result.posterior_moments[n]
        error, ratio = abs(qm - truth[n]) / truth[n], ps / qs
        print(f"  {n:20s} truth {truth[n]:<7.4g} prior {pm:.4g} ± {ps:.3g}  posterior {qm:.4g} ± {qs:.3g}  "
              f"error {100 * error:5.1f} %  std {ratio:4.1f}x narrower")
        if n in IDENTIFIED_BY_EXCITATION and (error > 0.10 or ratio < 3.0):
            failures.append(f"{n}: posterior {qm:.4g} ± {qs:.3g} vs truth {truth[n]:.4g} "
                            f"(error {100 * error:.1f} %, std {ratio:.1f}x narrower)")
    assert not failures, "; ".join(failures)
