"""The safety filter: any policy output gives a command inside the joint limits and the rate limit."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from robot.config import config_from_mapping, load_config
from robot.safety import Hold, SafetyLimits, filter_action, hold_command, step_towards
from sim.tasks.actions import action_to_command

ROOT = Path(__file__).resolve().parents[1]
CONFIG = load_config(ROOT / "hardware_configs" / "dclaw.yaml")
N = CONFIG.task_spec().n_joints
RATE_SLACK_RAD = 1e-12


def _narrow_config() -> SafetyLimits:
    """Hardware limits strictly inside the task's ranges, so the filter's own clip matters."""
    data = yaml.safe_load((ROOT / "hardware_configs" / "dclaw.yaml").read_text())
    for j in data["joints"].values():
        j["low_rad"] = 0.8 * j["low_rad"] + 0.05
        j["high_rad"] = 0.7 * j["high_rad"]
    del data["calibration_poses"]  # its pose B lies outside the narrowed limits; the filter does not read it
    return SafetyLimits.from_config(config_from_mapping(data))


LIMITS = (SafetyLimits.from_config(CONFIG), _narrow_config())

any_float = st.floats(allow_nan=True, allow_infinity=True, width=64)
actions = st.lists(any_float, min_size=N, max_size=N)
unit = st.lists(st.floats(0.0, 1.0), min_size=N, max_size=N)


def _inside(previous_unit: list[float], limits: SafetyLimits) -> np.ndarray:
    u = np.asarray(previous_unit)
    # low + 1.0 * (high - low) can round one ulp above high; a previous command always lies inside.
    return np.clip(limits.low + u * (limits.high - limits.low), limits.low, limits.high)


@settings(max_examples=300, deadline=None)
@given(action=actions, previous_unit=unit, which=st.sampled_from([0, 1]))
def test_any_policy_output_gives_a_command_inside_limits_and_rate(action: list[float], previous_unit: list[float],
                                                                  which: int) -> None:
    limits = LIMITS[which]
    previous = _inside(previous_unit, limits)
    f = filter_action(np.asarray(action), previous, limits)
    assert f.command.shape == (N,)
    assert np.all(np.isfinite(f.command))
    assert np.all(f.command >= limits.low) and np.all(f.command <= limits.high)
    assert np.all(np.abs(f.command - previous) <= limits.max_step + RATE_SLACK_RAD)
    finite = bool(np.all(np.isfinite(np.asarray(action))))
    assert f.held == (not finite)
    if not finite:
        assert f.hold == Hold.NON_FINITE_ACTION and f.action is None
        np.testing.assert_array_equal(f.command, previous)
    else:
        assert f.action is not None and np.all(np.abs(f.action) <= 1.0)


@settings(max_examples=100, deadline=None)
@given(target=actions, previous_unit=unit)
def test_scripted_moves_stay_inside_limits_and_rate(target: list[float], previous_unit: list[float]) -> None:
    limits = LIMITS[1]
    previous = _inside(previous_unit, limits)
    command = step_towards(np.asarray(target), previous, limits)
    assert np.all(command >= limits.low) and np.all(command <= limits.high)
    assert np.all(np.abs(command - previous) <= limits.max_step + RATE_SLACK_RAD)


def test_finite_actions_map_exactly_as_in_the_sim() -> None:
    """With the config's limits equal to the task's ranges the command is the sim's, bit for bit."""
    limits = LIMITS[0]
    spec = limits.spec
    rng = np.random.default_rng(0)
    previous = spec.reset.copy()
    for _ in range(50):
        a = rng.uniform(-1.5, 1.5, N)
        f = filter_action(a, previous, limits)
        expected = action_to_command(np.clip(a, -1, 1), previous, spec)
        np.testing.assert_array_equal(f.command, expected)
        previous = f.command


def test_rate_limit_scales_with_the_control_period() -> None:
    fast = replace(CONFIG, control_period_s=0.01, control_period_override=True)
    limits = SafetyLimits.from_config(fast)
    assert limits.max_step == pytest.approx(CONFIG.task_spec().max_step / 10)
    f = filter_action(np.ones(N), limits.spec.reset, limits)
    assert np.max(np.abs(f.command - limits.spec.reset)) == pytest.approx(limits.max_step)


def test_wrong_shape_is_an_error_and_hold_keeps_the_command() -> None:
    limits = LIMITS[0]
    with pytest.raises(ValueError, match="shape"):
        filter_action(np.zeros(N + 1), limits.spec.reset, limits)
    held = hold_command(limits.spec.reset, limits, Hold.STALE_READING)
    assert held.held and held.hold == Hold.STALE_READING
    np.testing.assert_array_equal(held.command, limits.spec.reset)


def test_limits_outside_the_task_ranges_are_refused() -> None:
    spec = CONFIG.task_spec()
    with pytest.raises(ValueError, match="inside"):
        SafetyLimits(spec, spec.low - 0.1, spec.high)
