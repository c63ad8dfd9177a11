"""The metadata an exported policy carries: the one place that writes it and parses it.

ONNX ``metadata_props`` are string key/value pairs. Numbers are written with ``repr`` (exact for
floats), lists and mappings as JSON. Keys of schema ``s2r-onnx-policy`` version 1:

- ``s2r_format``, ``s2r_format_version``: the schema marker (a file without it is not an s2r export);
- ``env_id`` (gymnasium id), ``engine``, ``env_kwargs`` (JSON): the environment trained on;
- ``obs_size``, ``action_size``; ``action_output`` (``normalized`` or ``env_bounds``, see
  :data:`ACTION_OUTPUTS`) with the environment's ``action_low``/``action_high`` (JSON lists);
- ``algo``, ``training_steps``, ``config_sha256`` (sha256 of the canonical JSON of the training
  config, or of what an imported policy was read from), ``randomization`` (``none``, a file name, the
  embedded distribution as JSON, or ``unknown`` for a policy trained outside s2r);
- ``s2r_version``, ``export_time_utc`` (ISO 8601), ``source_checkpoint``;
- s2r tasks only: ``task`` (the task spec's name), ``robot``, ``joint_names`` (JSON list, action
  order), ``obs_layout`` (JSON list of ``{"name", "start", "stop", "unit"}``), ``control_period_s``;
- goal-conditioned s2r tasks only: ``goal`` (JSON ``{"block", "fields", "encoding"}``): the observation is the
  task's goal observation fields then the ``block`` (``desired_goal``) of ``obs_layout``, made from the named goal
  values ``fields`` (a list of ``{"name", "unit", "low", "high"}``: what ``s2r deploy --goal NAME=VALUE`` may
  command, SI units) as ``encoding`` says (``desired_goal = (cos(target), sin(target))``). A reader that does not
  know the key sees a policy whose observation layout differs from the flat task's, and refuses it.

This module imports neither torch nor onnx: the robot side parses metadata with numpy alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from s2r.core.errors import UserError
from s2r.core.fields import Fields

FORMAT = "s2r-onnx-policy"
"""Value of the ``s2r_format`` key."""
FORMAT_VERSION = 1
"""Value of the ``s2r_format_version`` key this code writes and reads."""
ACTION_NORMALIZED = "normalized"
"""Output is the normalized action in [-1, 1]; the task's action mapping (denormalize, clip, rate limit) follows."""
ACTION_ENV_BOUNDS = "env_bounds"
"""Output is mapped onto the environment's action bounds: ``low + (a + 1) / 2 * (high - low)``."""
ACTION_OUTPUTS = (ACTION_NORMALIZED, ACTION_ENV_BOUNDS)
NO_RANDOMIZATION = "none"
"""``randomization`` value of a policy trained without domain randomization."""
UNKNOWN_RANDOMIZATION = "unknown"
"""``randomization`` value of a policy trained outside s2r (``s2r export --from-sb3``, ``export.export_module``)."""


@dataclass(frozen=True)
class ObsSlice:
    """One named block of the observation vector, as recorded in the file."""

    name: str
    """Block name from the task's observation layout."""
    start: int
    """First index of the block in the observation vector."""
    stop: int
    """One past the last index."""
    unit: str
    """Unit of the block's entries (``"-"`` for dimensionless)."""


@dataclass(frozen=True)
class GoalValue:
    """One named goal value a goal policy can be commanded, as recorded in the file."""

    name: str
    """Key of the task's goal (``target``)."""
    unit: str
    """SI unit (``rad``)."""
    low: float
    """Smallest commandable value (``unit``)."""
    high: float
    """Largest commandable value (``unit``)."""


@dataclass(frozen=True)
class GoalSpec:
    """How a goal-conditioned policy takes its goal: where it sits in the observation and what makes it."""

    block: str
    """Name of the ``obs_layout`` block holding the desired goal (the last one, ``desired_goal``)."""
    fields: tuple[GoalValue, ...]
    """The named goal values the desired goal is made from."""
    encoding: str
    """How the named values become the block, in words (``desired_goal = (cos(target), sin(target))``)."""

    def to_json(self) -> dict[str, Any]:
        return {"block": self.block, "encoding": self.encoding,
                "fields": [{"name": f.name, "unit": f.unit, "low": f.low, "high": f.high} for f in self.fields]}


@dataclass(frozen=True)
class Provenance:
    """Where an exported policy comes from, as its metadata records it (one ``metadata_props`` key per field)."""

    algo: str
    """Learner that trained the policy (s2r's ``crossq``, ``sac``, ``td3``, ``ddpg``; e.g. ``sb3-sac`` for an
    imported one)."""
    training_steps: int
    """Environment steps trained when the policy was saved."""
    config_sha256: str
    """sha256 (hex) of the canonical JSON of what the policy was made from (see :func:`config_sha256`)."""
    randomization: str
    """``none``, the randomization trained under (a file name or JSON), or :data:`UNKNOWN_RANDOMIZATION`."""
    source_checkpoint: str
    """The file exported (empty when there is none)."""


