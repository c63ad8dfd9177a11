"""Visual randomization: every visual parameter changes the task camera's image as it says, never the physics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from test_cameras import marker_centroid

from randomization.distributions import (
    ParameterDistribution,
    combine_distributions,
    default_config,
    load_distribution,
)
from randomization.wrapper import RandomizedEnv
from s2r.cli import main
from s2r.core.errors import UserError
from s2r.core.resources import shipped_file
from sim.engines.base import VISUAL_KINDS
from sim.env import SimEnv
from sim.tasks.dclaw_turn import TOP_CAMERA, DClawTurn
from sim.visual import (
    DISTRACTOR_RING_M,
    CameraJitter,
    ImageEffects,
    aimed_light,
    distractor_layout,
    gaussian_blur,
    jitter_camera,
    postprocess,
)

ENGINES = ("mujoco", "pybullet")
VALVE_ANGLE_RAD = 1.0
"""A valve angle with the green marker between two fingers, in the top camera's sight."""
VISUAL_YAML = shipped_file("randomization.configs", "dclaw_visual.yaml")


def _env(engine: str) -> SimEnv:
    if engine == "pybullet":
        pytest.importorskip("pybullet")
    return SimEnv(DClawTurn(), engine=engine)


def _frame(env: SimEnv, values: dict[str, float] | None = None) -> np.ndarray:
    """The top camera's image with the valve at rest at :data:`VALVE_ANGLE_RAD`, under ``values`` from nominal."""
    env.params.assign(values or {})
    env.engine.reset(env.spec_.reset, np.array([VALVE_ANGLE_RAD]))
    return env.render_camera("top").astype(np.int64)


def _visual_draw(seed: int, engine: str) -> dict[str, float]:
    return _visual_distribution(engine).sample(np.random.default_rng(seed))


# --- listing and files ------------------------------------------------------------------------------------------
def test_params_lists_the_visual_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["params", "dclaw-turn", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["params"]}
    visual = {n: r for n, r in rows.items() if r["visual"]}
    assert {"valve_r", "floor_b", "finger_g", "spoke0_r", "light_dx", "light_intensity", "light_r", "camera_dx",
            "camera_dyaw", "camera_dfovy", "distractor_count", "image_brightness", "image_blur_sigma",
            "image_noise_std"} <= set(visual)
    assert not rows["valve_damping"]["visual"]
    assert visual["camera_dfovy"]["unit"] == "rad" and visual["light_dz"]["unit"] == "m"
    assert visual["image_blur_sigma"]["unit"] == "px"
    for name, row in visual.items():
        assert row["doc"].startswith("[visual]"), name
        assert row["supported"]["mujoco"] is True, name
        if row["supported"]["pybullet"] is not None:  # None: no pybullet installed
            assert row["supported"]["pybullet"] is (not name.startswith("distractor_")), name


def test_visual_yaml_parses_alone_and_combined_with_the_physics() -> None:
    visual = load_distribution(VISUAL_YAML, task="dclaw-turn")
    specs = {s.name: s for s in DClawTurn().param_specs()}
    assert all(specs[n].kind in VISUAL_KINDS for n in visual.names())
    physics = load_distribution(default_config("dclaw-turn"))
    both = combine_distributions([physics, visual])
    assert set(both.names()) == set(physics.names()) | set(visual.names())
    with pytest.raises(UserError, match="more than once"):
        combine_distributions([visual, visual])


# --- physics untouched ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ENGINES)
def test_physics_is_bit_identical_whatever_the_visual_values(engine: str) -> None:
    runs = []
    for values in ({}, _visual_draw(1, engine)):
        env = _env(engine)
        try:
            env.params.assign(values)
            obs, _ = env.reset(seed=7)
            out = [obs]
            for k in range(6):
                env.render_camera("top")  # images draw their noise from their own stream
                obs, reward, *_ = env.step(np.full(9, 0.5 * math.sin(k)))
                out += [obs, np.array([reward])]
            runs.append(np.concatenate(out))
        finally:
            env.close()
    assert np.array_equal(runs[0], runs[1])


