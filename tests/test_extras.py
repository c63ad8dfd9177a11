"""A missing optional dependency is reported with the extra that installs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from s2r.core.extras import MissingExtra, quiet_native_output, require


def test_missing_extra_names_the_extra_and_the_package() -> None:
    with pytest.raises(MissingExtra) as err:
        require("s2r_no_such_module_xyz", extra="pybullet", purpose="the PyBullet engine")
    message = str(err.value)
    assert "s2r[pybullet]" in message
    assert "s2r_no_such_module_xyz" in message
    assert "the PyBullet engine" in message


def test_present_module_passes() -> None:
    require("numpy", extra="none", purpose="nothing")


def test_no_banner_from_the_pybullet_engine_on_either_stream(tmp_path: Path) -> None:
    # pybullet prints "pybullet build time: ..." on import; a command's output (--json included) must stay its own.
    policy = Path(__file__).parent / "data" / "dclaw_turn_crossq.onnx"
    done = subprocess.run([sys.executable, "-m", "s2r.cli", "eval", str(policy), "--episodes", "1", "--engine",
                           "pybullet", "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "pybullet" not in done.stderr and "build time" not in done.stdout
    assert json.loads(done.stdout)["engine"] == "pybullet"


def test_quiet_native_output_restores_both_streams(capfd: pytest.CaptureFixture[str]) -> None:
    with quiet_native_output():
        os.write(1, b"hidden out\n")
        os.write(2, b"hidden err\n")
    os.write(1, b"shown out\n")
    os.write(2, b"shown err\n")
    out, err = capfd.readouterr()
    assert (out, err) == ("shown out\n", "shown err\n")
