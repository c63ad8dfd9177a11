"""A camera on the robot path: the hardware config's ``camera`` section, the reader and its watchdog, the emulator's
MJPEG stream read through OpenCV, and ``s2r deploy --perception`` on the lock-step emulator."""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from robot_helpers import FakeClock
from test_pixels_env import STATE_POLICY, constant_estimator

from export.perception_model import camera_json
from robot.bus import PortLost
from robot.camera.opencv import OpenCvFrameSource
from robot.camera.reader import CameraFrame, CameraLost, CameraReader
from robot.config import CameraConfig, RobotConfig, config_from_mapping, load_config
from robot.controller import Controller, ControllerSettings
from robot.emulator.camera import PRIME_FRAMES, EmulatedCamera, MjpegServer, jpeg
from robot.emulator.reality import reality_from_mapping
from robot.mock import MockBus
from robot.runner import run_episodes, run_info
from s2r.commands.robot import register
from s2r.core.errors import UserError
from s2r.core.trajlog import TrajectoryWriter, read_episodes, read_run
from sim.camera import CameraSpec
from sim.tasks.dclaw_turn import TOP_CAMERA, DClawTurn
from sim.visual import ImageEffects

ROOT = Path(__file__).resolve().parents[1]
DCLAW_YAML = ROOT / "hardware_configs" / "dclaw.yaml"
CONFIG = load_config(DCLAW_YAML)


def _camera(config: RobotConfig) -> CameraConfig:
    assert config.camera is not None
    return config.camera


CAMERA = _camera(CONFIG)
SHAPE = (CAMERA.height, CAMERA.width, 3)


def raw() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(DCLAW_YAML.read_text())
    return data


def with_camera(**fields: Any) -> dict[str, Any]:
    data = raw()
    data["camera"] = {**data["camera"], **fields}
    return data


# --- config ---------------------------------------------------------------------------------------------------------
def test_the_dclaw_config_has_the_top_camera_at_its_resolution() -> None:
    assert CAMERA == CameraConfig("top", "auto", 84, 84, 30.0, 0.25)
    assert CAMERA.frame_period_s == pytest.approx(1 / 30)
    without = raw()
    del without["camera"]
    assert config_from_mapping(without).camera is None
    assert config_from_mapping(with_camera(source=2)).camera.source == 2  # type: ignore[union-attr]
    url = "http://192.168.1.20:8080/video"
    assert config_from_mapping(with_camera(source=url)).camera.source == url  # type: ignore[union-attr]


@pytest.mark.parametrize(("fields", "message"), [
    ({"name": "side"}, r"camera\.name.*one of the task 'dclaw-turn''s cameras: top"),
    ({"width": 64}, r"camera\.width.*resolution 84x84 pixels.*got '64x84'"),
    ({"fps": 0}, r"camera\.fps.*a rate in \(0, 240\] Hz"),
    ({"fps": 500}, r"camera\.fps.*a rate in \(0, 240\] Hz"),
    ({"max_frame_age_s": 0.05}, r"camera\.max_frame_age_s.*at least 0\.1 s"),
    ({"fps": 10, "max_frame_age_s": 0.15}, r"camera\.max_frame_age_s.*at least 0\.2 s \(2 frame periods at 10 Hz"),
    ({"source": "ftp://camera"}, r"camera\.source.*a stream URL"),
    ({"source": -1}, r"camera\.source.*index of at least 0"),
    ({"source": True}, r"camera\.source.*a camera index"),
    ({"exposure": 3}, r"camera\.exposure"),
])
def test_a_bad_camera_section_names_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError, match=message):
        config_from_mapping(with_camera(**fields), source="test.yaml")


def test_a_task_without_cameras_refuses_a_camera_section() -> None:
    data: dict[str, Any] = yaml.safe_load((ROOT / "hardware_configs" / "dkitty.yaml").read_text())
    data["camera"] = {"fps": 30, "max_frame_age_s": 0.25}
    with pytest.raises(UserError, match=r"camera.*absent: the task 'dkitty-stand' has no camera"):
        config_from_mapping(data, source="kitty.yaml")


def test_the_reality_files_image_parameters_are_the_cameras_pixel_effects() -> None:
    reality = reality_from_mapping({"params": {"image_noise_std": 0.02, "image_blur_sigma": 0.5,
                                               "light_intensity": 0.8}}, CONFIG)
    assert reality.image_effects == ImageEffects(blur_sigma=0.5, noise_std=0.02)
    assert dict(reality.params) == {"light_intensity": 0.8}  # the engine's part of the look
    assert reality_from_mapping({}, CONFIG).image_effects.is_identity


