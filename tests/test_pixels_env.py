"""The claw without a valve encoder: the camera env (an image, the robot's own readings, the goal; no valve angle),
the modular policy (estimated angle -> the state policy's observation -> action) and ``s2r eval --perception``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import sim
from export.modular_policy import ModularPolicy
from export.perception_model import PerceptionMetadata, camera_json
from randomization.distributions import parse_distribution
from randomization.wrapper import RandomizedEnv
from s2r.cli import main
from sim.env import SimEnv
from sim.pixels_env import PixelsEnv
from sim.tasks.dclaw_turn import OBS_LAYOUT, TOP_CAMERA, DClawTurn

ROOT = Path(__file__).resolve().parents[1]
STATE_POLICY = ROOT / "tests" / "data" / "dclaw_turn_crossq.onnx"
STEPS = 5


def test_the_ids_map_onto_the_flat_tasks() -> None:
    assert sim.PIXEL_IDS == {"s2r/DClawTurnPixels-v0": "s2r/DClawTurnFixed-v0",
                             "s2r/DClawTurnPixelsRandom-v0": "s2r/DClawTurnRandom-v0"}
    for pixels, flat in sim.PIXEL_IDS.items():
        assert sim.make_task(pixels) == sim.make_task(flat)
        assert gym.spec(pixels).max_episode_steps == gym.spec(flat).max_episode_steps


@pytest.mark.parametrize("env_id", sorted(sim.PIXEL_IDS))
def test_spaces_and_gymnasiums_check(env_id: str, make_env: Callable[..., gym.Env]) -> None:
    from gymnasium.utils.env_checker import check_env

    env = make_env(env_id, "mujoco")
    space = env.observation_space
    assert isinstance(space, gym.spaces.Dict)
    assert space["image"] == gym.spaces.Box(0, 255, (TOP_CAMERA.height, TOP_CAMERA.width, 3), np.uint8)
    assert space["joint_pos"].shape == (9,) and space["last_action"].shape == (9,) and space["goal"].shape == (1,)
    assert env.action_space == gym.spaces.Box(-1.0, 1.0, (9,), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=r".*A Box observation space (minimum|maximum) value is")
        check_env(env.unwrapped)


def test_the_observation_holds_no_valve_angle_and_the_rest_is_the_flat_envs() -> None:
    task = DClawTurn(variant="random")
    pixels, flat = PixelsEnv(task), SimEnv(task)
    try:
        obs, _ = pixels.reset(seed=3)
        flat_obs, _ = flat.reset(seed=3)
        # Nothing derived from the valve: only the image, the robot's own blocks and the goal.
        assert set(obs) == {"image", "joint_pos", "last_action", "goal"}
        for name in ("joint_pos", "last_action"):
            np.testing.assert_array_equal(obs[name], flat_obs[OBS_LAYOUT.slice(name)])
        assert obs["goal"][0] == flat.goal["target"]
        np.testing.assert_array_equal(obs["image"], pixels.unwrapped_sim.render_camera("top"))
        # Turning the valve changes the image only.
        reading = pixels.unwrapped_sim.read()
        pixels.unwrapped_sim.engine.reset(reading.joint_pos, reading.passive_pos + 1.0)
        np.testing.assert_array_equal(pixels.unwrapped_sim.read().joint_pos, reading.joint_pos)
        turned = pixels._observation(flat_obs)
        assert not np.array_equal(turned["image"], obs["image"])
        for name in ("joint_pos", "last_action", "goal"):
            np.testing.assert_array_equal(turned[name], obs[name])
    finally:
        pixels.close()
        flat.close()


class ExactEstimator:
    """Reads the simulator's valve angle instead of the frame: a perfect camera."""

    def __init__(self, env: PixelsEnv) -> None:
        self.env = env
        self.frames = 0

    def angle(self, frame: np.ndarray) -> float:
        assert frame.shape == (TOP_CAMERA.height, TOP_CAMERA.width, 3) and frame.dtype == np.uint8
        self.frames += 1
        return float(self.env.unwrapped_sim.read().passive_pos[0])


def test_with_an_exact_estimator_the_state_policy_sees_exactly_the_encoder_envs_observation() -> None:
    task = DClawTurn(variant="random")
    pixels, flat = PixelsEnv(task), SimEnv(task)
    seen: list[np.ndarray] = []
    actions = np.random.default_rng(0).uniform(-1, 1, (STEPS, 9)).astype(np.float32)

    def state_policy(obs: np.ndarray) -> np.ndarray:
        seen.append(obs)
        return actions[len(seen) - 1]

    estimator = ExactEstimator(pixels)
    policy = ModularPolicy(estimator, state_policy, task)
    try:
        obs, _ = pixels.reset(seed=5)
        flat_obs, _ = flat.reset(seed=5)
        for t in range(STEPS):
            action = policy(obs)
            np.testing.assert_array_equal(action, actions[t])
            assert seen[t].dtype == np.float32
            np.testing.assert_array_equal(seen[t], flat_obs)
            assert policy.last_angle == pytest.approx(float(pixels.unwrapped_sim.read().passive_pos[0]))
            obs, *_ = pixels.step(action)
            flat_obs, *_ = flat.step(action)
        assert estimator.frames == STEPS
    finally:
        pixels.close()
        flat.close()


def test_a_modular_policy_needs_one_passive_joint_and_named_goals() -> None:
    kitty = sim.make_task("s2r/DKittyStandFixed-v0")
    with pytest.raises(ValueError, match="passive joints"):
        ModularPolicy(ExactEstimator(None), lambda o: o, kitty)  # type: ignore[arg-type]


