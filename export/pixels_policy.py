"""A claw policy for a robot without a valve encoder, in one ONNX file: the camera frame and the robot's own readings
in, the action out.

Two kinds share the contract. ``modular``: a state policy behind a valve-angle estimator, joined by
:mod:`export.pixels_export` (inside, the estimate becomes the state policy's observation as the task's ``observe``
builds it; the export checks that against ``observe`` before the file appears). ``end_to_end``: the actor of
``s2r train-pixels`` (:mod:`export.pixels_sac_export`), whose angle is its image features' auxiliary read-out. This
module runs either on onnxruntime (numpy only, no torch). The graph takes what :class:`sim.pixels_env.PixelsEnv`
observes, by name:

- ``image``: uint8 ``(B, H, W, 3)``, the task camera's RGB frame as the camera gives it;
- ``joint_pos`` and ``last_action``: float32 ``(B, n)``, the joint readings (rad) and the last normalized action;
- ``goal``: float32 ``(B, G)``, the commanded goal values in the task's ``goal_fields`` order (SI units);

and gives ``action`` (float32 ``(B, n)``, normalized in [-1, 1]) and ``angle`` (float32 ``(B,)``, the valve angle
the policy read, rad, for the logs).

Metadata keys of schema ``s2r-onnx-pixels-policy`` version 1, both kinds: ``s2r_format``, ``s2r_format_version``,
``kind``; ``env_id`` (the camera env, :data:`sim.tasks.PIXEL_IDS`), ``engine``, ``env_kwargs`` (JSON), ``task``,
``joint_names`` (JSON, action order), ``control_period_s``, ``algo``, ``training_steps``; ``inputs`` (JSON list of
``{"name", "dtype", "shape", "what"}``, shapes without the batch); ``camera`` (JSON, as
:func:`export.perception_model.camera_json` writes it); ``s2r_version``, ``export_time_utc``. ``modular`` adds
``state_policy`` and ``perception``, the two source files' own ``metadata_props`` (JSON objects, parsed with their
own readers), ``source_policy`` and ``source_perception``; ``end_to_end`` adds ``training`` (JSON, the learner's
settings) and ``source_checkpoint``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.utils
import onnxruntime as ort
from numpy.typing import NDArray

from export.metadata import PolicyMetadata, parse_metadata
from export.onnx_policy import PIXELS_FORMAT, session_options
from export.perception_model import (
    OUTPUT_ANGLE,
    OUTPUT_COS_SIN,
    PerceptionMetadata,
    camera_problems,
    parse_camera,
    parse_perception_metadata,
)
from s2r.core.errors import UserError
from s2r.core.fields import Fields
from sim.camera import CameraSpec

FORMAT = PIXELS_FORMAT
"""``s2r_format`` of a camera policy (a state policy's is ``s2r-onnx-policy``, an estimator's
``s2r-onnx-perception``)."""
FORMAT_VERSION = 1
IMAGE_INPUT = "image"
JOINT_POS_INPUT = "joint_pos"
LAST_ACTION_INPUT = "last_action"
GOAL_INPUT = "goal"
INPUTS = (IMAGE_INPUT, JOINT_POS_INPUT, LAST_ACTION_INPUT, GOAL_INPUT)
"""The graph's inputs in order: :class:`sim.pixels_env.PixelsEnv`'s observation keys."""
ACTION_OUTPUT = "action"
ANGLE_OUTPUT = "angle"
OUTPUTS = (ACTION_OUTPUT, ANGLE_OUTPUT)
ESTIMATOR_PREFIX = "perception/"
"""Prefix of the estimator's tensors and nodes inside the graph."""
POLICY_PREFIX = "policy/"
"""Prefix of the state policy's."""
IMAGE_NODE = "glue/image"
"""The node that hands ``image`` to the estimator's input."""
OBSERVATION_NODE = "glue/observation"
"""The node that builds the state policy's observation (its output is the policy's input)."""
ACTION_NODE = "glue/action"
"""The node that hands the state policy's output to ``action``."""


@dataclass(frozen=True)
class InputSpec:
    """One input of the graph, as the metadata records it."""

    name: str
    """The input's name (one of :data:`INPUTS`)."""
    dtype: str
    """``uint8`` for the image, ``float32`` for the rest."""
    shape: tuple[int, ...]
    """Its shape without the batch dimension."""
    what: str
    """What it holds, in words, with its unit."""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "what": self.what}


