"""Task cameras: the spec's validation and projection; both engines draw the valve where the projection puts it."""

from __future__ import annotations

from dataclasses import replace
from xml.etree import ElementTree

import numpy as np
import pytest

from sim.camera import CameraSpec
from sim.engines import make_engine
from sim.engines.mujoco_engine import MujocoEngine
from sim.tasks.dclaw_turn import SPEC, TOP_CAMERA, DClawTurn

TIMESTEP_S = 0.0025
VALVE_ANGLES_RAD = (1.0, 2.9, -0.8)
"""Valve angles at which the marker lies between two fingers, in sight of the top camera."""
OFF_CENTRE = CameraSpec("oblique", 96, 72, position=(0.03, -0.06, 0.3), target=(0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0),
                        fx=110.0, fy=118.0, cx=44.0, cy=39.5)
"""Non-square focal lengths and a principal point off the centre: checks the intrinsics conventions."""


MARKER_SEARCH_PX = 8.0
"""The green valve marker's pixels are looked for this close to where it should be (px): wider than the disc's
image, and apart from the green pointer on the hub, over 20 px away in every camera here."""


def marker_centroid(image: np.ndarray, near: np.ndarray) -> np.ndarray:
    """Pixel position (u, v) of the green valve marker disc: the centroid of the green pixels within
    :data:`MARKER_SEARCH_PX` of ``near`` (u, v), each at its centre."""
    rgb = image.astype(np.int32)
    mask = (rgb[:, :, 1] > rgb[:, :, 0] + 60) & (rgb[:, :, 1] > rgb[:, :, 2] + 60)
    rows, cols = np.nonzero(mask)
    keep = np.hypot(cols + 0.5 - near[0], rows + 0.5 - near[1]) <= MARKER_SEARCH_PX
    rows, cols = rows[keep], cols[keep]
    assert rows.size >= 3, "the marker is not in sight"
    return np.array([cols.mean() + 0.5, rows.mean() + 0.5])


def test_projection_of_axis_and_offsets() -> None:
    cam = CameraSpec("c", 80, 60, position=(0.0, 0.0, 1.0), target=(0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0),
                     fx=100.0, fy=50.0, cx=30.0, cy=20.0)
    uv = cam.project(np.array([[0.0, 0.0, 0.0], [0.1, 0.0, 0.5], [0.0, 0.2, 0.0], [0.0, 0.0, 2.0]]))
    np.testing.assert_allclose(uv[0], [30.0, 20.0])
    np.testing.assert_allclose(uv[1], [30.0 + 100.0 * 0.1 / 0.5, 20.0])  # world x is right, at depth 0.5
    np.testing.assert_allclose(uv[2], [30.0, 20.0 - 50.0 * 0.2])  # world y is up in the image
    assert np.isnan(uv[3]).all()  # behind the camera
    # fovy: the top edge of the field of view lands on the image's top edge.
    top = CameraSpec("t", 84, 84, position=(0.0, 0.0, 1.0), target=(0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0), fovy_deg=90.0)
    np.testing.assert_allclose(top.project(np.array([0.0, 1.0, 0.0])), [42.0, 0.0], atol=1e-9)
    # A quaternion and a look-at of the same pose agree.
    quat = CameraSpec("q", 80, 60, position=(0.0, 0.0, 1.0), orientation=(1.0, 0.0, 0.0, 0.0), fx=100.0, fy=50.0,
                      cx=30.0, cy=20.0)
    np.testing.assert_allclose(quat.rotation, cam.rotation, atol=1e-12)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"width": 0}, "width"),
    ({"fovy_deg": 180.0}, "fovy_deg"),
    ({"fovy_deg": None}, "fx, fy, cx, cy"),
    ({"fx": 10.0, "fy": 10.0, "cx": 1.0, "cy": 1.0}, "not both"),
    ({"target": None}, "exactly one"),
    ({"up": (0.0, 0.0, 2.0)}, "parallel"),
    ({"position": (0.0, float("nan"), 1.0)}, "position"),
    ({"name": "a b"}, "name"),
])
def test_bad_camera_is_refused(kwargs: dict[str, object], match: str) -> None:
    base: dict[str, object] = {"name": "c", "width": 84, "height": 84, "position": (0.0, 0.0, 1.0),
                               "target": (0.0, 0.0, 0.0), "up": (0.0, 1.0, 0.0), "fovy_deg": 45.0}
    if "up" in kwargs:
        base["up"] = kwargs.pop("up")
    with pytest.raises(ValueError, match=match):
        CameraSpec(**{**base, **kwargs})  # type: ignore[arg-type]