# --- each parameter does what it says --------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ENGINES)
def test_colours_lights_and_the_return_to_nominal(engine: str) -> None:
    env = _env(engine)
    try:
        nominal = _frame(env)
        # The valve turned blue: the pixels that change are the hub's and spokes', and they turn bluer.
        blue = _frame(env, {"valve_r": 0.0, "valve_g": 0.0, "valve_b": 1.0})
        changed = (blue != nominal).any(axis=2)
        assert 20 < changed.sum() < 0.2 * changed.size
        assert (blue[changed][:, 2] - blue[changed][:, 0]).mean() > 50 + (nominal[changed][:, 2]
                                                                           - nominal[changed][:, 0]).mean()
        floor = _frame(env, {"floor_r": 0.2, "floor_g": 0.2, "floor_b": 0.2})
        assert floor.mean() < nominal.mean() - 40  # the floor fills most of the image
        fingers = _frame(env, {"finger_r": 1.0, "finger_g": 0.0, "finger_b": 0.0})
        assert (fingers[:, :, 0] - fingers[:, :, 1]).mean() > (nominal[:, :, 0] - nominal[:, :, 1]).mean() + 2
        dim, bright = _frame(env, {"light_intensity": 0.3}), _frame(env, {"light_intensity": 2.0})
        assert dim.mean() < nominal.mean() <= bright.mean()
        red = _frame(env, {"light_g": 0.3, "light_b": 0.3})
        assert (red[:, :, 0] - red[:, :, 2]).mean() > (nominal[:, :, 0] - nominal[:, :, 2]).mean() + 20
        moved = _frame(env, {"light_dx": -0.5, "light_dy": 0.5, "light_dz": -0.3})
        assert (moved != nominal).any(axis=2).mean() > 0.2
        # Back to nominal from any draw: byte-identical (nothing accumulates).
        _frame(env, _visual_draw(2, engine))
        assert np.array_equal(_frame(env), nominal)
    finally:
        env.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_camera_jitter_moves_the_marker_where_the_projection_says(engine: str) -> None:
    env = _env(engine)
    try:
        env.engine.reset(env.spec_.reset, np.array([VALVE_ANGLE_RAD]))
        g = DClawTurn().geometry
        x, y, z = g.marker_center  # in the valve's frame, turned by the valve angle
        c, s = math.cos(VALVE_ANGLE_RAD), math.sin(VALVE_ANGLE_RAD)
        marker = np.array([c * x - s * y, s * x + c * y, z])
        base = marker_centroid(_frame(env), TOP_CAMERA.project(marker))
        for jitter in (CameraJitter(dx=0.02, dy=-0.015), CameraJitter(dyaw=0.08, dpitch=-0.05, droll=0.2),
                       CameraJitter(dz=0.03, dfovy=-0.15), CameraJitter(dx=-0.01, droll=-0.3, dfovy=0.3)):
            values = {f"camera_{k}": getattr(jitter, k) for k in ("dx", "dy", "dz", "droll", "dpitch", "dyaw",
                                                                   "dfovy")}
            expected = jitter_camera(TOP_CAMERA, jitter).project(marker)
            found = marker_centroid(_frame(env, values), expected)
            assert np.linalg.norm(found - base) > 2.0  # it moved ...
            np.testing.assert_allclose(found, expected, atol=1.0, err_msg=f"{engine}: {jitter}")  # ... as predicted
    finally:
        env.close()


