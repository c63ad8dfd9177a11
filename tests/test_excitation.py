"""``scripted:excite``: the multi-sine excitation for system identification (``sim.tasks.excitation``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from randomization.simlogs import SimLogConfig, record_sim_logs
from robot.config import load_config
from robot.safety import SafetyLimits, filter_action
from s2r.cli import main as s2r_main
from s2r.core.trajlog import read_episodes, read_run
from s2r.policy_files import scripted_policy
from sim.tasks.actions import action_to_command, rate_limit
from sim.tasks.dclaw_turn import SPEC as CLAW
from sim.tasks.dkitty import STAND_SPEC as KITTY
from sim.tasks.excitation import ExcitationConfig, ExcitePolicy, MultiSine
from sim.tasks.spec import TaskSpec

ROOT = Path(__file__).resolve().parents[1]
TICK_RAD = 2.0 * np.pi / 4096
"""One XM430 encoder tick (rad)."""
STEPS = 3000
"""Control steps checked: 300 s at 10 Hz, several periods of the slowest sine."""


def _targets(signal: MultiSine, steps: int = STEPS) -> np.ndarray:
    return np.array([signal.target(t) for t in range(steps)])


@pytest.mark.parametrize("spec", [CLAW, KITTY], ids=["claw", "kitty"])
def test_every_joint_stays_inside_its_range_and_under_the_velocity_limit(spec: TaskSpec) -> None:
    q = _targets(MultiSine(spec, seed=4))
    half = 0.5 * (spec.high - spec.low)
    centre = 0.5 * (spec.high + spec.low)
    assert np.all(np.abs(q - centre) <= ExcitationConfig().range_fraction * half + 1e-12)
    assert np.all(np.abs(np.diff(q, axis=0)) <= ExcitationConfig().speed_fraction * spec.max_step + 1e-12)
    # ... and it uses the room: every joint sweeps a good part of its range and its command jumps by a
    # sizeable step in some periods (the range or the speed bound is what limits each joint).
    assert np.all(np.ptp(q, axis=0) >= 0.3 * (spec.high - spec.low))
    assert np.all(np.abs(np.diff(q, axis=0)).max(axis=0) >= 0.1 * spec.max_step)


@pytest.mark.parametrize("spec", [CLAW, KITTY], ids=["claw", "kitty"])
def test_the_task_mapping_and_the_safety_filter_pass_the_signal_unchanged(spec: TaskSpec) -> None:
    policy = ExcitePolicy(MultiSine(spec, seed=1))
    previous = policy.signal.target(0)
    policy.step = 1
    for _ in range(400):
        action = policy(np.zeros(spec.obs_layout.size, dtype=np.float32))
        command = action_to_command(action, previous, spec)
        np.testing.assert_allclose(command, policy.signal.target(policy.step - 1), atol=1e-12)
        previous = command


def test_hardware_limits_bound_the_signal_and_the_filter_keeps_it() -> None:
    config = load_config(ROOT / "hardware_configs" / "dclaw.yaml")
    spec = config.task_spec()
    narrow_low = config.low + 0.25 * (config.high - config.low)
    narrow_high = config.high - 0.25 * (config.high - config.low)
    policy = scripted_policy("excite", spec, 0, (narrow_low, narrow_high))
    limits = SafetyLimits(spec, narrow_low, narrow_high)
    q = np.array([policy(np.zeros(spec.obs_layout.size, dtype=np.float32)) for _ in range(STEPS)])
    targets = spec.low + (q + 1.0) * 0.5 * (spec.high - spec.low)
    assert np.all(targets >= narrow_low - 1e-9) and np.all(targets <= narrow_high + 1e-9)
    fresh = scripted_policy("excite", spec, 0, (narrow_low, narrow_high))
    assert isinstance(fresh, ExcitePolicy)
    previous = fresh.signal.target(0)
    fresh.step = 1
    for _ in range(200):
        filtered = filter_action(fresh(np.zeros(spec.obs_layout.size, dtype=np.float32)), previous, limits)
        assert not filtered.held
        np.testing.assert_allclose(filtered.command, fresh.signal.target(fresh.step - 1), atol=1e-12)
        previous = filtered.command


def test_deterministic_given_the_seed_and_different_across_seeds() -> None:
    a, b, c = (_targets(MultiSine(CLAW, seed=s), 200) for s in (7, 7, 8))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0.1
    # scripted:excite is that signal as normalized actions, one step per call, continuing across episodes.
    policy = scripted_policy("excite", CLAW, 7)
    actions = np.array([policy(np.zeros(CLAW.obs_layout.size, dtype=np.float32)) for _ in range(200)])
    np.testing.assert_allclose(actions, (a - 0.5 * (CLAW.high + CLAW.low)) / (0.5 * (CLAW.high - CLAW.low)),
                               atol=1e-12)


@pytest.mark.parametrize("spec", [CLAW, KITTY], ids=["claw", "kitty"])
def test_each_joint_has_frequencies_of_its_own(spec: TaskSpec) -> None:
    signal = MultiSine(spec, seed=0)
    assert len(np.unique(signal.freq_hz)) == signal.freq_hz.size
    # In the measured spectrum, each joint's strongest line is one of its own frequencies, not a neighbour's.
    steps = 2 ** 14
    q = _targets(signal, steps)
    freqs = np.fft.rfftfreq(steps, spec.control_period)
    for j in range(spec.n_joints):
        power = np.abs(np.fft.rfft(q[:, j] - q[:, j].mean())) ** 2
        peak = freqs[np.argmax(power)]
        nearest = np.abs(signal.freq_hz - peak)
        owner = np.unravel_index(np.argmin(nearest), nearest.shape)[0]
        assert owner == j, f"joint {j}'s strongest line at {peak:.3f} Hz belongs to joint {owner}"


def test_a_slow_loop_keeps_the_frequencies_below_nyquist() -> None:
    slow = replace(CLAW, control_period=0.5)
    signal = MultiSine(slow, seed=0)
    assert signal.freq_hz.max() <= 0.8 * 0.5 / 0.5 + 1e-12
    q = _targets(signal, 500)
    assert np.all(np.abs(np.diff(q, axis=0)) <= slow.max_step + 1e-12)


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="range_fraction"):
        ExcitationConfig(range_fraction=1.0)
    with pytest.raises(ValueError, match="lowest_hz"):
        ExcitationConfig(lowest_hz=3.0, highest_hz=2.0)
    with pytest.raises(ValueError, match="joint limits"):
        MultiSine(CLAW, 0, low=CLAW.high, high=CLAW.low)


def test_simulated_logs_and_a_mock_deployment_run_the_signal(tmp_path: Path) -> None:
    """``s2r simlogs excite`` and ``s2r deploy scripted:excite`` send the multi-sine's targets, rate-limited
    only while an episode's start pose catches up with it, and the signal runs on across episodes."""
    record_sim_logs(tmp_path / "sim", SimLogConfig(episodes=2, seed=5), "excite")
    signal = MultiSine(CLAW, 5)
    episodes = list(read_episodes(tmp_path / "sim"))
    for e, ep in enumerate(episodes):
        command = np.asarray(ep["command"])
        previous = np.asarray(ep["joint_pos"][0])  # the reset commands the start pose, which reading 0 shows
        for t in range(len(command)):
            expected = rate_limit(signal.target(e * CLAW.episode_steps + t), previous, CLAW.max_step)
            np.testing.assert_allclose(command[t], expected, atol=0.05)
            previous = command[t]
    config = yaml.safe_load((ROOT / "hardware_configs" / "dclaw.yaml").read_text())
    config["control_period_s"], config["control_period_override"] = 0.01, True
    robot = tmp_path / "robot.yaml"
    robot.write_text(yaml.safe_dump(config, sort_keys=False))
    logs = tmp_path / "deploy"
    assert s2r_main(["deploy", "scripted:excite", "--robot", str(robot), "--driver", "mock", "--lockstep",
                     "--episodes", "2", "--episode-steps", "30", "--log-dir", str(logs), "--seed", "2"]) == 0
    assert read_run(logs).extra["policy"] == "scripted:excite"
    hw = load_config(robot)
    for ep in read_episodes(logs):
        command = np.asarray(ep["command"])
        # The log holds the commands as sent, in whole encoder ticks.
        assert np.all(command >= hw.low - TICK_RAD) and np.all(command <= hw.high + TICK_RAD)
        assert np.all(np.abs(np.diff(command, axis=0)) <= hw.task_spec().max_step + TICK_RAD)
        assert np.ptp(command, axis=0).min() > 0.0  # every joint is driven