MODULAR, END_TO_END = "modular", "end_to_end"
KINDS = (MODULAR, END_TO_END)
"""What a camera policy is inside: a state policy behind an estimator, or one network from pixels."""


@dataclass(frozen=True)
class CameraPolicyInfo:
    """What a camera policy file says it is and where it comes from (both kinds)."""

    kind: str
    """One of :data:`KINDS`."""
    env_id: str
    """The camera env it runs on."""
    engine: str
    """Physics engine it trained on."""
    env_kwargs: dict[str, Any]
    """Extra ``gym.make`` keyword arguments it trained with."""
    task: str
    """Task spec name (``dclaw-turn``)."""
    joint_names: tuple[str, ...]
    """Actuated joints in action order."""
    control_period_s: float
    """Time between two actions (s)."""
    algo: str
    """Learner that trained it (the state policy's, for a modular policy)."""
    training_steps: int
    """Environment steps it trained for."""

    def to_props(self) -> dict[str, str]:
        return {"kind": self.kind, "env_id": self.env_id, "engine": self.engine,
                "env_kwargs": json.dumps(self.env_kwargs, sort_keys=True), "task": self.task,
                "joint_names": json.dumps(list(self.joint_names)), "control_period_s": repr(self.control_period_s),
                "algo": self.algo, "training_steps": str(self.training_steps)}


class _Props(Fields):
    noun = "metadata key"
    missing_note = " (the file is damaged or was not written by `s2r export`)"


def is_pixels_policy(props: Mapping[str, str]) -> bool:
    """Whether ``metadata_props`` are a camera policy's."""
    return props.get("s2r_format") == FORMAT


