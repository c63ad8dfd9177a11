"""A claw policy for a robot without a valve encoder, in one ONNX file: the camera frame and the robot's own readings
in, the action out.

:mod:`export.pixels_export` writes it from an exported state policy and a valve-angle estimator; this module runs it
on onnxruntime (numpy only, no torch). The graph takes what :class:`sim.pixels_env.PixelsEnv` observes, by name:

- ``image``: uint8 ``(B, H, W, 3)``, the task camera's RGB frame as the camera gives it;
- ``joint_pos`` and ``last_action``: float32 ``(B, n)``, the joint readings (rad) and the last normalized action;
- ``goal``: float32 ``(B, G)``, the commanded goal values in the task's ``goal_fields`` order (SI units);

and gives ``action`` (float32 ``(B, n)``, normalized in [-1, 1]) and ``angle`` (float32 ``(B,)``, the estimator's valve
angle, rad, for the logs). Inside, the estimator's angle becomes the state policy's observation as the task's own
``observe`` builds it (the export checks that against ``observe`` before the file appears).

Metadata keys of schema ``s2r-onnx-pixels-policy`` version 1: ``s2r_format``, ``s2r_format_version``; ``state_policy``
and ``perception``, the two source files' own ``metadata_props`` (JSON objects, parsed with their own readers);
``inputs`` (JSON list of ``{"name", "dtype", "shape", "what"}``, shapes without the batch); ``camera`` (the
estimator's); ``env_id`` (the camera env, :data:`sim.tasks.PIXEL_IDS`); ``verification`` (JSON, what the export
measured); ``s2r_version``, ``export_time_utc``, ``source_policy``, ``source_perception``.
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
    parse_perception_metadata,
)
from s2r.core.errors import UserError
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
    :meth:`predict` runs a batch. ``info`` is the state policy's :class:`PolicyMetadata` (task, joints, control
    period, training provenance), ``perception`` the estimator's; with ``camera`` the file is checked against that
    camera at load. ``last_angle`` is the estimate of the last :meth:`act` (rad)."""

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
                            "expected a file written by `s2r export POLICY --perception MODEL.onnx`")
        self.info, self.perception, self.inputs = parse_pixels_metadata(self.metadata, name)
        got_in = [(i.name, i.type) for i in self._session.get_inputs()]
        want_in = [(s.name, "tensor(uint8)" if s.dtype == "uint8" else "tensor(float)") for s in self.inputs]
        got_out = [o.name for o in self._session.get_outputs()]
        if got_in != want_in or got_out != list(OUTPUTS):
            raise UserError(f"{name!r}: the graph takes {got_in} and gives {got_out}; its metadata says {want_in} "
                            f"and {list(OUTPUTS)}; the file is inconsistent")
        self._shapes = {s.name: s.shape for s in self.inputs}
        self.camera: dict[str, Any] = self.perception.camera
        """The camera the estimator was trained for (:func:`export.perception_model.camera_json`)."""
        self.env_id = self.metadata.get("env_id", "")
        """The camera env it runs on (:data:`sim.tasks.PIXEL_IDS`)."""
        self.last_angle: float | None = None
        """The estimate of the last :meth:`act` (rad)."""
        if camera is not None:
            self.check_camera(camera)

    def check_camera(self, camera: CameraSpec) -> None:
        """A ``UserError`` naming every way ``camera`` differs from the one the estimator was trained for."""
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


def parse_pixels_metadata(props: Mapping[str, str], source: str
                          ) -> tuple[PolicyMetadata, PerceptionMetadata, tuple[InputSpec, ...]]:
    """The state policy's and the estimator's metadata and the inputs of a camera policy's ``metadata_props``; a
    missing or malformed key is a ``UserError`` naming it."""
    version = props.get("s2r_format_version")
    if version != str(FORMAT_VERSION):
        raise UserError(f"{source!r}: metadata key s2r_format_version is {version!r}, expected {FORMAT_VERSION!r} "
                        "(this s2r reads that version)")
    parts: dict[str, Any] = {}
    for key in ("state_policy", "perception", "inputs"):
        try:
            parts[key] = json.loads(props[key])
        except KeyError:
            raise UserError(f"{source!r}: metadata key {key!r} is missing (the file is damaged or was not written by "
                            "`s2r export --perception`)") from None
        except json.JSONDecodeError as exc:
            raise UserError(f"{source!r}: metadata key {key!r} is not JSON ({exc})") from None
    if not isinstance(parts["state_policy"], dict) or not isinstance(parts["perception"], dict):
        raise UserError(f"{source!r}: metadata keys 'state_policy' and 'perception' must be JSON objects")
    info = parse_metadata({str(k): str(v) for k, v in parts["state_policy"].items()}, f"{source} (its state policy)")
    perception = parse_perception_metadata({str(k): str(v) for k, v in parts["perception"].items()},
                                           f"{source} (its estimator)")
    try:
        inputs = tuple(InputSpec(str(i["name"]), str(i["dtype"]), tuple(int(n) for n in i["shape"]), str(i["what"]))
                       for i in parts["inputs"])
    except (TypeError, KeyError, ValueError) as exc:
        raise UserError(f"{source!r}: metadata key 'inputs' must be a list of {{name, dtype, shape, what}} ({exc})") \
            from None
    if tuple(i.name for i in inputs) != INPUTS:
        raise UserError(f"{source!r}: metadata key 'inputs' names {[i.name for i in inputs]}, expected {list(INPUTS)}")
    return info, perception, inputs


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
    parse_pixels_metadata(props, name)
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
