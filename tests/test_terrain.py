"""The quadruped's terrain parameters: one heightfield on both engines, seeded, flat at nominal."""

from __future__ import annotations

import math
from dataclasses import replace

import mujoco
import numpy as np
import pytest
from numpy.typing import NDArray

from sim.env import SimEnv
from sim.models.terrain import DEFAULT_TERRAIN, Terrain, ground_height, terrain_heights
from sim.tasks.dkitty import STAND_POSE_RAD, DKittyStand, DKittyWalk

pb = pytest.importorskip("pybullet")

ROUGH = {"terrain_roughness": 0.02, "terrain_slope": 0.1, "terrain_seed": 7.0}
RNG_POINTS = 12


def _grid_points(t: Terrain, n: int, seed: int = 0) -> list[tuple[int, int]]:
    """Random grid indices (row along y, column along x) away from the edges."""
    rng = np.random.default_rng(seed)
    return [(int(i), int(j)) for i, j in rng.integers(2, t.n - 2, size=(n, 2))]


def _xy(t: Terrain, i: int, j: int) -> tuple[float, float]:
    return -t.half_extent_m + j * t.spacing_m, -t.half_extent_m + i * t.spacing_m


def test_heights_are_a_pure_function_of_the_values() -> None:
    t = DEFAULT_TERRAIN
    a = terrain_heights(t, 0.02, 0.1, 7.0)
    np.testing.assert_array_equal(a, terrain_heights(t, 0.02, 0.1, 7.9))  # the seed's integer part
    assert not np.array_equal(a, terrain_heights(t, 0.02, 0.1, 8.0))
    bumps = terrain_heights(t, 0.02, 0.0, 7.0)
    no_rim = replace(t, rim_m=0.0)
    assert math.isclose(float(terrain_heights(no_rim, 0.02, 0.0, 7.0).std()), 0.02, rel_tol=1e-9)
    # Inside the rim the heights are the field's as it would be without one.
    inner = _inside_rim(t)
    np.testing.assert_array_equal(bumps[inner], terrain_heights(no_rim, 0.02, 0.0, 7.0)[inner])
    # The slope rises along +x (columns) and not along y (rows).
    k = math.ceil(t.rim_m / t.spacing_m - 1e-9)  # the rim's grid points on each side
    ramp = terrain_heights(t, 0.0, 0.1, 0.0)[k:-k, k:-k]
    assert inner[k:-k, k:-k].all() and inner.sum() == ramp.size
    np.testing.assert_allclose(np.diff(ramp, axis=1), math.tan(0.1) * t.spacing_m, atol=1e-12)
    np.testing.assert_array_equal(np.diff(ramp, axis=0), 0.0)
    # The start pad's highest point is z = 0, so a robot placed just above it never starts in the ground.
    for h in (a, bumps, terrain_heights(t, 0.0, 0.1, 0.0), terrain_heights(t, 0.05, -0.35, 3.0)):
        x = t.axis()
        xx, yy = np.meshgrid(x, x)
        assert h[np.hypot(xx, yy) <= t.pad_radius_m].max() == 0.0


def _inside_rim(t: Terrain) -> NDArray[np.bool_]:
    x = t.axis()
    xx, yy = np.meshgrid(x, x)
    return np.maximum(np.abs(xx), np.abs(yy)) <= t.half_extent_m - t.rim_m


