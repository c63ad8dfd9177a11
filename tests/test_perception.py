"""The valve-angle estimator: its labelled renders, its training, its ONNX file and its commands.

One tiny ``s2r train-perception`` run (a module fixture: exporting to ONNX takes seconds) serves the tests of the
file it writes; the learning test, which trains a real estimator, is ``slow``.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from export.perception_model import OnnxAngleEstimator, camera_json, parse_perception_metadata
from randomization.distributions import load_distribution, parse_distribution
from randomization.perception_data import (
    PERCEPTION_CAMERA,
    AngleDataset,
    SceneConfig,
    angle_error_deg,
    render_angle_dataset,
    renderable_part,
)
from s2r.cli import main
from s2r.core.errors import ParameterError, UserError
from sim import make_task, resolve_env_id
from sim.env import SimEnv
from sim.tasks.dclaw_turn import TOP_CAMERA
from sim.visual import CameraJitter, jitter_camera

ROOT = Path(__file__).resolve().parents[1]
VISUAL = ROOT / "randomization" / "configs" / "dclaw_visual.yaml"
VISUAL_OOD = ROOT / "randomization" / "configs" / "dclaw_visual_ood.yaml"
TINY = ["--samples", "24", "--epochs", "1", "--channels", "4", "4", "--quiet"]
"""A run that only has to exist: few images, one epoch, a four-channel network."""


def _dataset(samples: int = 4, seed: int = 3, **kw: Any) -> AngleDataset:
    return render_angle_dataset(SceneConfig(samples=samples, seed=seed, **kw), load_distribution(VISUAL))


# --- the labelled renders ----------------------------------------------------------------------------------------
def test_the_dataset_is_reproducible_and_the_seed_and_split_change_it() -> None:
    a, b = _dataset(), _dataset()
    assert a.images.shape == (4, TOP_CAMERA.height, TOP_CAMERA.width, 3) and a.images.dtype == np.uint8
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.angles, b.angles)
    assert a.params == b.params and a.skipped == ()
    other, held_out = _dataset(seed=4), _dataset(held_out=True)
    for c in (other, held_out):
        assert not np.array_equal(a.angles, c.angles) and not np.array_equal(a.images, c.images)
    assert np.all((a.angles >= -math.pi) & (a.angles < math.pi))
    assert {n for p in a.params for n in p} == set(load_distribution(VISUAL).names())


def test_labels_are_the_simulators_valve_angle_of_what_is_rendered() -> None:
    """Re-setting each sample's recorded state and parameters reproduces its image exactly (no image noise here), and
    the simulator reads back the label: the label is the angle of the valve in the picture."""
    data = render_angle_dataset(SceneConfig(samples=3, seed=5, near_reset_fraction=0.0), None)
    env = SimEnv(make_task(resolve_env_id("dclaw-turn")))
    try:
        for image, angle, joints in zip(data.images, data.angles, data.joint_pos, strict=True):
            env.engine.reset(joints, np.array([angle]))
            assert env.read().passive_pos[0] == pytest.approx(angle, abs=1e-9)
            np.testing.assert_array_equal(env.render_camera(PERCEPTION_CAMERA), image)
            env.engine.reset(joints, np.array([angle + 0.5]))
            assert not np.array_equal(env.render_camera(PERCEPTION_CAMERA), image)  # the valve is in view
    finally:
        env.close()


def test_fingers_near_reset_or_anywhere_in_range() -> None:
    spec = make_task(resolve_env_id("dclaw-turn")).spec
    near = render_angle_dataset(SceneConfig(samples=3, near_reset_fraction=1.0, near_reset_spread_rad=0.1), None)
    assert np.all(np.abs(near.joint_pos - spec.reset) <= 0.1 + 1e-9)
    anywhere = render_angle_dataset(SceneConfig(samples=3, near_reset_fraction=0.0), None)
    assert np.all((anywhere.joint_pos >= np.array(spec.joint_low) - 1e-9)
                  & (anywhere.joint_pos <= np.array(spec.joint_high) + 1e-9))


def test_a_bad_scene_config_names_the_field() -> None:
    with pytest.raises(ParameterError, match="samples must be a whole number >= 1, got 0"):
        SceneConfig(samples=0).validated()
    with pytest.raises(ParameterError, match="near_reset_fraction must be in"):
        SceneConfig(near_reset_fraction=1.5).validated()


def test_pybullet_leaves_out_the_distractors_it_cannot_render() -> None:
    pytest.importorskip("pybullet")
    env = SimEnv(make_task(resolve_env_id("dclaw-turn")), engine="pybullet")
    try:
        kept, skipped = renderable_part(load_distribution(VISUAL), env)
    finally:
        env.close()
    assert skipped == ("distractor_count", "distractor_seed")
    assert set(kept.names()) == set(load_distribution(VISUAL).names()) - set(skipped)


def test_angle_errors_are_wrapped() -> None:
    np.testing.assert_allclose(angle_error_deg(np.array([math.pi - 0.01, 0.1]), np.array([-math.pi + 0.01, -0.1])),
                               np.degrees([0.02, 0.2]), atol=1e-9)


# --- the network -------------------------------------------------------------------------------------------------
def test_the_symmetric_head_takes_its_precision_from_all_spokes_and_its_spoke_from_the_coarse_angle() -> None:
    """With 3 spokes the coarse angle only has to fall within 60 deg of the truth; the answer is then the fine one."""
    torch = pytest.importorskip("torch")
    from policies.perception import cos_sin_targets, symmetric_angle

    rng = np.random.default_rng(0)
    true = rng.uniform(-math.pi, math.pi, 500)
    exact = cos_sin_targets(true, 3)
    off = rng.uniform(-0.99, 0.99, 500) * math.pi / 3  # the coarse angle off by up to 59.4 deg
    raw = torch.cat([cos_sin_targets(true + off)[:, :2] * 0.5, exact[:, 2:] * 2.0], dim=1)  # lengths do not count
    assert np.max(angle_error_deg(symmetric_angle(raw, 3).numpy(), true)) < 1e-3
    wrong = torch.cat([cos_sin_targets(true + 2.2)[:, :2], exact[:, 2:]], dim=1)  # 126 deg off: the next spoke
    np.testing.assert_allclose(angle_error_deg(symmetric_angle(wrong, 3).numpy(), true), 120.0, atol=1e-3)


def test_a_checkpoint_from_before_the_symmetry_and_the_standardization_reads_as_without_them() -> None:
    pytest.importorskip("torch")
    from policies.perception_config import AngleNetConfig

    old = AngleNetConfig.from_json({"channels": [4, 4], "hidden": 8})
    assert old.symmetry == 1 and old.standardize is False
    assert AngleNetConfig().symmetry == 3 and AngleNetConfig().standardize  # the valve's spokes
    assert AngleNetConfig.from_json(AngleNetConfig().to_json()) == AngleNetConfig()
    with pytest.raises(ParameterError, match="symmetry must be a whole number >= 1"):
        AngleNetConfig(symmetry=0).validated()


@pytest.mark.parametrize("symmetry, dark", [(1, False), (3, False), (3, True)])
def test_both_heads_export_to_the_same_angles(symmetry: int, dark: bool, tmp_path: Path) -> None:
    """Dark frames too: the standardization divides by their small spread, which scales any difference in how the
    two runtimes sum."""
    torch = pytest.importorskip("torch")
    from datetime import UTC, datetime

    from export.perception_export import export_estimator
    from export.perception_model import PerceptionMetadata
    from policies.perception import AngleNet
    from policies.perception_config import AngleNetConfig

    torch.manual_seed(symmetry)
    model = AngleNet(84, 84, AngleNetConfig(channels=(4, 4), hidden=8, symmetry=symmetry)).eval()
    data = _dataset(samples=8, seed=5)
    if dark:
        data = replace(data, images=data.images // 24)  # 0 .. 10 of 255
    meta = PerceptionMetadata(task="dclaw-turn", camera=camera_json(data.camera), engine="mujoco", samples=8,
                              epochs=1, seed=0, randomization="none", skipped_params=(), s2r_version="test",
                              export_time_utc=datetime.now(UTC).isoformat(), source_checkpoint="")
    check = export_estimator(model, tmp_path / "m.onnx", meta, data.images)
    assert check.passed and check.frames == 8 + 16


# --- the trained file ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("perception") / "run"
    import io
    from contextlib import redirect_stdout

    printed = io.StringIO()
    with redirect_stdout(printed):
        code = main(["train-perception", "--out", str(out), *TINY, "--randomize", str(VISUAL), "--json"])
    assert code == 0
    return {"out": out, "summary": json.loads(printed.getvalue())}


def test_train_perception_writes_the_checkpoint_and_a_verified_onnx_file(tiny_run: dict[str, Any]) -> None:
    out, summary = tiny_run["out"], tiny_run["summary"]
    assert sorted(p.name for p in out.iterdir()) == ["perception.onnx", "perception.pt"]
    assert summary["onnx"] == str(out / "perception.onnx") and summary["samples"] == 24 and summary["epochs"] == 1
    assert summary["max_onnx_diff_rad"] <= 1e-4 and summary["skipped_params"] == []


def test_onnx_matches_the_torch_checkpoint_on_new_frames(tiny_run: dict[str, Any]) -> None:
    from policies.perception import load_checkpoint, predict_angles

    model, info = load_checkpoint(tiny_run["out"] / "perception.pt")
    assert info["samples"] == 24 and info["engine"] == "mujoco"
    frames = _dataset(samples=6, seed=11, held_out=True).images
    angle_t, cos_sin_t = predict_angles(model, frames)
    estimator = OnnxAngleEstimator(tiny_run["out"] / "perception.onnx")
    angle_o, cos_sin_o = estimator.predict(frames)
    assert np.max(angle_error_deg(angle_o, angle_t)) < 1e-3
    np.testing.assert_allclose(cos_sin_o, cos_sin_t, atol=1e-5)
    np.testing.assert_allclose(np.hypot(cos_sin_o[:, 0], cos_sin_o[:, 1]), 1.0, atol=1e-5)
    assert estimator.angle(frames[0]) == pytest.approx(float(angle_o[0]), abs=1e-6)


def test_the_file_takes_uint8_frames_and_records_the_camera(tiny_run: dict[str, Any]) -> None:
    estimator = OnnxAngleEstimator(tiny_run["out"] / "perception.onnx", camera=TOP_CAMERA)
    info = estimator.info
    assert info.camera == camera_json(TOP_CAMERA) and info.camera["intrinsics"][2:] == [42.0, 42.0]
    assert info.task == "dclaw-turn" and info.engine == "mujoco" and info.samples == 24 and info.seed == 0
    assert info.distribution is not None
    assert set(parse_distribution(info.distribution).names()) == set(load_distribution(VISUAL).names())
    frame = np.zeros((84, 84, 3), np.uint8)
    angle, cos_sin = estimator.predict(frame)
    assert angle.shape == () and cos_sin.shape == (2,)
    assert estimator.predict(np.stack([frame] * 3))[0].shape == (3,)
    with pytest.raises(UserError, match="frames must be uint8"):
        estimator.predict(frame.astype(np.float32))
    with pytest.raises(UserError, match=r"frames must be \(84, 84, 3\)"):
        estimator.predict(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(UserError, match=r"trained for another camera.*position"):
        estimator.check_camera(jitter_camera(TOP_CAMERA, CameraJitter(dx=0.01)))
    with pytest.raises(UserError, match="width 64"):
        estimator.check_camera(replace(TOP_CAMERA, width=64))


def test_a_trained_estimator_joins_a_state_policy_in_one_camera_policy(tiny_run: dict[str, Any],
                                                                        tmp_path: Path) -> None:
    from export.pixels_export import export_pixels_policy
    from export.pixels_policy import OnnxPixelsPolicy

    made = export_pixels_policy(ROOT / "tests" / "data" / "dclaw_turn_crossq.onnx", tiny_run["out"] / "perception.onnx",
                                tmp_path / "camera.onnx")
    assert made.verification.passed and made.verification.rollout_observations > 0
    frames = _dataset(samples=3, seed=12, held_out=True).images
    batch = {"image": frames, "joint_pos": np.zeros((3, 9), np.float32), "last_action": np.zeros((3, 9), np.float32),
             "goal": np.full((3, 1), np.pi, np.float32)}
    _, angles = OnnxPixelsPolicy(made.path, camera=TOP_CAMERA).predict(batch)
    estimated = OnnxAngleEstimator(tiny_run["out"] / "perception.onnx").predict(frames)[0]
    np.testing.assert_allclose(angles, estimated, atol=1e-6)


def test_other_files_are_refused_by_name(tiny_run: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is an exported policy"):
        OnnxAngleEstimator(ROOT / "tests" / "data" / "dclaw_turn_crossq.onnx")
    damaged = tmp_path / "damaged.onnx"
    damaged.write_bytes((tiny_run["out"] / "perception.onnx").read_bytes()[:200])
    with pytest.raises(UserError, match="truncated, corrupted"):
        OnnxAngleEstimator(damaged)
    props = dict(OnnxAngleEstimator(tiny_run["out"] / "perception.onnx").metadata)
    with pytest.raises(UserError, match=r"camera\.intrinsics"):
        parse_perception_metadata({**props, "camera": json.dumps({**camera_json(TOP_CAMERA), "intrinsics": [1]})},
                                  "x.onnx")
    import torch

    from policies.perception import load_checkpoint

    with pytest.raises(UserError, match="cannot read perception checkpoint"):
        load_checkpoint(damaged)
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="is not a perception checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def _tiny(out: Path, *extra: str) -> Path:
    assert main(["train-perception", "--out", str(out), *TINY, *extra]) == 0
    return out


def test_join_perception_reads_every_network_on_five_views_and_averages_their_directions(
        tiny_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch = pytest.importorskip("torch")
    from policies.perception import load_checkpoint, symmetric_angle

    runs = [tiny_run["out"], _tiny(tmp_path / "seed1", "--randomize", str(VISUAL), "--seed", "1")]
    capsys.readouterr()
    assert main(["join-perception", *map(str, runs), "--out", str(tmp_path / "joined.onnx"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["networks"] == 2 and summary["views"] == 5 and summary["max_onnx_diff_rad"] <= 1e-4
    joined = OnnxAngleEstimator(tmp_path / "joined.onnx", camera=TOP_CAMERA)
    first = OnnxAngleEstimator(runs[0] / "perception.onnx").info
    assert joined.info.samples == 48 and joined.info.randomization == first.randomization
    assert "seed1/perception.pt" in joined.info.source_checkpoint
    # Expected, built apart from the module: numpy's edge padding for the views, each pair made a unit vector.
    frames = _dataset(samples=5, seed=12, held_out=True).images
    padded = np.pad(frames, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="edge")
    views = [padded[:, 2 + dy:2 + dy + 84, 2 + dx:2 + dx + 84] for dx, dy in ((0, 0), (2, 0), (-2, 0), (0, 2), (0, -2))]
    total = torch.zeros(len(frames), 4)
    for run in runs:
        model = load_checkpoint(run / "perception.pt")[0]
        for view in views:
            with torch.no_grad():
                pairs = model.raw(torch.from_numpy(np.ascontiguousarray(view))).reshape(len(frames), 2, 2)
            total += (pairs / pairs.norm(dim=2, keepdim=True)).reshape(len(frames), 4)
    expected = symmetric_angle(total, 3).numpy()
    assert np.max(angle_error_deg(joined.predict(frames)[0], expected)) < 1e-3
    # One network, no shift: the network itself.
    assert main(["join-perception", str(runs[0]), "--out", str(tmp_path / "one.onnx"), "--shift", "0"]) == 0
    alone = OnnxAngleEstimator(runs[0] / "perception.onnx").predict(frames)[0]
    assert np.max(angle_error_deg(OnnxAngleEstimator(tmp_path / "one.onnx").predict(frames)[0],
                                  alone)) < 1e-3


def test_join_perception_refuses_another_distribution_and_the_same_network_twice(
        tiny_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    nominal = _tiny(tmp_path / "nominal")
    capsys.readouterr()
    assert main(["join-perception", str(tiny_run["out"]), str(nominal), "--out", str(tmp_path / "joined.onnx")]) == 2
    err = capsys.readouterr().err
    assert f"{str(nominal)!r} was trained for another training distribution" in err, err
    assert not (tmp_path / "joined.onnx").exists()
    # The same network twice (here a copy of one run) only weighs it double.
    twin = tmp_path / "twin"
    shutil.copytree(tiny_run["out"], twin)
    assert main(["join-perception", str(tiny_run["out"]), str(twin), "--out", str(tmp_path / "joined.onnx")]) == 2
    err = capsys.readouterr().err
    assert f"{str(twin)!r} and {str(tiny_run['out'])!r} are the same network (seed 0" in err, err
    assert not (tmp_path / "joined.onnx").exists()


def test_eval_perception_reports_wrapped_degrees(tiny_run: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    model = str(tiny_run["out"] / "perception.onnx")
    assert main(["eval-perception", model, "--samples", "5", "--randomize", str(VISUAL_OOD), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["samples"] == 5 and data["engine"] == "mujoco" and data["randomization"] == str(VISUAL_OOD)
    assert 0.0 <= data["median_error_deg"] <= data["p95_error_deg"] <= data["max_error_deg"] <= 180.0
    assert main(["eval-perception", model, "--samples", "2", "--randomize", "none", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["randomization"] == "none"


def test_eval_perception_on_pybullet_leaves_out_the_distractors_with_a_note(
        tiny_run: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("pybullet")
    assert main(["eval-perception", str(tiny_run["out"] / "perception.onnx"), "--engine", "pybullet", "--samples",
                 "2", "--json"]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["randomization"] == "trained" and data["skipped_params"] == ["distractor_count", "distractor_seed"]
    assert "cannot render distractor_count, distractor_seed" in captured.err


def test_eval_perception_runs_without_torch(tiny_run: dict[str, Any], tmp_path: Path) -> None:
    no_torch = "import sys; sys.modules['torch'] = None; from s2r.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", no_torch, "eval-perception", str(tiny_run["out"] / "perception.onnx"),
                           "--samples", "2", "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["samples"] == 2


# --- bad input ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("argv", "message"), [
    (["train-perception", "--out", "{tmp}/run", "--samples", "0"], "--samples must be a whole number >= 1, got 0"),
    (["train-perception", "--out", "{tmp}/run", "--epochs", "0"], "--epochs must be a whole number >= 1, got 0"),
    (["train-perception", "--out", "{tmp}/run", "--channels", "0"], "--channels must be one or more whole numbers"),
    (["train-perception", "--out", "{tmp}/run", "--symmetry", "0"], "--symmetry must be a whole number >= 1"),
    (["train-perception", "--out", "{tmp}/run", "--hidden", "0"], "--hidden must be a whole number >= 1"),
    (["train-perception", "--out", "{tmp}/run", "--shift", "-1"], "--shift must be a whole number of pixels in [0,"),
    (["train-perception", "--out", "{tmp}/run", "--randomize", "{tmp}/missing.yaml"],
     "randomization file '{tmp}/missing.yaml' does not exist"),
    (["train-perception", "--out", "{tmp}/file.txt"], "is a file; expected a directory"),
    (["eval-perception", "{tmp}/missing.onnx"], "no ONNX model at '{tmp}/missing.onnx'"),
    (["join-perception", "{tmp}/missing", "--out", "{tmp}/joined.onnx"],
     "no ONNX model at '{tmp}/missing/perception.onnx'"),
    (["join-perception", "{tmp}/missing", "--out", "{tmp}/joined.onnx", "--shift", "-1"],
     "--shift must be a whole number of pixels >= 0, got -1"),
    (["join-perception", "{tmp}/missing", "--out", "{tmp}/joined.txt"], "output '{tmp}/joined.txt' must end in .onnx"),
    (["eval-perception", str(ROOT / "tests" / "data" / "dclaw_turn_crossq.onnx")], "is an exported policy"),
    (["eval-perception", "{tmp}/m.onnx", "--samples", "0"], "--samples must be a whole number >= 1, got 0"),
])
def test_bad_input_exits_2_naming_it_and_writes_nothing(argv: list[str], message: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file.txt").write_text("")
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message.replace("{tmp}", str(tmp_path)) in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_training_moves_and_re_exposes_the_batches_the_same_way_for_the_same_seed() -> None:
    torch = pytest.importorskip("torch")
    from policies.perception import train_angle_net
    from policies.perception_config import AngleNetConfig, PerceptionTrainConfig

    data = _dataset(samples=16, seed=2)
    cfg = PerceptionTrainConfig(epochs=2, batch_size=8, net=AngleNetConfig(channels=(4, 4), hidden=8))
    a, b = (train_angle_net(data.images, data.angles, cfg) for _ in range(2))
    assert a.losses == b.losses
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values(),
                                                 strict=True))
    for plain in (replace(cfg, shift=0), replace(cfg, photometric=None)):
        assert train_angle_net(data.images, data.angles, plain).losses != a.losses  # each augmentation is applied


# --- learning ------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_estimator_learns_the_angle_of_the_nominal_scene() -> None:
    """A few thousand nominal renders and a few epochs give a useful estimator on held-out renders (about 70 s on
    one thread); the full visual randomization, at the default sizes, is the README's measurement."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from policies.perception import predict_angles, train_angle_net
    from policies.perception_config import PerceptionTrainConfig

    train = render_angle_dataset(SceneConfig(samples=3000, seed=0), None)
    test = render_angle_dataset(SceneConfig(samples=300, seed=0, held_out=True), None)
    trained = train_angle_net(train.images, train.angles, PerceptionTrainConfig(epochs=8))
    errors = angle_error_deg(predict_angles(trained.model, test.images)[0], test.angles)
    assert np.median(errors) < 5.0 and np.percentile(errors, 95) < 20.0, (np.median(errors),
                                                                          np.percentile(errors, 95))