def pixels_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an ONNX file holding a camera policy (``False`` for anything else, unreadable files
    included: their own loader says what is wrong with them)."""
    file = Path(path)
    if file.suffix.lower() != ".onnx" or not file.is_file():
        return False
    try:
        model = onnx.load(str(file), load_external_data=False)
    except Exception:  # onnx raises DecodeError and others for damaged files; their loader reports them
        return False
    return is_pixels_policy({p.key: p.value for p in model.metadata_props})


class OnnxPixelsPolicy:
    """A camera policy file: :meth:`act` (also ``policy(obs)``) maps one :class:`sim.pixels_env.PixelsEnv`
    observation (a dict of ``image``, ``joint_pos``, ``last_action``, ``goal``) to the normalized action;
    :meth:`predict` runs a batch. ``info`` is what the file is (:class:`CameraPolicyInfo`); a modular one also has
    its state policy's :class:`PolicyMetadata` (``state_info``) and its estimator's ``perception`` (else ``None``).
    With ``camera`` the file is checked against that camera at load. ``last_angle`` is the angle read in the last
    :meth:`act` (rad)."""

    def __init__(self, path: str | os.PathLike[str], camera: CameraSpec | None = None) -> None:
        self.path = Path(path)
        name = str(self.path)
        if not self.path.is_file():
            raise UserError(f"no ONNX camera policy at {name!r}")
        try:
            self._session = ort.InferenceSession(name, session_options(), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types (InvalidProtobuf, Fail, ...) for damaged files
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"cannot load ONNX camera policy {name!r}: the file is truncated, corrupted or not an "
                            f"ONNX model ({first})") from exc
        self.metadata: dict[str, str] = dict(self._session.get_modelmeta().custom_metadata_map)
        if not is_pixels_policy(self.metadata):
            raise UserError(f"{name!r} is not a camera policy (s2r_format {self.metadata.get('s2r_format')!r}): "
                            "expected a file written by `s2r export POLICY --perception MODEL.onnx` or by "
                            "`s2r export` of an `s2r train-pixels` run")
        parsed = parse_pixels_metadata(self.metadata, name)
        self.info, self.state_info, self.perception, self.inputs, self.camera = parsed
        got_in = [(i.name, i.type) for i in self._session.get_inputs()]
        want_in = [(s.name, "tensor(uint8)" if s.dtype == "uint8" else "tensor(float)") for s in self.inputs]
        got_out = [o.name for o in self._session.get_outputs()]
        if got_in != want_in or got_out != list(OUTPUTS):
            raise UserError(f"{name!r}: the graph takes {got_in} and gives {got_out}; its metadata says {want_in} "
                            f"and {list(OUTPUTS)}; the file is inconsistent")
        self.env_id = self.info.env_id
        """The camera env it runs on (:data:`sim.tasks.PIXEL_IDS`)."""
        self.last_angle: float | None = None
        """The estimate of the last :meth:`act` (rad)."""
        if camera is not None:
            self.check_camera(camera)

    def check_camera(self, camera: CameraSpec) -> None:
        """A ``UserError`` naming every way ``camera`` differs from the one the policy was trained for."""
        problems = camera_problems(self.camera, camera)
        if problems:
            raise UserError(f"{str(self.path)!r} was trained for another camera: {camera.name!r} has "
                            + "; ".join(problems))

    def predict(self, batch: Mapping[str, NDArray[Any]]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Actions ``(B, n)`` and angle estimates ``(B,)`` of a batch of observations (each key with a leading
        batch dimension)."""
        feeds: dict[str, NDArray[Any]] = {}
        sizes = set()
        for spec in self.inputs:
            if spec.name not in batch:
                raise ValueError(f"observation has no {spec.name!r} ({spec.what}); it has {', '.join(batch)}")
            x = np.asarray(batch[spec.name])
            if x.shape[1:] != spec.shape:
                raise ValueError(f"{spec.name!r} must be (batch, {', '.join(map(str, spec.shape))}), got {x.shape}")
            if spec.dtype == "uint8":
                if x.dtype != np.uint8:
                    raise ValueError(f"{spec.name!r} must be uint8 RGB, got dtype {x.dtype}")
            else:
                x = x.astype(np.float32)
                if not np.isfinite(x).all():
                    raise ValueError(f"{spec.name!r} has non-finite value(s) (NaN or inf)")
            feeds[spec.name] = np.ascontiguousarray(x)
            sizes.add(x.shape[0])
        if len(sizes) != 1:
            raise ValueError(f"the inputs' batch sizes differ: {sorted(sizes)}")
        action, angle = self._session.run(list(OUTPUTS), feeds)
        return action, angle

    def act(self, obs: Mapping[str, NDArray[Any]]) -> NDArray[np.float32]:
        """The normalized action for one observation (each key without a batch dimension)."""
        action, angle = self.predict({k: np.asarray(v)[None] for k, v in obs.items()})
        self.last_angle = float(angle[0])
        return action[0]

    __call__ = act

    def act_frame(self, frame: NDArray[np.uint8], joint_pos: NDArray[Any], last_action: NDArray[Any],
                  goal: NDArray[Any]) -> NDArray[np.float32]:
        """The action for one cycle on a robot: its camera frame, joint readings (rad), last action and goal values
        (:class:`robot.controller.FramePolicy`)."""
        return self.act({IMAGE_INPUT: frame, JOINT_POS_INPUT: joint_pos, LAST_ACTION_INPUT: last_action,
                         GOAL_INPUT: goal})

    def angle(self, frame: NDArray[np.uint8]) -> float:
        """The valve angle (rad) the policy reads from one frame, for the logs (the vector inputs zero: the angle
        depends on the image alone, in both kinds)."""
        zeros = {s.name: np.zeros((1, *s.shape), np.float32) for s in self.inputs if s.name != IMAGE_INPUT}
        return float(self.predict({IMAGE_INPUT: np.asarray(frame)[None], **zeros})[1][0])


