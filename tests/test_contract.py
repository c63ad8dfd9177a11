"""The contract every registered s2r task keeps on every engine.

Gymnasium and Stable-Baselines3 env checks, spaces, determinism, finite values, the reward as the sum
of its named terms, named parameters (round trip, applied from nominal, validated), exact state
snapshots and rendering. Runs over every flat ``s2r/`` id in the gymnasium registry x every engine.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import sim
from sim.engines import ENGINES, ParamSpec, UnsupportedParameter
from sim.env import SimEnv

TASK_ENV_IDS = tuple(sorted(i for i in gym.registry
                            if i.startswith("s2r/") and i not in sim.GOAL_IDS and i not in sim.PIXEL_IDS))
"""The flat tasks; the goal-conditioned ids (dict observations over these same tasks' physics) keep
gymnasium-robotics' contract instead, in tests/test_goal_env.py, and the camera ids (a dict with an image, over the
same physics as their flat ids, which these cases cover) keep gymnasium's, in tests/test_pixels_env.py."""
CASES = [(i, e) for i in TASK_ENV_IDS for e in ENGINES]
_FIRST_OF_TASK = {sim.make_task(i).spec.name: i for i in reversed(TASK_ENV_IDS)}
PARAM_CASES = [(i, e, s.name) for i in TASK_ENV_IDS for e in ENGINES for s in sim.make_task(i).param_specs()
               if not s.is_visual or _FIRST_OF_TASK[sim.make_task(i).spec.name] == i]
"""Every parameter of every env on both engines; a visual one (it acts on the scene's looks, never on how episodes
start) on the first env of its task only, since the task's variants share the scene."""
SEED = 7
SHORT_STEPS = 4
"""Steps of the rollouts that compare trajectories; the fingers touch the valve from the first step."""
LONG_EPISODES = 3
"""Episodes of the long random rollout: every episode starts from a reset, so three (two truncations and resets
in between, and one step into a fourth) cover what 1000 steps did, at a fraction of the quadruped's cost."""
UNKNOWN_PARAM = "no_such_parameter"

# Unbounded observation boxes are deliberate (the values are physical); every other checker warning fails.
_BENIGN_WARNING = r".*A Box observation space (minimum|maximum) value is"

Maker = Callable[..., gym.Env]


def _case_id(case: tuple[str, ...]) -> str:
    return "-".join(c.removeprefix("s2r/") for c in case)


def _make(env_id: str, engine: str, **kwargs: Any) -> gym.Env:
    if engine == "pybullet":
        pytest.importorskip("pybullet")
    return gym.make(env_id, engine=engine, **kwargs)


@pytest.fixture
def make_env() -> Iterator[Maker]:
    """``make_env(env_id, engine, **kwargs)``: a fresh env, closed after the test."""
    envs: list[gym.Env] = []

    def make(env_id: str, engine: str, **kwargs: Any) -> gym.Env:
        env = _make(env_id, engine, **kwargs)
        envs.append(env)
        return env

    yield make
    for env in envs:
        env.close()


@pytest.fixture(scope="module")
def env_cache() -> Iterator[dict[tuple[str, str], gym.Env]]:
    cache: dict[tuple[str, str], gym.Env] = {}
    yield cache
    for env in cache.values():
        env.close()


@pytest.fixture
def shared_env(env_cache: dict[tuple[str, str], gym.Env]) -> Iterator[Maker]:
    """``shared_env(env_id, engine)``: one env per task and engine for the whole module, saving construction time.

    Only for tests that never compare it with a fresh env; its parameters go back to nominal afterwards.
    """
    used: list[gym.Env] = []

    def get(env_id: str, engine: str) -> gym.Env:
        if (env_id, engine) not in env_cache:
            env_cache[(env_id, engine)] = _make(env_id, engine)
        used.append(env_cache[(env_id, engine)])
        return used[-1]

    yield get
    for env in used:
        params = _sim(env).params
        for name in params.names():
            if params.get(name) != params.nominal(name):
                params.set(name, params.nominal(name))


def _sim(env: gym.Env) -> SimEnv:
    inner = env.unwrapped
    assert isinstance(inner, SimEnv)
    return inner