def test_the_field_meets_the_ground_beyond_it_without_a_ledge() -> None:
    """Across the rim the heights descend smoothly to the field's lowest point, just above the flat ground beyond: a
    robot that wandered off the field walks back on over 1 mm, not over a ledge as high as its bumps."""
    t = DEFAULT_TERRAIN
    for roughness in (0.005, 0.015, 0.05):
        h = terrain_heights(t, roughness, 0.0, 3.0)
        border = np.concatenate([h[0], h[-1], h[:, 0], h[:, -1]])
        np.testing.assert_array_equal(border, h.min())
        assert border[0] - ground_height(h) == pytest.approx(0.001)
        # Across the rim no step between neighbouring grid points is steeper than the bumps inside make them.
        inner = _inside_rim(t)
        steepest_inside = max(float(np.nanmax(np.abs(np.diff(np.where(inner, h, np.nan), axis=a)))) for a in (0, 1))
        steepest = max(float(np.abs(np.diff(h, axis=a)).max()) for a in (0, 1))
        assert steepest <= 1.5 * steepest_inside, (roughness, steepest, steepest_inside)
    with pytest.raises(ValueError, match="rim_m"):
        replace(t, rim_m=2.8)


def test_out_of_range_values_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="terrain_roughness"):
        terrain_heights(DEFAULT_TERRAIN, 0.5, 0.0, 0.0)
    with pytest.raises(ValueError, match="terrain_slope"):
        terrain_heights(DEFAULT_TERRAIN, 0.0, -1.0, 0.0)
    with pytest.raises(ValueError, match="terrain_slope"):
        SimEnv(DKittyWalk(), params={"terrain_slope": 0.5})


def test_the_start_pad_holds_every_start_footprint() -> None:
    # The robot's start poses (feet and torso corners, any start heading) lie within the pad that sets z = 0.
    rng = np.random.default_rng(0)
    t = DKittyWalk().terrain
    for task in (DKittyStand(), DKittyWalk()):
        for _ in range(5):
            start = task.sample_start(rng)
            feet = task.feet(start.joint_pos)
            assert np.hypot(feet[:, 0], feet[:, 1]).max() + task.foot_radius < t.pad_radius_m
    hx, hy, _ = DKittyWalk().geometry.torso_half_sizes()
    assert math.hypot(hx, hy) < t.pad_radius_m


def test_both_engines_have_the_same_floor_heights() -> None:
    t = DEFAULT_TERRAIN
    heights = terrain_heights(t, ROUGH["terrain_roughness"], ROUGH["terrain_slope"], ROUGH["terrain_seed"])
    mj_env, pb_env = SimEnv(DKittyWalk(), "mujoco", params=ROUGH), SimEnv(DKittyWalk(), "pybullet", params=ROUGH)
    try:
        mj_env.reset(seed=0)
        pb_env.reset(seed=0)
        m, d = mj_env.engine.model, mj_env.engine.data  # type: ignore[attr-defined]
        hfield = m.geom(t.name).id
        client = pb_env.engine.client  # type: ignore[attr-defined]
        top = 2.0
        for i, j in _grid_points(t, RNG_POINTS):
            x, y = _xy(t, i, j)
            mj_z = top - mujoco.mj_rayHfield(m, d, hfield, np.array([x, y, top]), np.array([0.0, 0.0, -1.0]))
            hit = pb.rayTest([x, y, top], [x, y, -top], physicsClientId=client)[0]
            # MuJoCo keeps heights as float32 fractions of the field's height range: micrometres.
            assert mj_z == pytest.approx(heights[i, j], abs=1e-5), (x, y)
            assert hit[3][2] == pytest.approx(heights[i, j], abs=1e-6), (x, y)
        # Nothing else is hit there: in PyBullet the flat floor is switched off (the ray ends on the heightfield).
        x, y = _xy(t, 20, 20)
        assert heights[20, 20] < -0.05
        hit = pb.rayTest([x, y, top], [x, y, -top], physicsClientId=client)[0]
        assert hit[3][2] == pytest.approx(heights[20, 20], abs=1e-6)
    finally:
        mj_env.close()
        pb_env.close()


