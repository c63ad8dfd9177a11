"""One grammar for every ``s2r`` command (README, *Command-line grammar*): the policy a command runs is its
positional ``POLICY``; trajectory logs, read or written, are ``--log-dir DIR``; ``--out`` is what the command
produces, ``FILE.EXT`` for one artifact and ``DIR``/``RUN_DIR`` for several; every default shows in ``--help``. The
spellings from before (``adapt --logs``, ``simlogs --out``, ``trajlog-dataset LOG_DIR``, ``render``/``simlogs
--policy``) still work for one release, hidden from the help, with a deprecation note on stderr."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
from test_trajlog import INFO, _episode

from s2r import cliargs
from s2r.cli import build_parser, main
from s2r.core.trajlog import TrajectoryWriter

LOG_DIR_COMMANDS = {"deploy": "writes", "simlogs": "writes", "adapt": "reads", "trajlog-dataset": "reads"}
"""Commands whose input or output is a trajectory-log directory: ``--log-dir DIR``. ``finetune`` and ``demo`` also
write logs, inside the directory ``--out`` names among their other outputs: there the logs are part of what they
produce."""
POLICY_COMMANDS = ("eval", "sweep", "deploy", "render", "simlogs")
"""Commands that run a policy: the positional ``POLICY``."""
FROM_TRAINING = {"export": "RUN_DIR|CHECKPOINT", "finetune": "RUN_DIR|CHECKPOINT"}
"""Commands whose subject is a trained policy but which need what training wrote, not any policy: ``export`` makes
the ONNX file from a checkpoint (an ONNX file or a scripted policy is no input for it), ``finetune`` continues the
run's learner (its critics and replay). A ``POLICY`` metavar would promise them what they refuse."""
OUT_METAVARS = {"train": "RUN_DIR", "export": "FILE.onnx", "render": "FILE.gif", "trajlog-dataset": "FILE.npz|DIR",
                "adapt": "FILE.yaml", "sweep": "DIR", "finetune": "DIR", "demo": "DIR", "calibrate": "FILE.yaml",
                "train-perception": "DIR", "join-perception": "FILE.onnx", "train-pixels": "DIR"}
"""``--out`` of every command that has one: a file when it writes one artifact (adapt's .json report and .png plot
go beside its .yaml), a directory when it writes several."""
OLD_SPELLINGS = ("--logs", "--policy")
"""Options no command shows any more."""


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(subparsers.choices)


def _visible(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.help is not argparse.SUPPRESS]


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in _visible(parser) for s in a.option_strings}


def _positionals(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in _visible(parser) if not a.option_strings]


