"""The quadruped: model facts, forward kinematics, standing and crouching on both engines, the floating base
(free-flight agreement, state round trips, inertial offsets), pushes, IMU noise and the observation contract
(stand is built from servos and an IMU only)."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, replace

import gymnasium as gym
import mujoco
import numpy as np
import pytest

import sim  # noqa: F401  (registers the s2r environments)
from robot.tracker.estimator import LegOdometry
from sim.engines import ENGINES, make_engine
from sim.engines.mujoco_engine import MujocoEngine
from sim.env import SimEnv
from sim.models.dkitty import LEGS, NOMINAL_GEOMETRY, KittyGeometry, foot_positions, leg_joint_names
from sim.models.dkitty_urdf import link_mass_props
from sim.rotations import gravity_in_body, quat_from_rotvec, quat_from_yaw, tilt
from sim.state import RobotState, SimState
from sim.tasks.actions import normalize
from sim.tasks.dkitty import (
    CROUCH_POSE_RAD,
    FALL_PENALTY,
    MAX_TILT_RAD,
    STAND_POSE_RAD,
    STAND_SPEC,
    DKittyStand,
    DKittyWalk,
    height_above_feet,
    resting_base_pose,
    standing_height,
)
from sim.tasks.spec import ACTION_RATE_TERM

STAND_ID = "s2r/DKittyStandFixed-v0"
WALK_ID = "s2r/DKittyWalkFixed-v0"
SEED = 5
HOLD_TOL_M = 0.015
"""How far the torso may sink or rise while the standing pose is held (m)."""
CROUCH_DROP_M = 0.04
"""Least the torso must come down when the legs fold to the crouched pose (m)."""
ENGINES_AGREE_M = 0.01
"""Largest difference in torso height between the engines after a scripted motion (m)."""
FREE_FLIGHT_TOL = 1e-4
"""Agreement of the engines in free flight (rad, m, rad/s, m/s): no contacts, so only integration differs."""
PUSH_FORCE_N = 10.0
PUSH_STEPS = 40
GRAVITY_M_S2 = 9.81
PRIVILEGED = ("base_pos", "base_linvel", "height", "target_error")
"""Quantities a robot with servos and an IMU cannot measure without a position source."""

Maker = Callable[..., gym.Env]


def _sim(env: gym.Env) -> SimEnv:
    inner = env.unwrapped
    assert isinstance(inner, SimEnv)
    return inner


def _action(env: gym.Env, pose: tuple[float, ...] | np.ndarray) -> np.ndarray:
    spec = _sim(env).spec_
    return normalize(np.asarray(pose), spec.low, spec.high).astype(np.float32)


def _hold(env: gym.Env, pose: tuple[float, ...] | np.ndarray, steps: int) -> list[RobotState]:
    a = _action(env, pose)
    out = []
    for _ in range(steps):
        env.step(a)
        out.append(_sim(env).read())
    return out


# --- the model -----------------------------------------------------------------------------------------
def test_model_matches_the_reference_facts() -> None:
    g = NOMINAL_GEOMETRY
    assert 1.6 <= g.total_mass <= 2.0
    spec = DKittyStand().spec
    assert spec.n_joints == 12 and spec.joint_names == leg_joint_names()
    for name, lo, hi in zip(spec.joint_names, spec.joint_low, spec.joint_high, strict=True):
        expected = {"hip": (-0.5, 0.28), "knee1": (0.0, math.pi / 2), "knee2": (-2.0, 0.0)}[name.split("_", 1)[1]]
        assert (lo, hi) == pytest.approx(expected)
    assert spec.joint_velocity_limit == pytest.approx(math.pi)
    assert DKittyStand().spec.episode_steps == 80 and DKittyWalk().spec.episode_steps == 160
    assert spec.extras["max_tilt_rad"] == pytest.approx(math.radians(45.0))
    kp = next(s for s in DKittyStand().param_specs() if s.kind == "actuator_kp")
    assert kp.nominal == pytest.approx(5.0)


def test_mjcf_and_urdf_carry_the_same_masses() -> None:
    task = DKittyStand()
    model = mujoco.MjModel.from_xml_string(task.model_xml(0.0025))
    props = link_mass_props(task.geometry)
    for name, p in props.items():
        body = model.body(name).id
        assert model.body_mass[body] == pytest.approx(p.mass, rel=1e-9), name
        np.testing.assert_allclose(np.sort(model.body_inertia[body]), np.sort(np.linalg.eigvalsh(p.inertia)),
                                   rtol=1e-6, err_msg=name)
    robot = sum(model.body_mass[model.body(n).id] for n in props)
    assert robot == pytest.approx(task.geometry.total_mass)
    root = ET.fromstring(task.model_urdf())
    assert sum(float(m.attrib["value"]) for m in root.iter("mass")) == pytest.approx(task.geometry.total_mass)
    assert [j.attrib["name"] for j in root.iter("joint") if j.attrib["type"] == "floating"] == ["root"]
    assert model.site("imu").id >= 0


def test_forward_kinematics_matches_mujoco_feet() -> None:
    task = DKittyStand()
    engine = make_engine("mujoco", task, 0.0025)
    assert isinstance(engine, MujocoEngine)
    rng = np.random.default_rng(0)
    spec = task.spec
    for _ in range(5):
        q = rng.uniform(spec.low, spec.high)
        engine.reset(q, np.zeros(0), np.array([0.3, -0.2, 1.0, *quat_from_rotvec(rng.normal(0.0, 0.5, 3))]))
        m, d = engine.model, engine.data
        torso = m.body("torso").id
        rot, origin = d.xmat[torso].reshape(3, 3), d.xpos[torso]
        for i, leg in enumerate(LEGS):
            site = (d.site_xpos[m.site(f"{leg}_foot_site").id] - origin) @ rot
            np.testing.assert_allclose(site, foot_positions(q)[i], atol=1e-9, err_msg=leg)
    engine.close()


def test_height_estimate_matches_the_standing_torso() -> None:
    stand = np.asarray(STAND_POSE_RAD)
    assert height_above_feet(stand, np.array([1.0, 0.0, 0.0, 0.0])) == pytest.approx(standing_height())
    # Yaw does not change it; tilting the torso does.
    assert height_above_feet(stand, quat_from_yaw(1.0)) == pytest.approx(standing_height())
    assert height_above_feet(stand, quat_from_rotvec([0.3, 0.0, 0.0])) != pytest.approx(standing_height())


# --- standing, crouching, rising ------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ENGINES)
def test_standing_pose_holds(engine: str, make_env: Maker) -> None:
    """Walk starts standing; holding the reset command keeps the torso at standing height and upright."""
    env = make_env(WALK_ID, engine)
    env.reset(seed=SEED)
    states = _hold(env, _sim(env).spec_.reset, 30)
    heights = np.array([s.base_pos[2] for s in states])
    assert np.all(np.abs(heights - standing_height()) < HOLD_TOL_M), heights
    assert max(tilt(s.base_quat) for s in states) < 0.05
    assert DKittyStand().success(states[-1], {})


@pytest.mark.parametrize("engine", ENGINES)
def test_the_floor_goes_on_for_as_far_as_a_walk_goes(engine: str) -> None:
    """A walk chained unattended ends up tens of metres from where it started (about 1.2 m an episode): it stands
    there as at the origin. PyBullet's floor was a 20 m box, and a walk that stepped off its edge fell, in a third of
    the unattended runs on the PyBullet-gap robot; it is 2 km across now."""
    pytest.importorskip(engine)
    task = DKittyStand()
    sim_engine = make_engine(engine, task, 0.0025)
    start = np.asarray(task.spec.reset)
    heights = []
    try:
        for x, y in [(0.0, 0.0), (12.0, -9.0), (-80.0, 150.0)]:
            pose = resting_base_pose(start, 0.0)
            pose[:2] = x, y
            sim_engine.reset(start, np.zeros(0), pose)
            sim_engine.step(400)
            state = sim_engine.read()
            np.testing.assert_allclose(state.base_pos[:2], [x, y], atol=0.02)
            heights.append(state.base_pos[2])
    finally:
        sim_engine.close()
    np.testing.assert_allclose(heights, heights[0], atol=1e-3)


@pytest.mark.parametrize("engine", ENGINES)
def test_stand_task_rises_from_its_crouched_start(engine: str, make_env: Maker) -> None:
    env = make_env(STAND_ID, engine)
    _, info = env.reset(seed=SEED)
    start = _sim(env).read()
    assert not info["success"]
    assert start.base_pos[2] < standing_height() - CROUCH_DROP_M
    rewards, successes = [], []
    for _ in range(20):
        _, reward, _, _, info = env.step(_action(env, STAND_POSE_RAD))
        rewards.append(float(reward))
        successes.append(info["success"])
    assert successes[-1] and all(successes[-10:])
    assert rewards[-1] > rewards[0] + 1.0


def test_stand_reward_charges_the_change_of_action(make_env: Maker) -> None:
    env = make_env(STAND_ID, "mujoco")
    obs, _ = env.reset(seed=SEED)
    start = obs[STAND_SPEC.obs_layout.slice("last_action")].astype(np.float64)
    weight = STAND_SPEC.action_rate_weight
    assert weight > 0.0
    stand = _action(env, STAND_POSE_RAD)
    rates = []
    for action in (stand, stand, -stand, -stand):
        _, _, _, _, info = env.step(action)
        rates.append(info["reward_terms"][ACTION_RATE_TERM])
    assert rates[0] == pytest.approx(-weight * float(np.sum((stand - start) ** 2)))
    assert rates[1] == 0.0 and rates[3] == 0.0
    assert rates[2] == pytest.approx(-weight * float(np.sum((2 * stand) ** 2)))


def test_scripted_crouch_lowers_the_torso_on_both_engines(make_env: Maker) -> None:
    final = {}
    for engine in ENGINES:
        env = make_env(WALK_ID, engine)
        env.reset(seed=SEED)
        before = _sim(env).read().base_pos[2]
        states = _hold(env, CROUCH_POSE_RAD, 15)
        after = states[-1]
        assert after.base_pos[2] < before - CROUCH_DROP_M, engine
        assert tilt(after.base_quat) < 0.1, engine
        final[engine] = after.base_pos[2]
    assert abs(final["mujoco"] - final["pybullet"]) < ENGINES_AGREE_M, final


# --- the floating base ----------------------------------------------------------------------------------
def _free_flight(engine_name: str) -> np.ndarray:
    """Legs moving while the robot falls from 5 m (no contacts within 0.6 s), tilted and turned."""
    pytest.importorskip("pybullet")
    task = DKittyStand()
    engine = make_engine(engine_name, task, 0.0025)
    try:
        pose = np.array([0.1, 0.2, 5.0, *quat_from_rotvec([0.3, -0.2, 0.5])])
        engine.reset(np.asarray(STAND_POSE_RAD), np.zeros(0), pose)
        mid = np.array([-0.1, 0.8, -1.2] * len(LEGS))
        targets = [mid + 0.1 * np.cos(np.arange(12)), mid + 0.1 * np.sin(np.arange(12))]
        rows = []
        for k in range(6):
            engine.set_command(targets[k % 2])
            engine.step(20)
            s = engine.read()
            rows.append(np.concatenate([s.joint_pos, s.joint_vel, s.base_pos, s.base_quat, s.base_angvel,
                                        s.base_linvel]))
        return np.array(rows)
    finally:
        engine.close()


def test_engines_agree_in_free_flight() -> None:
    """No contacts: PyBullet's velocity map over the free base and the joints must reproduce MuJoCo."""
    mj, pb = _free_flight("mujoco"), _free_flight("pybullet")
    assert np.max(np.abs(mj[:, 12:24])) > 1.0  # the legs really move
    np.testing.assert_allclose(pb, mj, atol=FREE_FLIGHT_TOL)


