"""The error types for bad input: the command line prints the message and exits non-zero."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (a file, a flag, a value); the message names it and what was expected."""


class ParameterError(UserError):
    """A library parameter with a bad value. The message names the parameter as the library knows it (``epopt eps
    must be in (0, 1], got 2``); a command line that took it from a flag names the flag instead
    (:meth:`as_flag`)."""

    def __init__(self, parameter: str, problem: str, owner: str = "") -> None:
        self.parameter = parameter
        """The parameter's name in the library (a dataclass field)."""
        self.problem = problem
        """What is wrong and what was expected (``must be in (0, 1], got 2``)."""
        super().__init__(f"{owner + ' ' if owner else ''}{parameter} {problem}")

    def as_flag(self, flag: str | None = None) -> UserError:
        """The same error naming the command-line flag ``flag`` (default: ``--`` and the name, dashed)."""
        return UserError(f"{flag or '--' + self.parameter.replace('_', '-')} {self.problem}")
