"""Parameter distributions (moments, bounds, seeding, YAML), the per-episode wrapper, and simulated logs."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import yaml

from randomization.distributions import (
    JointGaussian,
    LogUniform,
    ParameterDistribution,
    TruncatedNormal,
    Uniform,
    default_config,
    dump_distribution_yaml,
    load_distribution,
    parse_distribution,
    save_distribution,
)
from randomization.simlogs import STROKE_CYCLE, SimLogConfig, record_sim_logs
from randomization.wrapper import RandomizedEnv
from s2r.core.errors import UserError
from s2r.core.trajlog import read_episodes, read_run
from sim.engines.mujoco_engine import MujocoEngine
from sim.env import SimEnv

N_DRAWS = 40_000
TASK = "dclaw-turn"


def _dist(parameters: dict[str, Any], joint: dict[str, Any] | None = None) -> ParameterDistribution:
    data: dict[str, Any] = {"task": TASK, "parameters": parameters}
    if joint is not None:
        data["joint"] = joint
    return parse_distribution(data, "test")


def _sim(env: gym.Env) -> SimEnv:
    inner = env.unwrapped
    assert isinstance(inner, SimEnv)
    return inner


# --- marginals -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("entry", "mean", "std", "low", "high"),
    [
        ({"dist": "uniform", "low": 2.0, "high": 6.0}, 4.0, 4.0 / math.sqrt(12), 2.0, 6.0),
        # log-uniform on [a, b]: mean (b - a) / ln(b / a)
        ({"dist": "log_uniform", "low": 0.01, "high": 0.25}, 0.24 / math.log(25.0), None, 0.01, 0.25),
        ({"dist": "normal", "mean": 4.0, "std": 0.5}, 4.0, 0.5, 1e-3, math.inf),
        ({"dist": "truncated_normal", "mean": 4.0, "std": 1.0, "low": 3.5, "high": 6.0}, None, None, 3.5, 6.0),
    ],
)
def test_marginal_sample_moments_and_bounds(
    entry: dict[str, Any], mean: float | None, std: float | None, low: float, high: float
) -> None:
    dist = _dist({"finger_kp": entry})
    m = dist.marginals["finger_kp"]
    if mean is not None:
        assert m.mean == pytest.approx(mean, rel=1e-9)
    if std is not None:
        assert m.std == pytest.approx(std, rel=1e-6)
    x = dist.sample_array(np.random.default_rng(0), N_DRAWS)[:, 0]
    assert x.min() >= low and x.max() <= high
    # Sample moments agree with the analytic ones to a few standard errors.
    assert x.mean() == pytest.approx(m.mean, abs=4 * m.std / math.sqrt(N_DRAWS))
    assert x.std() == pytest.approx(m.std, rel=0.02)


def test_truncated_normal_moments_match_a_numerical_integral() -> None:
    m = TruncatedNormal(4.0, 1.0, 3.5, 6.0)
    grid = np.linspace(3.5, 6.0, 200_001)
    pdf = np.exp(m.log_pdf(grid))
    dx = grid[1] - grid[0]
    assert pdf.sum() * dx == pytest.approx(1.0, abs=1e-4)
    mean = (grid * pdf).sum() * dx
    assert m.mean == pytest.approx(mean, rel=1e-4)
    assert m.std == pytest.approx(math.sqrt(((grid - mean) ** 2 * pdf).sum() * dx), rel=1e-4)


def test_normal_is_truncated_to_the_allowed_range() -> None:
    # valve_damping cannot be negative: a normal centred near 0 is cut at 0, never sampled below.
    dist = _dist({"valve_damping": {"dist": "normal", "mean": 0.01, "std": 0.05}})
    x = dist.sample_array(np.random.default_rng(1), N_DRAWS)[:, 0]
    assert x.min() >= 0.0
    assert np.isinf(dist.log_pdf(np.array([[-0.01]]))[0])
    m = dist.marginals["valve_damping"]
    assert x.mean() == pytest.approx(m.mean, rel=0.02)
    assert m.mean > 0.01  # truncation shifts the mean up


@pytest.mark.parametrize("m", [Uniform(2.0, 6.0), LogUniform(0.01, 0.25), TruncatedNormal(4.0, 1.0, 2.0, 6.0),
                               TruncatedNormal(0.0, 1.0, 3.0, math.inf)])
def test_normal_scores_are_standard_normal_and_invert(m: Uniform | LogUniform | TruncatedNormal) -> None:
    x = m.sample(np.random.default_rng(2), N_DRAWS)
    z = m.to_normal(x)
    assert abs(z.mean()) < 0.03 and z.std() == pytest.approx(1.0, abs=0.03)
    np.testing.assert_allclose(m.from_normal(z), x, rtol=1e-9, atol=1e-12)


def test_joint_gaussian_moments_correlation_and_truncation() -> None:
    cov = [[0.01, 0.006], [0.006, 0.0064]]  # std 0.1 and 0.08, correlation 0.75
    dist = _dist({}, {"names": ["tip_friction", "finger_mass_scale"], "mean": [1.0, 1.0], "cov": cov})
    assert dist.names() == ("tip_friction", "finger_mass_scale")
    x = dist.sample_array(np.random.default_rng(3), N_DRAWS)
    np.testing.assert_allclose(x.mean(axis=0), [1.0, 1.0], atol=0.003)
    np.testing.assert_allclose(np.cov(x.T), cov, rtol=0.05, atol=1e-5)
    # Truncated at explicit bounds: every draw inside, density renormalized by the in-range mass.
    cut = _dist({}, {"names": ["tip_friction", "finger_mass_scale"], "mean": [1.0, 1.0], "cov": cov,
                     "low": [0.95, 0.5], "high": [5.0, 1.05]})
    assert cut.joint is not None
    y = cut.sample_array(np.random.default_rng(4), 5000)
    assert y[:, 0].min() >= 0.95 and y[:, 1].max() <= 1.05
    assert 0.2 < cut.joint.mass < 0.6
    assert cut.log_pdf(np.array([[1.0, 1.0]]))[0] == pytest.approx(dist.log_pdf(np.array([[1.0, 1.0]]))[0]
                                                                   - math.log(cut.joint.mass))
    assert np.isinf(cut.log_pdf(np.array([[0.9, 1.0]]))[0])


def test_seeding_is_deterministic() -> None:
    dist = load_distribution(default_config(TASK))
    a = dist.sample_array(np.random.default_rng(7), 10)
    b = dist.sample_array(np.random.default_rng(7), 10)
    c = dist.sample_array(np.random.default_rng(8), 10)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


# --- YAML ------------------------------------------------------------------------------------------
def test_default_config_loads_and_every_draw_applies() -> None:
    path = default_config(TASK)
    assert path.name == "dclaw.yaml"
    dist = load_distribution(path)
    env = _sim(gym.make("s2r/DClawTurnFixed-v0"))
    assert set(dist.names()) <= set(env.params.names())
    # Latency, observation noise and control-period jitter are randomized like any other parameter.
    assert {"action_latency", "obs_noise_std", "control_jitter_std", "valve_damping", "finger_kp"} <= set(dist.names())
    for row in dist.sample_array(np.random.default_rng(0), 200):
        env.params.set_many(dict(zip(dist.names(), map(float, row), strict=True)))
    env.close()


def test_yaml_round_trip_with_joint_block(tmp_path: Path) -> None:
    dist = _dist(
        {"valve_damping": {"dist": "log_uniform", "low": 0.01, "high": 0.25},
         "finger_kp": {"dist": "normal", "mean": 4.0, "std": 0.5},
         "valve_mass": {"dist": "truncated_normal", "mean": 0.08, "std": 0.01, "low": 0.06, "high": 0.1},
         "action_latency": {"dist": "uniform", "low": 0.0, "high": 0.04}},
        {"names": ["tip_friction", "finger_damping"], "mean": [1.0, 0.1], "cov": [[0.01, 1e-4], [1e-4, 4e-4]]},
    )
    path = tmp_path / "d.yaml"
    save_distribution(dist, path, header="a header\nover two lines")
    text = path.read_text()
    assert text.startswith("# a header\n# over two lines\n")
    assert "valve_damping: {dist: log_uniform, low: 0.01, high: 0.25}" in text  # one readable line each
    again = load_distribution(path)
    assert again.to_yaml_dict() == dist.to_yaml_dict()
    assert dump_distribution_yaml(again) == dump_distribution_yaml(dist)
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed away


def _load_error(tmp_path: Path, data: Any) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    with pytest.raises(UserError) as info:
        load_distribution(path)
    return str(info.value)


def test_unknown_parameter_is_named_with_the_known_ones(tmp_path: Path) -> None:
    msg = _load_error(tmp_path, {"task": TASK, "parameters": {"valve_dampign": {"dist": "uniform", "low": 0,
                                                                                  "high": 1}}})
    assert "field parameters.valve_dampign names an unknown parameter 'valve_dampign' of task 'dclaw-turn'" in msg
    assert "known parameters:" in msg and "valve_damping" in msg and "finger_kp" in msg
    msg = _load_error(tmp_path, {"task": TASK, "joint": {"names": ["nope"], "mean": [0], "cov": [[1]]}})
    assert "field joint.names[0] names an unknown parameter 'nope'" in msg


@pytest.mark.parametrize(
    ("parameters", "joint", "expected"),
    [
        ({"finger_kp": {"dist": "normal", "mean": 4.0, "std": -0.5}}, None,
         r"field parameters\.finger_kp\.std must be a positive standard deviation; got -0\.5$"),
        ({"finger_kp": {"dist": "truncated_normal", "mean": 4, "std": -1, "low": 2, "high": 6}}, None,
         r"field parameters\.finger_kp\.std must be a positive"),
        ({"finger_kp": {"dist": "uniform", "low": 6.0, "high": 2.0}}, None,
         r"field parameters\.finger_kp\.high must be above low \(6\); got 2\.0$"),
        ({"finger_kp": {"dist": "uniform", "low": 2.0, "high": 2.0}}, None,
         r"field parameters\.finger_kp\.high must be above low"),
        ({"valve_damping": {"dist": "uniform", "low": -0.1, "high": 0.1}}, None,
         r"field parameters\.valve_damping\.low must be inside the allowed range of valve_damping, \[0, "),
        ({"valve_damping": {"dist": "log_uniform", "low": 0.0, "high": 0.1}}, None,
         r"field parameters\.valve_damping\.low must be a number > 0 \(log_uniform"),
        ({"finger_kp": {"dist": "gamma", "low": 1, "high": 2}}, None,
         r"field parameters\.finger_kp\.dist must be one of uniform, log_uniform, normal, truncated_normal; "
         r"got 'gamma'"),
        ({"finger_kp": {"dist": "uniform", "low": 1, "high": 2, "mean": 1}}, None,
         r"unknown field parameters\.finger_kp\.mean; expected one of: dist, low, high$"),
        ({"finger_kp": {"dist": "uniform", "low": 1}}, None, r"field parameters\.finger_kp\.high is missing$"),
        ({"finger_kp": {"dist": "uniform", "low": "a", "high": 2}}, None,
         r"field parameters\.finger_kp\.low must be a finite number \(uniform draws between two finite bounds\); "
         r"got 'a'"),
        ({}, {"names": ["finger_kp", "tip_friction"], "mean": [4, 1], "cov": [[1, 2], [2, 1]]},
         r"field joint\.cov must be positive definite .*smallest eigenvalue is -1"),
        ({}, {"names": ["finger_kp", "tip_friction"], "mean": [4, 1], "cov": [[1, 0.1], [0.2, 1]]},
         r"field joint\.cov must be a symmetric matrix"),
        ({}, {"names": ["finger_kp", "tip_friction"], "mean": [4, 1], "cov": [[1, 0]]},
         r"field joint\.cov must be a 2x2 matrix"),
        ({}, {"names": ["finger_kp"], "mean": [4, 1], "cov": [[1]]},
         r"field joint\.mean must be a list of 1 finite numbers"),
        ({"finger_kp": {"dist": "uniform", "low": 2, "high": 6}}, {"names": ["finger_kp"], "mean": [4], "cov": [[1]]},
         r"field joint\.names repeats finger_kp: each parameter appears once"),
        ({}, {"names": ["finger_kp"], "mean": [-50.0], "cov": [[1.0]]},
         r"field joint\.mean must be a mean that leaves the Gaussian some probability inside its bounds"),
        ({}, {"names": ["finger_kp"], "mean": [4.0], "cov": [[1.0]], "low": [5.0], "high": [3.0]},
         r"field joint\.high\[0\] must be above low\[0\] \(5\); got 3\.0$"),
        ({}, {"names": ["finger_kp"], "mean": [4.0], "cov": [[1.0]], "low": [float("nan")]},
         r"field joint\.low must be a list of 1 numbers \(none NaN\)"),
        ({}, {"names": ["finger_kp"], "mean": [4.0], "cov": [[1.0]], "hi": [5.0]},
         r"unknown field joint\.hi \(did you mean 'high'\?\); expected one of: names, mean, cov, low, high$"),
        ({"tip_friction": {"dist": "normal", "mean": 60.0, "std": 0.001}}, None,
         r"field parameters\.tip_friction\.mean must be a mean that leaves the Gaussian some probability inside"),
        ({"finger_kp": [1, 2]}, None, r"field parameters\.finger_kp must be a mapping, got list$"),
    ],
)
def test_bad_fields_are_named(tmp_path: Path, parameters: dict[str, Any], joint: Any, expected: str) -> None:
    data: dict[str, Any] = {"task": TASK, "parameters": parameters}
    if joint is not None:
        data["joint"] = joint
    msg = _load_error(tmp_path, data)
    assert str(tmp_path / "bad.yaml") in msg
    assert re.search(expected, msg), msg


def test_bad_files_and_tasks(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_distribution(tmp_path / "missing.yaml")
    assert "not valid YAML" in _load_error(tmp_path, "task: [unclosed")
    assert re.search(r"field task must be a known task \(one of .*dclaw-turn.*\); got 'no-such-task'$",
                     _load_error(tmp_path, {"task": "no-such-task", "parameters": {}}))
    assert _load_error(tmp_path, {"parameters": {}}).endswith("field task is missing")
    assert _load_error(tmp_path, {"task": TASK, "paramters": {}}).endswith(
        "unknown field paramters (did you mean 'parameters'?); expected one of: task, parameters, joint")


# --- the wrapper -----------------------------------------------------------------------------------
def _model(env: SimEnv) -> Any:
    """The MuJoCo model behind ``env``, to check what the parameters did to it."""
    assert isinstance(env.engine, MujocoEngine)
    return env.engine.model


def _valve_dof_damping(env: SimEnv) -> float:
    m = _model(env)
    return float(m.dof_damping[m.jnt_dofadr[m.joint("valve").id]])


def _finger_link_mass(env: SimEnv) -> float:
    m = _model(env)
    return float(m.body_mass[m.body("f0_mid_link").id])


def test_wrapper_resamples_every_episode_and_never_compounds() -> None:
    dist = _dist({"valve_damping": {"dist": "uniform", "low": 0.02, "high": 0.2},
                  "finger_mass_scale": {"dist": "uniform", "low": 0.5, "high": 2.0},
                  "action_latency": {"dist": "uniform", "low": 0.0, "high": 0.04}})
    base = gym.make("s2r/DClawTurnFixed-v0")
    sim = _sim(base)
    nominal_link_mass = _finger_link_mass(sim)
    env = RandomizedEnv(base, dist, seed=0)
    seen = []
    for episode in range(5):
        _, info = env.reset(seed=None if episode else 123)
        values = info["params"]
        assert set(values) == set(dist.names())
        seen.append(values["valve_damping"])
        # Applied from nominal: the model holds exactly the drawn value, the mass exactly nominal x scale.
        assert _valve_dof_damping(sim) == pytest.approx(values["valve_damping"], rel=1e-12)
        assert _finger_link_mass(sim) == pytest.approx(nominal_link_mass * values["finger_mass_scale"], rel=1e-12)
        assert sim.params.get("action_latency") == values["action_latency"]
        env.step(env.action_space.sample())
    assert len(set(seen)) == 5
    env.close()


def test_parameters_outside_the_distribution_return_to_nominal() -> None:
    dist = _dist({"valve_damping": {"dist": "uniform", "low": 0.02, "high": 0.2}})
    env = RandomizedEnv(gym.make("s2r/DClawTurnFixed-v0"), dist, seed=1)
    sim = _sim(env)
    sim.params.set("finger_kp", 1.0)
    sim.params.set("finger_mass_scale", 3.0)
    env.reset()
    assert sim.params.get("finger_kp") == sim.params.nominal("finger_kp")
    assert sim.params.get("finger_mass_scale") == 1.0
    m = _model(sim)
    assert float(m.actuator_gainprm[m.actuator("f0_top").id, 0]) == pytest.approx(sim.params.nominal("finger_kp"))
    env.close()


def test_wrapper_seeding_reproduces_the_parameter_sequence() -> None:
    dist = load_distribution(default_config(TASK))

    def sequence(seed: int) -> list[dict[str, float]]:
        env = RandomizedEnv(gym.make("s2r/DClawTurnFixed-v0"), dist)
        out = [env.reset(seed=seed)[1]["params"]] + [env.reset()[1]["params"] for _ in range(2)]
        env.close()
        return out

    assert sequence(5) == sequence(5)
    assert sequence(5) != sequence(6)


def test_wrapper_refuses_a_parameter_the_env_lacks() -> None:
    bogus = ParameterDistribution(TASK, {"not_a_param": Uniform(0.0, 1.0)})
    with pytest.raises(UserError, match=r"unknown parameter 'not_a_param'.*known parameters"):
        RandomizedEnv(gym.make("s2r/DClawTurnFixed-v0"), bogus)


def test_joint_block_samples_apply_through_the_wrapper() -> None:
    joint = JointGaussian(("finger_kp", "tip_friction"), np.array([4.0, 1.0]), np.diag([0.25, 0.01]),
                          np.array([1e-3, 1e-3]), np.array([np.inf, 5.0]))
    env = RandomizedEnv(gym.make("s2r/DClawTurnFixed-v0"), ParameterDistribution(TASK, {}, joint), seed=3)
    kps = [env.reset()[1]["params"]["finger_kp"] for _ in range(3)]
    assert len(set(kps)) == 3 and _sim(env).params.get("finger_kp") == kps[-1]
    env.close()


# --- simulated logs --------------------------------------------------------------------------------
def test_simulated_logs_are_valid_trajectory_logs_and_the_stroke_turns_the_valve(tmp_path: Path) -> None:
    cfg = SimLogConfig(params={"valve_damping": 0.15}, episodes=2, seed=4)
    record_sim_logs(tmp_path, cfg)
    info = read_run(tmp_path)
    assert (info.task, info.robot, info.source) == (TASK, "dclaw", "sim")
    assert info.extra["params"]["valve_damping"] == 0.15 and info.extra["policy"] == "scripted"
    episodes = list(read_episodes(tmp_path))
    assert len(episodes) == 2
    for ep in episodes:
        assert ep.steps == 40
        assert ep.meta["reward_terms"] == ["target_dist", "pose_dev", "joint_vel", "near_bonus", "success_bonus"]
        valve = ep["passive_pos"][:, 0]
        assert np.ptp(valve) > 0.3  # the scripted stroke really turns the valve, back and forth
        # Commands follow the script through the rate limit: the first press target is reached.
        np.testing.assert_allclose(ep["command"][1, :3], STROKE_CYCLE[1], atol=1e-9)
        np.testing.assert_allclose(ep["period_error"], 0.0, atol=1e-9)
    # Sensor noise differs between the two episodes' otherwise near-identical readings.
    assert not np.array_equal(episodes[0]["joint_pos"], episodes[1]["joint_pos"])


def test_simulated_logs_refuse_bad_values(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="outside its range"):
        record_sim_logs(tmp_path, SimLogConfig(params={"valve_damping": -1.0}, episodes=1))
    with pytest.raises(UserError, match="unknown parameter 'nope'"):
        record_sim_logs(tmp_path, SimLogConfig(params={"nope": 1.0}, episodes=1))
    with pytest.raises(UserError, match="episodes must be at least 1"):
        SimLogConfig(episodes=0)


def test_a_posterior_with_some_parameters_back_on_the_prior_keeps_the_rest_of_the_joint_block() -> None:
    prior = ParameterDistribution("dclaw-turn", {"finger_kp": Uniform(2.0, 6.0), "valve_damping": Uniform(0.01, 0.25),
                                                 "tip_friction": Uniform(0.8, 1.2)})
    cov = np.array([[0.01, 0.002, 0.0], [0.002, 0.04, 0.001], [0.0, 0.001, 0.0025]])
    posterior = ParameterDistribution("dclaw-turn", {}, JointGaussian(
        ("finger_kp", "valve_damping", "tip_friction"), np.array([2.01, 0.1, 1.0]), cov,
        np.array([0.0, 0.0, 0.0]), np.array([np.inf, np.inf, np.inf])))
    mixed = posterior.with_prior_for(prior, ["finger_kp"])
    assert mixed.marginals == {"finger_kp": Uniform(2.0, 6.0)}
    assert mixed.joint is not None and mixed.joint.names == ("valve_damping", "tip_friction")
    assert np.array_equal(mixed.joint.cov, cov[1:, 1:]) and np.array_equal(mixed.joint.loc, [0.1, 1.0])
    assert set(mixed.names()) == set(posterior.names())
    everything = posterior.with_prior_for(prior, ["finger_kp", "valve_damping", "tip_friction"])
    assert everything.joint is None and everything.marginals == prior.marginals
    assert posterior.marginal("tip_friction").std == pytest.approx(0.05, rel=1e-3)  # the joint's own block