def test_floating_state_carries_across_engines() -> None:
    pytest.importorskip("pybullet")
    task = DKittyWalk()
    mj, pb = make_engine("mujoco", task, 0.0025), make_engine("pybullet", task, 0.0025)
    try:
        start = task.sample_start(np.random.default_rng(1))
        mj.reset(start.joint_pos, start.passive_pos, start.base_pose)
        mj.set_command(np.asarray(CROUCH_POSE_RAD))
        mj.step(30)
        state = mj.get_state()
        assert state.qpos.shape == (12 + 7,) and state.qvel.shape == (12 + 6,)
        pb.set_state(SimState(state.qpos, state.qvel, state.command))
        a, b = mj.read(), pb.read()
        for name in ("joint_pos", "joint_vel", "base_pos", "base_quat", "base_angvel", "base_linvel"):
            np.testing.assert_allclose(getattr(b, name), getattr(a, name), atol=1e-9, err_msg=name)
        back = pb.get_state()
        np.testing.assert_allclose(back.qpos, state.qpos, atol=1e-9)
        np.testing.assert_allclose(back.qvel, state.qvel, atol=1e-9)
        with pytest.raises(ValueError, match="positions"):
            pb.set_state(SimState(state.qpos[:12], state.qvel[:12], state.command))
        with pytest.raises(ValueError, match="positions"):
            mj.set_state(SimState(state.qpos[:12], state.qvel[:12], state.command))
    finally:
        mj.close()
        pb.close()


