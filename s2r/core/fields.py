"""The one reader that validates a parsed mapping field by field, naming the dotted field in every error.

Each loader (hardware config, reality, fault file, randomization file, ONNX metadata) walks its file with a
:class:`Fields` and builds its frozen dataclass from what the typed getters return; checks that tie fields together
stay with the loader and report through :meth:`Fields.fail` or :meth:`Fields.refuse`, so every message reads
``SOURCE: field encoders.valve.id must be an integer; got 'x'``.
A validation library (pydantic, msgspec, cattrs) would own these messages and the dataclasses' construction; the
dataclasses here stay plain and frozen, and the checks are one screen.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn, Self

from s2r.core.errors import UserError, did_you_mean

MISSING: Any = object()
"""The default of a getter whose field is required."""


class Fields:
    """A mapping being validated, with its dotted path; every read field is ticked off for :meth:`done`.

    ``data`` must be a mapping (``None`` counts as an empty one when ``optional``); ``source`` (the file) starts
    every error. A field set to ``null`` counts as absent. A subclass may rename what a field is called in
    errors (:attr:`noun`) and say what a missing one means (:attr:`missing_note`).
    """

    noun = "field"
    """What the errors call a field (``metadata key`` for an ONNX file's metadata)."""
    missing_note = ""
    """Appended to a missing field's error: what its absence suggests."""

    def __init__(self, data: Any, path: str, source: str, optional: bool = False) -> None:
        if data is None and optional:
            data = {}
        if not isinstance(data, Mapping):
            where = f"{self.noun} {path}" if path else "the top level"
            raise UserError(f"{source}: {where} must be a mapping, got {type(data).__name__}")
        self.data: Mapping[str, Any] = data
        self.path = path
        self.source = source
        self._seen: set[str] = set()

    def dotted(self, key: str) -> str:
        """The dotted name of ``key`` in the file (``joints.f0_top.offset_rad``)."""
        return ".".join(p for p in (self.path, key) if p)

    def fail(self, key: str, expected: str, got: Any) -> NoReturn:
        """Raise the error: the field ``key`` must be ``expected`` and holds ``got``."""
        raise UserError(f"{self.source}: {self.noun} {self.dotted(key) or '<top>'} must be {expected}; got {got!r}")

    def refuse(self, key: str, problem: str) -> NoReturn:
        """Raise the error: the field ``key`` has ``problem`` (``names an unknown parameter ...``), for what
        :meth:`fail`'s *must be* does not say well; ``key`` ``""`` is this mapping itself."""
        raise UserError(f"{self.source}: {self.noun} {self.dotted(key) or '<top>'} {problem}")

    def _missing(self, key: str) -> NoReturn:
        raise UserError(f"{self.source}: {self.noun} {self.dotted(key)} is missing{self.missing_note}")

    def keys(self) -> list[str]:
        """Every key, all ticked off (the caller validates each)."""
        self._seen.update(str(k) for k in self.data)
        return [str(k) for k in self.data]

    def raw(self, key: str, default: Any = None) -> Any:
        """The field's value unchecked (``default`` when absent or null), ticked off."""
        self._seen.add(key)
        value = self.data.get(key)
        return default if value is None else value

    def _get(self, key: str, default: Any) -> Any:
        self._seen.add(key)
        value = self.data.get(key, MISSING)
        if value is MISSING or value is None:
            if default is MISSING or default is None:
                self._missing(key)
            return default
        return value

    def child(self, key: str, optional: bool = False) -> Self:
        """The nested mapping ``key`` (an empty one when ``optional`` and absent)."""
        self._seen.add(key)
        value = self.data.get(key)
        if value is None and not optional:
            self._missing(key)
        return type(self)(value, self.dotted(key), self.source, optional)

    def items(self, key: str) -> list[Self]:
        """The list of mappings ``key``, each a node named ``key[i]``."""
        v = self._get(key, MISSING)
        if not isinstance(v, list):
            self.fail(key, "a list of mappings", v)
        return [type(self)(e, self.dotted(f"{key}[{i}]"), self.source) for i, e in enumerate(v)]

    def only(self, *keys: str) -> None:
        """Refuse, before reading any, a field not among ``keys`` (a misspelt key is then named as such, not
        reported as the correct one missing)."""
        extra = [str(k) for k in self.data if str(k) not in keys]
        if extra:
            raise UserError(f"{self.source}: unknown {self.noun} {self.dotted(extra[0])}"
                            f"{did_you_mean(extra[0], keys)}; expected one of: {', '.join(keys)}")

    def text(self, key: str, default: Any = MISSING, empty: bool = False) -> str:
        """A string, non-empty unless ``empty``."""
        v = self._get(key, default)
        if not isinstance(v, str) or not (v or empty):
            self.fail(key, "a string" if empty else "a non-empty string", v)
        return str(v)

    def choice(self, key: str, options: Sequence[str], default: Any = MISSING) -> str:
        """One of the strings ``options``."""
        v = self._get(key, default)
        if v not in options:
            self.fail(key, f"one of {', '.join(options)}", v)
        return str(v)

    def number(self, key: str, default: Any = MISSING, low: float | None = None, finite: bool = True,
               expected: str = "") -> float:
        """A number (not a bool, not NaN), finite unless ``finite`` is false, at least ``low`` when given;
        ``expected`` replaces the error's description (to say what the number is for)."""
        v = self._get(key, default)
        if (isinstance(v, bool) or not isinstance(v, int | float) or math.isnan(v) or (finite and math.isinf(v))
                or (low is not None and v < low)):
            kind = "a finite number" if finite else "a number (not NaN)"
            self.fail(key, expected or (kind if low is None else f"{kind} >= {low:g}"), v)
        return float(v)

    def integer(self, key: str, default: Any = MISSING, low: int | None = None) -> int:
        """An integer (not a bool), at least ``low`` when given."""
        v = self._get(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or (low is not None and v < low):
            self.fail(key, "an integer" if low is None else f"an integer >= {low}", v)
        return int(v)

    def count(self, key: str, default: Any = MISSING) -> int:
        """An integer >= 0."""
        return self.integer(key, default, low=0)

    def flag(self, key: str, default: Any = MISSING) -> bool:
        """``true`` or ``false``."""
        v = self._get(key, default)
        if not isinstance(v, bool):
            self.fail(key, "true or false", v)
        return bool(v)

    def vector(self, key: str, size: int, unit: str) -> tuple[float, ...] | None:
        """A list of ``size`` finite numbers in ``unit``, or ``None`` when absent or null."""
        v = self.raw(key)
        if v is None:
            return None
        if not _numbers(v, size, finite=True):
            self.fail(key, f"a list of {size} finite numbers ({unit}) or null", v)
        return tuple(float(x) for x in v)

    def numbers(self, key: str, size: int, finite: bool = True, expected: str = "") -> tuple[float, ...]:
        """A list of ``size`` numbers (none NaN), finite unless ``finite`` is false; ``expected`` as for
        :meth:`number`."""
        v = self._get(key, MISSING)
        if not _numbers(v, size, finite):
            self.fail(key, expected or f"a list of {size} {'finite numbers' if finite else 'numbers (none NaN)'}", v)
        return tuple(float(x) for x in v)

    def matrix(self, key: str, rows: int, cols: int) -> tuple[tuple[float, ...], ...]:
        """A list of ``rows`` lists of ``cols`` finite numbers each."""
        v = self._get(key, MISSING)
        if not isinstance(v, list) or len(v) != rows or not all(_numbers(row, cols, finite=True) for row in v):
            self.fail(key, f"a {rows}x{cols} matrix: a list of {rows} rows of {cols} finite numbers", v)
        return tuple(tuple(float(x) for x in row) for row in v)

    def strings(self, key: str, size: int | None = None, what: str = "strings") -> tuple[str, ...]:
        """A non-empty list of non-empty strings, of ``size`` of them when given; ``what`` names them in the
        error (``parameter names``)."""
        v = self._get(key, MISSING)
        if (not isinstance(v, list) or not v or (size is not None and len(v) != size)
                or not all(isinstance(x, str) and x for x in v)):
            self.fail(key, f"a list of {'' if size is None else f'{size} '}{what}", v)
        return tuple(v)

    def done(self) -> None:
        """Refuse a field that no getter read (a misspelt key would otherwise be ignored)."""
        extra = [str(k) for k in self.data if str(k) not in self._seen]
        if extra:
            raise UserError(f"{self.source}: unknown {self.noun} {self.dotted(extra[0])}"
                            f"{did_you_mean(extra[0], self._seen)}; expected one of: {', '.join(sorted(self._seen))}")


def _numbers(v: Any, size: int, finite: bool) -> bool:
    """Whether ``v`` is a list of ``size`` numbers (not bools, not NaN; finite when ``finite``)."""
    return (isinstance(v, list) and len(v) == size
            and all(not isinstance(x, bool) and isinstance(x, int | float) and not math.isnan(x)
                    and not (finite and math.isinf(x)) for x in v))
