"""The PyBullet engine against MuJoCo, and its own contract: exact snapshots, parameters, stability.

Both engines run the same claw scene (MJCF and URDF from one :class:`ClawGeometry`) through the same
gymnasium env, with the same scripted normalized actions (the env rate-limits commands to
2 pi / 3 rad/s * 0.1 s = 0.21 rad per step).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import get_args

import gymnasium as gym
import numpy as np
import pytest

import sim  # noqa: F401  (registers the s2r environments)
from sim.engines import ENGINES, make_engine
from sim.engines.base import ENV_KINDS, MUJOCO_ONLY_KINDS, TERRAIN_KINDS, ParamKind, ParamSpec
from sim.env import SimEnv
from sim.models.dclaw import FINGER_COUNT
from sim.models.dclaw_urdf import link_mass_props
from sim.rotations import quat_from_rotvec
from sim.state import SimState
from sim.tasks.actions import normalize
from sim.tasks.dclaw_turn import DClawTurn
from sim.tasks.dkitty import DKittyWalk

pytest.importorskip("pybullet")

ENV_ID = "s2r/DClawTurnFixed-v0"
SEED = 3
LIFT_TOL_RAD = 0.01
FREE_TOL_RAD = 1e-6
STROKE_MIN_TURN_RAD = 0.2
MAX_SPEED_RAD_S = 50.0
"""Bound on any joint speed in the stability runs: a real instability grows without bound within a few steps."""

Maker = Callable[..., gym.Env]


@pytest.fixture
def make_env(make_env: Maker) -> Maker:
    """``make_env(engine, **kwargs)``: a fresh claw env, closed after the test (``conftest.make_env`` on ``ENV_ID``)."""
    return functools.partial(make_env, ENV_ID)


def _sim(env: gym.Env) -> SimEnv:
    inner = env.unwrapped
    assert isinstance(inner, SimEnv)
    return inner


def _per_finger(top: float, mid: float, bot: float) -> np.ndarray:
    return np.array([top, mid, bot] * FINGER_COUNT, dtype=np.float64)


def _drive(env: gym.Env, commands: list[np.ndarray], seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Finger joint positions (steps x 9) and valve angle (steps) after each commanded step."""
    inner = _sim(env)
    spec = inner.spec_
    env.reset(seed=seed)
    joints, valve = [], []
    for q in commands:
        env.step(normalize(q, spec.low, spec.high).astype(np.float32))
        state = inner.read()
        joints.append(state.joint_pos)
        valve.append(float(state.passive_pos[0]))
    return np.array(joints), np.array(valve)


def _free_air_commands() -> tuple[list[np.ndarray], int]:
    """Lift the fingertips up and out, then random targets that keep them well away from the valve.

    Returns the commands and the index of the first command after which no joint touches a limit.
    The lift curls the distal link outwards (bottom joint to its upper limit) before the middle
    link swings out, so the tips rise and leave the spokes' radius; afterwards every target lies in
    a box (top +-0.45, middle 0.3..0.9, bottom 0..0.6 rad) where the tips stay at least 0.12 m from the
    valve axis (the spokes end at 0.093 m) and no joint meets a limit.
    """
    commands = [_per_finger(0.0, -math.pi / 3, math.pi / 2)] * 3
    commands += [_per_finger(0.0, 0.3, math.pi / 2)] * 7
    commands += [_per_finger(0.0, 0.3, 0.3)] * 5
    free_from = len(commands)
    rng = np.random.default_rng(0)
    for _ in range(25):
        top = rng.uniform(-0.45, 0.45, FINGER_COUNT)
        mid = rng.uniform(0.3, 0.9, FINGER_COUNT)
        bot = rng.uniform(0.0, 0.6, FINGER_COUNT)
        commands.append(np.stack([top, mid, bot], axis=1).reshape(-1))
    commands += [commands[-1]] * 10  # hold the last target long enough to reach it
    return commands, free_from


def _stroke_commands() -> list[np.ndarray]:
    """Press the tips onto the spokes, then sweep every finger sideways (top joint 0.1 rad per step)."""
    return [_per_finger(0.0, -0.85, 0.85)] * 3 + [_per_finger(0.1 * k, -0.85, 0.85) for k in range(1, 6)]


