"""Read Stable-Baselines3 files without running their code: a model ``.zip`` and a ``VecNormalize`` pickle.

Trust boundary: nothing in these files is unpickled as it is. A model zip holds ``data`` (JSON; the entries SB3
could not write as JSON are base64 cloudpickles under ``:serialized:``) and ``policy.pth`` (a ``state_dict``,
loaded by :mod:`export.sb3_export` with ``torch.load(weights_only=True)``). The cloudpickles are only *read*:
:func:`pickle_globals` walks their opcodes with :func:`pickletools.genops`, which parses without executing, to
learn which classes they name (the policy class, the activation function). A ``VecNormalize`` file is a plain
pickle; :class:`_RestrictedUnpickler` builds numpy arrays and turns the SB3 and gymnasium objects in it into inert
:class:`PickledRecord` stand-ins; any other import the pickle asks for (``os.system``, ``builtins.eval``, any
class) is refused before it is looked up.

This module imports neither torch nor onnxruntime: ``s2r deploy`` and ``s2r eval`` use :func:`is_sb3_zip` to tell a
user who passes an SB3 zip as a policy what to do with it, on the base install too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import os
import pickle
import pickletools
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from s2r.core.errors import UserError

DATA_ENTRY = "data"
"""The JSON entry of an SB3 model zip."""
POLICY_ENTRY = "policy.pth"
"""The entry holding the policy's ``state_dict``."""
VERSION_ENTRY = "_stable_baselines3_version"
SERIALIZED = ":serialized:"
"""Key of the base64 cloudpickle in a ``data`` entry SB3 could not write as JSON."""

ALGOS = {
    "stable_baselines3.sac.policies": "sac",
    "stable_baselines3.td3.policies": "td3",
    "sb3_contrib.crossq.policies": "crossq",
}
"""Policy modules whose MLP actors the importer rebuilds, and the algorithm each belongs to."""
MLP_POLICY_CLASSES = {"sac": "SACPolicy", "td3": "TD3Policy", "crossq": "CrossQPolicy"}
"""The class SB3 records for ``"MlpPolicy"`` (an alias of it); ``CnnPolicy`` and ``MultiInputPolicy`` differ."""
SUPPORTED = "SB3 SAC, TD3 (and DDPG, which shares TD3's policy) and sb3-contrib CrossQ with MlpPolicy on a flat Box " \
    "observation"
"""What ``--from-sb3`` converts, for error messages."""
ACTIVATION_MODULE = "torch.nn.modules.activation"
ACTIVATIONS = {"ReLU": "relu", "Tanh": "tanh", "ELU": "elu", "LeakyReLU": "leaky_relu", "SiLU": "silu",
               "GELU": "gelu", "Sigmoid": "sigmoid"}
"""torch activation classes SB3 may have built the actor with (it instantiates them without arguments) and their
names here (``--activation``)."""
DEFAULT_ACTIVATION = "relu"
"""SB3's and sb3-contrib's default ``activation_fn`` for SAC, TD3 and CrossQ (``nn.ReLU``)."""
DEFAULT_BATCH_NORM_EPS = 1e-3
"""sb3-contrib CrossQ's default ``batch_norm_eps`` (used when ``policy_kwargs`` does not set it)."""
BOX_TYPES = ("<class 'gymnasium.spaces.box.Box'>", "<class 'gym.spaces.box.Box'>")
"""The ``:type:`` SB3 records for a Box space."""


