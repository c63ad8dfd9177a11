"""The project's one YAML reader: ``yaml.safe_load`` that refuses a key repeated in one mapping.

PyYAML keeps the last of two equal keys without a word, so a file that sets ``max_data_age_s`` twice ran with
whichever came last. Every loader of a config, reality, fault or randomization file reads YAML through
:func:`load_yaml`, and a repeated key is a :class:`~s2r.core.errors.UserError` naming the file, the key and both lines.
"""

from __future__ import annotations

import re
from collections.abc import Hashable
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
