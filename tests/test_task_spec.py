"""Unit tests of the pure task pieces: action mapping, task spec timing, observation layout, claw reward."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sim.state import RobotState
from sim.tasks.actions import (
    action_to_command,
    clip_action,
    clip_to_range,
    denormalize,
    normalize,
    rate_limit,
    wrap_angle,
)
from sim.tasks.dclaw_turn import SPEC, DClawTurn
from sim.tasks.spec import ACTION_RATE_TERM, ObsField, ObsLayout

N = SPEC.n_joints
TOL = 1e-12


# --- action mapping --------------------------------------------------------------------------------
def test_denormalize_maps_the_unit_interval_onto_the_joint_range() -> None:
    low, high = SPEC.low, SPEC.high
    np.testing.assert_allclose(denormalize(-np.ones(N), low, high), low, atol=TOL)
    np.testing.assert_allclose(denormalize(np.ones(N), low, high), high, atol=TOL)
    np.testing.assert_allclose(denormalize(np.zeros(N), low, high), (low + high) / 2, atol=TOL)


def test_normalize_and_denormalize_are_inverse() -> None:
    rng = np.random.default_rng(0)
    low, high = SPEC.low, SPEC.high
    a = rng.uniform(-3.0, 3.0, (50, N))
    np.testing.assert_allclose(normalize(denormalize(a, low, high), low, high), a, atol=1e-12)
    q = rng.uniform(low, high, (50, N))
    np.testing.assert_allclose(denormalize(normalize(q, low, high), low, high), q, atol=1e-12)


def test_normalize_does_not_clip() -> None:
    low, high = SPEC.low, SPEC.high
    beyond = high + (high - low) / 2  # half a range above the top: normalized 2
    np.testing.assert_allclose(normalize(beyond, low, high), 2.0 * np.ones(N), atol=TOL)


def test_clip_to_range_and_clip_action() -> None:
    low, high = np.array([-1.0, 0.0, 2.0]), np.array([1.0, 0.5, 3.0])
    np.testing.assert_array_equal(clip_to_range(np.array([-5.0, 0.25, 9.0]), low, high), [-1.0, 0.25, 3.0])
    np.testing.assert_array_equal(clip_action(np.array([-7.0, 0.3, 1.5, -np.inf, np.inf])), [-1.0, 0.3, 1.0, -1.0, 1.0])


def test_rate_limit_moves_at_most_max_step_and_reaches_near_targets() -> None:
    prev = np.array([0.0, 0.0, 1.0, -1.0])
    target = np.array([0.05, -0.5, 3.0, -1.02])
    out = rate_limit(target, prev, 0.1)
    np.testing.assert_allclose(out, [0.05, -0.1, 1.1, -1.02], atol=TOL)
    assert np.all(np.abs(out - prev) <= 0.1 + TOL)


def test_action_to_command_small_move_reaches_the_target_in_one_step() -> None:
    target = SPEC.reset + 0.5 * SPEC.max_step
    action = normalize(target, SPEC.low, SPEC.high)
    np.testing.assert_allclose(action_to_command(action, SPEC.reset, SPEC), target, atol=1e-12)


def test_action_to_command_extreme_action_is_rate_limited() -> None:
    cmd = action_to_command(np.ones(N), SPEC.reset, SPEC)
    expected = np.minimum(SPEC.reset + SPEC.max_step, SPEC.high)
    np.testing.assert_allclose(cmd, expected, atol=1e-12)


def _within_limits_and_rate(cmd: np.ndarray, prev: np.ndarray) -> None:
    assert cmd.shape == (N,)
    assert np.all(np.isfinite(cmd))
    assert np.all(cmd >= SPEC.low) and np.all(cmd <= SPEC.high)
    assert np.all(np.abs(cmd - prev) <= SPEC.max_step * (1 + 1e-12) + 1e-15)


def test_action_to_command_many_random_actions_stay_in_bounds() -> None:
    rng = np.random.default_rng(1)
    prev = SPEC.reset
    for _ in range(500):
        cmd = action_to_command(rng.uniform(-2.0, 2.0, N), prev, SPEC)
        _within_limits_and_rate(cmd, prev)
        prev = cmd


@settings(max_examples=200, deadline=None)
@given(
    action=hnp.arrays(np.float64, N, elements=st.floats(allow_nan=False, allow_infinity=True, width=64)),
    prev_frac=hnp.arrays(np.float64, N, elements=st.floats(0.0, 1.0)),
)
def test_any_action_gives_a_command_within_limits_and_rate(action: np.ndarray, prev_frac: np.ndarray) -> None:
    prev = SPEC.low + prev_frac * (SPEC.high - SPEC.low)
    _within_limits_and_rate(action_to_command(action, prev, SPEC), prev)


def test_wrap_angle_range_and_values() -> None:
    np.testing.assert_allclose(wrap_angle(1.5 * math.pi), -0.5 * math.pi, atol=TOL)
    np.testing.assert_allclose(wrap_angle(-1.5 * math.pi), 0.5 * math.pi, atol=TOL)
    np.testing.assert_allclose(wrap_angle(math.pi), -math.pi, atol=TOL)
    a = np.linspace(-20.0, 20.0, 1001)
    w = wrap_angle(a)
    assert np.all(w >= -math.pi) and np.all(w < math.pi)
    np.testing.assert_allclose(np.cos(w), np.cos(a), atol=1e-9)
    np.testing.assert_allclose(np.sin(w), np.sin(a), atol=1e-9)


# --- task spec timing and validation ----------------------------------------------------------------
def test_claw_spec_timing() -> None:
    assert SPEC.control_period == pytest.approx(0.1)
    assert SPEC.episode_steps == 40
    assert SPEC.max_step == pytest.approx(2 * math.pi / 3 * 0.1)
    assert SPEC.substeps(0.0025) == (40, pytest.approx(0.0025))


@pytest.mark.parametrize("physics_dt", [0.0025, 0.002, 0.003, 0.0017, 0.01, 0.1, 0.25])
@pytest.mark.parametrize("period", [0.1, 0.05, 0.0333, 0.02])
def test_substeps_fill_the_control_period_exactly(period: float, physics_dt: float) -> None:
    spec = SPEC.with_control_period(period)
    n, dt = spec.substeps(physics_dt)
    assert isinstance(n, int) and n >= 1
    assert n * dt == pytest.approx(period, rel=1e-12)
    # The step is shortened, never lengthened.
    assert dt <= physics_dt * (1 + 1e-9)
    # And no fewer substeps would do.
    assert n == 1 or period / (n - 1) > physics_dt


def test_with_control_period_changes_episode_steps_and_max_step() -> None:
    fast = SPEC.with_control_period(0.05)
    assert fast.episode_steps == 80
    assert fast.max_step == pytest.approx(SPEC.max_step / 2)
    assert fast.substeps(0.0025)[0] == 20


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"joint_low": SPEC.joint_low[:-1]}, "joint_low"),
        ({"reset_pose": (*SPEC.reset_pose, 0.0)}, "reset_pose"),
        ({"joint_high": SPEC.joint_low}, "joint_low"),
        ({"control_period": 0.0}, "control_period"),
        ({"control_period": float("nan")}, "control_period"),
        ({"episode_duration": 0.01}, "episode_duration"),
        ({"action_rate_weight": -0.1, "reward_terms": (*SPEC.reward_terms, ACTION_RATE_TERM)}, "action_rate_weight"),
        ({"action_rate_weight": float("inf"), "reward_terms": (*SPEC.reward_terms, ACTION_RATE_TERM)},
         "action_rate_weight"),
        ({"action_rate_weight": 0.5}, "reward_terms must list 'action_rate'"),
        ({"reward_terms": (*SPEC.reward_terms, ACTION_RATE_TERM)}, "reward_terms must list 'action_rate'"),
    ],
)
def test_task_spec_rejects_inconsistent_fields(change: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        replace(SPEC, **change)  # type: ignore[arg-type]


# --- observation layout -----------------------------------------------------------------------------
LAYOUT = ObsLayout((ObsField("a", 2, "rad", "first"), ObsField("b", 1, "-", "second"), ObsField("c", 3, "m", "third")))


def test_obs_layout_slices() -> None:
    assert LAYOUT.size == 6
    assert LAYOUT.names == ("a", "b", "c")
    assert LAYOUT.slice("a") == slice(0, 2)
    assert LAYOUT.slice("b") == slice(2, 3)
    assert LAYOUT.slice("c") == slice(3, 6)
    assert LAYOUT.slices() == {"a": (0, 2), "b": (2, 3), "c": (3, 6)}
    with pytest.raises(KeyError, match="'zz'"):
        LAYOUT.slice("zz")


def test_obs_layout_concat_places_blocks_and_checks_sizes() -> None:
    obs = LAYOUT.concat({"c": np.array([4.0, 5.0, 6.0]), "a": np.array([1.0, 2.0]), "b": 3.0})
    assert obs.dtype == np.float32
    np.testing.assert_array_equal(obs, [1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(obs[LAYOUT.slice("c")], [4, 5, 6])
    with pytest.raises(ValueError, match="'a'"):
        LAYOUT.concat({"a": np.zeros(3), "b": 0.0, "c": np.zeros(3)})
    with pytest.raises(KeyError, match="'b'"):
        LAYOUT.concat({"a": np.zeros(2), "c": np.zeros(3)})


def test_claw_obs_layout() -> None:
    layout = SPEC.obs_layout
    assert layout.size == 21
    assert layout.slices() == {
        "joint_pos": (0, 9),
        "valve_cos_sin": (9, 11),
        "last_action": (11, 20),
        "target_error": (20, 21),
    }


# --- claw task: reward terms, success, observation, starts ------------------------------------------
TASK = DClawTurn()
TARGET = {"target": math.pi}


def _state(valve: float, joint_pos: np.ndarray | None = None, joint_vel: np.ndarray | None = None) -> RobotState:
    return RobotState(
        time=0.0,
        joint_pos=SPEC.reset.copy() if joint_pos is None else joint_pos,
        joint_vel=np.zeros(N) if joint_vel is None else joint_vel,
        passive_pos=np.array([valve]),
        passive_vel=np.zeros(1),
    )


def test_reward_terms_are_named_as_in_the_spec() -> None:
    assert tuple(TASK.reward_terms(_state(0.0), TARGET)) == SPEC.reward_terms


def test_reward_at_the_target_in_the_reset_pose() -> None:
    terms = TASK.reward_terms(_state(math.pi), TARGET)
    assert terms == {"target_dist": 0.0, "pose_dev": 0.0, "joint_vel": 0.0, "near_bonus": 10.0, "success_bonus": 50.0}
    assert TASK.success(_state(math.pi), TARGET)


def test_reward_near_but_not_successful() -> None:
    terms = TASK.reward_terms(_state(math.pi - 0.2), TARGET)
    assert terms["target_dist"] == pytest.approx(-1.0)
    assert terms["near_bonus"] == 10.0
    assert terms["success_bonus"] == 0.0
    assert not TASK.success(_state(math.pi - 0.2), TARGET)


def test_reward_far_from_target() -> None:
    terms = TASK.reward_terms(_state(0.0), TARGET)
    assert terms["target_dist"] == pytest.approx(-5.0 * math.pi)
    assert terms["near_bonus"] == 0.0 and terms["success_bonus"] == 0.0
    assert not TASK.success(_state(0.0), TARGET)


def test_target_error_wraps_around() -> None:
    # -pi + 0.05 is 0.05 rad from pi the short way round.
    s = _state(-math.pi + 0.05)
    assert TASK.success(s, TARGET)
    assert TASK.reward_terms(s, TARGET)["target_dist"] == pytest.approx(-0.25)


def test_pose_and_velocity_penalties() -> None:
    q = SPEC.reset.copy()
    q[4] += 0.3
    v = np.zeros(N)
    v[0], v[1], v[2] = 0.4, 1.0, -2.0  # 0.4 rad/s is below the "fast" threshold and not penalized
    terms = TASK.reward_terms(_state(math.pi, q, v), TARGET)
    assert terms["pose_dev"] == pytest.approx(-0.3)
    assert terms["joint_vel"] == pytest.approx(-math.sqrt(5.0))


def test_observation_blocks() -> None:
    q = SPEC.reset + np.linspace(-0.01, 0.01, N)
    last = np.linspace(-1.0, 1.0, N)
    obs = TASK.observe(_state(0.5, q), last, TARGET)
    lay = SPEC.obs_layout
    assert obs.shape == (21,) and obs.dtype == np.float32
    np.testing.assert_allclose(obs[lay.slice("joint_pos")], q, rtol=1e-6)
    np.testing.assert_allclose(obs[lay.slice("valve_cos_sin")], [math.cos(0.5), math.sin(0.5)], rtol=1e-6)
    np.testing.assert_allclose(obs[lay.slice("last_action")], last, rtol=1e-6)
    np.testing.assert_allclose(obs[lay.slice("target_error")], [math.pi - 0.5], rtol=1e-6)


def test_episode_starts() -> None:
    fixed = TASK.sample_start(np.random.default_rng(3))
    assert fixed.passive_pos.tolist() == [0.0] and fixed.goal == {"target": math.pi}
    assert np.all(np.abs(fixed.joint_pos - SPEC.reset) <= 0.02 + TOL)
    assert np.all(fixed.joint_pos >= SPEC.low) and np.all(fixed.joint_pos <= SPEC.high)
    rand = DClawTurn(variant="random")
    starts = [rand.sample_start(np.random.default_rng(s)) for s in range(50)]
    valves = np.array([s.passive_pos[0] for s in starts])
    targets = np.array([s.goal["target"] for s in starts])
    assert np.all(np.abs(valves) <= math.pi / 3) and np.ptp(valves) > 0.5
    assert np.all(np.abs(targets - math.pi) <= math.pi / 3) and np.ptp(targets) > 0.5
    again = rand.sample_start(np.random.default_rng(7))
    np.testing.assert_array_equal(again.passive_pos, starts[7].passive_pos)
    assert again.goal == starts[7].goal
