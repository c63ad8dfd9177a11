"""``s2r calibrate`` and ``robot.calibrate``: an emulated robot whose servos are mounted with offsets and flipped is
calibrated back to its mounting within a tick; bad poses, bad readings and limits that do not fit write nothing; a
run with nobody to press Enter stops at once; the config's text keeps everything but the calibrated numbers."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from lockstep_emulator import lockstep_bus

from robot.calibrate import MAX_POSE_MISMATCH_RAD, calibrated_text, measure, read_pose, solve
from robot.config import config_from_mapping, load_config
from robot.dynamixel.units import RAD_PER_TICK
from robot.emulator import Emulator, reality_from_mapping
from s2r.cli import main
from s2r.commands.calibrate import HeldPose, ci_says_noninteractive, person_poses
from s2r.core.errors import UserError
from s2r.core.yamlfile import load_yaml, set_numbers

ROOT = Path(__file__).resolve().parents[1]
DCLAW_YAML = ROOT / "hardware_configs" / "dclaw.yaml"
CLAW = load_config(DCLAW_YAML)
POSES = CLAW.calibration_poses
MOUNTING = {
    "f0_top": {"scale": -1, "offset_rad": 0.12},
    "f0_mid": {"scale": 1, "offset_rad": -0.3},
    "f1_bot": {"scale": -1, "offset_rad": 0.05},
    "f2_mid": {"scale": -1, "offset_rad": -0.2},
    "f2_bot": {"scale": 1, "offset_rad": 0.0371},
}
"""How the emulated claw's servos really sit: four offsets (two of them off by a fraction of a tick), three flipped."""


def true_mounting(name: str) -> tuple[float, float]:
    m = MOUNTING.get(name, {"scale": 1.0, "offset_rad": 0.0})
    return float(m["scale"]), float(m["offset_rad"])