def test_distractors_lie_on_the_floor_out_of_reach_and_show_in_mujoco() -> None:
    layout = distractor_layout(5, 3, -0.02)
    assert distractor_layout(3, 3, -0.02) == layout[:3]  # more objects never move the others
    for d in layout:
        assert DISTRACTOR_RING_M[0] <= math.hypot(d.position[0], d.position[1]) <= DISTRACTOR_RING_M[1]
        assert d.position[2] == pytest.approx(-0.02 + d.half_size)
    env = _env("mujoco")
    try:
        nominal = _frame(env)
        some = _frame(env, {"distractor_count": 6.0, "distractor_seed": 11.0})
        assert (some != nominal).any(axis=2).sum() > 30
        assert np.array_equal(_frame(env, {"distractor_count": 6.0, "distractor_seed": 11.0}), some)
        assert not np.array_equal(_frame(env, {"distractor_count": 6.0, "distractor_seed": 12.0}), some)
        assert np.array_equal(_frame(env, {"distractor_seed": 11.0}), nominal)  # no count, no distractors
    finally:
        env.close()


def test_image_effects_do_what_they_say() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(40, 200, (84, 84, 3)).astype(np.uint8)
    x = image.astype(np.float64)
    assert postprocess(image, ImageEffects(), rng) is image
    assert postprocess(image, ImageEffects(brightness=0.1), rng).mean() == pytest.approx(x.mean() + 25.5, abs=0.6)
    assert postprocess(image, ImageEffects(contrast=1.3), rng).std() > 1.25 * x.std()
    assert postprocess(image, ImageEffects(contrast=0.5), rng).std() < 0.55 * x.std()

    def high_freq(img: np.ndarray) -> float:
        f = img.astype(np.float64)
        return float((np.diff(f, axis=0) ** 2).sum() + (np.diff(f, axis=1) ** 2).sum())

    blurred = postprocess(image, ImageEffects(blur_sigma=1.0), rng)
    assert high_freq(blurred) < 0.2 * high_freq(image)
    assert abs(blurred.astype(np.float64).mean() - x.mean()) < 1.0  # a blur keeps the mean
    flat = np.full((20, 20, 1), 0.5)
    np.testing.assert_allclose(gaussian_blur(flat, 2.0), flat)  # normalized kernel, edges reflected
    noisy = [postprocess(image, ImageEffects(noise_std=0.02), np.random.default_rng(s)) for s in (5, 5, 6)]
    assert np.array_equal(noisy[0], noisy[1]) and not np.array_equal(noisy[0], noisy[2])
    assert (noisy[0].astype(np.float64) - x).std() == pytest.approx(0.02 * 255, rel=0.1)


def test_light_keeps_aiming_where_it_did() -> None:
    pos, d = aimed_light((0.3, -0.3, 0.6), (-0.4, 0.4, -1.0), (0.0, 0.0, 0.0))
    np.testing.assert_allclose(d, np.array([-0.4, 0.4, -1.0]) / math.sqrt(1.32))
    pos, d = aimed_light((0.3, -0.3, 0.6), (-0.4, 0.4, -1.0), (-0.36, 0.06, -0.3))
    np.testing.assert_allclose(pos + d * 0.3 / -d[2], [0.06, -0.06, 0.0], atol=1e-12)


def _visual_distribution(engine: str) -> ParameterDistribution:
    """The shipped visual distribution, without the distractors on PyBullet (which cannot draw them)."""
    d = load_distribution(VISUAL_YAML)
    if engine == "mujoco":
        return d
    return ParameterDistribution(d.task, {k: m for k, m in d.marginals.items() if not k.startswith("distractor_")})


@pytest.mark.parametrize("engine", ENGINES)
def test_same_draw_and_seed_give_the_same_images(engine: str) -> None:
    frames = []
    for _ in range(2):
        env = _env(engine)
        wrapped = RandomizedEnv(env, _visual_distribution(engine), seed=3)
        try:
            shots = []
            for episode in range(2):
                wrapped.reset(seed=21 if episode == 0 else None)
                shots.append(env.render_camera("top"))
                wrapped.step(np.zeros(9, dtype=np.float32))
                shots.append(env.render_camera("top"))
            frames.append(np.stack(shots))
        finally:
            wrapped.close()
    assert np.array_equal(frames[0], frames[1])
    assert not np.array_equal(frames[0][0], frames[0][2])  # a new draw every episode