# --- reader ---------------------------------------------------------------------------------------------------------
class FakeFrames:
    """A frame source that hands out the frames it is given, then ``None`` (a read timeout), or raises when gone."""

    def __init__(self, frames: list[np.ndarray | None], empty_wait_s: float = 0.0) -> None:
        self.frames = list(frames)
        self.empty_wait_s = empty_wait_s
        self.name = "fake"
        self.gone = False
        self.closed = False

    def read(self) -> np.ndarray | None:
        if self.gone:
            raise CameraLost("unplugged")
        if not self.frames:
            time.sleep(self.empty_wait_s)  # a read waits for its timeout
            return None
        return self.frames.pop(0)

    def close(self) -> None:
        self.closed = True


def frame(value: int) -> np.ndarray:
    return np.full(SHAPE, value, dtype=np.uint8)


def test_the_reader_keeps_the_newest_valid_frame_with_its_receive_time() -> None:
    clock = FakeClock()
    source = FakeFrames([frame(1), np.zeros((10, 10, 3), np.uint8), frame(2).astype(np.float32), None, frame(3)])
    reader = CameraReader(source, CAMERA, clock=clock)
    assert reader.poll() is None and reader.counters.age(clock()) == math.inf
    assert reader.grab()
    first = reader.poll()
    assert first is not None and first.image[0, 0, 0] == 1 and (first.sequence, first.receive_time) == (0, 1000.0)
    clock.sleep(0.1)
    assert reader.grab() and reader.grab()  # delivered, both of the wrong size or dtype
    assert not reader.grab()  # a read that timed out
    assert reader.poll() is first
    clock.sleep(0.1)
    assert reader.grab()
    newest = reader.poll()
    assert newest is not None and newest.image[0, 0, 0] == 3 and newest.sequence == 1
    assert newest.receive_time == pytest.approx(1000.2)
    c = reader.counters
    assert (c.received, c.rejected, c.last_receive_time) == (2, {"shape": 2, "read": 1}, newest.receive_time)
    assert c.describe() == "2 frames, 3 bad (shape 2, read 1), 0 gaps (0 frames missed)"
    reader.close()
    assert source.closed


def test_lock_step_polls_read_exactly_up_to_the_emulators_count() -> None:
    source = FakeFrames([frame(k) for k in range(1, 8)])
    total = [PRIME_FRAMES]
    reader = CameraReader(source, CAMERA, clock=FakeClock(), expected=lambda: total[0])
    got = reader.poll()
    assert got is not None and got.image[0, 0, 0] == 3 and reader.frames_read == 3
    total[0] = 5  # two frames rendered since: the second is this cycle's
    got = reader.poll()
    assert got is not None and got.image[0, 0, 0] == 5 and len(source.frames) == 2
    with pytest.raises(ValueError, match="lock-step"):
        reader.start()


def test_a_camera_that_is_gone_is_a_lost_port() -> None:
    source = FakeFrames([frame(1)])
    reader = CameraReader(source, CAMERA, clock=FakeClock(), expected=lambda: 1)
    assert reader.poll() is not None
    source.gone = True
    reader._expected = lambda: 2  # the emulator rendered one more, the camera is unplugged
    with pytest.raises(PortLost, match="camera fake lost: unplugged"):
        reader.poll()


def test_the_background_thread_reads_until_closed() -> None:
    source = FakeFrames([frame(k) for k in range(1, 30)], empty_wait_s=0.01)
    reader = CameraReader(source, CAMERA)
    reader.start()
    try:
        for _ in range(1000):
            if reader.counters.received == 29:
                break
            time.sleep(0.001)
        latest = reader.poll()
        assert latest is not None and latest.image[0, 0, 0] == 29
    finally:
        reader.close()
    assert source.closed


# --- the controller ---------------------------------------------------------------------------------------------------
class FakeCamera:
    """Frames stamped now on ``clock`` until ``silent_from`` (s), then none: a camera that stops."""

    def __init__(self, clock: FakeClock, silent_from: float = math.inf) -> None:
        self.clock = clock
        self.silent_from = silent_from
        self.reader = CameraReader(FakeFrames([]), CAMERA, clock=clock)
        self.polls = 0

    def poll(self) -> CameraFrame | None:
        self.polls += 1
        if self.clock() < self.silent_from:
            self.reader.source.frames.append(frame(self.polls % 200))  # type: ignore[attr-defined]
            self.reader.grab()
        return self.reader.latest

    @property
    def counters(self) -> Any:
        return self.reader.counters

    def close(self) -> None:
        self.reader.close()


class FixedEstimator:
    """Reads ``angle`` (rad) from every frame, and records the frames it was given."""

    def __init__(self, angle: float) -> None:
        self.value = angle
        self.frames: list[np.ndarray] = []

    def angle(self, image: np.ndarray) -> float:
        self.frames.append(image)
        if not np.isfinite(self.value):
            raise RuntimeError("the model failed")
        return self.value


