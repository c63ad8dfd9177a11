"""The exported valve-angle estimator as a robot's computer runs it: an onnxruntime session, its metadata, its checks.

The file (written by :mod:`export.perception_export`) takes the task camera's frames as they come, uint8
``(B, H, W, 3)`` RGB (input ``frames``; the scaling is inside the graph), and gives ``angle`` ``(B,)``, the valve
angle (rad, in [-pi, pi]), and ``cos_sin`` ``(B, 2)``, its unit direction. Its ``metadata_props`` record the camera it
was trained for (name, resolution, intrinsics, pose) and the scenes it was trained on (engine, sample count, the
visual randomization), so a deployment can check that its camera is the one the model knows.

Imports numpy and onnxruntime only (no torch).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from export.onnx_policy import session_options
from s2r.core.errors import UserError
from s2r.core.fields import Fields
from sim.camera import CameraSpec

FORMAT = "s2r-onnx-perception"
"""``s2r_format`` of an exported estimator (an exported policy's is ``s2r-onnx-policy``)."""
FORMAT_VERSION = 1
"""Version of the metadata schema below."""
INPUT_NAME = "frames"
OUTPUT_ANGLE = "angle"
OUTPUT_COS_SIN = "cos_sin"
CAMERA_TOLERANCE = 1e-6
"""Largest difference (m, pixels, or rotation-matrix entries) at which a camera still counts as the recorded one."""


def camera_json(camera: CameraSpec) -> dict[str, Any]:
    """A camera as the metadata records it: name, size (pixels), intrinsics ``fx, fy, cx, cy`` (pixels), position
    (m) and the world-from-camera rotation (rows; camera x right, y up, looking along -z)."""
    fx, fy, cx, cy = camera.intrinsics
    return {"name": camera.name, "width": camera.width, "height": camera.height,
            "intrinsics": [float(fx), float(fy), float(cx), float(cy)],
            "position": [float(v) for v in camera.position],
            "rotation": [[float(v) for v in row] for row in camera.rotation]}


@dataclass(frozen=True)
class PerceptionMetadata:
    """What an exported estimator reads, from which camera, and what it was trained on."""

    task: str
    """Task spec name whose valve it reads (``dclaw-turn``)."""
    camera: dict[str, Any]
    """The camera it was trained for (:func:`camera_json`; the nominal pose, before any jitter)."""
    engine: str
    """Engine that rendered the training images."""
    samples: int
    """Training images."""
    epochs: int
    """Passes over them."""
    seed: int
    """Seed of the images and of training."""
    randomization: str
    """The visual randomization of the training images: ``none`` or the distribution as canonical JSON."""
    skipped_params: tuple[str, ...]
    """Parameters of that distribution the engine could not render, left out."""
    s2r_version: str
    """``s2r.__version__`` of the exporter."""
    export_time_utc: str
    """When the file was written (ISO 8601, UTC)."""
    source_checkpoint: str
    """The checkpoint exported."""

    def to_props(self) -> dict[str, str]:
        return {"s2r_format": FORMAT, "s2r_format_version": str(FORMAT_VERSION), "task": self.task,
                "output": "valve_angle_rad", "camera": json.dumps(self.camera), "engine": self.engine,
                "samples": str(self.samples), "epochs": str(self.epochs), "seed": str(self.seed),
                "randomization": self.randomization, "skipped_params": json.dumps(list(self.skipped_params)),
                "s2r_version": self.s2r_version, "export_time_utc": self.export_time_utc,
                "source_checkpoint": self.source_checkpoint}

    @property
    def distribution(self) -> dict[str, Any] | None:
        """The training distribution as YAML data (``None``: trained on the nominal scene)."""
        return None if self.randomization == "none" else dict(json.loads(self.randomization))


class _Props(Fields):
    noun = "metadata key"
    missing_note = " (the file is damaged or was not written by `s2r train-perception`)"


def parse_perception_metadata(props: dict[str, str], source: str) -> PerceptionMetadata:
    """The metadata of an exported estimator; a missing or malformed key is a ``UserError`` naming it."""
    data: dict[str, Any] = dict(props)
    for key in ("s2r_format_version", "samples", "epochs", "seed", "camera", "skipped_params"):
        try:
            data[key] = json.loads(data[key]) if key in data else None
        except json.JSONDecodeError:
            pass
    r = _Props(data, "", source)
    if r.text("s2r_format") != FORMAT:
        r.fail("s2r_format", f"{FORMAT!r} (an estimator written by `s2r train-perception`)", r.raw("s2r_format"))
    if r.integer("s2r_format_version") != FORMAT_VERSION:
        r.fail("s2r_format_version", f"{FORMAT_VERSION} (this s2r reads that version)", r.raw("s2r_format_version"))
    camera = parse_camera(r.child("camera"))
    # An empty list is a model whose engine rendered every parameter (Fields.strings wants at least one).
    skipped = () if r.raw("skipped_params") == [] else r.strings("skipped_params", what="parameter names")
    return PerceptionMetadata(
        task=r.text("task"), camera=camera, engine=r.text("engine"), samples=r.integer("samples", low=1),
        epochs=r.integer("epochs", low=1), seed=r.integer("seed", low=0), randomization=r.text("randomization"),
        skipped_params=skipped, s2r_version=r.text("s2r_version"),
        export_time_utc=r.text("export_time_utc"), source_checkpoint=r.text("source_checkpoint", empty=True))


def parse_camera(cam: Fields) -> dict[str, Any]:
    """A camera as :func:`camera_json` writes it, read back field by field (a bad one is a ``UserError`` naming it)."""
    return {"name": cam.text("name"), "width": cam.count("width"), "height": cam.count("height"),
            "intrinsics": list(cam.numbers("intrinsics", 4)), "position": list(cam.numbers("position", 3)),
            "rotation": [list(row) for row in cam.matrix("rotation", 3, 3)]}


def camera_problems(recorded: dict[str, Any], camera: CameraSpec) -> list[str]:
    """How ``camera`` differs from the ``recorded`` one (empty when it is the same)."""
    ours = camera_json(camera)
    problems = []
    for key in ("name", "width", "height"):
        if ours[key] != recorded[key]:
            problems.append(f"{key} {ours[key]!r} (the model's camera has {recorded[key]!r})")
    for key in ("intrinsics", "position", "rotation"):
        diff = float(np.max(np.abs(np.asarray(ours[key]) - np.asarray(recorded[key]))))
        if diff > CAMERA_TOLERANCE:
            problems.append(f"{key} {ours[key]} (the model's camera has {recorded[key]})")
    return problems


class OnnxAngleEstimator:
    """An exported valve-angle estimator: :meth:`angle` of one frame, :meth:`predict` of a batch.

    Frames are the camera's RGB uint8 images, ``(H, W, 3)`` or a batch ``(B, H, W, 3)``, at the recorded resolution.
    With ``camera`` the file is checked at load against that camera (:meth:`check_camera`)."""

    def __init__(self, path: str | os.PathLike[str], camera: CameraSpec | None = None) -> None:
        self.path = Path(path)
        name = str(self.path)
        if not self.path.is_file():
            raise UserError(f"no ONNX model at {name!r}")
        try:
            self._session = ort.InferenceSession(name, session_options(), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types (InvalidProtobuf, Fail, ...) for damaged files
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"cannot load ONNX model {name!r}: the file is truncated, corrupted or not an ONNX "
                            f"model ({first})") from exc
        self.metadata: dict[str, str] = dict(self._session.get_modelmeta().custom_metadata_map)
        if self.metadata.get("s2r_format") != FORMAT:
            what = "an exported policy" if self.metadata.get("s2r_format") == "s2r-onnx-policy" else "not an estimator"
            raise UserError(f"{name!r} is {what}: expected a valve-angle estimator written by "
                            "`s2r train-perception`")
        self.info = parse_perception_metadata(self.metadata, name)
        inputs = self._session.get_inputs()
        outputs = [o.name for o in self._session.get_outputs()]
        if len(inputs) != 1 or inputs[0].type != "tensor(uint8)" or len(inputs[0].shape) != 4 \
                or outputs != [OUTPUT_ANGLE, OUTPUT_COS_SIN]:
            raise UserError(f"{name!r}: expected one uint8 (batch, H, W, 3) input and outputs {OUTPUT_ANGLE!r}, "
                            f"{OUTPUT_COS_SIN!r}; got {[(i.name, i.type, i.shape) for i in inputs]} -> {outputs}")
        self.input_name = inputs[0].name
        self.frame_shape = (int(self.info.camera["height"]), int(self.info.camera["width"]), 3)
        """The ``(H, W, 3)`` of one frame."""
        if camera is not None:
            self.check_camera(camera)

    def check_camera(self, camera: CameraSpec) -> None:
        """A ``UserError`` naming every way ``camera`` differs from the one the model was trained for."""
        problems = camera_problems(self.info.camera, camera)
        if problems:
            raise UserError(f"{str(self.path)!r} was trained for another camera: {camera.name!r} has "
                            + "; ".join(problems))

    def predict(self, frames: NDArray[np.uint8]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Angles (rad) and unit (cos, sin) directions of ``frames``: ``()`` and ``(2,)`` for one frame ``(H, W,
        3)``, ``(B,)`` and ``(B, 2)`` for a batch."""
        x = np.asarray(frames)
        if x.dtype != np.uint8:
            raise UserError(f"frames must be uint8 RGB images, got dtype {x.dtype}")
        single = x.ndim == 3
        batch = x[None] if single else x
        if batch.ndim != 4 or batch.shape[1:] != self.frame_shape:
            raise UserError(f"frames must be {self.frame_shape} or (batch, *{self.frame_shape}) uint8 images of "
                            f"camera {self.info.camera['name']!r}, got shape {x.shape}")
        angle, cos_sin = self._session.run([OUTPUT_ANGLE, OUTPUT_COS_SIN],
                                           {self.input_name: np.ascontiguousarray(batch)})
        return (angle[0], cos_sin[0]) if single else (angle, cos_sin)

    def angle(self, frame: NDArray[np.uint8]) -> float:
        """The valve angle (rad) one frame ``(H, W, 3)`` shows."""
        if np.ndim(frame) != 3:
            raise UserError(f"angle takes one (H, W, 3) frame, got shape {np.shape(frame)}; use predict for a batch")
        return float(self.predict(frame)[0])