def parse_pixels_metadata(props: Mapping[str, str], source: str
                          ) -> tuple[CameraPolicyInfo, PolicyMetadata | None, PerceptionMetadata | None,
                                     tuple[InputSpec, ...], dict[str, Any]]:
    """What a camera policy's ``metadata_props`` say: its :class:`CameraPolicyInfo`, a modular one's state policy
    and estimator metadata (else ``None``), its inputs and its camera; a missing or malformed key is a ``UserError``
    naming it."""
    data: dict[str, Any] = dict(props)
    for key in ("s2r_format_version", "env_kwargs", "joint_names", "control_period_s", "training_steps", "inputs",
                "camera", "state_policy", "perception", "training"):
        if key in data:
            try:
                data[key] = json.loads(data[key])
            except json.JSONDecodeError:
                pass  # the field's own check names what it should be
    r = _Props(data, "", source)
    if r.integer("s2r_format_version") != FORMAT_VERSION:
        r.fail("s2r_format_version", f"{FORMAT_VERSION} (this s2r reads that version)", r.raw("s2r_format_version"))
    kind = r.choice("kind", KINDS)
    env_kwargs = r.raw("env_kwargs")
    if not isinstance(env_kwargs, dict):
        r.fail("env_kwargs", "a JSON object", env_kwargs)
    info = CameraPolicyInfo(kind, r.text("env_id"), r.text("engine"), env_kwargs, r.text("task"),
                            r.strings("joint_names", what="joint names"), r.number("control_period_s", low=0.0),
                            r.text("algo"), r.integer("training_steps", low=0))
    camera = parse_camera(r.child("camera"))
    inputs = []
    for item in r.items("inputs"):
        shape = item.raw("shape")
        size = len(shape) if isinstance(shape, list) and shape else 1
        inputs.append(InputSpec(item.text("name"), item.choice("dtype", ("uint8", "float32")),
                                tuple(int(n) for n in item.numbers("shape", size)), item.text("what")))
    if tuple(i.name for i in inputs) != INPUTS:
        r.fail("inputs", f"the inputs {list(INPUTS)} in that order", [i.name for i in inputs])
    state_info = perception = None
    if kind == MODULAR:
        for key in ("state_policy", "perception"):
            if not isinstance(r.raw(key), dict):
                r.fail(key, "a JSON object (the source file's own metadata)", r.raw(key))
        state_info = parse_metadata({str(k): str(v) for k, v in r.raw("state_policy").items()},
                                    f"{source} (its state policy)")
        perception = parse_perception_metadata({str(k): str(v) for k, v in r.raw("perception").items()},
                                               f"{source} (its estimator)")
    return info, state_info, perception, tuple(inputs), camera


def split_pixels_policy(path: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """The state policy and the estimator of the camera policy ``path``, cut out of its graph and written to
    ``out_dir`` (``state_policy.onnx``, ``perception.onnx``) with their own metadata, as ``s2r deploy`` runs them:
    the weights are the file's; the glue between them is the controller's ``task.observe``, which the export checked
    the glue against."""
    name = str(path)
    try:
        model = onnx.load(name)
    except Exception as exc:  # onnx raises DecodeError and others for damaged files
        raise UserError(f"cannot load ONNX camera policy {name!r}: {exc}") from exc
    props = {p.key: p.value for p in model.metadata_props}
    if not is_pixels_policy(props):
        raise UserError(f"{name!r} is not a camera policy (s2r_format {props.get('s2r_format')!r})")
    if parse_pixels_metadata(props, name)[0].kind != MODULAR:
        raise UserError(f"{name!r} is an end-to-end camera policy (one network from pixels): it has no state policy "
                        "and estimator to run on the robot's camera path; `s2r eval` runs it in simulation")
    nodes = {n.name: n for n in model.graph.node}
    missing = [n for n in (IMAGE_NODE, OBSERVATION_NODE, ACTION_NODE) if n not in nodes]
    if missing:
        raise UserError(f"{name!r}: the graph has no node {', '.join(missing)}; the file is damaged")
    extractor = onnx.utils.Extractor(model)
    estimator_out = [ESTIMATOR_PREFIX + OUTPUT_ANGLE, ESTIMATOR_PREFIX + OUTPUT_COS_SIN]
    cuts = ((ESTIMATOR_PREFIX, [nodes[IMAGE_NODE].output[0]], estimator_out, props["perception"], "perception.onnx"),
            (POLICY_PREFIX, [nodes[OBSERVATION_NODE].output[0]], [nodes[ACTION_NODE].input[0]], props["state_policy"],
             "state_policy.onnx"))
    written = []
    for prefix, inputs, outputs, meta, file_name in cuts:
        part = extractor.extract_model(inputs, outputs)
        _strip_prefix(part.graph, prefix)
        for key, value in json.loads(meta).items():
            part.metadata_props.add(key=str(key), value=str(value))
        target = Path(out_dir) / file_name
        onnx.save(part, str(target))
        written.append(target)
    return written[1], written[0]


def _strip_prefix(graph: onnx.GraphProto, prefix: str) -> None:
    def strip(text: str) -> str:
        return text[len(prefix):] if text.startswith(prefix) else text

    for node in graph.node:
        node.name = strip(node.name)
        node.input[:] = [strip(t) for t in node.input]
        node.output[:] = [strip(t) for t in node.output]
    for tensor in graph.initializer:
        tensor.name = strip(tensor.name)
    for info in (*graph.input, *graph.output, *graph.value_info):
        info.name = strip(info.name)
