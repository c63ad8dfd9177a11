"""Hardware config, reality file and fault spec: loading, and errors that name the bad field."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from robot.config import RobotConfig, config_from_mapping, load_config
from robot.dynamixel.calibration import ServoCodec
from robot.emulator.faults import (
    FaultInjector,
    ServoFault,
    faults_from_arg,
    faults_from_mapping,
    parse_faults,
)
from robot.emulator.reality import reality_from_mapping
from s2r.core.errors import UserError
from sim.tasks.dclaw_turn import JOINT_NAMES, SPEC

ROOT = Path(__file__).resolve().parents[1]
DCLAW_YAML = ROOT / "hardware_configs" / "dclaw.yaml"


def raw() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(DCLAW_YAML.read_text())
    return data


def load(data: dict[str, Any]) -> RobotConfig:
    return config_from_mapping(data, source="test.yaml")


def test_the_dclaw_config_loads_in_task_order() -> None:
    cfg = load_config(DCLAW_YAML)
    assert cfg.joint_names == JOINT_NAMES
    assert cfg.joint_ids == (10, 11, 12, 20, 21, 22, 30, 31, 32)
    assert cfg.encoder_ids == (50,)
    assert cfg.protocol == 2.0 and cfg.servo.model_number == 1020
    assert cfg.control_period_s == SPEC.control_period
    assert cfg.task_spec() == SPEC
    assert (cfg.task, cfg.robot) == ("dclaw-turn", "dclaw")
    assert cfg.name_of(21) == "f1_mid"
    assert (cfg.low >= SPEC.low - 1e-12).all() and (cfg.high <= SPEC.high + 1e-12).all()


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *path, last = dotted.split(".")
    node = data
    for p in path:
        node = node[p]
    node[last] = value


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("joints.f1_mid.id", 300, "joints.f1_mid.id must be a servo ID"),
        ("joints.f0_top.high_rad", 0.6, "joints.f0_top.high_rad must be a limit"),
        ("joints.f2_bot.low_rad", -2.0, "joints.f2_bot.low_rad must be a limit inside the task's range"),
        ("joints.f0_mid.scale", 0.0, "joints.f0_mid.scale must be a non-zero"),
        ("joints.f0_top.offset_rad", 3.0, "joints.f0_top.offset_rad must be a calibration"),
        ("joints.f0_top.velocity_limit_rad_s", -1.0, "joints.f0_top.velocity_limit_rad_s must be a speed"),
        ("joints.f0_top.current_limit_a", 9.0, "joints.f0_top.current_limit_a must be a current"),
        ("encoders.valve.id", 11, "encoders.valve.id must be an ID not already used by f0_mid"),
        ("protocol", 1.0, "protocol must be 2.0"),
        ("baud", 12345, "baud must be one of"),
        ("servo.model_number", 1060, "servo.model_number must be 1020"),
        ("control_period_s", 0.05, "control_period_s must be the task's control period 0.1 s"),
        ("robot", "dkitty", "robot must be"),
        ("watchdog.max_data_age_s", 0, "watchdog.max_data_age_s must be a positive"),
        ("retries.read", -1, "retries.read must be an integer >= 0"),
        ("latency_timer_s", "fast", "latency_timer_s must be a finite number"),
        ("operating_mode", "pwm", "operating_mode must be one of"),
        ("reply_spin_s", 0.5, "reply_spin_s must be a time in"),
        ("fast_sync_read", "yes", "fast_sync_read must be"),
    ],
)
def test_a_bad_field_is_named_with_what_was_expected(field: str, value: Any, message: str) -> None:
    data = raw()
    _set(data, field, value)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load(data)


def test_unknown_missing_and_misordered_fields() -> None:
    data = raw()
    data["joints"]["f0_top"]["ofset_rad"] = 0.1
    with pytest.raises(UserError, match=r"unknown field joints\.f0_top\.ofset_rad"):
        load(data)
    data = raw()
    del data["joints"]["f1_bot"]["id"]
    with pytest.raises(UserError, match=r"field joints\.f1_bot\.id is missing"):
        load(data)
    data = raw()
    joints = data["joints"]
    data["joints"] = {k: joints[k] for k in reversed(list(joints))}
    with pytest.raises(UserError, match="joints must be exactly the task's joints in task order"):
        load(data)
    data = raw()
    data["task"] = "no-such-task"
    with pytest.raises(UserError, match="unknown task 'no-such-task'"):
        load(data)


def test_control_period_override_is_explicit_and_shared() -> None:
    data = raw()
    data["control_period_s"] = 0.02
    data["control_period_override"] = True
    cfg = load(data)
    assert cfg.task_spec().control_period == 0.02
    assert cfg.task_spec().joint_names == SPEC.joint_names


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("joints: [unclosed")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(bad)


def test_reversed_servo_limits_and_quantized_commands() -> None:
    data = raw()
    data["joints"]["f0_top"]["scale"] = -1.0
    cfg = load(data)
    codec = ServoCodec(cfg)
    sent = codec.quantize_command(cfg.high + 1.0)  # beyond every upper limit
    assert (sent <= cfg.high + 1e-12).all() and (sent >= cfg.high - 2 * math.pi / 4096).all()
    with pytest.raises(ValueError, match="non-finite"):
        codec.command_ticks(cfg.task_spec().reset * float("nan"))


# --- reality --------------------------------------------------------------------------------------
def test_reality_named_parameters_and_errors() -> None:
    cfg = load_config(DCLAW_YAML)
    r = reality_from_mapping({"params": {"valve_damping": 0.2, "action_latency": 0.01, "obs_noise_std": 0.003},
                              "wire_time": False, "engine": "mujoco"}, cfg)
    assert dict(r.params) == {"valve_damping": 0.2}
    assert (r.action_latency_s, r.position_noise_std_rad, r.wire_time) == (0.01, 0.003, False)
    with pytest.raises(UserError, match=r"unknown parameter params\.valve_dampin;"):
        reality_from_mapping({"params": {"valve_dampin": 0.2}}, cfg)
    with pytest.raises(UserError, match=r"params\.finger_kp: .*outside its range"):
        reality_from_mapping({"params": {"finger_kp": -1.0}}, cfg)
    with pytest.raises(UserError, match=r"params\.control_jitter_std describes the control loop"):
        reality_from_mapping({"params": {"control_jitter_std": 0.001}}, cfg)
    with pytest.raises(UserError, match="field engine must be one of mujoco, pybullet"):
        reality_from_mapping({"engine": "ode"}, cfg)
    with pytest.raises(UserError, match=r"unknown field latency \(did you mean 'reply_latency_s'\?\);"):
        reality_from_mapping({"latency": 0.01}, cfg)
    with pytest.raises(UserError, match="initial_joint_pos_rad must be a list of 9"):
        reality_from_mapping({"initial_joint_pos_rad": [0.0, 1.0]}, cfg)
    assert reality_from_mapping({"line_poll_s": 0.012}, cfg).line_poll_s == 0.012
    assert reality_from_mapping({}, cfg).line_poll_s == 0.0
    with pytest.raises(UserError, match="field line_poll_s must be a finite number >= 0"):
        reality_from_mapping({"line_poll_s": -0.001}, cfg)


# --- faults ---------------------------------------------------------------------------------------
def test_fault_string_syntax() -> None:
    f = parse_faults("drop=0.01, crc=0.005;late=0.02:5ms overload=21@2.5s overheat=31@100cycles silent=12@1cycle "
                     "seed=7")
    assert (f.drop, f.crc, f.late, f.late_delay_s, f.seed) == (0.01, 0.005, 0.02, pytest.approx(0.005), 7)
    assert f.servo_faults == (ServoFault("overload", 21, at_s=2.5), ServoFault("overheat", 31, at_cycle=100),
                              ServoFault("silent", 12, at_cycle=1))
    assert parse_faults(f.describe()) == f
    assert not parse_faults("none").any and not faults_from_arg(None).any


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("drop=1.5", "drop must be a probability"),
        ("jitter=0.1", "unknown fault 'jitter'"),
        ("late=0.1", "late must be PROBABILITY:DURATION"),
        ("late=0.1:5", "late delay must be a duration"),
        ("overload=21", "overload must be ID@WHEN"),
        ("silent=999@1s", "silent must be a servo ID"),
        ("overheat=31@0cycles", "cycle must be >= 1"),
        ("drop", "must look like key=value"),
    ],
)
def test_bad_fault_strings_are_named(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_faults(text)


def test_fault_yaml_matches_the_string_form(tmp_path: Path) -> None:
    doc = {"seed": 3, "drop": 0.01, "late": {"probability": 0.02, "delay_s": 0.005},
           "overload": [{"id": 21, "at_cycle": 200}], "silent": [{"id": 12, "at_s": 1.5}]}
    path = tmp_path / "faults.yaml"
    path.write_text(yaml.safe_dump(doc))
    from_file = faults_from_arg(str(path))
    from_text = parse_faults("drop=0.01,late=0.02:5ms,overload=21@200cycles,silent=12@1.5s,seed=3")
    assert from_file == from_text
    bad = copy.deepcopy(doc)
    bad["overload"] = [{"id": 21}]
    with pytest.raises(UserError, match=r"field overload\[0\] must be"):
        faults_from_mapping(bad, "f.yaml")


def test_fault_injector_is_seeded_and_starts_each_fault_once() -> None:
    spec = parse_faults("drop=0.3,crc=0.3,late=0.3:1ms,overload=21@3cycles,silent=12@1s,seed=5")
    a, b = FaultInjector(spec), FaultInjector(spec)
    fates = [a.fate() for _ in range(200)]
    assert fates == [b.fate() for _ in range(200)]
    dropped = sum(f.dropped for f in fates)
    assert 30 < dropped < 90
    assert list(a.due(0.5, 2)) == []
    assert [f.kind for f in a.due(0.5, 3)] == ["overload"]
    assert list(a.due(0.6, 4)) == []
    assert [f.kind for f in a.due(1.0, 4)] == ["silent"] and a.silent == {12}


def test_the_example_reality_and_fault_files_load() -> None:
    from robot.emulator import load_faults, load_reality

    cfg = load_config(DCLAW_YAML)
    examples = ROOT / "robot" / "emulator" / "examples"
    r = load_reality(examples / "reality_dclaw.yaml", cfg)
    assert r.params["finger_kp"] == 3.5 and r.action_latency_s == 0.01 and r.initial_passive_pos_rad == (0.3,)
    f = load_faults(examples / "faults_flaky_bus.yaml")
    assert f == parse_faults("drop=0.01,crc=0.002,late=0.005:8ms,overload=21@300cycles,seed=7")
