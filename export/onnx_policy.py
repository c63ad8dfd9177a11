"""The exported policy as the robot runs it: an onnxruntime session with checked inputs and metadata.

Imports numpy and onnxruntime only (no torch): this is all the robot side needs to run a policy.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from export.metadata import ACTION_NORMALIZED, GoalSpec, PolicyMetadata, has_s2r_metadata, parse_metadata
from s2r.core.errors import UserError
from sim.tasks.spec import ObsField, ObsLayout

if TYPE_CHECKING:
    from sim.tasks.spec import TaskSpec

CONTROL_PERIOD_TOLERANCE_S = 1e-9
"""Control periods closer than this (s) count as equal."""
_FLOAT_INPUT = "tensor(float)"
PIXELS_FORMAT = "s2r-onnx-pixels-policy"
"""``s2r_format`` of a camera policy (:mod:`export.pixels_policy`, which imports this module and names it too)."""


class RobotConfig(Protocol):
    """What the compatibility check reads of a robot's config (:class:`robot.config.RobotConfig` is one; the robot
    package sits above this one and is not imported)."""

    @property
    def source(self) -> str: ...
    @property
    def task(self) -> str: ...
    def task_spec(self) -> TaskSpec: ...


def session_options() -> ort.SessionOptions:
    """One intra-op and one inter-op thread, sequential execution: the lowest and steadiest latency at batch 1."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only: onnxruntime's warnings are not addressed to the user
    return opts


def _open_session(path: Path) -> ort.InferenceSession:
    if not path.exists():
        raise UserError(f"no ONNX policy at {str(path)!r}")
    if not path.is_file():
        raise UserError(f"ONNX policy {str(path)!r} is not a file")
    try:
        return ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types (InvalidProtobuf, Fail, ...) for damaged files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot load ONNX policy {str(path)!r}: the file is truncated, corrupted or not an "
                        f"ONNX model ({first})") from exc


def _static_dim(dim: Any) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