@dataclass(frozen=True)
class PolicyMetadata:
    """What an exported policy is and what it may drive (parsed from, or written to, ``metadata_props``)."""

    env_id: str
    """Gymnasium id trained on."""
    engine: str
    """Physics engine trained on (meaningful for ``s2r/`` ids)."""
    obs_size: int
    """Length of the observation vector (the ``obs`` input's last dimension)."""
    action_size: int
    """Length of the action vector (the ``action`` output's last dimension)."""
    action_output: str
    """What the output is: one of :data:`ACTION_OUTPUTS`. Policies of s2r tasks output ``normalized`` actions, which
    the task's action mapping turns into joint targets; those of other environments output ``env_bounds`` ones."""
    action_low: tuple[float, ...]
    """The environment's lower action bounds (its action units)."""
    action_high: tuple[float, ...]
    """The environment's upper action bounds (its action units)."""
    provenance: Provenance
    """Where the policy comes from: its learner, training steps, config hash, randomization and source file."""
    s2r_version: str
    """``s2r.__version__`` of the exporter."""
    export_time_utc: str
    """When the file was exported (ISO 8601, UTC)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra ``gym.make`` keyword arguments trained with."""
    task: str | None = None
    """Task spec name (s2r tasks only, e.g. ``dclaw-turn``)."""
    robot: str | None = None
    """Robot the task runs on (s2r tasks only)."""
    joint_names: tuple[str, ...] = ()
    """Actuated joints in action order (s2r tasks only)."""
    obs_layout: tuple[ObsSlice, ...] = ()
    """Observation blocks in order (s2r tasks only)."""
    control_period_s: float | None = None
    """Time between two policy actions (s; s2r tasks only)."""
    goal: GoalSpec | None = None
    """How the goal enters the observation (goal-conditioned s2r tasks only; ``None``: a flat policy)."""

    def to_props(self) -> dict[str, str]:
        """The ``metadata_props`` key/value strings (task keys only for s2r tasks)."""
        props = {
            "s2r_format": FORMAT,
            "s2r_format_version": str(FORMAT_VERSION),
            "env_id": self.env_id,
            "engine": self.engine,
            "env_kwargs": canonical_json(self.env_kwargs),
            "obs_size": str(self.obs_size),
            "action_size": str(self.action_size),
            "action_output": self.action_output,
            "action_low": json.dumps([float(v) for v in self.action_low]),
            "action_high": json.dumps([float(v) for v in self.action_high]),
            "algo": self.provenance.algo,
            "training_steps": str(self.provenance.training_steps),
            "config_sha256": self.provenance.config_sha256,
            "randomization": self.provenance.randomization,
            "s2r_version": self.s2r_version,
            "export_time_utc": self.export_time_utc,
            "source_checkpoint": self.provenance.source_checkpoint,
        }
        if self.task is not None:
            props["task"] = self.task
        if self.robot is not None:
            props["robot"] = self.robot
        if self.joint_names:
            props["joint_names"] = json.dumps(list(self.joint_names))
        if self.obs_layout:
            props["obs_layout"] = json.dumps(
                [{"name": b.name, "start": b.start, "stop": b.stop, "unit": b.unit} for b in self.obs_layout]
            )
        if self.control_period_s is not None:
            props["control_period_s"] = repr(float(self.control_period_s))
        if self.goal is not None:
            props["goal"] = json.dumps(self.goal.to_json())
        return props


def canonical_json(data: Any) -> str:
    """Sorted keys, no whitespace, tuples as lists; non-JSON values (paths, numpy scalars) by ``str``."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def config_sha256(config: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of a training config."""
    return hashlib.sha256(canonical_json(dict(config)).encode("utf-8")).hexdigest()


def describe_randomization(config: Mapping[str, Any]) -> str:
    """The training config's ``randomize`` entry as metadata: ``none``, a file name, or the distribution as JSON."""
    value = config.get("randomize")
    if value is None or value == "" or value == {} or value is False:
        return NO_RANDOMIZATION
    if isinstance(value, str):
        return value
    return canonical_json(value)


def has_s2r_metadata(props: Mapping[str, str]) -> bool:
    """Whether ``props`` carry the s2r schema marker."""
    return props.get("s2r_format") == FORMAT


class _Props(Fields):
    """:class:`s2r.fields.Fields` over ``metadata_props``, whose fields are the file's metadata keys."""

    noun = "metadata key"
    missing_note = " (the file is damaged or was not written by `s2r export`)"


JSON_KEYS = ("s2r_format_version", "obs_size", "action_size", "training_steps", "control_period_s", "env_kwargs",
             "action_low", "action_high", "joint_names", "obs_layout", "goal")
