"""Write a camera policy (:mod:`export.pixels_policy`): an exported state policy of a D'Claw turn task and a
valve-angle estimator joined into one ONNX graph, checked against the modular policy before the file appears.

The graph is the estimator's (prefixed ``perception/``), a few glue nodes, and the state policy's (prefixed
``policy/``). The glue builds the state policy's observation from the estimate as the task's ``observe`` does, block by
block in the layout the state policy's metadata records (:data:`GLUE_BLOCKS`): the joint readings and last action as
they come, ``(cos, sin)`` of the estimate, and the target error wrapped into [-pi, pi). That is a second statement of
``observe``, so nothing is written until the file, run by onnxruntime, gives the actions of
:class:`export.modular_policy.ModularPolicy` (the estimator file, ``task.observe`` and the state policy file) on the
camera env's own observations (rollouts of the modular policy) and on random ones.

Needs onnx and onnxruntime, no torch.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

import s2r
from export.modular_policy import ModularPolicy
from export.onnx_policy import OnnxPolicy
from export.perception_model import OnnxAngleEstimator, camera_json
from export.pixels_policy import (
    ACTION_NODE,
    ACTION_OUTPUT,
    ANGLE_OUTPUT,
    ESTIMATOR_PREFIX,
    FORMAT,
    FORMAT_VERSION,
    GOAL_INPUT,
    IMAGE_INPUT,
    IMAGE_NODE,
    JOINT_POS_INPUT,
    LAST_ACTION_INPUT,
    MODULAR,
    OBSERVATION_NODE,
    POLICY_PREFIX,
    CameraPolicyInfo,
    InputSpec,
    OnnxPixelsPolicy,
)
from policies.envs import make_env
from s2r.core.atomicio import atomic_path
from s2r.core.errors import UserError
from sim.camera import CameraSpec
from sim.pixels_env import PixelsEnv
from sim.tasks import PIXEL_IDS

MAX_ACTION_DIFF = 1e-4
"""Largest |file - modular policy| normalized action an export may show. The glue computes in float32 where
``observe`` computes in float64, a difference of a few 1e-7 in the observation that the network carries into the
action (the claw's test policy: a few 1e-6)."""
MAX_ANGLE_DIFF_RAD = 1e-5
"""Largest |file - estimator file| angle (rad): the same subgraph, run inside a larger graph."""
ROLLOUT_EPISODES = 2
"""Episodes of the modular policy on the camera env whose observations are checked."""
RANDOM_OBSERVATIONS = 64
"""Random observations checked besides: uniform pixels, joints and goals anywhere in their ranges, actions in
[-1, 1]."""
GLUE_BLOCKS = ("joint_pos", "last_action", "valve_cos_sin", "target_error")
"""The observation blocks the glue can build (the D'Claw turn's)."""


@dataclass(frozen=True)
class PixelsVerification:
    """onnxruntime running the file against its reference (the modular policy, or PyTorch) on the same
    observations."""

    rollout_observations: int
    """Observations of the camera env, from rollouts of the modular policy."""
    random_observations: int
    """Random observations."""
    max_action_diff: float
    """Largest |file - reference| over every action entry."""
    max_angle_diff_rad: float
    """Largest |file - reference| angle (rad)."""
    action_limit: float = MAX_ACTION_DIFF
    """The largest action difference that passes."""
    angle_limit_rad: float = MAX_ANGLE_DIFF_RAD
    """The largest angle difference that passes (rad)."""

    @property
    def passed(self) -> bool:
        return self.max_action_diff <= self.action_limit and self.max_angle_diff_rad <= self.angle_limit_rad

    def to_dict(self) -> dict[str, Any]:
        return {"rollout_observations": self.rollout_observations, "random_observations": self.random_observations,
                "max_action_diff": self.max_action_diff, "max_angle_diff_rad": self.max_angle_diff_rad,
                "action_limit": self.action_limit, "angle_limit_rad": self.angle_limit_rad, "passed": self.passed}


@dataclass(frozen=True)
class PixelsExport:
    """What :func:`export_pixels_policy` wrote and measured."""

    path: Path
    """The camera policy file."""
    env_id: str
    """The camera env it runs on."""
    verification: PixelsVerification
    """The check that let it appear."""


def export_pixels_policy(state_policy: str | Path, perception: str | Path, out: str | Path, *,
                         engine: str | None = None, seed: int = 0) -> PixelsExport:
    """Join ``state_policy`` (an exported state policy of a :data:`sim.tasks.PIXEL_IDS` task) and ``perception`` (an
    estimator for that task's camera) into ``out``; rollouts on ``engine`` (default the state policy's) from
    ``seed``. Written only when the check passes; otherwise a ``UserError`` and nothing written."""
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise UserError(f"output {str(out)!r} must end in .onnx")
    state = OnnxPolicy(state_policy)
    info = state.info
    flat_to_pixels = {flat: pixels for pixels, flat in PIXEL_IDS.items()}
    if info is None or info.env_id not in flat_to_pixels:
        trained = "an unknown environment (no s2r metadata)" if info is None else info.env_id
        raise UserError(f"{str(state_policy)!r} was trained on {trained}; a camera policy is made from a state "
                        f"policy of {', '.join(flat_to_pixels)}")
    env_id = flat_to_pixels[info.env_id]
    env = make_env(env_id, engine or info.engine, info.env_kwargs or None, dict_obs=True)
    try:
        inner = env.unwrapped
        assert isinstance(inner, PixelsEnv)
        estimator = OnnxAngleEstimator(perception, camera=inner.camera)
        reference = ModularPolicy(estimator, state.act, inner.task)
        observations = rollouts(env, reference, seed) + random_observations(inner, seed)
    finally:
        env.close()
    batch = {k: np.stack([o[k] for o in observations]) for k in observations[0]}
    expected = np.stack([reference(o) for o in observations])
    expected_angle, _ = estimator.predict(batch[IMAGE_INPUT])
    n_rollout = len(observations) - RANDOM_OBSERVATIONS

    model = compose(onnx.load(str(state.path)), onnx.load(str(estimator.path)),
                    [(b.name, b.start, b.stop) for b in info.obs_layout], reference.goal_names, inner.camera.height,
                    inner.camera.width)
    inputs = input_specs(inner, reference.goal_names)
    assert info.task is not None and info.control_period_s is not None  # a PIXEL_IDS task's policy has them
    described = CameraPolicyInfo(MODULAR, env_id, info.engine, dict(info.env_kwargs), info.task, info.joint_names,
                                 info.control_period_s, info.provenance.algo, info.provenance.training_steps)
    props = {**header(described, inputs, inner.camera), "state_policy": _json(state.metadata),
             "perception": _json(estimator.metadata), "source_policy": str(state_policy),
             "source_perception": str(perception)}
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    with atomic_path(out) as tmp:
        onnx.save(model, str(tmp))
        actions, angles = OnnxPixelsPolicy(tmp, camera=inner.camera).predict(batch)
        verification = PixelsVerification(
            n_rollout, RANDOM_OBSERVATIONS, float(np.max(np.abs(actions.astype(np.float64) - expected))),
            float(np.max(np.abs(angles.astype(np.float64) - expected_angle))))
        if not verification.passed:
            raise UserError(f"the camera policy failed verification: onnxruntime gives actions up to "
                            f"{verification.max_action_diff:.3g} from the modular policy's (limit {MAX_ACTION_DIFF:g}) "
                            f"and angles up to {verification.max_angle_diff_rad:.3g} rad from the estimator's (limit "
                            f"{MAX_ANGLE_DIFF_RAD:g}) over {len(observations)} observations; no file was written")
    return PixelsExport(out, env_id, verification)


# --- the graph ----------------------------------------------------------------------------------------------------
def compose(state: onnx.ModelProto, estimator: onnx.ModelProto, layout: Sequence[tuple[str, int, int]],
            goal_names: Sequence[str], height: int, width: int) -> onnx.ModelProto:
    """One graph: ``image`` -> the estimator -> the glue (with ``joint_pos``, ``last_action``, ``goal``) -> the
    state policy -> ``action``, and the estimate as ``angle``. ``layout`` is the state policy's observation blocks
    ``(name, start, stop)``; ``goal_names`` the order of the ``goal`` input's values."""
    opset = max(_default_opset(state), _default_opset(estimator))
    est = onnx.compose.add_prefix(_at_opset(estimator, opset), ESTIMATOR_PREFIX)
    pol = onnx.compose.add_prefix(_at_opset(state, opset), POLICY_PREFIX)
    est_in, pol_in = _data_inputs(est), _data_inputs(pol)
    if len(est_in) != 1 or len(pol_in) != 1 or len(pol.graph.output) != 1:
        raise UserError("a camera policy joins an estimator of one input and a state policy of one input and one "
                        f"output; got inputs {est_in} and {pol_in}")
    est_angle = ESTIMATOR_PREFIX + ANGLE_OUTPUT
    if est_angle not in [o.name for o in est.graph.output]:
        raise UserError(f"the estimator has no {ANGLE_OUTPUT!r} output")
    n = _block_width(layout, "joint_pos")
    glue, constants, blocks = _glue(layout, goal_names, est_angle)
    nodes = [helper.make_node("Identity", [IMAGE_INPUT], [est_in[0]], name=IMAGE_NODE),
             *est.graph.node, *glue,
             helper.make_node("Concat", blocks, [pol_in[0]], axis=1, name=OBSERVATION_NODE),
             *pol.graph.node,
             helper.make_node("Identity", [pol.graph.output[0].name], [ACTION_OUTPUT], name=ACTION_NODE),
             helper.make_node("Identity", [est_angle], [ANGLE_OUTPUT], name="glue/angle")]
    graph = helper.make_graph(
        nodes, "s2r_camera_policy",
        [helper.make_tensor_value_info(IMAGE_INPUT, TensorProto.UINT8, ["batch", height, width, 3]),
         helper.make_tensor_value_info(JOINT_POS_INPUT, TensorProto.FLOAT, ["batch", n]),
         helper.make_tensor_value_info(LAST_ACTION_INPUT, TensorProto.FLOAT,
                                       ["batch", _block_width(layout, "last_action")]),
         helper.make_tensor_value_info(GOAL_INPUT, TensorProto.FLOAT, ["batch", len(goal_names)])],
        [helper.make_tensor_value_info(ACTION_OUTPUT, TensorProto.FLOAT, ["batch", n]),
         helper.make_tensor_value_info(ANGLE_OUTPUT, TensorProto.FLOAT, ["batch"])],
        [*est.graph.initializer, *pol.graph.initializer, *constants],
        # The junctions' types and shapes too, so that the parts can be cut out again (split_pixels_policy).
        value_info=[*est.graph.input, *est.graph.output, *pol.graph.input, *pol.graph.output, *est.graph.value_info,
                    *pol.graph.value_info])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="s2r export --perception")
    model.ir_version = max(state.ir_version, estimator.ir_version)
    onnx.checker.check_model(model, full_check=True)
    return model