# --- (1) free air ----------------------------------------------------------------------------------------
def test_finger_joints_agree_in_free_air(make_env: Maker) -> None:
    """Finger positions after every 0.1 s step agree within 0.01 rad, and to 1e-6 rad once off the limits.

    Without contact both engines integrate the same rigid-body model with the same servo
    (``clip(kp (q* - q))``), implicit joint damping and armature, so only the joint limits differ:
    MuJoCo's are soft constraints, PyBullet's rigid ones, and the lift starts on the middle joints'
    lower limit (the reset pose, with reset noise clipped into range) and drives the bottom joints onto
    their upper limit. Measured: at most 0.0017 rad while on the limits; 0.01 rad (6x that, half the
    0.02 rad design target) bounds it. Off the limits the servos pull both engines onto the same
    trajectory, which then agrees to rounding (measured about 1e-12 rad); 1e-6 rad catches any
    difference in the servo, damping, armature or mass model, each of which shows at 1e-3 rad or more.
    """
    commands, free_from = _free_air_commands()
    mj_joints, mj_valve = _drive(make_env("mujoco"), commands)
    pb_joints, pb_valve = _drive(make_env("pybullet"), commands)
    # Free air indeed: the valve never moved on either engine.
    assert np.max(np.abs(mj_valve)) < 1e-9 and np.max(np.abs(pb_valve)) < 1e-9
    # The held target is reached (so the comparison is of moving fingers, not of two engines stuck).
    np.testing.assert_allclose(pb_joints[-1], commands[-1], atol=0.03)
    diff = np.abs(mj_joints - pb_joints).max(axis=1)
    assert diff.max() <= LIFT_TOL_RAD, f"per-step max |dq| = {np.round(diff, 5)}"
    assert diff[free_from:].max() <= FREE_TOL_RAD, f"per-step max |dq| off the limits = {diff[free_from:]}"


# --- (2) pushing the valve -------------------------------------------------------------------------------
def test_stroke_turns_the_valve_the_same_way(make_env: Maker) -> None:
    """Pressing on the spokes and sweeping sideways turns the valve negatively by > 0.2 rad on both engines.

    Contacts differ (MuJoCo soft, PyBullet rigid), so only the direction and a meaningful size are
    required. Measured: MuJoCo -0.60 rad, PyBullet -0.55 rad.
    """
    commands = _stroke_commands()
    _, mj_valve = _drive(make_env("mujoco"), commands)
    _, pb_valve = _drive(make_env("pybullet"), commands)
    assert mj_valve[-1] < -STROKE_MIN_TURN_RAD, mj_valve
    assert pb_valve[-1] < -STROKE_MIN_TURN_RAD, pb_valve


def test_harder_friction_slips_less_and_brackets_pybullets(make_env: Maker) -> None:
    """``contact_impratio`` (MuJoCo only) hardens MuJoCo's soft friction, and PyBullet's rigid friction lies in its
    range.

    A stiff valve (damping 0.5 N m s/rad) resists the sweep, so the tips slip on the spokes; the harder the friction,
    the less they slip and the further the valve turns. Measured: MuJoCo -0.108 rad at impratio 1 (its default),
    -0.339 at 10, -0.445 at 30; PyBullet -0.280.
    """
    turned = {}
    for impratio in (1.0, 10.0, 30.0):
        env = make_env("mujoco")
        _sim(env).params.set_many({"valve_damping": 0.5, "contact_impratio": impratio})
        turned[impratio] = -_drive(env, _stroke_commands())[1][-1]
    pybullet = make_env("pybullet")
    _sim(pybullet).params.set("valve_damping", 0.5)
    turned_pb = -_drive(pybullet, _stroke_commands())[1][-1]
    assert turned[1.0] < turned[10.0] < turned[30.0], turned
    assert turned[1.0] < turned_pb < turned[30.0], (turned, turned_pb)


def test_valve_nudges_turn_a_free_valve_alike_on_both_engines(make_env: Maker) -> None:
    """``valve_torque_std`` knocks a valve the fingers do not touch about, by the same torques on both engines.

    The torques come from the env's seeded stream, so both engines get the same ones; the valve is a free hinge
    there (fingers lifted clear, as in the free-air test), so only the hinge model differs. Measured: the valve
    wanders over 0.28 rad and the two engines' angles agree to 1.4e-3 rad. Without the parameter it never moves.
    """
    commands, _ = _free_air_commands()
    mj, pb = make_env("mujoco"), make_env("pybullet")
    for env in (mj, pb):
        _sim(env).params.set("valve_torque_std", 0.03)
    _, mj_valve = _drive(mj, commands)
    _, pb_valve = _drive(pb, commands)
    assert np.ptp(mj_valve) > 0.2, mj_valve
    np.testing.assert_allclose(pb_valve, mj_valve, atol=0.01)
    for env in (mj, pb):
        _sim(env).params.set("valve_torque_std", 0.0)
        _, still = _drive(env, commands)
        assert np.max(np.abs(still)) < 1e-9


