"""The base install has no torch (it is the ``train`` extra) and no OpenCV (the ``camera`` extra): ONNX policies
evaluate and deploy (the claw's config has a camera section, opened only with ``--perception``), and the commands
that need torch say which extra installs it, exit 2 and write nothing.

Each command runs in a subprocess whose ``sys.modules["torch"] = sys.modules["cv2"] = None`` makes both
unimportable, as on a robot's computer that installed ``pip install s2r``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POLICY = ROOT / "tests" / "data" / "dclaw_turn_crossq.onnx"
NO_TORCH = ("import sys; sys.modules['torch'] = sys.modules['cv2'] = None; "
            "from s2r.cli import main; sys.exit(main(sys.argv[1:]))")


def s2r_without_torch(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", NO_TORCH, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_the_commands_that_need_torch_name_the_extra_and_write_nothing(tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"a checkpoint")
    earlier = tmp_path / "demo" / "demo.json"
    earlier.parent.mkdir()
    earlier.write_text("{}")
    commands = {
        "s2r train": ["train", "--steps", "100", "--out", tmp_path / "run"],
        "s2r export": ["export", checkpoint, "--out", tmp_path / "policy.onnx"],
        f"loading the checkpoint {str(checkpoint)!r}": ["eval", checkpoint, "--episodes", "1"],
        "s2r demo": ["demo", "--quick", "--out", earlier.parent, "--force"],
        "s2r train-perception": ["train-perception", "--samples", "10", "--out", tmp_path / "perception"],
    }
    for purpose, args in commands.items():
        done = s2r_without_torch(*args, cwd=tmp_path)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert done.stderr.strip().endswith(f"{purpose} needs the Python package 'torch', which is not installed; "
                                            "install it with: pip install 's2r[train]'"), done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo", "model.pt"]
    assert earlier.read_text() == "{}"  # --force removed nothing


def test_an_onnx_policy_evaluates_and_deploys_on_the_emulator_without_torch(tmp_path: Path) -> None:
    done = s2r_without_torch("eval", POLICY, "--episodes", "1", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["episodes"] == 1

    done = s2r_without_torch("deploy", POLICY, "--robot", "dclaw", "--driver", "emulator", "--lockstep",
                             "--episodes", "1", "--log-dir", tmp_path / "logs", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "logs").rglob("*.npz"))) == 1