def _glue(layout: Sequence[tuple[str, int, int]], goal_names: Sequence[str], angle: str
          ) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], list[str]]:
    """The nodes and constants that build each observation block from the inputs and the estimate, and the blocks'
    tensor names in layout order."""
    unknown = [name for name, _, _ in layout if name not in GLUE_BLOCKS]
    if unknown:
        raise UserError(f"a camera policy builds the observation blocks {', '.join(GLUE_BLOCKS)}; the state policy "
                        f"also observes {', '.join(unknown)}")
    for name, width in (("valve_cos_sin", 2), ("target_error", 1)):
        if any(n == name for n, _, _ in layout) and _block_width(layout, name) != width:
            raise UserError(f"observation block {name!r} has {_block_width(layout, name)} values; the glue builds "
                            f"{width}")
    if "target" not in goal_names:
        raise UserError(f"the task's goal has no 'target' (it has {', '.join(goal_names)})")
    constants = [numpy_helper.from_array(np.array([1], np.int64), "glue/axis1"),
                 numpy_helper.from_array(np.array([list(goal_names).index("target")], np.int64), "glue/target_index"),
                 numpy_helper.from_array(np.array(math.pi, np.float32), "glue/pi"),
                 numpy_helper.from_array(np.array(2.0 * math.pi, np.float32), "glue/two_pi")]
    node = helper.make_node
    nodes = [
        node("Unsqueeze", [angle, "glue/axis1"], ["glue/angle"]),  # (B, 1)
        node("Cos", ["glue/angle"], ["glue/cos"]),
        node("Sin", ["glue/angle"], ["glue/sin"]),
        node("Concat", ["glue/cos", "glue/sin"], ["glue/valve_cos_sin"], axis=1),
        node("Gather", [GOAL_INPUT, "glue/target_index"], ["glue/target"], axis=1),  # (B, 1)
        node("Sub", ["glue/target", "glue/angle"], ["glue/error"]),
        # (x + pi) mod 2 pi - pi with a floored modulo, as sim.tasks.actions.wrap_angle (numpy's %) does.
        node("Add", ["glue/error", "glue/pi"], ["glue/shifted"]),
        node("Div", ["glue/shifted", "glue/two_pi"], ["glue/turns"]),
        node("Floor", ["glue/turns"], ["glue/whole_turns"]),
        node("Mul", ["glue/whole_turns", "glue/two_pi"], ["glue/whole"]),
        node("Sub", ["glue/shifted", "glue/whole"], ["glue/modulo"]),
        node("Sub", ["glue/modulo", "glue/pi"], ["glue/target_error"]),
    ]
    sources = {"joint_pos": JOINT_POS_INPUT, "last_action": LAST_ACTION_INPUT,
               "valve_cos_sin": "glue/valve_cos_sin", "target_error": "glue/target_error"}
    return nodes, constants, [sources[name] for name, _, _ in layout]


