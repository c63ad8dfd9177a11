"""Library errors name the parameter; the command line maps it onto its flag (``s2r.cliargs.flag_error``)."""

from __future__ import annotations

import argparse
import pickle
from collections.abc import Callable

import pytest

from policies.config import parse_overrides
from randomization.adapt import output_paths
from randomization.parallel import ExecutorConfig
from randomization.sweep import check_axis_count
from robot.hardware import check_driver_options
from s2r.cliargs import flag_error
from s2r.core.errors import ParameterError, UserError


def test_a_parameter_error_names_parameters_and_as_flag_names_flags() -> None:
    exc = ParameterError("out", "'r' already holds a run; pass {resume} to continue it or pick another {out}")
    assert str(exc) == "out 'r' already holds a run; pass resume to continue it or pick another out"
    assert str(exc.as_flag()) == "--out 'r' already holds a run; pass --resume to continue it or pick another --out"
    grid = ParameterError("axes", "must be 1 or 2 grid axes, got 3").as_flag(flags={"axes": "--grid"})
    assert str(grid) == "--grid must be 1 or 2 grid axes, got 3"
    # Literal braces that are not a parameter's name stay as they are.
    assert str(ParameterError("gate", "is {'a': 1}").as_flag()) == "--gate is {'a': 1}"
    again = pickle.loads(pickle.dumps(ParameterError("eps", "must be in (0, 1], got 2", "epopt")))
    assert isinstance(again, ParameterError) and str(again) == "epopt eps must be in (0, 1], got 2"


def test_the_cli_maps_only_its_own_flags() -> None:
    args = argparse.Namespace(out="x", workers=1)
    assert str(flag_error(ParameterError("out", "is bad"), args)) == "--out is bad"
    # A parameter of an object the command built itself has no flag: the library's message stays.
    inner = ParameterError("eps", "must be in (0, 1], got 2", "epopt")
    assert flag_error(inner, args) is inner
    # Another parameter the message names becomes a flag only where the command has one.
    both = ParameterError("out", "is taken: pass {workers}=1 or {resume}")
    assert str(flag_error(both, args)) == "--out is taken: pass --workers=1 or resume"
    assert str(flag_error(both, args, {"resume": "--again"})) == "--out is taken: pass --workers=1 or --again"


@pytest.mark.parametrize(("call", "message"), [
    (lambda: output_paths("posterior.txt"), "out 'posterior.txt' must name a .yaml file"),
    (lambda: check_axis_count([]), "axes must be 1 or 2 grid axes (NAME=LO:HI:N each), got 0"),
    (lambda: ExecutorConfig(ray=" "), "ray must be 'auto' or a cluster address"),
    (lambda: parse_overrides(["lr=0.1", "lr"]), "overrides must be key=value, got 'lr'"),
    (lambda: check_driver_options("emulator", False, "/tmp/s.sock"),
     "clock_socket is the time socket of a lock-step emulator: it needs lockstep"),
    (lambda: check_driver_options("dynamixel", True, None), "lockstep runs a simulated robot in simulated time; the "
     "dynamixel driver runs in real time (set driver to emulator or mock, or drop lockstep)"),
])
def test_library_messages_name_the_parameter_not_a_flag(call: Callable[[], object], message: str) -> None:
    with pytest.raises(UserError) as info:
        call()
    assert str(info.value).startswith(message) and "--" not in str(info.value)


def test_an_auto_port_without_one_adapter_names_the_port(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    import robot.bus

    monkeypatch.setattr(robot.bus, "SERIAL_BY_ID_GLOB", f"{tmp_path}/by-id/*")
    with pytest.raises(ParameterError) as info:
        robot.bus.resolve_port("auto")
    assert str(info.value) == ("port 'auto' needs exactly one USB serial adapter under /dev/serial/by-id (found: "
                               "none); name the port in the hardware config or with port, or use the emulator driver")
    args = argparse.Namespace(port="auto", driver="dynamixel")
    cli = str(flag_error(info.value, args))
    assert cli.startswith("--port 'auto' needs exactly one")
    assert cli.endswith("or with --port, or use the emulator driver")