def camera_controller(policy: Any, camera: FakeCamera, estimator: FixedEstimator, clock: FakeClock,
                      config: RobotConfig = CONFIG) -> tuple[Controller, MockBus]:
    bus = MockBus(config, clock=clock)
    bus.connect()
    ctrl = Controller(policy, bus, replace(DClawTurn(), spec=config.task_spec()), config,
                      settings=ControllerSettings(spin_s=0.0), clock=clock, sleep=clock.sleep, camera=camera,
                      estimator=estimator)
    return ctrl, bus


def test_the_policy_sees_the_estimate_and_the_log_keeps_the_encoder(tmp_path: Path) -> None:
    clock = FakeClock()
    seen: list[np.ndarray] = []

    def policy(obs: np.ndarray) -> np.ndarray:
        seen.append(obs)
        return np.zeros(9)

    ctrl, _ = camera_controller(policy, FakeCamera(clock), FixedEstimator(0.5), clock)
    writer = TrajectoryWriter(tmp_path, run_info(CONFIG, "mock", 4))
    ctrl.settings = replace(ctrl.settings, episode_steps=4)
    summary = run_episodes(ctrl, writer, 1, np.random.default_rng(0))
    assert summary.episodes == 1 and summary.stop_kind == "completed"
    ep = next(iter(read_episodes(tmp_path)))
    task = DClawTurn()
    valve = task.spec.obs_layout.slice("valve_cos_sin")
    # Every observation's valve block is the estimate's, whatever the encoder reads.
    expected = np.asarray(task.observe(replace(ctrl._raw.state(), passive_pos=np.array([0.5])),  # type: ignore[union-attr]
                                       np.zeros(9), dict(ep.meta["goal"])))[valve]
    assert np.allclose(ep["obs"][:, valve], expected)
    assert np.allclose(np.asarray(seen)[:, valve], expected)
    assert np.allclose(ep["passive_estimate"], 0.5) and ep["passive_estimate"].shape == (5, 1)
    assert not np.allclose(ep["passive_pos"], 0.5)  # the encoder's reading, for success and reward
    assert ep["camera_top"].shape == (5, *SHAPE) and ep["camera_top"].dtype == np.uint8
    assert np.all(ep["frame_age"] >= 0) and np.all(ep["frame_age"] < CAMERA.max_frame_age_s)
    assert ep.meta["camera"]["frames"] >= 5


def test_a_camera_that_stops_stops_the_robot_safely(tmp_path: Path) -> None:
    clock = FakeClock()
    ctrl, _ = camera_controller(lambda obs: np.zeros(9), FakeCamera(clock, silent_from=clock() + 3.0),
                                  FixedEstimator(0.0), clock)
    summary = run_episodes(ctrl, TrajectoryWriter(tmp_path, run_info(CONFIG, "mock", ctrl.episode_steps)), 1,
                           np.random.default_rng(0))
    assert summary.stop_kind == "safety" and summary.torque_off
    assert "camera stale: no new frame for" in summary.stop_reason and "limit 250 ms" in summary.stop_reason


def test_an_estimator_that_fails_stops_the_robot_safely(tmp_path: Path) -> None:
    clock = FakeClock()
    ctrl, _ = camera_controller(lambda obs: np.zeros(9), FakeCamera(clock), FixedEstimator(math.nan), clock)
    summary = run_episodes(ctrl, TrajectoryWriter(tmp_path, run_info(CONFIG, "mock", ctrl.episode_steps)), 1,
                           np.random.default_rng(0))
    assert summary.stop_kind == "safety"
    assert "perception failure: RuntimeError: the model failed" in summary.stop_reason


def test_a_camera_needs_an_estimator_and_a_camera_section() -> None:
    clock = FakeClock()
    bus = MockBus(CONFIG, clock=clock)
    task = replace(DClawTurn(), spec=CONFIG.task_spec())
    with pytest.raises(UserError, match="a camera needs an estimator"):
        Controller(lambda obs: np.zeros(9), bus, task, CONFIG, clock=clock, camera=FakeCamera(clock))
    bare = replace(CONFIG, camera=None)
    with pytest.raises(UserError, match="has no camera section"):
        Controller(lambda obs: np.zeros(9), bus, task, bare, clock=clock, camera=FakeCamera(clock),
                   estimator=FixedEstimator(0.0))