# --- (3) snapshots ---------------------------------------------------------------------------------------
def test_pybullet_snapshot_restores_exactly_in_contact(make_env: Maker) -> None:
    env = make_env("pybullet")
    inner = _sim(env)
    spec = inner.spec_
    actions = [normalize(q, spec.low, spec.high).astype(np.float32) for q in _stroke_commands()]
    env.reset(seed=SEED)
    for a in actions[:4]:
        env.step(a)
    snapshot = inner.get_sim_state()
    assert abs(snapshot.qvel[-1]) > 0.1, "the snapshot should be taken while the fingers push the valve"

    def run(e: gym.Env) -> np.ndarray:
        out = []
        for a in actions[4:]:
            obs, reward, *_ = e.step(a)
            state = _sim(e).read()
            out.append(np.concatenate([obs, [reward, state.time], state.joint_vel, state.passive_vel,
                                       state.joint_effort]))
        return np.array(out)

    first = run(env)
    inner.set_sim_state(snapshot)
    np.testing.assert_array_equal(inner.get_sim_state().qpos, snapshot.qpos)
    np.testing.assert_array_equal(inner.get_sim_state().qvel, snapshot.qvel)
    np.testing.assert_array_equal(run(env), first)
    # A second engine instance (its own PyBullet client) continues identically from the same snapshot.
    other = make_env("pybullet")
    other.reset(seed=SEED + 1)
    _sim(other).set_sim_state(snapshot)
    np.testing.assert_array_equal(run(other), first)


def test_pybullet_state_without_physics_sets_joints_and_command() -> None:
    task = DClawTurn()
    engine = make_engine("pybullet", task, 0.0025)
    try:
        qpos = np.concatenate([_per_finger(0.1, -0.5, 0.6), [0.7]])
        qvel = np.concatenate([_per_finger(0.2, -0.3, 0.1), [1.5]])
        command = _per_finger(0.2, -0.4, 0.5)
        engine.set_state(SimState(qpos=qpos, qvel=qvel, command=command))
        state = engine.read()
        np.testing.assert_array_equal(np.concatenate([state.joint_pos, state.passive_pos]), qpos)
        np.testing.assert_array_equal(np.concatenate([state.joint_vel, state.passive_vel]), qvel)
        np.testing.assert_array_equal(engine.get_state().command, command)
        kp = next(s.nominal for s in task.param_specs() if s.kind == "actuator_kp")
        np.testing.assert_allclose(state.joint_effort, kp * (command - qpos[:-1]))
        # The same reading restored twice gives the same future: nothing else carries over.
        engine.step(40)
        after = engine.get_state()
        engine.set_state(SimState(qpos=qpos, qvel=qvel, command=command))
        engine.step(40)
        np.testing.assert_array_equal(engine.get_state().qpos, after.qpos)
    finally:
        engine.close()


def test_engines_coexist_and_close_independently() -> None:
    task = DClawTurn()
    a, b = make_engine("pybullet", task, 0.0025), make_engine("pybullet", task, 0.0025)
    try:
        start = b.get_state().qpos
        a.set_command(_per_finger(0.3, -0.8, 0.8))
        a.step(40)
        assert not np.array_equal(a.get_state().qpos, start)
        np.testing.assert_array_equal(b.get_state().qpos, start)  # b's world is untouched
        a.close()
        b.step(1)  # still alive after a's client is gone
        assert b.read().time > 0
    finally:
        a.close()
        b.close()


# --- (4) named parameters --------------------------------------------------------------------------------
def _engine_specs() -> list[ParamSpec]:
    # Visual parameters must not change the motion: tests/test_visual.py checks that, and what they do to images.
    # MuJoCo-only kinds have no PyBullet side to agree with.
    return [s for s in DClawTurn().param_specs()
            if not s.is_env_level and not s.is_visual and s.kind not in MUJOCO_ONLY_KINDS]


def _rollout(env: gym.Env, n: int = 12) -> np.ndarray:
    inner = _sim(env)
    spec = inner.spec_
    env.reset(seed=SEED)
    rows = []
    # Press and sweep, so contact, valve and finger parameters all act within a few steps.
    for q in (_stroke_commands() * 2)[:n]:
        obs, *_ = env.step(normalize(q, spec.low, spec.high).astype(np.float32))
        state = inner.read()
        rows.append(np.concatenate([obs, state.joint_vel, state.passive_vel]))
    return np.array(rows)