def _actions(env_id: str, n: int, seed: int = 0) -> np.ndarray:
    size = sim.make_task(env_id).spec.n_joints
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (n, size)).astype(np.float32)


def _rollout(env: gym.Env, actions: np.ndarray, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Observations and rewards of ``actions`` from a seeded reset (resetting at episode end), then the final state.

    Returns (observations, rewards followed by the final joint positions and velocities).
    """
    obs, _ = env.reset(seed=seed)
    observations, rewards = [obs], []
    for a in actions:
        obs, reward, terminated, truncated, _ = env.step(a)
        observations.append(obs)
        rewards.append(float(reward))
        if terminated or truncated:
            obs, _ = env.reset()
            observations.append(obs)
    final = _sim(env).get_sim_state()
    rewards.extend([*final.qpos, *final.qvel])
    return np.stack(observations), np.array(rewards)


def _assert_same(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> None:
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def _other_value(spec: ParamSpec, factor: float) -> float:
    """An in-range value away from nominal: nominal scaled by ``factor``, or a small offset from zero."""
    v = spec.nominal * factor if spec.nominal > 0 else spec.low + 0.01 * factor
    if v > spec.high:
        v = (spec.nominal + spec.high) / 2
    assert spec.low <= v <= spec.high and v != spec.nominal, spec
    return v


# --- API checkers -----------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_gymnasium_check_env(case: tuple[str, str], make_env: Maker) -> None:
    from gymnasium.utils.env_checker import check_env

    env = make_env(*case)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=_BENIGN_WARNING)
        check_env(env.unwrapped)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_sb3_check_env(case: tuple[str, str], make_env: Maker) -> None:
    from stable_baselines3.common.env_checker import check_env

    env = make_env(*case)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=_BENIGN_WARNING)
        check_env(env.unwrapped, warn=True, skip_render_check=True)


# --- spaces, determinism, finite values, reward terms ---------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_spaces_and_returned_values(case: tuple[str, str], shared_env: Maker) -> None:
    env = shared_env(*case)
    spec = _sim(env).spec_
    act, obs_space = env.action_space, env.observation_space
    assert isinstance(act, gym.spaces.Box) and isinstance(obs_space, gym.spaces.Box)
    assert act.shape == (spec.n_joints,) and act.dtype == np.float32
    np.testing.assert_array_equal(act.low, -1.0)
    np.testing.assert_array_equal(act.high, 1.0)
    assert obs_space.shape == (spec.obs_layout.size,) and obs_space.dtype == np.float32
    obs, info = env.reset(seed=SEED)
    assert obs.shape == obs_space.shape and obs.dtype == obs_space.dtype
    assert isinstance(info, dict)
    obs, reward, terminated, truncated, info = env.step(act.sample())
    assert obs.shape == obs_space.shape and obs.dtype == obs_space.dtype
    assert isinstance(reward, float) and isinstance(terminated, bool) and isinstance(truncated, bool)
    assert set(info["reward_terms"]) == set(spec.reward_terms)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_same_seed_same_actions_same_trajectory(case: tuple[str, str], make_env: Maker) -> None:
    steps = sim.make_task(case[0]).spec.episode_steps + 2  # past the first truncation and reset
    actions = _actions(case[0], steps)
    a, b = make_env(*case), make_env(*case)
    first = _rollout(a, actions)
    _assert_same(_rollout(b, actions), first)
    _assert_same(_rollout(a, actions), first)  # and the same env repeats itself after a seeded reset


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_random_steps_over_three_episodes_stay_finite_and_consistent(case: tuple[str, str], make_env: Maker) -> None:
    """No NaN/inf; reward == sum of its named terms; terminated exactly where the task says so from the true state,
    else truncated exactly at the episode length, never both."""
    env = make_env(*case)
    spec = _sim(env).spec_
    env.action_space.seed(SEED)
    obs, _ = env.reset(seed=SEED)
    t = 0
    for _ in range(LONG_EPISODES * spec.episode_steps + 1):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        t += 1
        assert obs.shape == env.observation_space.shape and obs.dtype == np.float32
        assert np.all(np.isfinite(obs)) and math.isfinite(float(reward))
        terms = info["reward_terms"]
        assert tuple(terms) == spec.reward_terms
        assert all(math.isfinite(v) for v in terms.values())
        assert float(reward) == pytest.approx(sum(terms.values()), rel=1e-12, abs=1e-12)
        sim_env = _sim(env)
        assert terminated == sim_env.task.terminated(sim_env.read(), sim_env.goal)
        assert truncated == (t == spec.episode_steps and not terminated)
        if terminated or truncated:
            obs, _ = env.reset()
            t = 0
            assert np.all(np.isfinite(obs))


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_out_of_range_and_nan_actions_are_handled(case: tuple[str, str], make_env: Maker) -> None:
    env = make_env(*case)
    spec = _sim(env).spec_
    env.reset(seed=SEED)
    n = spec.n_joints
    for action in (np.full(n, np.nan), np.full(n, 1e30), np.full(n, -np.inf), np.full(n, 5.0)):
        obs, reward, _, _, info = env.step(action.astype(np.float32))
        assert np.all(np.isfinite(obs)) and math.isfinite(float(reward))
        command = info["command"]
        assert np.all(command >= spec.low) and np.all(command <= spec.high)


# --- named parameters -------------------------------------------------------------------------------
_NOMINAL_TRAJECTORIES: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}


def _nominal_trajectory(env_id: str, engine: str, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rollout of ``actions`` in a fresh, never-touched env; computed once per task and engine."""
    key = (env_id, engine)
    if key not in _NOMINAL_TRAJECTORIES:
        env = _make(env_id, engine)
        try:
            _NOMINAL_TRAJECTORIES[key] = _rollout(env, actions)
        finally:
            env.close()
    return _NOMINAL_TRAJECTORIES[key]


@pytest.mark.parametrize("case", PARAM_CASES, ids=_case_id)
def test_param_set_get_round_trip(case: tuple[str, str, str], shared_env: Maker) -> None:
    env_id, engine, name = case
    params = _sim(shared_env(env_id, engine)).params
    spec = params.spec(name)
    assert params.get(name) == spec.nominal == params.nominal(name)
    value = _other_value(spec, 1.5)
    if not params.supported(name):
        with pytest.raises(UnsupportedParameter, match=name):
            params.set(name, value)
        assert params.get(name) == spec.nominal
        return
    params.set(name, value)
    assert params.get(name) == value
    assert params.values()[name] == value


@pytest.mark.parametrize("case", PARAM_CASES, ids=_case_id)
def test_param_values_apply_from_nominal_and_never_compound(case: tuple[str, str, str], make_env: Maker) -> None:
    env_id, engine, name = case
    env = make_env(env_id, engine)
    params = _sim(env).params
    if not params.supported(name):
        pytest.skip(f"{engine} does not support {name}")
    spec = params.spec(name)
    a, b = _other_value(spec, 3.0), _other_value(spec, 1.5)
    actions = _actions(env_id, SHORT_STEPS)
    nominal = _nominal_trajectory(env_id, engine, actions)

    params.set(name, b)
    once = _rollout(env, actions)
    params.set(name, b)
    _assert_same(_rollout(env, actions), once)  # B twice == B once
    params.set(name, a)
    params.set(name, b)
    _assert_same(_rollout(env, actions), once)  # A then B == B
    params.set(name, a)
    params.set(name, spec.nominal)
    _assert_same(_rollout(env, actions), nominal)  # A then nominal == never set
    if spec.kind == "terrain_seed":
        return  # a bump pattern shows only on bumps: tests/test_terrain.py checks it with some roughness
    if spec.is_visual:
        # A visual parameter must leave the motion alone; tests/test_visual.py checks what it does to the images.
        _assert_same(once, nominal)
        return
    # The value reaches the simulation: a perturbed run differs from the nominal one.
    assert not (np.array_equal(once[0], nominal[0]) and np.array_equal(once[1], nominal[1])), (
        f"setting {name}={b} (nominal {spec.nominal}) did not change the trajectory"
    )


@pytest.mark.parametrize("case", PARAM_CASES, ids=_case_id)
def test_setting_a_param_mid_episode_leaves_the_state_alone(case: tuple[str, str, str], shared_env: Maker) -> None:
    env_id, engine, name = case
    env = shared_env(env_id, engine)
    inner = _sim(env)
    if not inner.params.supported(name):
        pytest.skip(f"{engine} does not support {name}")
    env.reset(seed=SEED)
    for a in _actions(env_id, 3):
        env.step(a)
    before = inner.get_sim_state()
    inner.params.set(name, _other_value(inner.params.spec(name), 1.5))
    after = inner.get_sim_state()
    np.testing.assert_array_equal(after.qpos, before.qpos, err_msg=f"setting {name} moved the joints")
    np.testing.assert_array_equal(after.qvel, before.qvel, err_msg=f"setting {name} changed the velocities")
    np.testing.assert_array_equal(after.command, before.command, err_msg=f"setting {name} changed the command")


@pytest.mark.parametrize("case", PARAM_CASES, ids=_case_id)
def test_param_out_of_range_is_a_value_error_naming_it(case: tuple[str, str, str], shared_env: Maker) -> None:
    env_id, engine, name = case
    params = _sim(shared_env(env_id, engine)).params
    spec = params.spec(name)
    bad = [math.nan, math.inf, spec.low - 1.0]
    if math.isfinite(spec.high):
        bad.append(spec.high * 2 + 1.0)
    for value in bad:
        with pytest.raises(ValueError, match=name):
            params.set(name, value)
        assert params.get(name) == spec.nominal


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_negative_damping_at_construction_is_a_value_error(case: tuple[str, str], make_env: Maker) -> None:
    env_id, engine = case
    specs = sim.make_task(env_id).param_specs()
    damping = next(s.name for s in specs if s.kind == "joint_damping")
    with pytest.raises(ValueError, match=damping):
        make_env(env_id, engine, params={damping: -0.1})


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_unknown_param_is_a_key_error_naming_it(case: tuple[str, str], make_env: Maker, shared_env: Maker) -> None:
    env_id, engine = case
    params = _sim(shared_env(env_id, engine)).params
    for call in (params.get, params.spec, params.nominal, params.supported, lambda n: params.set(n, 1.0)):
        with pytest.raises(KeyError, match=UNKNOWN_PARAM):
            call(UNKNOWN_PARAM)
    with pytest.raises(KeyError, match=UNKNOWN_PARAM):
        make_env(env_id, engine, params={UNKNOWN_PARAM: 1.0})


# --- state snapshots, rendering ---------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_sim_state_restore_is_exact(case: tuple[str, str], make_env: Maker) -> None:
    env = make_env(*case)
    inner = _sim(env)
    env.reset(seed=SEED)
    for a in _actions(case[0], 5, seed=1):
        env.step(a)
    snapshot = inner.get_sim_state()
    k_actions = _actions(case[0], 10, seed=2)

    def run(e: gym.Env) -> tuple[np.ndarray, np.ndarray]:
        steps = [e.step(a) for a in k_actions]
        state = _sim(e).get_sim_state()
        return np.stack([s[0] for s in steps]), np.array([*(float(s[1]) for s in steps), *state.qpos, *state.qvel])

    first = run(env)
    inner.set_sim_state(snapshot)
    np.testing.assert_array_equal(inner.get_sim_state().qpos, snapshot.qpos)
    np.testing.assert_array_equal(inner.get_sim_state().command, snapshot.command)
    _assert_same(run(env), first)

    # The snapshot also carries over to a second env of the same task on the same engine.
    other = make_env(*case)
    other.reset(seed=SEED)
    _sim(other).set_sim_state(snapshot)
    _assert_same(run(other), first)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_render_rgb_array(case: tuple[str, str], make_env: Maker) -> None:
    width, height = 64, 48
    env = make_env(*case, render_mode="rgb_array", render_size=(width, height))
    env.reset(seed=SEED)
    frame = env.render()
    assert isinstance(frame, np.ndarray)
    assert frame.shape == (height, width, 3) and frame.dtype == np.uint8
    # Not blank: a real scene has many distinct colours and contrast.
    assert len(np.unique(frame.reshape(-1, 3), axis=0)) > 10
    assert frame.std() > 5.0
    plain = make_env(*case)
    plain.reset(seed=SEED)
    assert plain.render() is None  # no render_mode: nothing rendered