@dataclass(frozen=True)
class _OffsetInertiaStand(DKittyStand):
    """The stand task with the torso's inertial frame moved and turned in the URDF (PyBullet keeps a free
    base at its inertial frame, so readings must convert back to the link frame)."""

    def model_urdf(self) -> str:
        root = ET.fromstring(super().model_urdf())
        torso = next(link for link in root.iter("link") if link.attrib["name"] == "torso")
        origin = torso.find("inertial/origin")
        assert origin is not None
        origin.attrib.update({"xyz": "0.02 -0.01 0.005", "rpy": "0.1 -0.2 0.3"})
        return ET.tostring(root, encoding="unicode")


def test_pybullet_reports_the_base_link_frame_with_an_offset_inertial_frame() -> None:
    pytest.importorskip("pybullet")
    engine = make_engine("pybullet", _OffsetInertiaStand(), 0.0025)
    try:
        qpos = np.concatenate([STAND_POSE_RAD, [0.1, -0.2, 0.8], quat_from_rotvec([0.2, 0.1, -0.4])])
        qvel = np.concatenate([np.zeros(12), [0.3, -0.1, 0.2], [0.5, -0.7, 0.9]])
        engine.set_state(SimState(qpos, qvel, np.asarray(STAND_POSE_RAD)))
        state = engine.get_state()
        np.testing.assert_allclose(state.qpos, qpos, atol=1e-9)
        np.testing.assert_allclose(state.qvel, qvel, atol=1e-9)
        reading = engine.read()
        np.testing.assert_allclose(reading.base_pos, qpos[12:15], atol=1e-9)
        np.testing.assert_allclose(reading.base_angvel, qvel[15:], atol=1e-9)
        # Reset places the link frame (not the centre of mass) where asked.
        pose = np.array([0.0, 0.0, 0.5, *quat_from_yaw(0.7)])
        engine.reset(np.asarray(STAND_POSE_RAD), np.zeros(0), pose)
        np.testing.assert_allclose(np.concatenate([engine.read().base_pos, engine.read().base_quat]), pose, atol=1e-9)
    finally:
        engine.close()