@pytest.mark.parametrize("name", ENGINES)
def test_every_engine_param_kind_is_supported(name: str) -> None:
    claw, kitty = make_engine(name, DClawTurn(), 0.0025), make_engine(name, DKittyWalk(), 0.0025)
    try:
        for kind in get_args(ParamKind):
            spec = ParamSpec("p", kind, "-", 1.0, (), "test")
            # Engine kinds are the engine's to apply; env kinds (latency, noise, jitter) the env's; terrain kinds
            # need a scene with a heightfield (the quadruped's), which the claw's has not.
            # Some kinds are MuJoCo's only (sim.engines.base.MUJOCO_ONLY_KINDS says why).
            mujoco_only = MUJOCO_ONLY_KINDS if name == "pybullet" else frozenset()
            assert kitty.supports(spec) == (kind not in ENV_KINDS | mujoco_only), kind
            assert claw.supports(spec) == (kind not in ENV_KINDS | TERRAIN_KINDS | mujoco_only), kind
    finally:
        claw.close()
        kitty.close()


@pytest.mark.parametrize("spec", _engine_specs(), ids=lambda s: s.name)
def test_param_round_trip_and_setting_twice_equals_once(spec: ParamSpec, make_env: Maker) -> None:
    value = spec.nominal * 1.5 if spec.nominal > 0 else 0.01
    other = spec.nominal * 3.0 if spec.nominal > 0 else 0.02
    envs = [make_env("pybullet") for _ in range(3)]
    params = [_sim(e).params for e in envs]
    assert params[0].supported(spec.name)
    params[0].set(spec.name, value)
    assert params[0].get(spec.name) == value
    params[1].set(spec.name, value)
    params[1].set(spec.name, value)
    params[2].set(spec.name, other)
    params[2].set(spec.name, value)
    once = _rollout(envs[0])
    np.testing.assert_array_equal(_rollout(envs[1]), once)  # twice == once
    np.testing.assert_array_equal(_rollout(envs[2]), once)  # other then value == value
    # Back to nominal equals never set, and the perturbed value did change the motion.
    params[2].set(spec.name, spec.nominal)
    assert params[2].get(spec.name) == spec.nominal
    nominal = _rollout(envs[2])
    np.testing.assert_array_equal(_rollout(make_env("pybullet")), nominal)
    assert not np.array_equal(once, nominal), f"{spec.name}={value} did not change the trajectory"


def test_unknown_param_target_is_a_key_error_naming_it() -> None:
    engine = make_engine("pybullet", DClawTurn(), 0.0025)
    try:
        for kind, target in (("joint_damping", "no_joint"), ("body_mass", "no_link"), ("actuator_kp", "valve")):
            spec = ParamSpec("bad_param", kind, "-", 1.0, (target,), "test")  # type: ignore[arg-type]
            with pytest.raises(KeyError, match=target):
                engine.set_param(spec, 1.0)
    finally:
        engine.close()


# --- (5) stability ---------------------------------------------------------------------------------------
STIFF: Mapping[str, float] = {
    "valve_damping": 3.0 * DClawTurn().geometry.valve_damping,
    "finger_kp": 3.0 * DClawTurn().geometry.fingers.kp,
}


def test_stable_with_triple_valve_damping_and_finger_kp(make_env: Maker) -> None:
    env = make_env("pybullet", params=dict(STIFF))
    inner = _sim(env)
    env.action_space.seed(SEED)
    env.reset(seed=SEED)
    speeds = []
    for _ in range(2 * inner.spec_.episode_steps):
        obs, reward, _, truncated, _ = env.step(env.action_space.sample())
        state = inner.read()
        assert np.all(np.isfinite(obs)) and math.isfinite(float(reward))
        speeds.append(max(np.abs(state.joint_vel).max(), np.abs(state.passive_vel).max()))
        if truncated:
            env.reset()
    assert max(speeds) < MAX_SPEED_RAD_S, f"max joint speed {max(speeds):.1f} rad/s"
    _, valve = _drive(env, _stroke_commands())
    assert np.all(np.isfinite(valve)) and valve[-1] < 0.0