def _block_width(layout: Sequence[tuple[str, int, int]], name: str) -> int:
    for block, start, stop in layout:
        if block == name:
            return stop - start
    raise UserError(f"the state policy's observation has no {name!r} block")


def _default_opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _at_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    return model if _default_opset(model) == opset else onnx.version_converter.convert_version(model, opset)


def _data_inputs(model: onnx.ModelProto) -> list[str]:
    """The graph's inputs that are not initializers (old exporters list both)."""
    weights = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in weights]


def header(info: CameraPolicyInfo, inputs: Sequence[InputSpec], camera: CameraSpec) -> dict[str, str]:
    """The metadata keys every camera policy file has (:mod:`export.pixels_policy`)."""
    return {"s2r_format": FORMAT, "s2r_format_version": str(FORMAT_VERSION), **info.to_props(),
            "inputs": _json([i.to_json() for i in inputs]), "camera": _json(camera_json(camera)),
            "s2r_version": s2r.__version__,
            "export_time_utc": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())}


def input_specs(env: PixelsEnv, goal_names: Sequence[str]) -> tuple[InputSpec, ...]:
    """The graph's inputs on ``env``, as the metadata records them."""
    space = env.observation_space
    assert isinstance(space, gym.spaces.Dict)
    cam = env.camera
    return (InputSpec(IMAGE_INPUT, "uint8", (cam.height, cam.width, 3), f"camera {cam.name!r}, RGB as it comes"),
            InputSpec(JOINT_POS_INPUT, "float32", tuple(space[JOINT_POS_INPUT].shape or ()),
                      "joint positions (rad), action order"),
            InputSpec(LAST_ACTION_INPUT, "float32", tuple(space[LAST_ACTION_INPUT].shape or ()),
                      "the last normalized action, in [-1, 1]"),
            InputSpec(GOAL_INPUT, "float32", (len(goal_names),), f"goal values {', '.join(goal_names)} (SI units)"))