def test_a_scene_whose_base_joint_is_not_floating_is_rejected() -> None:
    pytest.importorskip("pybullet")
    from sim.engines.pybullet_engine import split_scene

    urdf = DKittyStand().model_urdf()
    with pytest.raises(ValueError, match="fr_hip"):
        split_scene(urdf, "fr_hip")
    with pytest.raises(ValueError, match="root"):
        split_scene(urdf, None)
    with pytest.raises(ValueError, match="not a free joint"):
        MujocoEngine(DKittyStand().model_xml(0.0025), leg_joint_names(), (), base_joint="fr_hip")


# --- pushes -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine_name", ENGINES)
def test_external_force_gives_the_impulse_it_should(engine_name: str) -> None:
    """In the air, 10 N along x for 0.1 s gives the robot 1 N s of momentum; ending the push keeps it."""
    if engine_name == "pybullet":
        pytest.importorskip("pybullet")
    task = DKittyStand()
    engine = make_engine(engine_name, task, 0.0025)
    try:
        engine.reset(np.asarray(STAND_POSE_RAD), np.zeros(0), np.array([0.0, 0.0, 3.0, 1.0, 0.0, 0.0, 0.0]))
        engine.set_external_force("torso", np.array([PUSH_FORCE_N, 0.0, 0.0]))
        engine.step(PUSH_STEPS)
        pushed = engine.read()
        expected = PUSH_FORCE_N * PUSH_STEPS * engine.timestep / task.geometry.total_mass
        # The torso carries the legs along through the stiff servos: within 15 % of the whole robot's speed.
        assert pushed.base_linvel[0] == pytest.approx(expected, rel=0.15)
        assert pushed.base_linvel[2] == pytest.approx(-GRAVITY_M_S2 * PUSH_STEPS * engine.timestep, rel=0.02)
        engine.set_external_force("torso", np.zeros(3))
        engine.step(PUSH_STEPS)
        coasting = engine.read()
        assert coasting.base_linvel[0] == pytest.approx(expected, rel=0.15)
        with pytest.raises(KeyError, match="no_such_body"):
            engine.set_external_force("no_such_body", np.zeros(3))
        # A reset ends the push.
        engine.set_external_force("torso", np.array([PUSH_FORCE_N, 0.0, 0.0]))
        engine.reset(np.asarray(STAND_POSE_RAD), np.zeros(0), np.array([0.0, 0.0, 3.0, 1.0, 0.0, 0.0, 0.0]))
        engine.step(PUSH_STEPS)
        assert abs(engine.read().base_linvel[0]) < 1e-6
    finally:
        engine.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_push_parameter_pushes_the_standing_robot(engine: str, make_env: Maker) -> None:
    def drift(push: float) -> float:
        env = make_env(WALK_ID, engine)
        env.reset(seed=SEED)
        start = _hold(env, STAND_POSE_RAD, 5)[-1].base_pos[:2]  # settled on its feet
        _sim(env).params.set("push_force_std", push)
        states = _hold(env, STAND_POSE_RAD, 10)
        return float(np.linalg.norm(states[-1].base_pos[:2] - start))

    # 3 N std per axis every 0.1 s (the randomization's largest): it stays up but is shoved about.
    still, pushed = drift(0.0), drift(3.0)
    assert still < 0.01
    assert pushed > 0.015 and pushed > 4 * still


