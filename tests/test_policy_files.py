"""s2r.policy_files.load_policy: the one loader of a policy file; what it refuses and what it says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from robot.config import load_config
from s2r.core.errors import UserError
from s2r.policy_files import SCRIPTED_POLICIES, load_policy

ROOT = Path(__file__).resolve().parents[1]
SPEC = load_config(ROOT / "hardware_configs" / "dclaw.yaml").task_spec()


def test_a_missing_file_names_the_path_and_every_accepted_kind(tmp_path: Path) -> None:
    missing = tmp_path / "nope.onnx"
    with pytest.raises(UserError) as err:
        load_policy(missing)
    text = str(err.value)
    assert text.startswith(f"policy {str(missing)!r} does not exist: expected an .onnx file, a checkpoint (.pt), "
                           "a training run directory holding best.pt or last.pt, or scripted:hold")
    assert all(f"scripted:{name}" in text for name in SCRIPTED_POLICIES)


def test_bad_inputs_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"run directory .* holds no checkpoint \(best\.pt or last\.pt\)"):
        load_policy(tmp_path)
    garbage = tmp_path / "model.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=r"cannot read checkpoint .*model\.pt.*: the file is corrupted or not a"):
        load_policy(garbage)
    with pytest.raises(UserError, match="a scripted policy runs on a robot's task"):
        load_policy("scripted:hold")
    with pytest.raises(UserError, match="unknown scripted policy 'dance'"):
        load_policy("scripted:dance", spec=SPEC)


def test_scripted_policies_act_on_the_task() -> None:
    zero = load_policy("scripted:zero", spec=SPEC)
    assert (zero.kind, zero.path, zero.env_id) == ("scripted", None, None)
    obs = np.zeros(SPEC.obs_layout.size, dtype=np.float32)
    assert np.array_equal(zero.act(obs), np.zeros(SPEC.n_joints))
    random = load_policy("scripted:random", spec=SPEC, seed=3).act(obs)
    assert random.shape == (SPEC.n_joints,) and np.all(np.abs(random) <= 1.0)


def test_the_command_line_and_an_onnx_deploy_load_no_torch() -> None:
    # Every s2r command builds the whole parser; torch would add about 2 s to each and sit in the robot's process.
    code = ("import sys; from s2r import cli; cli.build_parser(); import s2r.policy_files, s2r.commands.robot; "
            "assert 'torch' not in sys.modules, 'torch'; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
