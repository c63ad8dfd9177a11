"""The project's one YAML reader: ``yaml.safe_load`` that refuses a key repeated in one mapping.

PyYAML keeps the last of two equal keys without a word, so a file that sets ``max_data_age_s`` twice ran with
whichever came last. Every loader of a config, reality, fault or randomization file reads YAML through
:func:`load_yaml`, and a repeated key is a :class:`~s2r.core.errors.UserError` naming the file, the key and both lines.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import yaml

from s2r.core.errors import UserError

_MERGE_TAG = "tag:yaml.org,2002:merge"


class DuplicateKeyError(UserError):
    """A mapping in a YAML file names one key twice."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` whose mappings refuse a repeated key and whose floats are YAML 1.2's; ``source`` names the
    file in the error."""

    source = "<string>"

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            # A merge key (<<) brings in keys that the mapping's own keys may override, as YAML intends.
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue  # the base constructor refuses an unhashable key with its own message
            line = key_node.start_mark.line + 1
            if key in first_line:
                raise DuplicateKeyError(
                    f"{self.source}: key {key!r} appears twice in one mapping (lines {first_line[key]} and {line}); "
                    "YAML would silently keep only the last, so remove one")
            first_line[key] = line
        return super().construct_mapping(node, deep=deep)


# PyYAML resolves floats by YAML 1.1, where `3e-4` (no dot) is the string '3e-4' and `lr: 3e-4` then fails as "expected
# a number". YAML 1.2's core schema reads it as the float everyone means; so do the rules below (1.2's float forms,
# plus 1.1's that PyYAML already accepts: `1_000.5`). Integers keep PyYAML's resolver.
_FLOAT_12 = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)
_UniqueKeyLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))


def load_yaml(text: str, source: str = "<string>") -> Any:
    """``text`` parsed as YAML with the safe loader. ``source`` (the file, or what the text is, e.g.
    ``"hardware config 'dclaw.yaml'"``) starts every error: a repeated key is a :class:`DuplicateKeyError`
    naming the key and both line numbers, a syntax error a one-line :class:`~s2r.core.errors.UserError`."""
    try:
        loader = _UniqueKeyLoader(text)
        loader.source = source
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise UserError(f"{source} is not valid YAML: {_one_line(exc)}") from None


def _one_line(exc: yaml.YAMLError) -> str:
    """PyYAML's message on one line: the problem and where (its own text spans lines and quotes the stream)."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem is not None:
        where = ""
        if exc.problem_mark is not None:
            where = f" at line {exc.problem_mark.line + 1}, column {exc.problem_mark.column + 1}"
        context = f" ({exc.context})" if exc.context else ""
        return f"{exc.problem}{where}{context}"
    return " ".join(str(exc).split())


def read_yaml_file(path: str | Path, what: str) -> Any:
    """The YAML content of the file ``path``; ``what`` names the kind of file in errors (``"hardware config"``).

    A missing, unreadable or non-UTF-8 file is a :class:`~s2r.core.errors.UserError` too, as are the errors of
    :func:`load_yaml`.
    """
    p = Path(path)
    named = f"{what} {str(p)!r}"
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"cannot read {named}: file not found") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{named} is not UTF-8 text (byte {exc.start}): is it a YAML file?") from None
    except OSError as exc:
        raise UserError(f"cannot read {named}: {exc.strerror or exc}") from None
    return load_yaml(text, named)


def set_numbers(text: str, values: Mapping[tuple[str, ...], float], source: str = "<string>") -> str:
    """``text`` with the number at each key path of ``values`` (``("joints", "f0_top", "offset_rad")``) set, and
    every other byte kept: comments, layout, key order. A key missing from its mapping is added to it (after the
    last entry of a flow mapping ``{...}``, before the first of a block mapping); the mappings above it must exist.
    The result is checked by parsing it back: the same data, with exactly these numbers changed.

    PyYAML's composer gives each node's position in the text, so only the numbers' own characters are replaced: a
    hand-written, commented config stays the file its owner knows (a dump of the parsed data would drop every
    comment). Raises :class:`~s2r.core.errors.UserError` naming the path when the text does not have that shape.
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise UserError(f"{source} is not valid YAML: {_one_line(exc)}") from None
    edits: list[tuple[int, int, int, str]] = []
    for seq, (path, value) in enumerate(values.items()):
        number = float(value)
        if not math.isfinite(number) or not path:
            raise ValueError(f"set_numbers needs a key path and a finite number; got {path!r}: {value!r}")
        node = root
        for depth, key in enumerate(path[:-1]):
            node = _mapping_value(node, key, source, path[:depth + 1])
        if not isinstance(node, yaml.MappingNode):
            raise UserError(f"{source}: {'.'.join(path[:-1]) or 'the top level'} must be a mapping to set "
                            f"{'.'.join(path)}")
        found = _pair(node, path[-1])
        if found is not None:
            if not isinstance(found, yaml.ScalarNode):
                raise UserError(f"{source}: {'.'.join(path)} must be a number, not a {found.id}")
            edits.append((found.start_mark.index, found.end_mark.index, seq, repr(number)))
        elif not node.value:
            raise UserError(f"{source}: {'.'.join(path[:-1])} is empty: no place to add {path[-1]}")
        elif node.flow_style:
            end = node.value[-1][1].end_mark.index
            edits.append((end, end, seq, f", {path[-1]}: {number!r}"))
        else:
            first = node.value[0][0].start_mark
            line_start = first.index - first.column
            if text[line_start:first.index].strip():
                raise UserError(f"{source}: cannot add {'.'.join(path)}: the mapping does not start its own line")
            edits.append((line_start, line_start, seq, f"{' ' * first.column}{path[-1]}: {number!r}\n"))
    out = text
    for start, end, _, new in sorted(edits, reverse=True):
        out = out[:start] + new + out[end:]
    expected = load_yaml(text, source)
    for path, value in values.items():
        parent = expected
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = float(value)
    if load_yaml(out, source) != expected:
        raise UserError(f"{source}: setting {', '.join('.'.join(p) for p in values)} changed more than those numbers")
    return out


def _pair(node: yaml.MappingNode, key: str) -> yaml.Node | None:
    """The value node of ``key`` in a mapping node, or ``None``."""
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            return v
    return None


def _mapping_value(node: yaml.Node, key: str, source: str, path: tuple[str, ...]) -> yaml.Node:
    found = _pair(node, key) if isinstance(node, yaml.MappingNode) else None
    if found is None:
        raise UserError(f"{source}: no {'.'.join(path)} to set a number in")
    return found