# --- observation ------------------------------------------------------------------------------------------
def _imu_only(state: RobotState) -> RobotState:
    """What a robot with twelve servos and an IMU reads: no position, no linear velocity."""
    return RobotState(time=state.time, joint_pos=state.joint_pos, joint_vel=state.joint_vel,
                      passive_pos=state.passive_pos, passive_vel=state.passive_vel, joint_effort=state.joint_effort,
                      base_quat=state.base_quat, base_angvel=state.base_angvel)


def test_stand_is_built_from_servos_and_imu_only(make_env: Maker) -> None:
    task = DKittyStand()
    assert not set(task.spec.obs_layout.names) & set(PRIVILEGED)
    assert task.spec.obs_layout.names == ("gravity_body", "base_angvel", "joint_pos", "joint_vel", "last_action")
    env = make_env(STAND_ID, "mujoco")
    env.reset(seed=SEED)
    env.step(env.action_space.sample())
    full = _sim(env).read()
    hardware = _imu_only(full)
    last = np.full(12, 0.25)
    np.testing.assert_array_equal(task.observe(hardware, last, {}), task.observe(full, last, {}))
    assert task.reward_terms(hardware, {}) == task.reward_terms(full, {})
    assert task.success(hardware, {}) == task.success(full, {})
    layout = task.spec.obs_layout
    obs = task.observe(hardware, last, {})
    np.testing.assert_allclose(obs[layout.slice("gravity_body")], gravity_in_body(full.base_quat), atol=1e-6)
    # Walk needs a position source, and says so.
    walk = DKittyWalk()
    with pytest.raises(ValueError, match="position source"):
        walk.observe(hardware, last, {"target_x": 2.0, "target_y": 0.0})
    # Without an IMU there is no observation at all.
    with pytest.raises(ValueError, match="IMU"):
        task.observe(RobotState(0.0, full.joint_pos, full.joint_vel, np.zeros(0), np.zeros(0)), last, {})