@pytest.mark.parametrize("valve_mass_factor", [1.0, 0.1])
def test_free_valve_spins_down_implicitly_with_triple_damping(valve_mass_factor: float) -> None:
    """A light valve with 3x damping has ``B dt / I`` of 1.6 (3.3 at a tenth of its mass): an explicit
    damping torque would ring (diverge). The speed must fall monotonically to rest, and the first step
    must follow the implicit update ``v1 = v0 - dt (B v0 + f) / (I + a + dt B)`` (``I`` the valve's
    inertia about its axis, ``a`` armature, ``f`` dry friction)."""
    task = DClawTurn()
    g = task.geometry
    engine = make_engine("pybullet", task, 0.0025)
    try:
        specs = {s.name: s for s in task.param_specs()}
        damping = STIFF["valve_damping"]
        engine.set_param(specs["valve_damping"], damping)
        engine.set_param(specs["valve_mass"], valve_mass_factor * specs["valve_mass"].nominal)
        lifted = _per_finger(0.0, -math.pi / 3, math.pi / 2)
        engine.reset(lifted, np.zeros(1))
        v0 = 5.0
        engine.set_state(SimState(qpos=np.concatenate([lifted, [0.0]]), qvel=np.concatenate([np.zeros(9), [v0]]),
                                  command=lifted))
        speeds = [v0]
        for _ in range(200):
            engine.step(1)
            speeds.append(float(engine.read().passive_vel[0]))
        s = np.array(speeds)
        assert np.all(s >= 0.0) and np.all(np.diff(s) <= 0.0), s[:10]
        assert s[-1] < 1e-6
        valve = link_mass_props(g)["valve"]
        inertia = valve_mass_factor * (valve.inertia[2, 2] + valve.mass * float(valve.com[:2] @ valve.com[:2]))
        dt = engine.timestep
        expected = v0 - dt * (damping * v0 + g.valve_frictionloss) / (inertia + g.valve_armature + dt * damping)
        assert s[1] == pytest.approx(expected, rel=1e-6)
    finally:
        engine.close()


def _excursion_past_range_in_falls(name: str, drops: int = 8) -> float:
    """The farthest any D'Kitty joint goes past its range (rad) in seeded drops onto the floor (tilted 0 to 3.1 rad
    about a random horizontal axis, from 0.2 to 0.6 m), each followed by the recovery reset's righting sequence as it
    stood when the fault was found (hips in with the legs straight, thighs fully back, shins folded, then the crouch),
    0.4 s per pose. These poses hold joints at their limits while the body weight loads them."""
    task = DKittyWalk()
    engine = make_engine(name, task, 0.0025)
    lower, upper = task.spec.low, task.spec.high
    crouch = np.array([0.28, 1.45, -2.0] * 4)
    poses = [np.array([-0.5, 0.0, 0.0] * 4), np.array([-0.5, math.pi / 2, 0.0] * 4),
             np.array([0.28, math.pi / 2, -2.0] * 4), crouch]
    rng = np.random.default_rng(0)
    worst = 0.0
    try:
        for _ in range(drops):
            axis = np.array([*rng.normal(size=2), 0.0])
            tilt = quat_from_rotvec(axis / np.linalg.norm(axis) * rng.uniform(0.0, 3.1))
            engine.reset(crouch, np.zeros(0), np.array([0.0, 0.0, rng.uniform(0.2, 0.6), *tilt]))
            for pose in poses:
                engine.set_command(pose)
                for _ in range(160):
                    engine.step(1)
                    q = engine.read().joint_pos
                    worst = max(worst, float(np.max(np.maximum(lower - q, q - upper))))
    finally:
        engine.close()
    return worst


def test_pybullet_joint_limits_hold_in_falls_at_least_as_firmly_as_mujocos() -> None:
    """A hard fall loads the legs against their limits; MuJoCo's soft limits give a few centimetres' worth (about
    0.1 rad). PyBullet's velocity map once re-spread the limits' impulses with the armature-laden mass matrix, which
    stopped a joint only part way: 0.12 rad here (0.17 over 60 drops), against MuJoCo's 0.11."""
    mujoco, pybullet = (_excursion_past_range_in_falls(name) for name in ("mujoco", "pybullet"))
    assert 0.0 < pybullet <= mujoco < 0.15, (pybullet, mujoco)


# --- rendering ------------------------------------------------------------------------------------------
def test_pybullet_renders_both_cameras_headless() -> None:
    engine = make_engine("pybullet", DClawTurn(), 0.0025)
    try:
        frames = {cam: engine.render(64, 48, cam) for cam in ("front", "top")}
        for frame in frames.values():
            assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
            assert len(np.unique(frame.reshape(-1, 3), axis=0)) > 10
        assert not np.array_equal(frames["front"], frames["top"])
        np.testing.assert_array_equal(engine.render(64, 48), frames["front"])  # front is the default
        with pytest.raises(ValueError, match="no_such_camera"):
            engine.render(64, 48, "no_such_camera")
    finally:
        engine.close()