# --- the emulator's stream through OpenCV ---------------------------------------------------------------------------
def test_the_mjpeg_stream_opens_in_opencv_and_each_lock_step_frame_is_the_one_rendered() -> None:
    rendered: list[int] = []

    def render(name: str) -> np.ndarray:
        assert name == "top"
        rendered.append(len(rendered) * 20 + 10)
        return frame(rendered[-1])

    camera = EmulatedCamera(CAMERA, render, ImageEffects(), seed=0, t_start=0.0)
    try:
        camera.open()
        assert camera.url.startswith("http://127.0.0.1:") and camera.server.port > 0
        source = OpenCvFrameSource(camera.url, CAMERA)
        reader = CameraReader(source, CAMERA, clock=FakeClock(), expected=camera.frame)
        try:
            for _ in range(5):
                got = reader.poll()
                assert got is not None and got.image.shape == SHAPE
                # A flat grey survives JPEG within a level or two: the frame read is the one just rendered.
                assert abs(int(got.image[40, 40, 0]) - rendered[-1]) <= 2
            assert reader.frames_read == PRIME_FRAMES + 5
        finally:
            reader.close()
    finally:
        camera.close()


def test_the_real_time_camera_renders_at_its_rate_with_the_realitys_pixel_effects() -> None:
    calls: list[str] = []

    def render(name: str) -> np.ndarray:
        calls.append(name)
        return frame(100)

    camera = EmulatedCamera(CAMERA, render, ImageEffects(brightness=0.2), seed=0, t_start=10.0)
    try:
        camera.serve(10.0)
        camera.serve(10.01)  # not yet due
        camera.serve(10.0 + 3.5 / 30)  # late: one frame for the missed due times
        assert len(calls) == 2 and camera.stats["camera_frames_merged"] == 2
        assert camera.next_due() == pytest.approx(10.0 + 4 / 30)
    finally:
        camera.close()
    decoded = np.frombuffer(jpeg(frame(100)), np.uint8)
    assert decoded.size > 0


def test_an_unreachable_stream_is_a_user_error() -> None:
    server = MjpegServer()
    url = server.url
    server.close()
    with pytest.raises(UserError, match=r"cannot open the camera http://127\.0\.0\.1"):
        OpenCvFrameSource(url, replace(CAMERA, source=url))


# --- s2r deploy --perception ----------------------------------------------------------------------------------------
def deploy(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="s2r")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["deploy", *argv])
    try:
        code = args.func(args)
    except UserError as exc:
        print(exc, file=sys.stderr)
        code = 2
    out, err = capsys.readouterr()
    return code, out, err


def test_deploy_reads_the_valve_from_the_emulators_camera_in_lock_step(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = constant_estimator(tmp_path / "zero.onnx")
    logs = tmp_path / "logs"
    code, out, err = deploy([str(STATE_POLICY), "--robot", str(DCLAW_YAML), "--driver", "emulator", "--lockstep",
                             "--episodes", "1", "--episode-steps", "4", "--log-dir", str(logs),
                             "--perception", str(model), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["episodes"] == 1
    assert read_run(logs).extra["perception"] == str(model)
    ep = next(iter(read_episodes(logs)))
    assert np.all(ep["passive_estimate"] == 0.0)  # the constant model's reading, not the encoder's
    frames = ep["camera_top"]
    assert frames.shape == (5, *SHAPE) and frames.std() > 10  # a rendered scene, not a blank
    assert np.all(np.abs(ep["frame_age"]) < 0.01)  # rendered in the cycle that read it
    # One frame per cycle, the reset's included.
    assert ep.meta["camera"]["frames"] > 5 and ep.meta["camera"]["bad_shape"] == 0


def test_deploy_perception_refusals_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = constant_estimator(tmp_path / "zero.onnx")
    narrow = constant_estimator(tmp_path / "narrow.onnx", {**camera_json_top(), "width": 64})
    bare = tmp_path / "bare.yaml"
    data = raw()
    del data["camera"]
    bare.write_text(yaml.safe_dump(data, sort_keys=False))
    base = ["--driver", "emulator", "--lockstep", "--episodes", "1", "--log-dir", str(tmp_path / "logs")]
    cases = [
        ([str(STATE_POLICY), "--robot", str(bare), "--perception", str(model)], "has no camera section"),
        ([str(STATE_POLICY), "--robot", str(DCLAW_YAML), "--perception", str(narrow)],
         "was trained for another camera: 'top' has width 84"),
        (["scripted:zero", "--robot", str(DCLAW_YAML), "--perception", str(model)], "feeds a state policy of"),
        ([str(STATE_POLICY), "--robot", str(DCLAW_YAML), "--perception", str(model), "--driver", "mock"],
         "the mock driver has no camera"),
    ]
    for argv, message in cases:
        code, _, err = deploy([*argv, *base] if "--driver" not in argv else [*argv, *base[2:]], capsys)
        assert code == 2 and message in err, (argv, err)
        assert "Traceback" not in err
    assert not (tmp_path / "logs").exists()


def camera_json_top() -> dict[str, Any]:
    spec: CameraSpec = TOP_CAMERA
    return copy.deepcopy(camera_json(spec))
