"""The error types for bad input: the command line prints the message and exits non-zero."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping


class UserError(Exception):
    """Bad input from the user (a file, a flag, a value); the message names it and what was expected."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` naming the one of ``choices`` closest to a misspelt ``word``, or ``""`` when none is
    close (difflib's ratio below 0.6)."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


_MENTION = re.compile(r"\{([a-z][a-z0-9_]*)\}")
"""Another parameter named in a :class:`ParameterError`'s problem: ``{resume}``."""


class ParameterError(UserError):
    """A library parameter with a bad value. The message names the parameter as the library knows it (``epopt eps
    must be in (0, 1], got 2``); a command line that took it from a flag names the flag instead
    (:meth:`as_flag`). ``problem`` may name other parameters as ``{name}`` (``pick another {out}``), which the
    message writes as the name and :meth:`as_flag` as its flag."""

    def __init__(self, parameter: str, problem: str, owner: str = "") -> None:
        self.parameter = parameter
        """The parameter's name in the library (a dataclass field)."""
        self.problem = problem
        """What is wrong and what was expected (``must be in (0, 1], got 2``), other parameters as ``{name}``."""
        self.owner = owner
        """What the parameter belongs to, when the message needs it (``epopt``)."""
        super().__init__(f"{owner + ' ' if owner else ''}{parameter} {_named(problem, lambda name: name)}")

    def __reduce__(self) -> tuple[type[ParameterError], tuple[str, str, str]]:
        # Rebuilt from its fields, not from the message (pickled across worker processes).
        return type(self), (self.parameter, self.problem, self.owner)

    @property
    def mentions(self) -> tuple[str, ...]:
        """The other parameters ``problem`` names (``{resume}``), in order."""
        return tuple(_MENTION.findall(self.problem))

    def as_flag(self, flag: str | None = None, flags: Mapping[str, str] | None = None) -> UserError:
        """The same error naming the command-line flag ``flag`` (default: ``--`` and the name, dashed); ``flags``
        maps the parameters whose flag is not that default (``{"axes": "--grid"}``)."""
        def to_flag(name: str) -> str:
            return (flags or {}).get(name) or "--" + name.replace("_", "-")
        return UserError(f"{flag or to_flag(self.parameter)} {_named(self.problem, to_flag)}")


def _named(problem: str, name: Callable[[str], str]) -> str:
    return _MENTION.sub(lambda m: name(m.group(1)), problem)