def test_walk_target_error_is_in_the_heading_frame() -> None:
    walk = DKittyWalk()
    layout = walk.spec.obs_layout
    state = RobotState(0.0, np.asarray(STAND_POSE_RAD), np.zeros(12), np.zeros(0), np.zeros(0),
                       base_quat=quat_from_yaw(math.pi / 2), base_angvel=np.zeros(3),
                       base_pos=np.array([1.0, 0.0, 0.2]), base_linvel=np.array([0.0, 0.3, 0.0]))
    obs = walk.observe(state, np.zeros(12), {"target_x": 1.0, "target_y": 1.0})
    # Facing +y with the target 1 m along +y: straight ahead.
    np.testing.assert_allclose(obs[layout.slice("target_error")], [1.0, 0.0], atol=1e-6)
    terms = walk.reward_terms(state, {"target_x": 1.0, "target_y": 1.0})
    assert terms["heading"] == pytest.approx(0.5) and terms["progress"] == pytest.approx(5.0 * 0.3)
    assert walk.success(state, {"target_x": 1.0, "target_y": 0.3})
    assert not walk.success(state, {"target_x": 1.0, "target_y": 1.0})


def _tilted(angle: float) -> RobotState:
    return RobotState(0.0, np.asarray(STAND_POSE_RAD), np.zeros(12), np.zeros(0), np.zeros(0),
                      base_quat=quat_from_rotvec(np.array([angle, 0.0, 0.0])), base_angvel=np.zeros(3),
                      base_pos=np.array([0.0, 0.0, 0.2]), base_linvel=np.zeros(3))


def test_the_walk_ends_with_a_fall_penalty_past_the_tilt_bound_and_the_stand_by_time_only() -> None:
    walk, stand, goal = DKittyWalk(), DKittyStand(), {"target_x": 2.0, "target_y": 0.0}
    for angle, fell in ((MAX_TILT_RAD - 0.01, False), (MAX_TILT_RAD + 0.01, True), (math.pi - 0.1, True)):
        state = _tilted(angle)
        assert walk.terminated(state, goal) is fell
        assert walk.reward_terms(state, goal)["fall"] == (-FALL_PENALTY if fell else 0.0)
        assert stand.terminated(state, {}) is False


def test_a_walk_rolled_past_the_tilt_bound_terminates_in_the_env(make_env: Maker) -> None:
    env = make_env(WALK_ID, "mujoco")
    sim_env = _sim(env)
    env.reset(seed=SEED)
    _, _, terminated, truncated, info = env.step(np.zeros(12, dtype=np.float32))
    assert not terminated and info["reward_terms"]["fall"] == 0.0
    # On its side, just above the floor: the next step ends the episode, with the penalty, and no time limit.
    pose = np.concatenate([[0.0, 0.0, 0.3], quat_from_rotvec(np.array([math.pi / 2, 0.0, 0.0]))])
    sim_env.engine.reset(np.asarray(STAND_POSE_RAD), np.zeros(0), pose)
    _, reward, terminated, truncated, info = env.step(np.zeros(12, dtype=np.float32))
    assert terminated and not truncated and info["reward_terms"]["fall"] == -FALL_PENALTY
    assert float(reward) == pytest.approx(sum(info["reward_terms"].values()))