def calibration_errors(joints: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Joint -> |measured offset - true offset| (rad); every direction must be the true one."""
    errors = {}
    for name, (scale, offset) in joints.items():
        true_scale, true_offset = true_mounting(name)
        assert scale == true_scale, f"{name}: scale {scale}, mounted {true_scale}"
        errors[name] = abs(offset - true_offset)
    return errors


def test_calibration_recovers_the_emulated_mounting_within_a_tick(capsys: pytest.CaptureFixture[str]) -> None:
    reality = reality_from_mapping({"mounting": MOUNTING}, CLAW)
    assert POSES is not None
    shown = io.StringIO()
    asked: list[str] = []
    with Emulator(CLAW, reality, lockstep=True) as emu:
        bus = lockstep_bus(CLAW, emu)
        bus.connect(torque_on=False)
        # The person is the test: at each prompt it puts the emulated robot in the pose shown and holds it there.
        held = HeldPose(emu, bus.servo_angles, len(CLAW.encoders))

        def ask(prompt: str) -> str:
            name = "A" if "pose A" in prompt else "B"
            asked.append(name)
            held.put_in_pose(name, POSES.a_rad if name == "A" else POSES.b_rad)
            return ""

        with bus.torque_disabled():
            calibration = measure(CLAW, held.servo_angles, person_poses(CLAW, ask, shown))
        assert not any(bus.torque_status().values())
        bus.close()
    assert asked == ["A", "B"]
    assert "f0_mid (id 11): +45.0 deg (+0.7854 rad)" in shown.getvalue()
    errors = calibration_errors({j.name: (j.scale, j.offset_rad) for j in calibration.joints})
    worst = max(errors, key=lambda n: errors[n])
    with capsys.disabled():
        print(f"\ncalibration error on the emulator: worst {errors[worst]:.3g} rad = "
              f"{errors[worst] / RAD_PER_TICK:.2f} ticks ({worst}); mean {np.mean(list(errors.values())):.3g} rad")
    assert errors[worst] <= RAD_PER_TICK, errors
    assert [j.name for j in calibration.joints if j.flipped] == ["f0_top", "f1_bot", "f2_mid"]


def test_s2r_calibrate_rewrites_the_config_and_keeps_the_old_one(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    robot = tmp_path / "claw.yaml"
    original = DCLAW_YAML.read_text()
    robot.write_text(original)
    reality = tmp_path / "mounted.yaml"
    reality.write_text(yaml.safe_dump({"mounting": MOUNTING}))
    code = main(["calibrate", "--robot", str(robot), "--driver", "emulator", "--reality", str(reality), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["out"] == str(robot) and result["backup"] == str(robot) + ".bak"
    assert Path(result["backup"]).read_text() == original
    calibrated = load_config(robot)
    errors = calibration_errors({j.name: (j.scale, j.offset_rad) for j in calibrated.joints})
    assert max(errors.values()) <= RAD_PER_TICK, errors
    # Only the calibrated numbers changed: every comment and every other line is the old file's.
    old_lines, new_lines = original.splitlines(), robot.read_text().splitlines()
    assert len(old_lines) == len(new_lines)
    changed = [new for old, new in zip(old_lines, new_lines, strict=True) if old != new]
    # (a joint mounted as configured may still move by a fraction of a tick: the mean of two rounded readings)
    assert all(line.strip().split(":")[0] in CLAW.joint_names for line in changed)
    assert {line.strip().split(":")[0] for line in changed} >= set(MOUNTING)
    assert calibrated.joints[0].low_rad == CLAW.joints[0].low_rad and calibrated.encoders == CLAW.encoders


def test_without_a_person_it_stops_before_touching_the_bus(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    robot = tmp_path / "claw.yaml"
    robot.write_text(DCLAW_YAML.read_text())
    monkeypatch.setenv("CI", "true")
    # No such port: had it tried the bus, the error would be about the port.
    assert main(["calibrate", "--robot", str(robot), "--port", str(tmp_path / "ttyUSB9")]) == 2
    err = capsys.readouterr().err
    assert "needs a person to put it in two poses" in err and "--driver emulator" in err
    assert robot.read_text() == DCLAW_YAML.read_text() and not (tmp_path / "claw.yaml.bak").exists()
    assert ci_says_noninteractive({"CI": "true"}) and ci_says_noninteractive({"CI": "1"})
    assert not ci_says_noninteractive({}) and not ci_says_noninteractive({"CI": "false"})


def test_a_closed_input_is_an_error_not_a_hang() -> None:
    def closed(prompt: str) -> str:
        raise EOFError

    with pytest.raises(UserError, match="the input closed before pose A was confirmed; nothing was written"):
        person_poses(CLAW, closed, io.StringIO())("A", POSES.a_rad if POSES else ())


def test_a_shipped_config_is_not_rewritten_in_place(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calibrate", "--robot", "dclaw", "--driver", "emulator"]) == 2
    assert "--out is needed: 'dclaw' names the config shipped with s2r" in capsys.readouterr().err


def _servo(pose: tuple[float, ...], scale: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """The servos' angles (rad) of a pose, for a mounting."""
    return (np.asarray(pose) - offset) / scale


def test_a_joint_out_of_its_pose_is_named_and_nothing_is_solved() -> None:
    assert POSES is not None
    scale, offset = np.ones(9), np.zeros(9)
    a = _servo(POSES.a_rad, scale, offset)
    b = _servo(POSES.b_rad, scale, offset)
    b[4] = a[4] + 0.1  # f1_mid left near pose A: it turned 0.1 rad where the poses are pi/4 apart
    with pytest.raises(UserError, match=r"f1_mid \(id 21\) turned 5\.7 deg between the poses, which are 45\.0 deg "
                                        r"apart.*Nothing was written"):
        solve(CLAW, POSES, a, b)
    b[4] = _servo(POSES.b_rad, scale, offset)[4] + 0.9 * MAX_POSE_MISMATCH_RAD  # a pose held a few degrees off
    assert solve(CLAW, POSES, a, b).joints[4].mismatch_rad == pytest.approx(0.9 * MAX_POSE_MISMATCH_RAD)


def test_a_joint_that_moves_while_read_is_named() -> None:
    readings = iter([np.zeros(9), np.zeros(9), np.r_[np.zeros(8), 0.2]])
    with pytest.raises(UserError, match=r"in pose B these joints moved while they were read: f2_bot \(11\.5 deg\)"):
        read_pose(lambda: next(readings), CLAW, "B", samples=3)


def test_a_calibration_outside_one_servo_turn_is_refused() -> None:
    assert POSES is not None
    offset = np.zeros(9)
    offset[2] = 2.5  # f0_bot's horn half a turn round: its limits of +-pi/2 would need ticks below 0
    calibration = solve(CLAW, POSES, _servo(POSES.a_rad, np.ones(9), offset), _servo(POSES.b_rad, np.ones(9), offset))
    assert calibration.joints[2].offset_rad == pytest.approx(2.5)
    with pytest.raises(UserError, match=r"does not fit the config's joint limits, so nothing was written: .*"
                                        r"joints\.f0_bot\.offset_rad must be a calibration that maps the joint "
                                        r"limits into one servo turn"):
        calibrated_text(DCLAW_YAML.read_text(), "claw.yaml", calibration)


def test_calibration_poses_are_checked() -> None:
    data: dict[str, Any] = yaml.safe_load(DCLAW_YAML.read_text())
    data["calibration_poses"]["b"][3] = 0.1
    with pytest.raises(UserError, match=r"calibration_poses\.b\[3\] must be an angle of f1_top at least 0\.2 rad "
                                        r"from pose A's 0 rad"):
        config_from_mapping(data, "claw.yaml")
    data["calibration_poses"]["b"][3] = 0.6
    with pytest.raises(UserError, match=r"calibration_poses\.b\[3\] must be an angle of f1_top inside its limits"):
        config_from_mapping(data, "claw.yaml")
    del data["calibration_poses"]
    assert config_from_mapping(data, "claw.yaml").calibration_poses is None


def test_the_reality_names_its_mounting() -> None:
    reality = reality_from_mapping({"mounting": {"f0_top": {"scale": -1, "offset_rad": 0.1}}}, CLAW)
    assert (reality.mounting["f0_top"].scale, reality.mounting["f0_top"].offset_rad) == (-1.0, 0.1)
    with pytest.raises(UserError, match=r"mounting\.f9_top is not a joint of .*dclaw\.yaml; its joints: f0_top"):
        reality_from_mapping({"mounting": {"f9_top": {"scale": 1}}}, CLAW)
    with pytest.raises(UserError, match=r"mounting\.f0_top\.scale must be 1, or -1"):
        reality_from_mapping({"mounting": {"f0_top": {"scale": 2}}}, CLAW)
    with pytest.raises(UserError, match=r"mounting\.f0_top\.offset_rad must be an offset in \[-3\.14159"):
        reality_from_mapping({"mounting": {"f0_top": {"scale": 1, "offset_rad": 4.0}}}, CLAW)


def test_set_numbers_keeps_everything_else() -> None:
    text = "# head\nrobot: x  # trailing\njoints:\n  a:\n    id: 3   # the id\n  b: {id: 4, scale: 1.0}\n"
    new = set_numbers(text, {("joints", "a", "offset_rad"): -0.25, ("joints", "a", "scale"): -1,
                             ("joints", "b", "scale"): -1.0, ("joints", "b", "offset_rad"): 1e-05})
    assert new == ("# head\nrobot: x  # trailing\njoints:\n  a:\n    offset_rad: -0.25\n    scale: -1.0\n"
                   "    id: 3   # the id\n  b: {id: 4, scale: -1.0, offset_rad: 1e-05}\n")
    assert load_yaml(new)["joints"]["b"]["offset_rad"] == 1e-5
    with pytest.raises(UserError, match=r"no joints\.c to set a number in"):
        set_numbers(text, {("joints", "c", "scale"): 1.0})
    with pytest.raises(UserError, match=r"joints\.a\.id must be a mapping to set joints\.a\.id\.x"):
        set_numbers(text, {("joints", "a", "id", "x"): 1.0})