def _help_of(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    formatter = parser._get_formatter()
    formatter.add_argument(action)
    return " ".join(formatter.format_help().split())


# --- the grammar, command by command -----------------------------------------------------------------------------
def test_no_command_shows_an_old_spelling() -> None:
    for name, parser in _commands().items():
        assert not set(_options(parser)) & set(OLD_SPELLINGS), f"s2r {name} shows an old spelling"
        help_text = parser.format_help()
        assert not any(old in help_text for old in OLD_SPELLINGS), f"s2r {name} --help names an old spelling"
        assert "LOG_DIR" not in help_text, f"s2r {name} --help names the old positional LOG_DIR"


def test_trajectory_logs_are_always_log_dir() -> None:
    commands = _commands()
    for name in LOG_DIR_COMMANDS:
        option = _options(commands[name]).get("--log-dir")
        assert option is not None, f"s2r {name} {LOG_DIR_COMMANDS[name]} trajectory logs but has no --log-dir"
        assert option.metavar == "DIR" and "trajectory log directory" in (option.help or "")
        # required, and shown so in the usage line even where a hidden old spelling shares its group
        assert " --log-dir DIR " in " ".join(commands[name].format_usage().split()) + " ", name
    others = {n for n, p in commands.items() if "--log-dir" in _options(p)} - set(LOG_DIR_COMMANDS)
    assert not others, f"{sorted(others)} take --log-dir: list them in LOG_DIR_COMMANDS"


def test_the_policy_is_always_the_positional_policy() -> None:
    commands = _commands()
    for name in POLICY_COMMANDS:
        metavars = [a.metavar for a in _positionals(commands[name])]
        assert metavars == ["POLICY"], f"s2r {name}: positionals {metavars}"
        text = _help_of(commands[name], _positionals(commands[name])[0])
        assert all(kind in text for kind in (".onnx", "checkpoint (.pt)", "run directory")), text
    assert "scripted:excite" in _help_of(commands["deploy"], _positionals(commands["deploy"])[0])
    simlogs = _help_of(commands["simlogs"], _positionals(commands["simlogs"])[0])
    assert all(f"'{name}'" in simlogs for name in ("scripted", "random", "excite")), simlogs
    for name, metavar in FROM_TRAINING.items():
        assert [a.metavar for a in _positionals(commands[name])] == [metavar], name
    others = {n for n, p in commands.items() if any("POLICY" in (a.metavar or "") for a in _positionals(p))}
    assert others == set(POLICY_COMMANDS), f"{sorted(others - set(POLICY_COMMANDS))}: list them in POLICY_COMMANDS"


def test_out_is_what_the_command_produces() -> None:
    commands = _commands()
    with_out = {name: _options(p)["--out"].metavar for name, p in commands.items() if "--out" in _options(p)}
    assert with_out == OUT_METAVARS


def test_every_default_shows_in_the_help() -> None:
    for name, parser in _commands().items():
        for action in _visible(parser):
            if cliargs.shows_default(action.default) and action.option_strings:
                text = _help_of(parser, action)
                assert "default" in text, f"s2r {name} {action.option_strings[0]}: {text!r}"
                if "default" not in (action.help or "").lower():
                    assert "(default: " in text, f"s2r {name} {action.option_strings[0]}: {text!r}"


def test_the_formatter_appends_a_default_only_where_it_says_something() -> None:
    parser = cliargs.Parser(prog="p")
    parser.add_argument("--none", help="nothing")
    parser.add_argument("--flag", action="store_true", help="a flag")
    parser.add_argument("--many", action="append", default=[], help="repeatable")
    parser.add_argument("--zero", type=int, default=0, help="a count")
    parser.add_argument("--noise", type=float, default=0.00044282211040874464, help="a std")
    parser.add_argument("--share", default="5%", help="a share")
    parser.add_argument("--said", type=int, default=3, help="rounds (default: three)")
    text = " ".join(parser.format_help().split())
    assert "nothing --flag" in text and "a flag --many" in text and "repeatable --zero" in text
    assert "a count (default: 0)" in text and "a std (default: 0.000442822)" in text
    assert "a share (default: 5%)" in text and text.endswith("rounds (default: three)") and "(default: 3)" not in text


# --- the old spellings, for one release ---------------------------------------------------------------------------
ADAPT = ["adapt", "--task", "dclaw-turn", "--prior", "p.yaml", "--out", "o.yaml"]


@pytest.mark.parametrize(("argv", "dest", "value", "note"), [
    ([*ADAPT, "--logs", "L"], "log_dir", "L", "s2r adapt: --logs is deprecated; use --log-dir"),
    (["simlogs", "--task", "dclaw-turn", "--out", "L"], "log_dir", "L",
     "s2r simlogs: --out is deprecated; use --log-dir"),
    (["simlogs", "--policy", "random", "--task", "dclaw-turn", "--log-dir", "L"], "policy", "random",
     "s2r simlogs: --policy is deprecated; use the positional POLICY"),
    (["render", "--task", "dclaw-turn", "--policy", "run", "--out", "x.gif"], "policy", "run",
     "s2r render: --policy is deprecated; use the positional POLICY"),
    (["trajlog-dataset", "L", "--out", "x.npz"], "log_dir", "L",
     "s2r trajlog-dataset: the positional LOG_DIR is deprecated; use --log-dir LOG_DIR"),
], ids=["adapt --logs", "simlogs --out", "simlogs --policy", "render --policy", "trajlog-dataset LOG_DIR"])
def test_an_old_spelling_still_works_with_a_note(argv: list[str], dest: str, value: str, note: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    assert capsys.readouterr().err == note + "\n"


@pytest.mark.parametrize(("argv", "dest", "value"), [
    ([*ADAPT, "--log-dir", "L"], "log_dir", "L"),
    (["simlogs", "--task", "dclaw-turn", "--log-dir", "L"], "policy", "scripted"),
    (["simlogs", "--task", "dclaw-turn", "--log-dir", "L", "excite"], "policy", "excite"),
    (["render", "--task", "dclaw-turn", "--out", "x.gif"], "policy", None),
    (["render", "run", "--task", "dclaw-turn", "--out", "x.gif"], "policy", "run"),
    (["trajlog-dataset", "--log-dir", "L", "--out", "x.npz"], "log_dir", "L"),
])
def test_the_new_spelling_prints_no_note(argv: list[str], dest: str, value: str | None,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert getattr(build_parser().parse_args(argv), dest) == value
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(("argv", "error"), [
    ([*ADAPT, "--logs", "L", "--log-dir", "M"], "argument --log-dir: not allowed with argument --logs"),
    (["trajlog-dataset", "L", "--log-dir", "M", "--out", "x.npz"],
     "argument --log-dir: not allowed with argument LOG_DIR"),
    (["simlogs", "random", "--policy", "excite", "--task", "dclaw-turn", "--log-dir", "L"],
     "argument --policy: not allowed with argument POLICY"),
    (ADAPT, "s2r adapt: error: the following arguments are required: --log-dir"),
    (["trajlog-dataset", "--out", "x.npz"], "s2r trajlog-dataset: error: the following arguments are required: "
                                            "--log-dir"),
], ids=["adapt both", "trajlog-dataset both", "simlogs both", "adapt neither", "trajlog-dataset neither"])
def test_old_and_new_spelling_together_or_neither_is_a_usage_error(argv: list[str], error: str,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2
    assert error in capsys.readouterr().err


def test_trajlog_dataset_from_the_old_positional_writes_the_dataset(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    logs = tmp_path / "logs"
    TrajectoryWriter(logs, INFO).write_episode(_episode(3, np.random.default_rng(0)), {"complete": True})
    out = tmp_path / "data.npz"
    assert main(["trajlog-dataset", str(logs), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.err == "s2r trajlog-dataset: the positional LOG_DIR is deprecated; use --log-dir LOG_DIR\n"
    assert captured.out == f"wrote 3 transitions to {out}\n"
    with np.load(out) as data:
        assert data["rewards"].shape == (3,)