def test_a_walk_on_leg_odometry_observes_what_the_robots_estimator_measures_and_is_judged_on_the_truth(
        make_env: Maker) -> None:
    """``position_source="odometry"``: the target error comes from the robot's own leg odometry on the same readings;
    reward, success and the end of the episode stay the simulator's."""
    layout = DKittyWalk().spec.obs_layout
    target = layout.slice("target_error")
    truth, odo = make_env(WALK_ID, "mujoco"), make_env(WALK_ID, "mujoco", position_source="odometry")
    truth_obs, _ = truth.reset(seed=SEED)
    odo_obs, info = odo.reset(seed=SEED)
    np.testing.assert_allclose(odo_obs, truth_obs, atol=1e-6)  # both start at the start pose
    start = _sim(odo).read()
    robot = LegOdometry(DKittyWalk(), stance_tolerance_m=0.002, velocity_window_s=0.1, clock=lambda: 0.0)
    robot.start_episode(np.concatenate([start.base_pos, start.base_quat]), start)
    robot.poll(start)
    goal = np.array([info["goal"]["target_x"], info["goal"]["target_y"]])
    rng = np.random.default_rng(0)
    apart = 0.0
    for _ in range(40):
        a = rng.uniform(-1.0, 1.0, 12).astype(np.float32)
        truth_obs, truth_reward, truth_end, _, truth_info = truth.step(a)
        odo_obs, odo_reward, odo_end, _, odo_info = odo.step(a)
        assert (odo_reward, odo_end, odo_info["success"]) == (truth_reward, truth_end, truth_info["success"])
        rest = np.ones(layout.size, dtype=bool)
        rest[target] = False
        np.testing.assert_array_equal(odo_obs[rest], truth_obs[rest])
        pose = robot.poll(_sim(odo).read())
        assert pose is not None
        c, s = math.cos(pose.yaw), math.sin(pose.yaw)
        dx, dy = goal - pose.position[:2]
        np.testing.assert_allclose(odo_obs[target], [c * dx + s * dy, -s * dx + c * dy], atol=1e-5)
        apart = max(apart, float(np.max(np.abs(odo_obs[target] - truth_obs[target]))))
        if truth_end:
            break
    assert apart > 0.005  # flailing legs slide: odometry is not the truth


def test_a_walk_on_leg_odometry_restores_its_odometry_with_the_simulator(make_env: Maker) -> None:
    """A snapshot carries the odometry's integration: restored mid-walk, the walk observes again exactly what it did.
    A state without one (built from a reading) restarts the odometry at the restored pose, as a reset does."""
    env = make_env(WALK_ID, "mujoco", position_source="odometry")
    sim_env = env.unwrapped
    assert isinstance(sim_env, SimEnv)
    target = DKittyWalk().spec.obs_layout.slice("target_error")
    env.reset(seed=SEED)
    rng = np.random.default_rng(1)
    for _ in range(10):
        env.step(rng.uniform(-1.0, 1.0, 12).astype(np.float32))
    snapshot = sim_env.get_sim_state()
    assert snapshot.odometry is not None
    actions = rng.uniform(-1.0, 1.0, (10, 12)).astype(np.float32)
    first = [env.step(a)[0] for a in actions]
    sim_env.set_sim_state(snapshot)
    np.testing.assert_array_equal(np.array([env.step(a)[0] for a in actions]), np.array(first))

    hold = normalize(snapshot.command, sim_env.spec_.low, sim_env.spec_.high).astype(np.float32)  # keep the pose
    sim_env.set_sim_state(snapshot)
    carried_on = env.step(hold)[0]
    sim_env.set_sim_state(replace(snapshot, odometry=None))
    restarted = env.step(hold)[0]
    truth = make_env(WALK_ID, "mujoco")
    truth.reset(seed=SEED)
    truth_env = truth.unwrapped
    assert isinstance(truth_env, SimEnv)
    truth_env.set_sim_state(snapshot)
    on_truth = truth.step(hold)[0]
    # Restarted at the restored pose, it is one step's slip (of a robot restored mid-stride) from the truth; carried
    # on, it keeps what ten flailing steps had drifted.
    np.testing.assert_allclose(restarted[target], on_truth[target], atol=0.03)
    assert np.max(np.abs(carried_on[target] - on_truth[target])) > 0.1


