"""The grammar the ``s2r`` commands share: their parser and help formatter (every option's default shown), renamed
arguments whose old spelling still works for a release, argument types (``type=`` of ``argparse``), the mapping of
a library's parameter errors onto their flags, and the ``--json`` flag of the commands that produce a result.

The grammar (README, *Command-line grammar*): the policy a command runs is its positional ``POLICY``; trajectory
logs, read or written, are ``--log-dir DIR``; ``--out`` is what the command produces, a ``FILE.EXT`` when it writes
one artifact and a ``DIR`` (or ``RUN_DIR``) when it writes several; ``--json`` prints the result as one JSON object;
``--seed`` seeds it."""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

from s2r.core.errors import ParameterError, UserError


class HelpFormatter(argparse.HelpFormatter):
    """``argparse``'s help with each argument's default: `` (default: X)`` appended when the default says something
    (not ``None``, ``False``, an empty list, nor hidden) and the help does not already say what the default is (it
    mentions "default": ``default: one per CPU``); a float as ``%g`` writes it. The usage line shows a renamed
    argument (:func:`add_renamed_argument`) as itself, required when it is, without the group of its old spelling."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help
        if text and "default" not in text.lower() and shows_default(action.default):
            shown = f"{action.default:g}" if isinstance(action.default, float) else str(action.default)
            return f"{text} (default: {shown.replace('%', '%%')})"  # the help is %-formatted next
        return text

    def add_usage(self, usage: str | None, actions: Iterable[argparse.Action],
                  groups: Iterable[argparse._MutuallyExclusiveGroup], prefix: str | None = None) -> None:
        # argparse draws a group of a positional and an option (LOG_DIR, --log-dir) as separate optional arguments
        # (``[--log-dir DIR]``): a renamed argument is drawn alone, required as its group is.
        actions = list(actions)
        renamed = {a.group for a in actions if isinstance(a, _RenamedArgument)}
        shown = []
        for action in actions:
            if isinstance(action, _RenamedArgument) and action.group.required:
                action = copy.copy(action)
                action.required = True
            shown.append(action)
        super().add_usage(usage, shown, [g for g in groups if g not in renamed], prefix)


def shows_default(default: Any) -> bool:
    """Whether :class:`HelpFormatter` shows ``default`` in an argument's help."""
    if default is None or default is False or default is argparse.SUPPRESS:
        return False
    return not (isinstance(default, (list, tuple, dict, set)) and not default)


class Parser(argparse.ArgumentParser):
    """The parser of ``s2r`` (and of ``python -m s2r.commands....``): its help by :class:`HelpFormatter`. A
    subparser is of its parent's class, so every command's parser is one too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        # The group of a renamed argument shows one member: argparse's "one of the arguments --log-dir is required"
        # is that argument missing, said as for any other.
        group = re.fullmatch(r"one of the arguments (\S+) is required", message)
        super().error(f"the following arguments are required: {group[1]}" if group else message)


class _RenamedArgument(argparse.Action):
    """The current spelling of a renamed argument (:func:`add_renamed_argument`): stores its value like ``store``.
    An absent optional positional is still called, with its default, after the options are parsed: that call is
    ignored, so it does not overwrite what the old spelling (an option) stored."""

    def __init__(self, *args: Any, group: argparse._MutuallyExclusiveGroup, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.group = group
        """The group of this argument and its old spelling (argparse refuses the two together)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if values is not self.default or option_string is not None:
            setattr(namespace, self.dest, values)


class _OldSpelling(argparse.Action):
    """The old spelling of a renamed argument, hidden from the help: stores into the current one's ``dest`` and
    prints a one-line deprecation note on stderr."""

    def __init__(self, *args: Any, note: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.note = note
        """``OLD is deprecated; use NEW``, after the command's name."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if values is self.default:  # an absent optional positional: argparse calls it all the same
            return
        print(f"{parser.prog}: {self.note}", file=sys.stderr, flush=True)
        setattr(namespace, self.dest, values)


def add_renamed_argument(parser: argparse.ArgumentParser, *names: str, old: str, **kwargs: Any) -> argparse.Action:
    """``parser.add_argument(*names, **kwargs)`` (a plain ``store``) that also accepts its old spelling ``old`` for
    one release: an option (``--logs``) or, named by its metavar, an optional positional (``LOG_DIR``). The old
    spelling is hidden from the help, stores into the same ``dest``, and prints ``PROG: OLD is deprecated; use NEW``
    on stderr when it is parsed; giving both is an error, and either one meets ``required=True``.

    Returns the current spelling's action."""
    group = parser.add_mutually_exclusive_group(required=bool(kwargs.pop("required", False)))
    new = group.add_argument(*names, action=_RenamedArgument, group=group, **kwargs)
    if new.option_strings:
        use = new.option_strings[0]
    else:
        use = f"the positional {new.metavar or new.dest.upper()}"
    same: dict[str, Any] = {"type": new.type, "choices": new.choices, "help": argparse.SUPPRESS, "action": _OldSpelling}
    if old.startswith("-"):
        group.add_argument(old, dest=new.dest, metavar=new.metavar, default=argparse.SUPPRESS,
                           note=f"{old} is deprecated; use {use}", **same)
    else:  # its default None, not SUPPRESS: argparse would convert and check that string when it is absent
        group.add_argument(new.dest, metavar=old, nargs="?", default=None,
                           note=f"the positional {old} is deprecated; use {use} {old}", **same)
    return new


def seed(text: str) -> int:
    """A ``--seed`` value: an integer >= 0, as numpy's and gymnasium's seeding require (a negative one ended in a
    traceback from deep inside a run)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0 (numpy refuses a negative seed), got {value}")
    return value


def flag_error(exc: ParameterError, args: argparse.Namespace, flags: Mapping[str, str] | None = None) -> UserError:
    """``exc`` naming the flag its parameter came from (``--out``), when the command has that flag or ``flags`` maps
    it (``{"axes": "--grid"}``); unchanged otherwise (a parameter of a library object the command built itself).
    Another parameter the message names keeps its bare name unless the command has a flag for it too."""
    known = {*vars(args), *(flags or {})}
    if exc.parameter not in known:
        return exc
    bare = {name: name for name in exc.mentions if name not in known}
    return exc.as_flag(flags={**bare, **(flags or {})})


def add_json_flag(parser: argparse.ArgumentParser, what: str) -> None:
    """``--json`` on a command that produces a result: it then prints ``what`` as one JSON object, the only line on
    stdout, instead of its text (progress and warnings stay on stderr). See :func:`print_result`."""
    parser.add_argument("--json", action="store_true", help=f"print one JSON object ({what}) instead of the text, "
                        "the only line on stdout")


def print_result(as_json: bool, result: Mapping[str, Any], lines: Iterable[str]) -> None:
    """A command's result on stdout: ``result`` as one JSON line with ``as_json`` (``--json``), else its text
    ``lines``; flushed either way."""
    if as_json:
        print(json.dumps(result))
    else:
        for line in lines:
            print(line)
    sys.stdout.flush()