def is_sb3_zip(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a Stable-Baselines3 model zip (a zip with ``data`` and ``policy.pth`` at its top)."""
    p = Path(path)
    if not p.is_file() or not zipfile.is_zipfile(p):
        return False
    try:
        with zipfile.ZipFile(p) as z:
            names = set(z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False
    return DATA_ENTRY in names and POLICY_ENTRY in names


def sb3_zip_refusal(path: str | os.PathLike[str]) -> str:
    """The error for an SB3 zip given where an s2r policy file was expected: what it is and how to convert it."""
    return (f"{str(path)!r} is a Stable-Baselines3 model, not an s2r checkpoint or exported policy; convert it "
            f"first with `s2r export --from-sb3 {path} --task TASK [--vecnormalize STATS.pkl] --out POLICY.onnx` "
            "(or export.export_module from Python) and use the .onnx file")


def pickle_globals(blob: bytes) -> list[tuple[str, str]]:
    """The ``(module, name)`` pairs a pickle imports, read from its opcodes without executing anything.

    ``GLOBAL`` carries both in its argument; ``STACK_GLOBAL`` takes the two strings pushed before it, directly or
    from the memo (the memo is followed for strings only: that is all ``STACK_GLOBAL`` may take).
    """
    found: list[tuple[str, str]] = []
    strings: list[str | None] = []  # what each push left on the stack, as far as strings go
    memo: dict[int, str | None] = {}
    try:
        for op, arg, _ in pickletools.genops(blob):
            if op.name == "GLOBAL":
                module, _, name = str(arg).partition(" ")
                found.append((module, name))
                strings.append(None)
            elif op.name == "STACK_GLOBAL":
                if len(strings) >= 2 and strings[-2] is not None and strings[-1] is not None:
                    found.append((str(strings[-2]), str(strings[-1])))
                strings.append(None)
            elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"):
                strings.append(str(arg))
            elif op.name == "MEMOIZE":
                memo[len(memo)] = strings[-1] if strings else None
            elif op.name in ("BINPUT", "LONG_BINPUT", "PUT") and isinstance(arg, int):
                memo[arg] = strings[-1] if strings else None
            elif op.name in ("BINGET", "LONG_BINGET", "GET") and isinstance(arg, int):
                strings.append(memo.get(arg))
            elif op.stack_after:
                strings.append(None)
    except (ValueError, binascii.Error) as exc:  # genops' way of saying the bytes are not a pickle
        raise UserError(f"a serialized entry is not a readable pickle: {exc}") from exc
    return found


def _serialized_globals(entry: Any) -> list[tuple[str, str]]:
    if not isinstance(entry, dict) or not isinstance(entry.get(SERIALIZED), str):
        return []
    try:
        blob = base64.b64decode(entry[SERIALIZED], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise UserError(f"a serialized entry is not base64: {exc}") from exc
    return pickle_globals(blob)


@dataclass(frozen=True)
class Sb3Model:
    """What the importer read from an SB3 model zip (nothing in it executed)."""

    path: Path
    """The zip."""
    algo: str
    """``sac``, ``td3``, ``ddpg`` or ``crossq``."""
    policy_class: str
    """The policy class recorded (``module.Class``)."""
    num_timesteps: int
    """Environment steps trained (``num_timesteps``)."""
    obs_shape: tuple[int, ...]
    """Shape of the observation space trained on."""
    action_low: np.ndarray | None
    """Lower action bounds trained with (``None`` when the readable field could not be parsed)."""
    action_high: np.ndarray | None
    """Upper action bounds trained with (``None`` when the readable field could not be parsed)."""
    activation: str
    """Hidden-layer activation (a value of :data:`ACTIVATIONS`)."""
    batch_norm_eps: float
    """CrossQ's BatchRenorm epsilon (unused by the other algorithms)."""
    state_dict_bytes: bytes
    """The ``policy.pth`` entry, for ``torch.load(weights_only=True)``."""
    sb3_version: str
    """The SB3 version that saved the zip (empty when not recorded)."""
    data_sha256: str
    """sha256 (hex) of the ``data`` entry."""
    policy_sha256: str
    """sha256 (hex) of the ``policy.pth`` entry."""


def _field(data: dict[str, Any], key: str, path: Path) -> Any:
    if key not in data:
        raise UserError(f"SB3 model {str(path)!r}: its data has no {key!r} entry; the zip is damaged or was not "
                        "saved by Stable-Baselines3's model.save")
    return data[key]


def _readable_array(text: Any) -> np.ndarray | None:
    """A numpy array SB3 wrote as readable text (``'[-1. -1. -8.]'``), or ``None`` when it was abbreviated."""
    if not isinstance(text, str) or "..." in text:
        return None
    try:
        return np.array([float(v) for v in text.replace("[", " ").replace("]", " ").split()], dtype=np.float64)
    except ValueError:
        return None


def _box(data: dict[str, Any], key: str, path: Path) -> tuple[tuple[int, ...], np.ndarray | None, np.ndarray | None]:
    space = _field(data, key, path)
    kind = space.get(":type:") if isinstance(space, dict) else type(space).__name__
    if kind not in BOX_TYPES:
        what = "observation" if key == "observation_space" else "action"
        raise UserError(f"SB3 model {str(path)!r}: the {what} space is {kind}; the importer converts {SUPPORTED} "
                        "(dict and image observations are not supported)")
    shape = space.get("_shape")
    if not isinstance(shape, list) or not all(isinstance(n, int) and n > 0 for n in shape):
        raise UserError(f"SB3 model {str(path)!r}: the {key} shape {shape!r} is not readable")
    return tuple(shape), _readable_array(space.get("low")), _readable_array(space.get("high"))


def _policy_class(data: dict[str, Any], path: Path) -> tuple[str, str]:
    """The recorded policy class as ``(module, name)``, from the readable ``__module__`` and the opcodes."""
    entry = _field(data, "policy_class", path)
    module = entry.get("__module__") if isinstance(entry, dict) else None
    names = [n for m, n in _serialized_globals(entry) if m == module]
    if not isinstance(module, str) or len(names) != 1:
        raise UserError(f"SB3 model {str(path)!r}: cannot tell its policy class from the data; the importer converts "
                        f"{SUPPORTED}")
    return module, names[0]


def _activation(kwargs: Any, override: str | None, path: Path) -> str:
    if override is not None:
        if override not in ACTIVATIONS.values():
            raise UserError(f"unknown activation {override!r}; expected one of {', '.join(ACTIVATIONS.values())}")
        return override
    if not isinstance(kwargs, dict) or SERIALIZED not in kwargs:
        # policy_kwargs was plain JSON, so it held no activation_fn (a class is not JSON): SB3's default.
        return DEFAULT_ACTIVATION
    named = {(m, n) for m, n in _serialized_globals(kwargs) if m.startswith("torch.nn")}
    known = {ACTIVATIONS[n] for m, n in named if m == ACTIVATION_MODULE and n in ACTIVATIONS}
    unknown = sorted(f"{m}.{n}" for m, n in named if not (m == ACTIVATION_MODULE and n in ACTIVATIONS))
    if unknown:
        raise UserError(f"SB3 model {str(path)!r}: its policy_kwargs name {', '.join(unknown)}; the importer "
                        f"rebuilds actors with the activations {', '.join(ACTIVATIONS)}")
    if len(known) > 1:
        raise UserError(f"SB3 model {str(path)!r}: its policy_kwargs name several activations "
                        f"({', '.join(sorted(known))}); say which the actor uses with --activation")
    return known.pop() if known else DEFAULT_ACTIVATION


def read_sb3_zip(path: str | os.PathLike[str], activation: str | None = None) -> Sb3Model:
    """Read an SB3 model zip (see the module docstring); :class:`UserError` for anything the importer cannot
    convert, naming what was found and what is supported. ``activation`` overrides the one read from the zip."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"no SB3 model at {str(p)!r}")
    if not is_sb3_zip(p):
        raise UserError(f"{str(p)!r} is not a Stable-Baselines3 model zip (expected a zip holding {DATA_ENTRY!r} and "
                        f"{POLICY_ENTRY!r}, as model.save writes)")
    try:
        with zipfile.ZipFile(p) as z:
            raw = z.read(DATA_ENTRY)
            weights = z.read(POLICY_ENTRY)
            version = z.read(VERSION_ENTRY).decode("utf-8", "replace").strip() if VERSION_ENTRY in z.namelist() \
                else ""
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise UserError(f"cannot read SB3 model {str(p)!r}: {exc}") from exc
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"SB3 model {str(p)!r}: its {DATA_ENTRY!r} entry is not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise UserError(f"SB3 model {str(p)!r}: its {DATA_ENTRY!r} entry is not a JSON object")

    module, name = _policy_class(data, p)
    algo = ALGOS.get(module)
    if algo is None:
        hint = " (PPO and A2C's actor-critic policy)" if module == "stable_baselines3.common.policies" else ""
        raise UserError(f"SB3 model {str(p)!r} has the policy {module}.{name}{hint}; the importer converts {SUPPORTED}")
    if name != MLP_POLICY_CLASSES[algo]:
        raise UserError(f"SB3 model {str(p)!r} has the policy {module}.{name}; the importer converts {SUPPORTED} "
                        f"({MLP_POLICY_CLASSES[algo]}, what 'MlpPolicy' names)")
    kwargs = data.get("policy_kwargs") or {}
    if data.get("use_sde") is True or (isinstance(kwargs, dict) and kwargs.get("use_sde") is True):
        raise UserError(f"SB3 model {str(p)!r} was trained with use_sde=True (gSDE); the importer converts actors "
                        "without state-dependent exploration")
    if algo == "td3" and data.get("policy_delay") == 1 and data.get("target_noise_clip") == 0.0:
        algo = "ddpg"  # SB3's DDPG is TD3 with these settings and TD3's policy class
    obs_shape, _, _ = _box(data, "observation_space", p)
    if len(obs_shape) != 1:
        raise UserError(f"SB3 model {str(p)!r} observes a {obs_shape} array; the importer converts {SUPPORTED}")
    act_shape, low, high = _box(data, "action_space", p)
    if len(act_shape) != 1:
        raise UserError(f"SB3 model {str(p)!r} acts with a {act_shape} array; the importer converts 1-d actions")
    if low is not None and high is not None and (low.shape != act_shape or high.shape != act_shape):
        low = high = None
    steps = data.get("num_timesteps", 0)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise UserError(f"SB3 model {str(p)!r}: num_timesteps {steps!r} is not a count of steps")
    eps = kwargs.get("batch_norm_eps", DEFAULT_BATCH_NORM_EPS) if isinstance(kwargs, dict) else DEFAULT_BATCH_NORM_EPS
    if not isinstance(eps, int | float) or isinstance(eps, bool) or not eps >= 0:
        raise UserError(f"SB3 model {str(p)!r}: policy_kwargs batch_norm_eps {eps!r} is not a number >= 0")
    return Sb3Model(
        path=p, algo=algo, policy_class=f"{module}.{name}", num_timesteps=steps, obs_shape=obs_shape,
        action_low=low, action_high=high, activation=_activation(kwargs, activation, p), batch_norm_eps=float(eps),
        state_dict_bytes=weights, sb3_version=version, data_sha256=hashlib.sha256(raw).hexdigest(),
        policy_sha256=hashlib.sha256(weights).hexdigest(),
    )


# --- VecNormalize statistics ------------------------------------------------------------------------------------


class PickledRecord:
    """An inert stand-in for an object of an allowed class in a pickle: it keeps the state it is given, runs
    nothing, and says which class it stands for (:attr:`kind`)."""

    kind = "object"

    def __new__(cls, *args: Any, **kwargs: Any) -> PickledRecord:
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class VecNormalizeRecord(PickledRecord):
    kind = "VecNormalize"


class RunningMeanStdRecord(PickledRecord):
    kind = "RunningMeanStd"


class SpaceRecord(PickledRecord):
    kind = "space"


class RandomRecord(PickledRecord):
    """A numpy random generator, bit generator or seed sequence (a space's ``_np_random``): not rebuilt."""

    kind = "random generator"


_NUMPY_CORES = ("numpy.core", "numpy._core")
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
    **{(f"{core}.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.zeros(0))[0] for core in _NUMPY_CORES},
    **{(f"{core}.multiarray", "scalar"): np.float64(0).__reduce__()[0] for core in _NUMPY_CORES},
    # Protocol 5 pickles rebuild contiguous arrays with numpy's _frombuffer (taken from numpy, not by its path).
    **{(f"{core}.numeric", "_frombuffer"): np.zeros(1).__reduce_ex__(5)[0] for core in _NUMPY_CORES},
    ("stable_baselines3.common.vec_env.vec_normalize", "VecNormalize"): VecNormalizeRecord,
    ("stable_baselines3.common.running_mean_std", "RunningMeanStd"): RunningMeanStdRecord,
    **{(f"{gym}.spaces.{mod}", cls): SpaceRecord for gym in ("gymnasium", "gym")
       for mod, cls in (("box", "Box"), ("discrete", "Discrete"), ("dict", "Dict"), ("multi_discrete", "MultiDiscrete"),
                        ("multi_binary", "MultiBinary"))},
    ("numpy.random._pickle", "__generator_ctor"): RandomRecord,
    ("numpy.random._pickle", "__bit_generator_ctor"): RandomRecord,
    ("numpy.random._pickle", "__randomstate_ctor"): RandomRecord,
    ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"): RandomRecord,
    ("numpy.random.bit_generator", "SeedSequence"): RandomRecord,
    **{(f"numpy.random._{name.lower()}", name): RandomRecord for name in ("PCG64", "PCG64DXSM", "MT19937", "Philox",
                                                                           "SFC64")},
}
"""Everything a ``VecNormalize`` pickle may import: numpy's array, dtype and scalar reconstruction (the real ones:
they build arrays from bytes), and inert records for the SB3, gymnasium and numpy-random objects inside."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only :data:`ALLOWED_GLOBALS`; any other import is refused before it is looked up."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(f"{module}.{name}")
        return allowed


@dataclass(frozen=True)
class VecNormalizeStats:
    """The observation statistics of an SB3 ``VecNormalize`` file (SB3 normalizes
    ``clip((obs - mean) / sqrt(var + epsilon), -clip_obs, clip_obs)``)."""

    path: Path
    """The file read."""
    norm_obs: bool
    """Whether the wrapper normalized observations (when False the statistics are not applied)."""
    mean: np.ndarray
    """Running mean of the observations (float64, observation units)."""
    var: np.ndarray
    """Running variance of the observations (float64, observation units squared)."""
    clip: float
    """``clip_obs`` (standard deviations)."""
    eps: float
    """``epsilon``, added to the variance before the square root."""
    sha256: str
    """sha256 (hex) of the file."""


def _state(record: Any, kind: type[PickledRecord], path: Path, what: str) -> dict[str, Any]:
    if not isinstance(record, kind) or not isinstance(record.state, dict):
        raise UserError(f"VecNormalize file {str(path)!r}: {what} is not the {kind.kind} SB3 saves "
                        f"(found {getattr(record, 'kind', type(record).__name__)})")
    return record.state


def read_vecnormalize(path: str | os.PathLike[str]) -> VecNormalizeStats:
    """The observation statistics in an SB3 ``VecNormalize.save`` file, read with the restricted unpickler."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"no VecNormalize file at {str(p)!r}")
    raw = p.read_bytes()
    try:
        top = _RestrictedUnpickler(io.BytesIO(raw)).load()
    except pickle.UnpicklingError as exc:
        if exc.args and isinstance(exc.args[0], str) and "." in exc.args[0] and " " not in exc.args[0]:
            raise UserError(f"refusing to load VecNormalize file {str(p)!r}: it asks to import {exc.args[0]}, which "
                            "is not a numpy array or one of the SB3/gymnasium records a VecNormalize file holds; "
                            "nothing in it was run (the file may be malicious)") from exc
        raise UserError(f"cannot read VecNormalize file {str(p)!r}: {exc}") from exc
    except Exception as exc:  # a damaged pickle fails in many ways (EOFError, ValueError, TypeError, ...)
        raise UserError(f"cannot read VecNormalize file {str(p)!r}: not a VecNormalize pickle "
                        f"({type(exc).__name__}: {exc})") from exc
    state = _state(top, VecNormalizeRecord, p, "the pickled object")
    if state.get("norm_obs_keys"):
        raise UserError(f"VecNormalize file {str(p)!r} normalizes dict observations ({state['norm_obs_keys']}); "
                        f"the importer converts {SUPPORTED}")
    rms = _state(state.get("obs_rms"), RunningMeanStdRecord, p, "obs_rms")
    mean, var = rms.get("mean"), rms.get("var")
    clip, eps = state.get("clip_obs"), state.get("epsilon")
    if not isinstance(mean, np.ndarray) or not isinstance(var, np.ndarray) or mean.ndim != 1 \
            or var.shape != mean.shape or mean.dtype.kind != "f" or var.dtype.kind != "f":
        raise UserError(f"VecNormalize file {str(p)!r}: obs_rms mean and var are not two float vectors of one length")
    return VecNormalizeStats(p, bool(state.get("norm_obs", True)), mean.astype(np.float64),
                             var.astype(np.float64), _number(clip, "clip_obs", p), _number(eps, "epsilon", p),
                             hashlib.sha256(raw).hexdigest())


def _number(value: Any, key: str, path: Path) -> float:
    if not isinstance(value, int | float | np.floating) or isinstance(value, bool):
        raise UserError(f"VecNormalize file {str(path)!r}: {key} is {value!r}, not a number")
    return float(value)