def test_leg_odometry_is_only_for_a_legged_task_that_observes_its_position(make_env: Maker) -> None:
    with pytest.raises(ValueError, match="position_source must be one of truth, odometry, got 'gps'"):
        make_env(WALK_ID, "mujoco", position_source="gps")
    with pytest.raises(ValueError, match=r"legged task that observes its position .* not dkitty-stand"):
        make_env(STAND_ID, "mujoco", position_source="odometry")


def test_imu_noise_parameters_perturb_only_the_imu_blocks(make_env: Maker) -> None:
    layout = DKittyStand().spec.obs_layout
    clean = make_env(STAND_ID, "mujoco")
    clean_obs, _ = clean.reset(seed=SEED)
    for name, block in (("base_orientation_noise_std", "gravity_body"), ("base_angvel_noise_std", "base_angvel")):
        env = make_env(STAND_ID, "mujoco", params={name: 0.05})
        obs, _ = env.reset(seed=SEED)
        for other in layout.names:
            same = np.array_equal(obs[layout.slice(other)], clean_obs[layout.slice(other)])
            assert same == (other != block), (name, other)
    # The reward sees the true state: noise on what the policy observes only.
    env = make_env(STAND_ID, "mujoco", params={"base_orientation_noise_std": 0.05})
    env.reset(seed=SEED)
    clean.reset(seed=SEED)
    a = _action(env, STAND_POSE_RAD)
    assert env.step(a)[1] == clean.step(a)[1]


def test_geometry_override_reaches_both_scene_files() -> None:
    task = DKittyStand(geometry=KittyGeometry(torso_mass=1.1))
    model = mujoco.MjModel.from_xml_string(task.model_xml(0.0025))
    assert model.body_mass[model.body("torso").id] == pytest.approx(1.1)
    assert "1.1" in next(l_.find("inertial/mass").attrib["value"]  # type: ignore[union-attr]
                         for l_ in ET.fromstring(task.model_urdf()).iter("link") if l_.attrib["name"] == "torso")


# --- rotations ----------------------------------------------------------------------------------------------
def test_rotation_helpers_agree_with_mujoco() -> None:
    from sim import rotations as r

    rng = np.random.default_rng(3)
    for _ in range(10):
        q = r.normalize_quat(rng.normal(size=4))
        mat = np.empty(9)
        mujoco.mju_quat2Mat(mat, q)
        np.testing.assert_allclose(r.quat_to_matrix(q), mat.reshape(3, 3), atol=1e-12)
        p = r.normalize_quat(rng.normal(size=4))
        prod = np.empty(4)
        mujoco.mju_mulQuat(prod, q, p)
        np.testing.assert_allclose(r.quat_mul(q, p), prod, atol=1e-12)
        v = rng.normal(size=3)
        np.testing.assert_allclose(r.rotate_inverse(q, r.rotate(q, v)), v, atol=1e-12)
        rotvec = rng.normal(size=3)
        expected = np.empty(4)
        mujoco.mju_axisAngle2Quat(expected, rotvec / np.linalg.norm(rotvec), np.linalg.norm(rotvec))
        np.testing.assert_allclose(r.quat_from_rotvec(rotvec), expected, atol=1e-12)
        np.testing.assert_allclose(r.wxyz_to_xyzw(r.xyzw_to_wxyz(q)), q)
    yaw = 0.7
    assert r.yaw_of(r.quat_mul(r.quat_from_yaw(yaw), r.quat_from_rotvec([0.1, 0.0, 0.0]))) == pytest.approx(yaw)
    np.testing.assert_allclose(r.gravity_in_body(r.IDENTITY_QUAT), [0.0, 0.0, -1.0])
    assert r.tilt(r.quat_from_rotvec([0.0, 0.3, 0.0])) == pytest.approx(0.3)
    assert r.upright(r.quat_from_rotvec([math.pi, 0.0, 0.0])) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="no direction"):
        r.normalize_quat(np.zeros(4))