def test_task_spec_refuses_duplicate_cameras() -> None:
    with pytest.raises(ValueError, match="unique names"):
        replace(SPEC, cameras=(TOP_CAMERA, TOP_CAMERA))
    with pytest.raises(KeyError, match="no camera 'side'"):
        SPEC.camera("side")


VALVE_MARKS = ("valve_marker", "valve_pointer0", "valve_pointer1", "valve_pointer2")
"""The valve's angle marks: drawn, never touched."""


def test_the_valve_marks_are_visual_only_on_both_engines() -> None:
    task = DClawTurn()
    engine = make_engine("mujoco", task, TIMESTEP_S)
    assert isinstance(engine, MujocoEngine)
    try:
        model = engine.model
        for name in VALVE_MARKS:
            geom = model.geom(name)
            assert geom.contype[0] == 0 and geom.conaffinity[0] == 0, name
            assert geom.bodyid[0] == model.body("valve").id and geom.rgba[3] == 1.0, name
        # The valve weighs what the geometry says: hub and spokes, nothing for the marks.
        assert model.body("valve").mass[0] == pytest.approx(task.geometry.valve_mass, rel=1e-9)
    finally:
        engine.close()
    # PyBullet's URDF: the marks are visuals without a collision; a visual carries no mass there.
    valve = ElementTree.fromstring(task.model_urdf()).find("link[@name='valve']")
    assert valve is not None
    drawn = {v.get("name") for v in valve.findall("visual")}
    touched = {c.get("name") for c in valve.findall("collision")}
    assert set(VALVE_MARKS) <= drawn and not set(VALVE_MARKS) & touched


def _marker_world(task: DClawTurn, angle: float) -> np.ndarray:
    engine = make_engine("mujoco", task, TIMESTEP_S)
    assert isinstance(engine, MujocoEngine)
    engine.reset(task.spec.reset, np.array([angle]))
    position = engine.data.geom("valve_marker").xpos.copy()
    engine.close()
    return position


@pytest.mark.parametrize("camera", [TOP_CAMERA, OFF_CENTRE], ids=["top", "off-centre"])
def test_engines_draw_the_valve_where_the_projection_puts_it(camera: CameraSpec) -> None:
    pytest.importorskip("pybullet")
    task = DClawTurn(spec=replace(SPEC, cameras=(camera,)))
    engines = [make_engine(name, task, TIMESTEP_S) for name in ("mujoco", "pybullet")]
    try:
        for angle in VALVE_ANGLES_RAD:
            expected = camera.project(_marker_world(task, angle))
            found = []
            for engine in engines:
                engine.reset(task.spec.reset, np.array([angle]))
                image = engine.render_camera(camera.name)
                assert image.shape == (camera.height, camera.width, 3) and image.dtype == np.uint8
                found.append(marker_centroid(image, expected))
            mj, pyb = found
            # The centroid of the marker's visible faces against its centre's projection: within 0.6 pixel.
            np.testing.assert_allclose(mj, expected, atol=0.6, err_msg=f"mujoco at valve angle {angle}")
            np.testing.assert_allclose(pyb, expected, atol=0.6, err_msg=f"pybullet at valve angle {angle}")
            np.testing.assert_allclose(mj, pyb, atol=0.6, err_msg=f"engines disagree at valve angle {angle}")
        with pytest.raises(KeyError, match="no camera 'nope'"):
            engines[0].render_camera("nope")
        with pytest.raises(KeyError, match="no camera 'nope'"):
            engines[1].render_camera("nope")
    finally:
        for engine in engines:
            engine.close()