"""Keys whose string values are JSON (numbers, lists, mappings); the rest are plain strings."""


def _decoded(props: Mapping[str, str]) -> dict[str, Any]:
    """``props`` with the values of :data:`JSON_KEYS` decoded. A value that is not JSON stays a string, which the
    key's typed read then refuses, naming the key and quoting the value."""
    out: dict[str, Any] = dict(props)
    for key in JSON_KEYS:
        if key in out:
            try:
                out[key] = json.loads(out[key])
            except json.JSONDecodeError:
                pass
    return out


def _optional_text(r: Fields, key: str) -> str | None:
    return None if r.raw(key) is None else r.text(key, empty=True)


def _parse_layout(r: Fields, obs_size: int) -> tuple[ObsSlice, ...]:
    if r.raw("obs_layout") is None:
        return ()
    blocks = []
    position = 0
    for b in r.items("obs_layout"):
        b.only("name", "start", "stop", "unit")
        name, start, stop, unit = b.text("name"), b.integer("start"), b.integer("stop"), b.text("unit")
        # The blocks tile the observation vector in order: each starts where the last stopped.
        if start != position:
            b.fail("start", f"{position}, where the block before stops", start)
        if stop <= start:
            b.fail("stop", f"an index above start ({start})", stop)
        blocks.append(ObsSlice(name, start, stop, unit))
        position = stop
    if position != obs_size:
        r.fail("obs_layout", f"blocks that tile 0..{obs_size} (they stop at {position})", r.raw("obs_layout"))
    return tuple(blocks)


def _parse_goal(r: Fields, layout: tuple[ObsSlice, ...]) -> GoalSpec | None:
    if r.raw("goal") is None:
        return None
    g = r.child("goal")
    g.only("block", "fields", "encoding")
    block = g.text("block")
    if not layout or layout[-1].name != block:
        g.fail("block", f"the name of the last obs_layout block ({layout[-1].name if layout else 'none recorded'})",
               block)
    values = []
    for f in g.items("fields"):
        f.only("name", "unit", "low", "high")
        low, high = f.number("low"), f.number("high")
        if not low <= high:
            f.fail("high", f"a number >= low ({low})", high)
        values.append(GoalValue(f.text("name"), f.text("unit"), low, high))
    if not values:
        g.fail("fields", "a non-empty list of goal values", [])
    return GoalSpec(block, tuple(values), g.text("encoding", empty=True))


def parse_metadata(props: Mapping[str, str], source: str) -> PolicyMetadata:
    """Validate s2r ``metadata_props`` into :class:`PolicyMetadata`; a bad or missing key is a :class:`UserError`
    naming the key. Keys this version does not know are ignored (a later exporter's additions, other tools')."""
    if not has_s2r_metadata(props):
        raise UserError(f"{source}: no s2r policy metadata (key 's2r_format' is not {FORMAT!r}); "
                        "the file was not written by `s2r export`")
    r = _Props(_decoded(props), "", source)
    version = r.integer("s2r_format_version")
    if version != FORMAT_VERSION:
        r.fail("s2r_format_version", f"{FORMAT_VERSION} (the version this s2r reads)", version)
    obs_size = r.integer("obs_size", low=1)
    action_size = r.integer("action_size", low=1)
    action_output = r.choice("action_output", ACTION_OUTPUTS)
    env_kwargs = dict(r.child("env_kwargs").data)
    control_period_s = None
    if r.raw("control_period_s") is not None:
        control_period_s = r.number("control_period_s", expected="a positive number of seconds")
        if control_period_s <= 0:
            r.fail("control_period_s", "a positive number of seconds", control_period_s)
    layout = _parse_layout(r, obs_size)
    return PolicyMetadata(
        env_id=r.text("env_id"),
        engine=r.text("engine", empty=True),
        obs_size=obs_size,
        action_size=action_size,
        action_output=action_output,
        action_low=r.numbers("action_low", action_size, finite=False),
        action_high=r.numbers("action_high", action_size, finite=False),
        provenance=Provenance(
            algo=r.text("algo", empty=True),
            training_steps=r.count("training_steps"),
            config_sha256=r.text("config_sha256", empty=True),
            randomization=r.text("randomization", empty=True),
            source_checkpoint=r.text("source_checkpoint", empty=True),
        ),
        s2r_version=r.text("s2r_version", empty=True),
        export_time_utc=r.text("export_time_utc", empty=True),
        env_kwargs=env_kwargs,
        task=_optional_text(r, "task"),
        robot=_optional_text(r, "robot"),
        joint_names=() if r.raw("joint_names") is None else r.strings("joint_names", action_size, "joint names"),
        obs_layout=layout,
        control_period_s=control_period_s,
        goal=_parse_goal(r, layout),
    )
