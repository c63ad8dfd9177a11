"""A non-editable install works: the wheel carries the configs, and ``s2r deploy`` runs from an empty directory.

Slow (a wheel build and a fresh venv, about a minute; ``make install-check``, which CI runs). Nothing is downloaded
when this environment has setuptools >= 77: the wheel is built with it (``--no-build-isolation``); it is installed
with ``--no-deps --no-index`` into a fresh venv that reads the dependencies from this environment's site-packages
through a ``.pth`` file.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

from robot.config import load_config
from robot.emulator.reality import load_reality
from s2r.core.errors import UserError
from s2r.core.resources import HARDWARE_CONFIGS, shipped_file

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("s2r", "sim", "robot", "policies", "randomization", "export", "hardware_configs")
SHIPPED = (
    "hardware_configs/dclaw.yaml",
    "hardware_configs/dkitty.yaml",
    "hardware_configs/reality/dclaw_pybullet_gap.yaml",
    "randomization/configs/dclaw.yaml",
    "randomization/configs/dkitty.yaml",
)


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def _setuptools_at_least(major: int) -> bool:
    try:
        return int(version("setuptools").split(".")[0]) >= major
    except PackageNotFoundError:
        return False


def _wheel(tmp_path: Path) -> Path:
    """The wheel of a copy of the sources (the build writes build/ and egg-info beside them)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path / "wheels"
    # This environment's setuptools when it is recent enough (no download); else pip fetches the build backend.
    offline = ["--no-build-isolation", "--no-index"] if _setuptools_at_least(77) else []
    _run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", *offline, "-w", str(out)], tmp_path)
    (wheel,) = out.glob("s2r-*.whl")
    return wheel


@pytest.mark.slow
def test_wheel_install_deploys_from_an_empty_directory(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert not [f for f in SHIPPED if f not in names], sorted(names)
    # torch is the `train` extra: the base install (a robot's computer) does not pull it.
    (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    torch_deps = [line for line in zipfile.ZipFile(wheel).read(metadata).decode().splitlines()
                  if line.startswith("Requires-Dist: torch")]
    assert torch_deps == ['Requires-Dist: torch==2.13.0; extra == "train"'], torch_deps

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    python = venv / "bin" / "python"
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                        tmp_path).stdout.strip())
    # The dependencies come from this environment; s2r itself only from the wheel (a path listed in a .pth file is
    # not scanned for .pth files, so this environment's editable s2r hook stays out).
    (purelib / "s2r_test_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    # --ignore-installed: never uninstall the s2r that this environment's site-packages holds.
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
          "--ignore-installed", "--no-compile", str(wheel)], tmp_path)

    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = _run([str(python), "-c", "import hardware_configs, s2r; print(s2r.__file__)"], empty, env).stdout
    assert Path(where.strip()).is_relative_to(venv), where
    s2r = str(venv / "bin" / "s2r")
    assert "--driver" in _run([s2r, "deploy", "--help"], empty, env).stdout
    assert "--quick" in _run([s2r, "demo", "--help"], empty, env).stdout

    # The README's relative paths and a bare robot name both find the shipped files from any directory.
    out = _run([s2r, "deploy", "scripted:hold", "--robot", "dclaw", "--driver", "emulator", "--lockstep",
                "--reality", "hardware_configs/reality/dclaw_pybullet_gap.yaml", "--episodes", "1",
                "--episode-steps", "5", "--log-dir", "logs", "--json"], empty, env).stdout
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["episodes"] == 1 and summary["driver"] == "emulator"
    assert (empty / "logs" / "run.json").is_file()
    assert sorted(p.name for p in empty.iterdir()) == ["logs"]


def test_shipped_configs_are_found_from_any_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    shipped = shipped_file(HARDWARE_CONFIGS, "dclaw.yaml")
    assert shipped == ROOT / "hardware_configs" / "dclaw.yaml"
    by_name, by_path = load_config("dclaw"), load_config("hardware_configs/dclaw.yaml")
    assert by_name == by_path and by_name.source == str(shipped)
    assert load_reality("dclaw_pybullet_gap", by_name).engine == "pybullet"
    with pytest.raises(UserError, match="cannot read hardware config 'nope': file not found"):
        load_config("nope")
    # A file of the working directory wins over a shipped one of the same name.
    (tmp_path / "hardware_configs").mkdir()
    local = tmp_path / "hardware_configs" / "dclaw.yaml"
    local.write_text(shipped.read_text().replace("latency_timer_s:", "latency_timer_s: 0.002 #", 1))
    assert load_config("hardware_configs/dclaw.yaml").latency_timer_s == 0.002


NEWER_PYTHONS = ("3.12", "3.13")
"""The interpreters ``requires-python`` admits beyond the 3.11 that ``make setup`` uses."""


def _interpreter(version: str) -> str | None:
    """A working ``python<version>`` on this machine: on the PATH, or one pyenv installed (its shims refuse to run
    a version that is not selected)."""
    candidates = [shutil.which(f"python{version}")]
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += sorted(str(p) for p in pyenv_root.glob(f"versions/{version}.*/bin/python{version}"))
    for candidate in candidates:
        if candidate is None:
            continue
        probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                               text=True, timeout=60)
        if probe.returncode == 0 and probe.stdout.strip() == str(tuple(int(v) for v in version.split("."))):
            return candidate
    return None


@pytest.mark.slow
@pytest.mark.parametrize("python_version", NEWER_PYTHONS)
def test_the_base_install_runs_on_newer_pythons(python_version: str, tmp_path: Path) -> None:
    """The wheel with its dependencies from the package index (a robot's computer: no torch) into a fresh venv of
    Python 3.12 / 3.13: an ONNX policy evaluates in MuJoCo and deploys on the emulator from an empty directory."""
    interpreter = _interpreter(python_version)
    if interpreter is None:
        pytest.skip(f"no Python {python_version} interpreter on this machine")
    wheel = _wheel(tmp_path)
    venv = tmp_path / "venv"
    _run([interpreter, "-m", "venv", str(venv)], tmp_path)
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-compile", str(wheel)], tmp_path)

    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    s2r = str(venv / "bin" / "s2r")
    policy = str(ROOT / "tests" / "data" / "dclaw_turn_crossq.onnx")
    evaluated = json.loads(_run([s2r, "eval", policy, "--episodes", "1", "--json"], empty, env).stdout)
    assert evaluated["episodes"] == 1
    out = _run([s2r, "deploy", policy, "--robot", "dclaw", "--driver", "emulator", "--lockstep", "--episodes", "1",
                "--episode-steps", "5", "--log-dir", "logs", "--json"], empty, env).stdout
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["episodes"] == 1 and summary["driver"] == "emulator"
    refused = subprocess.run([s2r, "train", "--steps", "10", "--out", "run"], cwd=empty, env=env, capture_output=True,
                             text=True, timeout=600)
    assert refused.returncode == 2 and "pip install 's2r[train]'" in refused.stderr
