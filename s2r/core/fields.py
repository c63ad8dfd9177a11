"""The one reader that validates a parsed YAML mapping field by field, naming the dotted field in every error.

Each loader (hardware config, reality, fault file) walks its file with a :class:`Fields` and builds its frozen
dataclass from what the typed getters return; checks that tie fields together stay with the loader and report
through :meth:`Fields.fail`, so every message reads ``SOURCE: field encoders.valve.id must be an integer; got 'x'``.
A validation library (pydantic, msgspec, cattrs) would own these messages and the dataclasses' construction; the
dataclasses here stay plain and frozen, and the checks are one screen.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NoReturn, Self

from s2r.core.errors import UserError

MISSING: Any = object()
"""The default of a getter whose field is required."""


class Fields:
    """A mapping being validated, with its dotted path; every read field is ticked off for :meth:`done`.

    ``data`` must be a mapping (``None`` counts as an empty one when ``optional``); ``source`` (the file) starts
    every error. A field set to ``null`` counts as absent.
    """

    def __init__(self, data: Any, path: str, source: str, optional: bool = False) -> None:
        if data is None and optional:
            data = {}
        if not isinstance(data, Mapping):
            where = f"field {path}" if path else "the top level"
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
        raise UserError(f"{self.source}: field {self.dotted(key) or '<top>'} must be {expected}; got {got!r}")

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
                raise UserError(f"{self.source}: field {self.dotted(key)} is missing")
            return default
        return value

    def child(self, key: str, optional: bool = False) -> Self:
        """The nested mapping ``key`` (an empty one when ``optional`` and absent)."""
        self._seen.add(key)
        value = self.data.get(key)
        if value is None and not optional:
            raise UserError(f"{self.source}: field {self.dotted(key)} is missing")
        return type(self)(value, self.dotted(key), self.source, optional)

    def text(self, key: str, default: Any = MISSING) -> str:
        """A non-empty string."""
        v = self._get(key, default)
        if not isinstance(v, str) or not v:
            self.fail(key, "a non-empty string", v)
        return str(v)

    def number(self, key: str, default: Any = MISSING, low: float | None = None) -> float:
        """A finite number (not a bool), at least ``low`` when given."""
        v = self._get(key, default)
        if (isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)
                or (low is not None and v < low)):
            self.fail(key, "a finite number" if low is None else f"a finite number >= {low:g}", v)
        return float(v)

    def integer(self, key: str, default: Any = MISSING) -> int:
        """An integer (not a bool)."""
        v = self._get(key, default)
        if isinstance(v, bool) or not isinstance(v, int):
            self.fail(key, "an integer", v)
        return int(v)

    def count(self, key: str, default: Any = MISSING) -> int:
        """An integer >= 0."""
        v = self.integer(key, default)
        if v < 0:
            self.fail(key, "an integer >= 0", v)
        return v

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
        if (not isinstance(v, list) or len(v) != size
                or any(isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x) for x in v)):
            self.fail(key, f"a list of {size} finite numbers ({unit}) or null", v)
        return tuple(float(x) for x in v)

    def done(self) -> None:
        """Refuse a field that no getter read (a misspelt key would otherwise be ignored)."""
        extra = [str(k) for k in self.data if str(k) not in self._seen]
        if extra:
            raise UserError(f"{self.source}: unknown field {self.dotted(extra[0])}; "
                            f"expected one of: {', '.join(sorted(self._seen))}")