def test_visual_randomization_applies_to_the_camera_env() -> None:
    distribution = parse_distribution({"task": "dclaw-turn", "parameters": {
        "floor_r": {"dist": "uniform", "low": 0.0, "high": 0.1}, "image_noise_std": {"dist": "uniform", "low": 0.1,
                                                                                        "high": 0.2}}}, "test")
    env = RandomizedEnv(gym.make("s2r/DClawTurnPixels-v0"), distribution)
    nominal = PixelsEnv(DClawTurn())
    try:
        obs, info = env.reset(seed=1)
        assert set(info["params"]) == {"floor_r", "image_noise_std"}
        assert not np.array_equal(obs["image"], nominal.reset(seed=1)[0]["image"])
        assert env.unwrapped.unwrapped_sim.params.get("floor_r") == info["params"]["floor_r"]  # type: ignore[attr-defined]
    finally:
        env.close()
        nominal.close()


# --- s2r eval --perception ------------------------------------------------------------------------------------------
def constant_estimator(path: Path, camera: dict[str, object] | None = None) -> Path:
    """An estimator file (built with onnx.helper) that reads 0 rad from every frame, with valid metadata."""
    from onnx import TensorProto, helper, numpy_helper

    h, w = TOP_CAMERA.height, TOP_CAMERA.width
    nodes = [
        helper.make_node("Cast", ["frames"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["x"], ["mean"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["angle"]),
        helper.make_node("Unsqueeze", ["angle", "axis1"], ["a1"]),
        helper.make_node("Cos", ["a1"], ["c"]),
        helper.make_node("Sin", ["a1"], ["s"]),
        helper.make_node("Concat", ["c", "s"], ["cos_sin"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "constant_estimator",
        [helper.make_tensor_value_info("frames", TensorProto.UINT8, ["batch", h, w, 3])],
        [helper.make_tensor_value_info("angle", TensorProto.FLOAT, ["batch"]),
         helper.make_tensor_value_info("cos_sin", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(np.zeros((), np.float32), "zero"),
         numpy_helper.from_array(np.array([1], np.int64), "axis1")],
    )
    return save_estimator(graph, path, camera)


def save_estimator(graph: Any, path: Path, camera: dict[str, object] | None = None, opset: int = 17) -> Path:
    """``graph`` (frames -> angle, cos_sin) saved as an estimator file with valid metadata for ``camera`` (default
    the claw's top camera)."""
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    meta = PerceptionMetadata("dclaw-turn", camera or camera_json(TOP_CAMERA), "mujoco", 1, 1, 0, "none", (),
                              "test", "2026-01-01T00:00:00+00:00", "")
    for key, value in meta.to_props().items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


def test_eval_runs_the_state_policy_behind_the_estimator_on_the_camera_env(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = constant_estimator(tmp_path / "zero.onnx")
    visual = tmp_path / "floor.yaml"
    visual.write_text("task: dclaw-turn\nparameters:\n  floor_r: {dist: uniform, low: 0.2, high: 1.0}\n")
    assert main(["eval", str(STATE_POLICY), "--perception", str(model), "--randomize", str(visual),
                 "--episodes", "1", "--seed", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["env_id"] == "s2r/DClawTurnPixels-v0" and out["perception"] == str(model)
    assert out["randomize"] == [str(visual)] and out["episodes"] == 1 and out["success_rate"] in (0.0, 1.0)


def test_goal_policies_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from test_goal_deploy import _goal_onnx

    model = constant_estimator(tmp_path / "zero.onnx")
    goal = _goal_onnx(tmp_path / "goal.onnx")
    assert main(["eval", str(goal), "--perception", str(model), "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert "--perception reads the valve for a state policy of s2r/DClawTurnFixed-v0" in err
    assert "was trained on s2r/DClawTurnGoal-v0" in err and "Traceback" not in err


@pytest.mark.parametrize(("extra", "message"), [
    (["--perception", "{tmp}/missing.onnx"], "no ONNX model at '{tmp}/missing.onnx'"),
    (["--perception", str(STATE_POLICY)], "is an exported policy: expected a valve-angle estimator"),
    (["--perception", "{tmp}/narrow.onnx"], "was trained for another camera: 'top' has width 84"),
    (["--perception", "{tmp}/zero.onnx", "--randomize", "{tmp}/missing.yaml"],
     "randomization file '{tmp}/missing.yaml' does not exist"),
    (["--randomize", "{tmp}/kitty.yaml"], "field task is 'dkitty-stand', whose parameters differ from those of "
                                          "'dclaw-turn'"),
])
def test_bad_combinations_exit_2_naming_the_problem(extra: list[str], message: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    constant_estimator(tmp_path / "zero.onnx")
    constant_estimator(tmp_path / "narrow.onnx", {**camera_json(TOP_CAMERA), "width": 64})
    (tmp_path / "kitty.yaml").write_text("task: dkitty-stand\nparameters:\n  floor_friction: {dist: uniform, "
                                         "low: 0.5, high: 1.0}\n")
    argv = ["eval", str(STATE_POLICY), *extra, "--episodes", "1"]
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message.replace("{tmp}", str(tmp_path)) in err and "Traceback" not in err, err


def test_eval_with_perception_runs_without_torch(tmp_path: Path) -> None:
    model = constant_estimator(tmp_path / "zero.onnx")
    no_torch = "import sys; sys.modules['torch'] = None; from s2r.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", no_torch, "eval", str(STATE_POLICY), "--perception", str(model),
                           "--episodes", "1", "--json"], capture_output=True, text=True, cwd=tmp_path, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["env_id"] == "s2r/DClawTurnPixels-v0"