class OnnxPolicy:
    """An exported policy: ``act(obs)`` (also ``policy(obs)``) maps float32 observations to actions.

    ``obs`` is one observation ``(O,)`` or a batch ``(B, O)``; the action has the same leading shape.
    What the action is (normalized in [-1, 1] for s2r tasks) is ``info.action_output``.
    ``metadata`` is the raw ``metadata_props`` dict, ``info`` the parsed :class:`PolicyMetadata`
    (``None`` for an ONNX file not written by ``s2r export``). With ``task_spec`` or ``robot_config``
    the file is checked (:meth:`check_compatible`) at load. Single observations run through buffers
    bound once at load, so one object must not be called from two threads at a time.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        task_spec: TaskSpec | None = None,
        robot_config: RobotConfig | None = None,
    ) -> None:
        self.path = Path(path)
        self._session = _open_session(self.path)
        name = str(self.path)
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if self._session.get_modelmeta().custom_metadata_map.get("s2r_format") == PIXELS_FORMAT:
            raise UserError(f"{name!r} is a camera policy (the camera frame and the joint readings in, written by "
                            "`s2r export`), not a state policy: `s2r eval` and `s2r deploy` run it as it is")
        if len(inputs) != 1 or len(outputs) != 1:
            raise UserError(f"ONNX policy {name!r} has {len(inputs)} inputs and {len(outputs)} outputs; "
                            "a policy has one observation input and one action output")
        inp, out = inputs[0], outputs[0]
        if inp.type != _FLOAT_INPUT or len(inp.shape) != 2 or len(out.shape) != 2:
            raise UserError(f"ONNX policy {name!r}: input {inp.name!r} is {inp.type} {inp.shape} and output "
                            f"{out.name!r} is {out.shape}; expected a float32 (batch, obs) input and a "
                            "(batch, action) output")
        self.metadata: dict[str, str] = dict(self._session.get_modelmeta().custom_metadata_map)
        self.info: PolicyMetadata | None = parse_metadata(self.metadata, name) if has_s2r_metadata(self.metadata) \
            else None
        self.obs_size = self._size("observation", _static_dim(inp.shape[1]), "obs_size")
        self.action_size = self._size("action", _static_dim(out.shape[1]), "action_size")
        self.batch_size = _static_dim(inp.shape[0])
        """The one batch size the graph accepts, or ``None`` for a dynamic batch dimension."""
        self.input_name = inp.name
        self.output_name = out.name
        self._output_names = [out.name]
        self._single_shape = (self.obs_size,)
        self._zeros = np.zeros(self.obs_size, dtype=np.float32)
        # Batch-1 calls go through a bound, preallocated input and output: no per-call dict or allocation
        # inside onnxruntime; the observation is copied into the bound buffer and the action copied out.
        self._obs_buf = np.zeros((1, self.obs_size), dtype=np.float32)
        self._act_buf = np.zeros((1, self.action_size), dtype=np.float32)
        self._binding = self._session.io_binding()
        self._binding.bind_cpu_input(self.input_name, self._obs_buf)
        self._binding.bind_output(self.output_name, "cpu", 0, np.float32, list(self._act_buf.shape),
                                  self._act_buf.ctypes.data)
        if task_spec is not None or robot_config is not None:
            self.check_compatible(task_spec, robot_config)

    def _size(self, what: str, graph: int | None, key: str) -> int:
        recorded = None if self.info is None else getattr(self.info, key)
        if graph is not None and recorded is not None and graph != recorded:
            raise UserError(f"ONNX policy {str(self.path)!r}: the graph's {what} size is {graph} but its metadata "
                            f"says {key}={recorded}; the file is inconsistent")
        size = graph if graph is not None else recorded
        if size is None:
            raise UserError(f"ONNX policy {str(self.path)!r}: the {what} size is neither fixed in the graph nor "
                            f"recorded in the metadata ({key})")
        return size

    @property
    def goal(self) -> GoalSpec | None:
        """How a goal-conditioned policy takes its goal (the ``desired_goal`` block, the named goal values with their
        units and ranges, the encoding); ``None`` for a flat policy or a file without s2r metadata."""
        return None if self.info is None else self.info.goal

    # --- running ------------------------------------------------------------------------------------------
    def act(self, obs: NDArray[np.float32]) -> NDArray[np.float32]:
        """Action(s) for one observation ``(O,)`` or a batch ``(B, O)``; float32 and finite, else ``ValueError``."""
        if not isinstance(obs, np.ndarray):
            raise ValueError(f"observation must be a numpy float32 array of shape ({self.obs_size},) or "
                             f"(B, {self.obs_size}), got {type(obs).__name__}")
        if obs.dtype != np.float32:
            raise ValueError(f"observation dtype must be float32, got {obs.dtype} (convert with "
                             "np.asarray(obs, dtype=np.float32))")
        # A dot product with zeros is 0 unless an entry is NaN or inf (0 * inf is NaN), and costs less than
        # np.isfinite(...).all(); the elementwise check runs only then, to say which entries are bad.
        if obs.shape == self._single_shape:
            if np.dot(obs, self._zeros) != 0.0:
                self._check_finite(obs)
            self._obs_buf[0] = obs
            self._session.run_with_iobinding(self._binding)
            return self._act_buf[0].copy()
        if obs.ndim != 2 or obs.shape[1] != self.obs_size or obs.shape[0] < 1:
            raise ValueError(f"observation shape must be ({self.obs_size},) or (B, {self.obs_size}), got {obs.shape}")
        if self.batch_size is not None and obs.shape[0] != self.batch_size:
            raise ValueError(f"this ONNX file takes batches of exactly {self.batch_size} observations, "
                             f"got {obs.shape[0]}")
        if not np.isfinite(obs).all():
            self._check_finite(obs)
        out: NDArray[np.float32] = self._session.run(self._output_names, {self.input_name: obs})[0]
        return out

    __call__ = act

    @staticmethod
    def _check_finite(obs: NDArray[np.float32]) -> None:
        bad = ~np.isfinite(obs)
        if bad.any():
            where = np.argwhere(bad)
            first = ", ".join(str(tuple(int(i) for i in w)) if w.size > 1 else str(int(w[0])) for w in where[:5])
            raise ValueError(f"observation has {int(bad.sum())} non-finite value(s) (NaN or inf) at index "
                             f"{first}{', ...' if len(where) > 5 else ''}")

    def to_normalized(self, action: NDArray[np.float32]) -> NDArray[np.float32]:
        """An action of this file as the normalized action in [-1, 1] (the identity for normalized outputs)."""
        if self.info is None or self.info.action_output == ACTION_NORMALIZED:
            return action
        low = np.asarray(self.info.action_low, dtype=np.float64)
        high = np.asarray(self.info.action_high, dtype=np.float64)
        return (2.0 * (action - low) / (high - low) - 1.0).astype(np.float32)

    # --- compatibility --------------------------------------------------------------------------------------
    def compatibility_problems(self, spec: TaskSpec | None = None, robot: RobotConfig | None = None) -> list[str]:
        """Every way this file does not fit ``spec`` and/or ``robot`` (empty when it fits)."""
        problems: list[str] = []
        if spec is not None:
            problems += self._spec_problems(spec, "the task spec")
        if robot is not None:
            problems += self._spec_problems(robot.task_spec(), f"robot config {robot.source} (task {robot.task!r})")
        return problems

    def check_compatible(self, spec: TaskSpec | None = None, robot: RobotConfig | None = None) -> None:
        """Refuse (:class:`UserError` listing every mismatch) to drive a task or robot this file was not made for."""
        problems = self.compatibility_problems(spec, robot)
        if problems:
            lines = "\n".join(f"  - {p}" for p in problems)
            raise UserError(f"ONNX policy {str(self.path)!r} does not match what it is asked to drive "
                            f"({len(problems)} mismatch{'es' if len(problems) > 1 else ''}):\n{lines}")

    def _spec_problems(self, spec: TaskSpec, against: str) -> list[str]:
        problems: list[str] = []

        def differs(what: str, ours: object, theirs: object) -> None:
            problems.append(f"{what}: the file has {ours}, {against} has {theirs}")

        layout = self._expected_layout(spec, problems)
        if self.obs_size != layout.size:
            differs("observation size", self.obs_size, layout.size)
        if self.action_size != spec.n_joints:
            differs("action size", self.action_size, spec.n_joints)
        info = self.info
        if info is None:
            problems.append(f"the file carries no s2r metadata, so its task, joint names, observation layout and "
                            f"control period cannot be checked against {against} (export it with `s2r export`; "
                            "for a policy trained elsewhere, `s2r export --from-sb3` or export.export_module)")
            return problems
        if info.task is None:
            problems.append(f"task: the file was exported from {info.env_id!r}, which is not an s2r task; "
                            f"{against} needs one")
            return problems
        if info.task != spec.name:
            differs("task", repr(info.task), repr(spec.name))
        if info.robot != spec.robot:
            differs("robot", repr(info.robot), repr(spec.robot))
        if info.joint_names != spec.joint_names:
            differs("joint names/order", _names_text(info.joint_names), _names_text(spec.joint_names))
        ours = [(b.name, b.start, b.stop) for b in info.obs_layout]
        theirs = [(f, s[0], s[1]) for f, s in layout.slices().items()]
        if ours != theirs:
            differs("observation layout", _layout_text(ours), _layout_text(theirs))
        period = info.control_period_s
        if period is None or not math.isclose(period, spec.control_period, rel_tol=0.0,
                                               abs_tol=CONTROL_PERIOD_TOLERANCE_S):
            differs("control period", f"{period} s", f"{spec.control_period} s")
        if info.action_output != ACTION_NORMALIZED:
            differs("action output", repr(info.action_output), repr(ACTION_NORMALIZED))
        return problems


    def _expected_layout(self, spec: TaskSpec, problems: list[str]) -> ObsLayout:
        """The observation layout this file should have on ``spec``: the spec's, or for a goal policy the spec's
        blocks the file names, then its goal block (whose size the task's goal view checks, at deploy)."""
        info = self.info
        if info is None or info.goal is None:
            return spec.obs_layout
        by_name = {f.name: f for f in spec.obs_layout.fields}
        blocks = []
        for b in info.obs_layout[:-1]:
            if b.name not in by_name:
                problems.append(f"observation block {b.name!r} of the goal policy is not in the task {spec.name!r}'s "
                                f"observation ({', '.join(by_name)})")
                continue
            blocks.append(by_name[b.name])
        last = info.obs_layout[-1]
        return ObsLayout((*blocks, ObsField(last.name, last.stop - last.start, last.unit, "the desired goal")))


def _names_text(names: tuple[str, ...]) -> str:
    return "[" + ", ".join(names) + "]"


def _layout_text(blocks: list[tuple[str, int, int]]) -> str:
    return "[" + ", ".join(f"{n}[{a}:{b}]" for n, a, b in blocks) + "]"
