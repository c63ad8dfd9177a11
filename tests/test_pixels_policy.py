"""The camera policy in one ONNX file (``s2r export POLICY --perception MODEL``): the state policy and the estimator
joined, checked against the modular policy before it appears, and run by ``s2r eval`` on the camera env."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_pixels_env import save_estimator

from export.modular_policy import ModularPolicy
from export.onnx_policy import OnnxPolicy
from export.perception_model import OnnxAngleEstimator, camera_json
from export.pixels_export import MAX_ACTION_DIFF, export_pixels_policy
from export.pixels_policy import INPUTS, OnnxPixelsPolicy, pixels_file, split_pixels_policy
from s2r.cli import main
from s2r.core.errors import UserError
from sim.pixels_env import PixelsEnv
from sim.tasks.dclaw_turn import TOP_CAMERA, DClawTurn

ROOT = Path(__file__).resolve().parents[1]
STATE_POLICY = ROOT / "tests" / "data" / "dclaw_turn_crossq.onnx"


def pixel_estimator(path: Path, camera: dict[str, object] | None = None, opset: int = 17) -> Path:
    """An estimator file (onnx.helper) whose angle is read off two pixels, ``2 pi (r[0, 0] + g[1, 1]) / 510 - pi``:
    every angle in [-pi, pi] on random frames, so the glue's wrap is crossed."""
    h, w = TOP_CAMERA.height, TOP_CAMERA.width
    nodes = [
        helper.make_node("Cast", ["frames"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("Slice", ["x", "s0", "e0", "ax"], ["p0"]),
        helper.make_node("Slice", ["x", "s1", "e1", "ax"], ["p1"]),
        helper.make_node("Add", ["p0", "p1"], ["sum"]),
        helper.make_node("Reshape", ["sum", "flat"], ["sum1"]),
        helper.make_node("Mul", ["sum1", "scale"], ["scaled"]),
        helper.make_node("Sub", ["scaled", "pi"], ["angle"]),
        helper.make_node("Unsqueeze", ["angle", "axis1"], ["a1"]),
        helper.make_node("Cos", ["a1"], ["c"]),
        helper.make_node("Sin", ["a1"], ["s"]),
        helper.make_node("Concat", ["c", "s"], ["cos_sin"], axis=1),
    ]
    consts = {"s0": [0, 0, 0], "e0": [1, 1, 1], "s1": [1, 1, 1], "e1": [2, 2, 2], "ax": [1, 2, 3], "flat": [-1],
              "axis1": [1]}
    graph = helper.make_graph(
        nodes, "pixel_estimator",
        [helper.make_tensor_value_info("frames", TensorProto.UINT8, ["batch", h, w, 3])],
        [helper.make_tensor_value_info("angle", TensorProto.FLOAT, ["batch"]),
         helper.make_tensor_value_info("cos_sin", TensorProto.FLOAT, ["batch", 2])],
        [*(numpy_helper.from_array(np.array(v, np.int64), k) for k, v in consts.items()),
         numpy_helper.from_array(np.array(2 * np.pi / 510, np.float32), "scale"),
         numpy_helper.from_array(np.array(np.pi, np.float32), "pi")],
    )
    return save_estimator(graph, path, camera, opset)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("pixels")
    estimator = pixel_estimator(tmp / "perception.onnx")
    out = tmp / "camera.onnx"
    export_pixels_policy(STATE_POLICY, estimator, out)
    return {"estimator": estimator, "out": out, "tmp": tmp}


def test_the_file_takes_the_camera_envs_observation_and_gives_the_modular_policys_actions(
        made: dict[str, Path]) -> None:
    policy = OnnxPixelsPolicy(made["out"], camera=TOP_CAMERA)
    assert tuple(s.name for s in policy.inputs) == INPUTS and pixels_file(made["out"])
    assert policy.env_id == "s2r/DClawTurnPixels-v0" and policy.info.task == "dclaw-turn"
    assert policy.camera == camera_json(TOP_CAMERA)
    estimator = OnnxAngleEstimator(made["estimator"])
    task = DClawTurn(variant="random")
    reference = ModularPolicy(estimator, OnnxPolicy(STATE_POLICY).act, task)
    env = PixelsEnv(task)
    diffs = []
    try:  # observations the export's check never saw: another variant and seed
        obs, _ = env.reset(seed=7)
        for _ in range(30):
            action = policy(obs)
            diffs.append(np.max(np.abs(action - reference(obs))))
            assert policy.last_angle == pytest.approx(estimator.angle(obs["image"]), abs=1e-6)
            obs, *_ = env.step(action)
    finally:
        env.close()
    assert max(diffs) <= MAX_ACTION_DIFF


def test_random_frames_cross_the_wrap_and_still_agree(made: dict[str, Path]) -> None:
    rng = np.random.default_rng(3)
    n = 256
    batch = {"image": rng.integers(0, 256, (n, TOP_CAMERA.height, TOP_CAMERA.width, 3), np.uint8),
             "joint_pos": rng.uniform(-0.5, 0.5, (n, 9)).astype(np.float32),
             "last_action": rng.uniform(-1, 1, (n, 9)).astype(np.float32),
             "goal": rng.uniform(-np.pi, np.pi, (n, 1)).astype(np.float32)}
    actions, angles = OnnxPixelsPolicy(made["out"]).predict(batch)
    reference = ModularPolicy(OnnxAngleEstimator(made["estimator"]), OnnxPolicy(STATE_POLICY).act,
                              DClawTurn(variant="fixed"))
    expected = np.stack([reference({k: v[i] for k, v in batch.items()}) for i in range(n)])
    assert np.ptp(angles) > 5.0  # the estimates span nearly the whole circle
    raw = batch["goal"][:, 0] - angles  # the target error before the wrap: both ways past +-pi
    assert raw.min() < -np.pi and raw.max() > np.pi
    np.testing.assert_allclose(actions, expected, atol=MAX_ACTION_DIFF)


def test_a_state_policy_whose_metadata_misstates_its_layout_is_caught_and_nothing_written(tmp_path: Path) -> None:
    model = onnx.load(str(STATE_POLICY))
    props = {p.key: p.value for p in model.metadata_props}
    layout = json.loads(props["obs_layout"])
    by_name = {b["name"]: b for b in layout}
    # The same sizes in another order: the file claims last_action comes first.
    order = ["last_action", "joint_pos", "valve_cos_sin", "target_error"]
    start, lying = 0, []
    for name in order:
        width = by_name[name]["stop"] - by_name[name]["start"]
        lying.append({**by_name[name], "start": start, "stop": start + width})
        start += width
    for p in model.metadata_props:
        if p.key == "obs_layout":
            p.value = json.dumps(lying)
    bad = tmp_path / "lying.onnx"
    onnx.save(model, str(bad))
    estimator = pixel_estimator(tmp_path / "perception.onnx")
    with pytest.raises(UserError, match="failed verification: onnxruntime gives actions up to"):
        export_pixels_policy(bad, estimator, tmp_path / "camera.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lying.onnx", "perception.onnx"]


def test_export_and_eval_on_the_command_line_match_the_modular_policy(
        made: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.onnx"
    assert main(["export", str(STATE_POLICY), "--perception", str(made["estimator"]), "--out", str(out),
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["path"] == str(out) and summary["state_export"] is None
    assert summary["verification"]["passed"] and summary["verification"]["rollout_observations"] > 0
    results = []
    for argv in (["eval", str(out)], ["eval", str(STATE_POLICY), "--perception", str(made["estimator"])]):
        assert main([*argv, "--episodes", "2", "--seed", "5", "--json"]) == 0
        results.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    assert results[0]["env_id"] == results[1]["env_id"] == "s2r/DClawTurnPixels-v0"
    assert results[0]["perception"] == str(out)
    assert results[0]["success_rate"] == results[1]["success_rate"]
    assert results[0]["return_mean"] == pytest.approx(results[1]["return_mean"], rel=1e-3)


def test_the_default_name_is_beside_the_state_policy(made: dict[str, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "claw.onnx"
    state.write_bytes(STATE_POLICY.read_bytes())
    assert main(["export", str(state), "--perception", str(made["estimator"])]) == 0
    assert "wrote " + str(tmp_path / "claw_pixels.onnx") in capsys.readouterr().out
    assert (tmp_path / "claw_pixels.onnx").is_file()


@pytest.mark.parametrize(("argv", "message"), [
    (["export", str(STATE_POLICY)], "is exported already; an .onnx file is exported again only with --perception"),
    (["export", str(STATE_POLICY), "--perception", "{tmp}/missing.onnx", "--out", "{tmp}/x.onnx"],
     "no ONNX model at '{tmp}/missing.onnx'"),
    (["export", str(STATE_POLICY), "--perception", "{tmp}/narrow.onnx", "--out", "{tmp}/x.onnx"],
     "was trained for another camera: 'top' has width 84"),
    (["export", "{tmp}/goal.onnx", "--perception", "{estimator}", "--out", "{tmp}/x.onnx"],
     "was trained on s2r/DClawTurnGoal-v0; a camera policy is made from a state policy of"),
    (["export", str(STATE_POLICY), "--perception", "{estimator}", "--out", "{tmp}/x.txt"], "must end in .onnx"),
    (["eval", "{out}", "--perception", "{estimator}", "--episodes", "1"],
     "is a camera policy: it carries its own estimator"),
    (["deploy", "{out}", "--perception", "{estimator}", "--robot", "dclaw", "--driver", "emulator", "--episodes",
      "1", "--log-dir", "{tmp}/logs"], "is a camera policy: it carries its own estimator"),
])
def test_bad_requests_exit_2_naming_the_problem(argv: list[str], message: str, made: dict[str, Path],
                                                tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from test_goal_deploy import _goal_onnx

    _goal_onnx(tmp_path / "goal.onnx")
    pixel_estimator(tmp_path / "narrow.onnx", {**camera_json(TOP_CAMERA), "width": 64})

    def fill(text: str) -> str:
        return text.replace("{tmp}", str(tmp_path)).replace("{estimator}", str(made["estimator"])) \
            .replace("{out}", str(made["out"]))

    assert main([fill(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert fill(message) in err and "Traceback" not in err, err
    assert not (tmp_path / "x.onnx").exists()


def test_deploy_runs_the_file_as_the_state_policy_behind_its_estimator(
        made: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("cv2")  # the emulator's camera stream (the `camera` extra)
    results = []
    common = ["--robot", "dclaw", "--driver", "emulator", "--lockstep", "--episodes", "1", "--seed", "2", "--json"]
    for name, policy in (("file", [str(made["out"])]),
                         ("parts", [str(STATE_POLICY), "--perception", str(made["estimator"])])):
        assert main(["deploy", *policy, *common, "--log-dir", str(tmp_path / name)]) == 0
        results.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    assert results[0]["policy"] == f"camera policy {made['out']}"
    assert results[0]["return_mean"] == results[1]["return_mean"]
    info = json.loads((tmp_path / "file" / "run.json").read_text())
    assert json.dumps(info).count(str(made["out"])) >= 2  # the run names the file (policy and camera_policy)
    episode = "episode_000000.npz"
    with np.load(tmp_path / "file" / episode) as a, np.load(tmp_path / "parts" / episode) as b:
        np.testing.assert_array_equal(a["passive_estimate"], b["passive_estimate"])
        assert a["camera_top"].shape[1:] == (TOP_CAMERA.height, TOP_CAMERA.width, 3)


def test_split_gives_back_the_two_files_it_was_made_from(made: dict[str, Path], tmp_path: Path) -> None:
    state, estimator = split_pixels_policy(made["out"], tmp_path)
    assert OnnxPolicy(state).metadata == OnnxPolicy(STATE_POLICY).metadata
    assert OnnxAngleEstimator(estimator).metadata == OnnxAngleEstimator(made["estimator"]).metadata
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(8, 21)).astype(np.float32)
    np.testing.assert_array_equal(OnnxPolicy(state).act(obs), OnnxPolicy(STATE_POLICY).act(obs))
    frames = rng.integers(0, 256, (8, TOP_CAMERA.height, TOP_CAMERA.width, 3), np.uint8)
    np.testing.assert_allclose(OnnxAngleEstimator(estimator).predict(frames)[0],
                               OnnxAngleEstimator(made["estimator"]).predict(frames)[0], atol=1e-6)


def test_a_state_policy_file_is_not_a_camera_policy(tmp_path: Path) -> None:
    assert not pixels_file(STATE_POLICY) and not pixels_file(tmp_path / "missing.onnx")
    with pytest.raises(UserError, match="is not a camera policy"):
        OnnxPixelsPolicy(STATE_POLICY)


def test_a_camera_policy_is_not_a_state_policy(made: dict[str, Path]) -> None:
    with pytest.raises(UserError, match=r"is a camera policy \(the camera frame and the joint readings in"):
        OnnxPolicy(made["out"])


def test_export_and_eval_run_without_torch(made: dict[str, Path], tmp_path: Path) -> None:
    no_torch = "import sys; sys.modules['torch'] = None; from s2r.cli import main; sys.exit(main(sys.argv[1:]))"
    out = tmp_path / "camera.onnx"
    for argv in (["export", str(STATE_POLICY), "--perception", str(made["estimator"]), "--out", str(out), "--json"],
                 ["eval", str(out), "--episodes", "1", "--json"]):
        done = subprocess.run([sys.executable, "-c", no_torch, *argv], capture_output=True, text=True, cwd=tmp_path,
                              check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["env_id"] == "s2r/DClawTurnPixels-v0"