@pytest.mark.parametrize("engine", ["mujoco", "pybullet"])
def test_the_robot_rests_on_the_terrain_and_the_flat_floor_is_below_it(engine: str) -> None:
    # Downhill of the start pad the ground lies below z = 0: the robot, walked there by a slope, goes below it too.
    env = SimEnv(DKittyWalk(), engine, params={"terrain_slope": -0.3, "foot_friction": 0.05})
    try:
        env.reset(seed=0)
        stand = np.zeros(12, np.float32)
        for _ in range(15):
            env.step(stand)
        state = env.read()
        assert state.base_pos[0] > 0.1  # slid downhill, towards +x
        assert state.base_pos[2] < DKittyWalk().spec.extras["stand_height_m"] - 0.02
    finally:
        env.close()


@pytest.mark.parametrize("engine", ["mujoco", "pybullet"])
def test_beyond_the_heightfields_edge_the_robot_stands_on_the_flat_ground(engine: str) -> None:
    """A robot that walks off the field (as an unattended walk did, 3 m out) steps down onto ground just below the
    field's lowest point; before, the world ended there and PyBullet's physics diverged."""
    values = {"terrain_roughness": 0.005, "terrain_seed": 3.0}
    ground = ground_height(terrain_heights(DEFAULT_TERRAIN, 0.005, 0.0, 3.0))
    env = SimEnv(DKittyWalk(), engine, params=values)
    try:
        env.reset(seed=0)
        beyond = [DEFAULT_TERRAIN.half_extent_m + 0.6, 0.0, 0.25, 1.0, 0.0, 0.0, 0.0]
        env.engine.reset(np.asarray(STAND_POSE_RAD), np.zeros(0), np.asarray(beyond))
        for _ in range(20):
            env.step(np.zeros(12, np.float32))
        stand = DKittyWalk().spec.extras["stand_height_m"]
        assert ground < -0.01  # lowered below the field, not at the nominal floor's z = 0
        assert env.read().base_pos[2] == pytest.approx(ground + stand, abs=0.03)
    finally:
        env.close()


@pytest.mark.parametrize("slope", [0.3, -0.3])
def test_a_slope_moves_a_passive_robot_the_same_way_on_both_engines(slope: float) -> None:
    # Slippery feet, servos holding the start pose: the robot slides down the incline on both engines.
    moved = []
    for engine in ("mujoco", "pybullet"):
        env = SimEnv(DKittyWalk(), engine, params={"terrain_slope": slope, "foot_friction": 0.05})
        try:
            env.reset(seed=0)
            start = env.read().base_pos.copy()
            for _ in range(10):
                env.step(np.zeros(12, np.float32))
            moved.append(env.read().base_pos - start)
        finally:
            env.close()
    downhill = -math.copysign(1.0, slope)
    for d in moved:
        assert d[0] * downhill > 0.05, moved  # along x, downhill
        assert abs(d[1]) < abs(d[0]) / 3, moved
    # Contacts differ between the engines (soft and rigid), so the distances agree within a factor of 2 only.
    assert 0.5 < moved[0][0] / moved[1][0] < 2.0, moved


@pytest.mark.parametrize("engine", ["mujoco", "pybullet"])
def test_the_seed_changes_the_bumps_and_is_repeatable(engine: str) -> None:
    def run(seed: float) -> np.ndarray:
        env = SimEnv(DKittyWalk(), engine, params={**ROUGH, "terrain_seed": seed})
        try:
            env.reset(seed=0)
            obs = [env.step(np.full(12, 0.3, np.float32))[0] for _ in range(5)]
            return np.array(obs)
        finally:
            env.close()

    a = run(1.0)
    np.testing.assert_array_equal(run(1.0), a)
    assert not np.array_equal(run(2.0), a)


def test_back_to_flat_is_the_nominal_scene_exactly() -> None:
    def run(values: dict[str, float] | None) -> np.ndarray:
        env = SimEnv(DKittyStand(), "mujoco")
        try:
            if values:
                env.params.set_many(values)
                env.params.assign({})
            env.reset(seed=3)
            return np.array([env.step(np.full(12, -0.2, np.float32))[0] for _ in range(5)])
        finally:
            env.close()

    np.testing.assert_array_equal(run(ROUGH), run(None))