# --- the observations it is checked on ----------------------------------------------------------------------------
def rollouts(env: gym.Env[Any, Any], policy: Callable[[dict[str, NDArray[Any]]], NDArray[Any]], seed: int
             ) -> list[dict[str, NDArray[Any]]]:
    """The observations of :data:`ROLLOUT_EPISODES` episodes of ``policy`` on the camera env ``env``."""
    seen = []
    for episode in range(ROLLOUT_EPISODES):
        obs, _ = env.reset(seed=seed + episode)
        done = False
        while not done:
            seen.append(obs)
            obs, _, terminated, truncated, _ = env.step(policy(obs))
            done = terminated or truncated
    return seen


def random_observations(env: PixelsEnv, seed: int) -> list[dict[str, NDArray[Any]]]:
    """:data:`RANDOM_OBSERVATIONS` observations of ``env``'s kind drawn anywhere: uniform pixels, joints in their
    ranges, actions in [-1, 1], goals in their ranges."""
    rng = np.random.default_rng(seed)
    spec = env.task.spec
    low, high = np.asarray(spec.joint_low, dtype=np.float64), np.asarray(spec.joint_high, dtype=np.float64)
    fields = env.task.goal_fields  # type: ignore[attr-defined]  # PixelsEnv checked the task has them
    cam = env.camera
    return [{IMAGE_INPUT: rng.integers(0, 256, (cam.height, cam.width, 3), np.uint8),
             JOINT_POS_INPUT: rng.uniform(low, high).astype(np.float32),
             LAST_ACTION_INPUT: rng.uniform(-1.0, 1.0, len(low)).astype(np.float32),
             GOAL_INPUT: np.array([rng.uniform(f.low, f.high) for f in fields])}
            for _ in range(RANDOM_OBSERVATIONS)]


def _json(data: Any) -> str:
    return json.dumps(data, sort_keys=True)
