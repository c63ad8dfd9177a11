"""Every file the user writes is read strictly: a repeated YAML key, a non-finite number or a config that cannot
run is a ``UserError`` naming the field (the CLI: exit 2, one line, no traceback), never a silent last-key-wins,
a NaN that trains, or a traceback from deep inside."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from policies.config import config_from_mapping as train_config_from_mapping
from policies.config import load_config_file, parse_overrides
from randomization.adapt import AdaptConfig
from randomization.distributions import load_distribution, parse_distribution
from robot.config import config_from_mapping, load_config
from robot.emulator.faults import faults_from_arg, faults_from_mapping
from robot.emulator.reality import load_reality, reality_from_mapping
from s2r.cli import main
from s2r.core.errors import UserError
from s2r.core.yamlfile import load_yaml, read_yaml_file

ROOT = Path(__file__).resolve().parents[1]
DCLAW_YAML = ROOT / "hardware_configs" / "dclaw.yaml"
DCLAW_DISTRIBUTION = ROOT / "randomization" / "configs" / "dclaw.yaml"
REALITY_YAML = ROOT / "hardware_configs" / "reality" / "dclaw_pybullet_gap.yaml"
CONFIG = load_config(DCLAW_YAML)


# --- duplicate keys ---------------------------------------------------------------------------------
def test_a_repeated_key_names_the_source_the_key_and_both_lines() -> None:
    with pytest.raises(UserError, match=r"f\.yaml: key 'c' appears twice in one mapping \(lines 3 and 5\)"):
        load_yaml("a: 1\nb:\n  c: 1\n  d: 2\n  c: 3\n", "f.yaml")
    with pytest.raises(UserError, match=r"key 'x' appears twice .*lines 1 and 1"):
        load_yaml("m: {x: 1, x: 2}\n", "f.yaml")


def test_equal_keys_in_different_mappings_and_merge_overrides_are_fine() -> None:
    assert load_yaml("a: {x: 1}\nb: {x: 2}\n") == {"a": {"x": 1}, "b": {"x": 2}}
    # A merge key brings in defaults that the mapping's own keys override, as YAML means it to.
    assert load_yaml("base: &b {x: 1, y: 2}\nd: {<<: *b, x: 3}\n")["d"] == {"x": 3, "y": 2}
    assert load_yaml("") is None and load_yaml("[1, {a: 2}]") == [1, {"a": 2}]


def test_a_misspelt_key_or_name_gets_a_did_you_mean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UserError, match=r"unknown config field\(s\) \['bach_size'\] \(did you mean 'batch_size'\?\)"):
        train_config_from_mapping({"bach_size": 64})
    with pytest.raises(UserError, match=r"unknown parameter 'finger_kpp' of task 'dclaw-turn' \(did you mean "
                                        r"'finger_kp'\?\)"):
        parse_distribution({"task": "dclaw-turn", "parameters": {"finger_kpp": {"dist": "uniform", "low": 2,
                                                                                "high": 6}}})
    with pytest.raises(UserError, match=r"unknown field latency_timer \(did you mean 'latency_timer_s'\?\)"):
        config_from_mapping({**load_yaml((ROOT / "hardware_configs" / "dclaw.yaml").read_text()), "latency_timer": 1})
    assert main(["params", "dclaw-trun"]) == 2
    assert "unknown task 'dclaw-trun' (did you mean 'dclaw-turn'?)" in capsys.readouterr().err
    # nothing close: no guess
    with pytest.raises(UserError) as err:
        train_config_from_mapping({"zzzz": 1})
    assert "did you mean" not in str(err.value)


def test_floats_are_read_as_yaml_1_2_writes_them(tmp_path: Path) -> None:
    # YAML 1.1 (PyYAML's default) reads `3e-4` and `-.5` as strings: "lr: 3e-4" failed as "expected a float".
    assert load_yaml("[3e-4, 1E3, -2e+5, .5, -.5, 1., 1_000.5, 3.0e-4]") == [3e-4, 1e3, -2e5, 0.5, -0.5, 1.0, 1000.5,
                                                                          3e-4]
    assert load_yaml("[3, 0x10, 1e, e3, 1.2.3, v1e3]") == [3, 16, "1e", "e3", "1.2.3", "v1e3"]
    assert yaml.safe_load("3e-4") == "3e-4"  # PyYAML's own loader is untouched
    config = tmp_path / "train.yaml"
    config.write_text("lr: 3e-4\ntau: 5e-3\n")
    cfg = load_config_file(config)
    assert (cfg.lr, cfg.tau) == (3e-4, 5e-3)
    assert parse_overrides(["lr=1e-3", "critic_lr=2E-4"]) == {"lr": 1e-3, "critic_lr": 2e-4}


def test_a_syntax_error_is_one_line_naming_the_file_and_place(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1,\nb: 2\n")
    with pytest.raises(UserError) as info:
        read_yaml_file(bad, "hardware config")
    message = str(info.value)
    assert message.startswith(f"hardware config {str(bad)!r} is not valid YAML: ") and "\n" not in message
    assert re.search(r"line \d+, column \d+", message)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00robot")
    with pytest.raises(UserError, match="is not UTF-8 text"):
        read_yaml_file(binary, "hardware config")


def _with_line(path: Path, line: str) -> str:
    return path.read_text() + line + "\n"


DUPLICATES: dict[str, tuple[Callable[[Path], Any], str, str]] = {
    # kind: (public loader of the file, the file's text with a key repeated, the key)
    "hardware config": (load_config, _with_line(DCLAW_YAML, "baud: 57600"), "baud"),
    "hardware config, nested": (
        load_config, DCLAW_YAML.read_text().replace("f0_top: {id: 10,", "f0_top: {id: 10, id: 11,"), "id"),
    "reality": (lambda p: load_reality(p, CONFIG), _with_line(REALITY_YAML, "seed: 8"), "seed"),
    "reality params": (lambda p: load_reality(p, CONFIG), "params:\n  valve_damping: 0.1\n  valve_damping: 0.2\n",
                       "valve_damping"),
    "faults": (lambda p: faults_from_arg(str(p)), "drop: 0.01\ncrc: 0.01\ndrop: 0.5\n", "drop"),
    "training config": (load_config_file, "steps: 100\nlr: 0.001\nlr: 0.1\n", "lr"),
    "randomization": (load_distribution,
                      _with_line(DCLAW_DISTRIBUTION, "  finger_kp: {dist: uniform, low: 3.0, high: 4.0}"),
                      "finger_kp"),
}


@pytest.mark.parametrize("kind", list(DUPLICATES))
def test_every_loader_refuses_a_repeated_key(kind: str, tmp_path: Path) -> None:
    loader, text, key = DUPLICATES[kind]
    assert yaml.safe_load(text) is not None  # plain PyYAML takes the file, keeping the last value
    path = tmp_path / "file.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=rf"{re.escape(str(path))}.*key '{key}' appears twice .*lines \d+ and \d+"):
        loader(path)


def test_set_overrides_refuse_a_repeated_key() -> None:
    with pytest.raises(UserError, match=r"--set env_kwargs value .*key 'a' appears twice"):
        parse_overrides(["env_kwargs={a: 1, a: 2}"])


def test_the_cli_exits_2_on_a_repeated_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    robot = tmp_path / "robot.yaml"
    robot.write_text(_with_line(DCLAW_YAML, "control_period_s: 0.05"))
    code = main(["deploy", "--robot", str(robot), "--driver", "mock", "--episodes", "1", "--log-dir",
                 str(tmp_path / "logs"), "scripted:hold"])
    err = capsys.readouterr().err
    assert code == 2 and "key 'control_period_s' appears twice" in err and "Traceback" not in err
    assert not (tmp_path / "logs").exists()


# --- hostile values: every loader, a UserError naming the field --------------------------------------
def _hardware(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(DCLAW_YAML.read_text())
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split("__")
        for key in parents:
            node = node[key]
        node[last] = value
    return data


NAN, INF = float("nan"), float("inf")

HOSTILE: list[tuple[str, Callable[[], Any], str]] = [
    # (what, the load that must fail, a pattern of the message: the field and what was expected)
    ("hardware: an hour-long control period", lambda: config_from_mapping(
        _hardware(control_period_s=3600.0, control_period_override=True)),
     r"field control_period_s must be a period no longer than the task's episode of 4 s"),
    ("hardware: a period the servos' bus watchdog cannot outlast", lambda: config_from_mapping(
        _hardware(control_period_s=2.0, control_period_override=True)),
     r"field control_period_s must be a period of at most 1\.27 s \(half the servos' longest bus watchdog"),
    ("hardware: NaN data age", lambda: config_from_mapping(_hardware(watchdog__max_data_age_s=NAN)),
     r"field watchdog\.max_data_age_s must be a finite number"),
    ("hardware: infinite offset", lambda: config_from_mapping(_hardware(joints__f0_top__offset_rad=INF)),
     r"field joints\.f0_top\.offset_rad must be a finite number"),
    ("hardware: a string where a number goes", lambda: config_from_mapping(_hardware(latency_timer_s="1 ms")),
     r"field latency_timer_s must be a finite number"),
    ("hardware: joints as a list", lambda: config_from_mapping(_hardware(joints=[])),
     r"field joints must be a mapping"),
    ("hardware: a scale that leaves no travel", lambda: config_from_mapping(_hardware(joints__f0_top__scale=1e300)),
     r"field joints\.f0_top\.scale must be a calibration scale that maps the joint's range onto more than one"),
    ("hardware: a velocity limit below one register unit", lambda: config_from_mapping(
        _hardware(joint_defaults__velocity_limit_rad_s=1e-300)),
     r"field joints\.f0_top\.velocity_limit_rad_s must be a speed in \[0\.02398, .*at least one unit"),
    ("hardware: a current limit below one register unit", lambda: config_from_mapping(
        _hardware(joints__f1_mid__current_limit_a=0.001)),
     r"field joints\.f1_mid\.current_limit_a must be a current in \[0\.00269, "),
    ("hardware: a valve reset slower than one register unit", lambda: config_from_mapping(
        _hardware(encoders__valve__reset_velocity_limit_rad_s=1e-6)),
     r"field encoders\.valve\.reset_velocity_limit_rad_s must be a speed in \[0\.02398, "),
    ("reality: NaN noise", lambda: reality_from_mapping({"velocity_noise_std_rad_s": NAN}, CONFIG),
     r"field velocity_noise_std_rad_s must be a finite number"),
    ("reality: a physics step longer than the control period",
     lambda: reality_from_mapping({"physics_timestep_s": 3600.0}, CONFIG),
     r"field physics_timestep_s must be a positive number of seconds, at most the control period 0\.1 s"),
    ("reality: params as a list", lambda: reality_from_mapping({"params": []}, CONFIG),
     r"field params must be a mapping"),
    ("reality: a parameter as a bool", lambda: reality_from_mapping({"params": {"valve_damping": True}}, CONFIG),
     r"params\.valve_damping must be a number"),
    ("reality: an infinite parameter", lambda: reality_from_mapping({"params": {"valve_damping": INF}}, CONFIG),
     r"params\.valve_damping: .*outside its range"),
    ("reality: a joint outside its travel", lambda: reality_from_mapping({"initial_joint_pos_rad": [100.0] * 9},
                                                                         CONFIG),
     r"field initial_joint_pos_rad\[0\] must be an angle of f0_top inside the task's range"),
    ("reality: a NaN start angle", lambda: reality_from_mapping({"initial_passive_pos_rad": [NAN]}, CONFIG),
     r"field initial_passive_pos_rad must be a list of 1 finite numbers"),
    ("faults: NaN drop", lambda: faults_from_mapping({"drop": NAN}, "f.yaml"), r"drop must be a probability"),
    ("faults: infinite delay", lambda: faults_from_mapping({"late": {"probability": 0.1, "delay_s": INF}}, "f.yaml"),
     r"field late\.delay_s must be a duration"),
    ("faults: late as a list", lambda: faults_from_mapping({"late": []}, "f.yaml"), r"field late must be a mapping"),
    ("faults: a fault at an infinite time", lambda: faults_from_mapping({"silent": [{"id": 10, "at_s": INF}]},
                                                                          "f.yaml"),
     r"field silent\[0\]\.at_s must be a finite time"),
    ("faults: an inline time that overflows", lambda: faults_from_arg("silent=10@1e400s"),
     r"fault silent time must be a finite duration"),
    ("faults: an inline delay that overflows", lambda: faults_from_arg("late=0.1:1e400s"),
     r"fault late delay must be a finite duration"),
    ("faults: servo faults as a mapping", lambda: faults_from_mapping({"silent": {}}, "f.yaml"),
     r"field silent must be a list"),
    ("training: NaN learning rate", lambda: train_config_from_mapping({"lr": NAN}),
     r"config field 'lr': expected a finite number"),
    ("training: infinite entropy target", lambda: train_config_from_mapping({"target_entropy": -INF}),
     r"config field 'target_entropy': expected"),
    ("training: infinite exploration noise", lambda: train_config_from_mapping({"exploration_noise": INF}),
     r"config field 'exploration_noise': expected a finite number"),
    ("training: a negative seed", lambda: train_config_from_mapping({"seed": -1}), r"config field 'seed' must be >= 0"),
    ("training: a string where a number goes", lambda: train_config_from_mapping({"steps": "many"}),
     r"config field 'steps': expected int"),
    ("adaptation: an infinite proposal inflation", lambda: AdaptConfig(proposal_inflation=INF),
     r"proposal_inflation must be a finite number >= 1"),
    ("adaptation: an infinite noise floor fraction", lambda: AdaptConfig(min_std_fraction=INF),
     r"min_std_fraction must be a finite number above 0"),
    ("randomization: empty parameters", lambda: parse_distribution({"task": "dclaw-turn", "parameters": []}, "r.yaml"),
     r"r\.yaml: field parameters must be a mapping, got list"),
    ("randomization: no parameter", lambda: parse_distribution({"task": "dclaw-turn", "parameters": {}}, "r.yaml"),
     r"r\.yaml: field parameters must name at least one parameter"),
    ("randomization: an infinite uniform bound", lambda: parse_distribution(
        {"task": "dclaw-turn", "parameters": {"valve_damping": {"dist": "uniform", "low": 0.0, "high": INF}}},
        "r.yaml"),
     r"field parameters\.valve_damping\.high must be a finite number \(uniform draws between two finite bounds\)"),
    ("randomization: an infinite log-uniform bound", lambda: parse_distribution(
        {"task": "dclaw-turn", "parameters": {"valve_damping": {"dist": "log_uniform", "low": 0.1, "high": INF}}},
        "r.yaml"),
     r"parameters\.valve_damping\.high must be a finite number"),
    ("randomization: an infinite mean", lambda: parse_distribution(
        {"task": "dclaw-turn", "parameters": {"valve_damping": {"dist": "normal", "mean": INF, "std": 0.1}}}, "r.yaml"),
     r"parameters\.valve_damping\.mean must be a finite number"),
    ("randomization: an infinite joint mean", lambda: parse_distribution(
        {"task": "dclaw-turn", "joint": {"names": ["valve_damping"], "mean": [INF], "cov": [[0.01]]}}, "r.yaml"),
     r"field joint\.mean must be a list of 1 finite numbers \(the centre of the Gaussian\)"),
    ("randomization: a joint name that is a list", lambda: parse_distribution(
        {"task": "dclaw-turn", "joint": {"names": [["valve_damping"]], "mean": [0.1], "cov": [[0.01]]}}, "r.yaml"),
     r"field joint\.names must be a list of parameter names"),
]


@pytest.mark.parametrize("what", [h[0] for h in HOSTILE])
def test_a_hostile_value_is_a_user_error_naming_the_field(what: str) -> None:
    _, load, pattern = next(h for h in HOSTILE if h[0] == what)
    with pytest.raises(UserError, match=pattern):
        load()


def test_one_sided_truncations_stay_allowed() -> None:
    # An infinite bound of a truncated normal or joint Gaussian is a one-sided truncation, which they handle.
    dist = parse_distribution({"task": "dclaw-turn", "parameters": {
        "valve_damping": {"dist": "truncated_normal", "mean": 0.1, "std": 0.05, "low": 0.0, "high": INF}},
        "joint": {"names": ["finger_kp"], "mean": [4.0], "cov": [[0.25]], "high": [INF]}})
    assert np.isfinite(dist.sample_array(np.random.default_rng(0), 100)).all()


HOSTILE_CLI: list[tuple[str, list[str], str]] = [
    # (what, arguments after `s2r`, a pattern of the one-line message); {tmp} is the test's directory
    ("train: a control period longer than the episode", ["train", "--set", "env_kwargs={control_period: 3600}",
                                                         "--steps", "10", "--out", "{tmp}/run"],
     r"config field 'env_kwargs': .*episode_duration must be"),
    ("train: a zero physics step", ["train", "--set", "env_kwargs={physics_timestep: 0}", "--steps", "10",
                                    "--out", "{tmp}/run"],
     r"config field 'env_kwargs': .*physics_timestep must be a positive number"),
    ("train: parameters that are not a mapping", ["train", "--set", "env_kwargs={params: x}", "--steps", "10",
                                                  "--out", "{tmp}/run"],
     r"config field 'env_kwargs': .*unknown parameter 'x'; known parameters: valve_damping"),
    # Sizes beyond any machine's address space (48 bits), so that the allocation fails everywhere.
    ("train: a replay buffer beyond memory", ["train", "--set", "buffer_size=1000000000000000", "--steps", "10",
                                              "--out", "{tmp}/run"],
     r"config field 'buffer_size': a replay buffer of 1000000000000000 transitions does not fit in memory"),
    ("train: networks beyond memory", ["train", "--set", "hidden=[10000000000000]", "--steps", "10",
                                       "--out", "{tmp}/run"],
     r"config field 'hidden': networks of widths \[10000000000000\] do not fit in memory"),
    ("train: far more threads than cores", ["train", "--set", "threads=100000", "--steps", "10", "--out", "{tmp}/run"],
     r"config field 'threads' must be at most \d+ \(4 per CPU"),
    ("train: a repeated key in the config file", ["train", "--config", "{tmp}/dup.yaml", "--steps", "10",
                                                  "--out", "{tmp}/run"],
     r"config file .*dup\.yaml': key 'lr' appears twice in one mapping \(lines 1 and 3\)"),
    ("train: a repeated key in the randomization file", ["train", "--randomize", "{tmp}/dup.yaml", "--steps", "10",
                                                         "--out", "{tmp}/run"],
     r"randomization file .*dup\.yaml': key 'lr' appears twice"),
    ("train: a NaN learning rate", ["train", "--set", "lr=.nan", "--steps", "10", "--out", "{tmp}/run"],
     r"config field 'lr': expected a finite number"),
    ("train: a negative seed", ["train", "--set", "seed=-1", "--steps", "10", "--out", "{tmp}/run"],
     r"config field 'seed' must be >= 0"),
    ("train: an output directory that is a file", ["train", "--steps", "10", "--out", "{tmp}/empty.yaml"],
     r"empty\.yaml"),
    ("deploy: a log directory that is a file", ["deploy", "--robot", str(DCLAW_YAML), "--driver", "mock",
                                                "--episodes", "1", "--log-dir", "{tmp}/empty.yaml", "scripted:hold"],
     r"empty\.yaml"),
    ("deploy: a fault on a servo the robot does not have",
     ["deploy", "--robot", str(DCLAW_YAML), "--driver", "mock", "--faults", "silent=99@1s", "--episodes", "1",
      "--log-dir", "{tmp}/logs", "scripted:hold"],
     r"--faults names servo ID\(s\) 99, which .*dclaw\.yaml does not have; its IDs: 10, 11"),
    ("train: an empty randomization", ["train", "--randomize", "{tmp}/empty.yaml", "--steps", "10",
                                       "--out", "{tmp}/run"],
     r"parameters must be a mapping"),
    ("train: an infinite uniform bound", ["train", "--randomize", "{tmp}/inf.yaml", "--steps", "10",
                                          "--out", "{tmp}/run"],
     r"parameters\.valve_damping\.high must be a finite number"),
    ("deploy: an hour-long control period", ["deploy", "--robot", "{tmp}/slow.yaml", "--driver", "mock",
                                             "--episodes", "1", "--log-dir", "{tmp}/logs", "scripted:hold"],
     r"field control_period_s must be a period no longer than the task's episode"),
    ("deploy: a binary hardware config", ["deploy", "--robot", "{tmp}/binary.yaml", "--driver", "mock",
                                          "--episodes", "1", "--log-dir", "{tmp}/logs", "scripted:hold"],
     r"hardware config .* is not (valid YAML|UTF-8 text)"),
    ("adapt: an empty prior", ["adapt", "--task", "dclaw-turn", "--prior", "{tmp}/empty.yaml", "--log-dir",
                               "{tmp}/logs", "--out", "{tmp}/posterior.yaml"],
     r"parameters must be a mapping"),
]


def _hostile_files(tmp: Path) -> None:
    (tmp / "empty.yaml").write_text("task: dclaw-turn\nparameters: []\n")
    (tmp / "dup.yaml").write_text("lr: 0.001\nsteps: 10\nlr: 0.1\n")
    (tmp / "inf.yaml").write_text("task: dclaw-turn\nparameters:\n"
                                  "  valve_damping: {dist: uniform, low: 0, high: .inf}\n")
    slow = yaml.safe_load(DCLAW_YAML.read_text()) | {"control_period_s": 3600.0, "control_period_override": True}
    (tmp / "slow.yaml").write_text(yaml.safe_dump(slow, sort_keys=False))
    (tmp / "binary.yaml").write_bytes(b"robot: dclaw\n\x00\x01\x02")


@pytest.mark.parametrize("what", [h[0] for h in HOSTILE_CLI])
def test_a_hostile_cli_run_exits_2_with_one_line(what: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    _, argv, pattern = next(h for h in HOSTILE_CLI if h[0] == what)
    _hostile_files(tmp_path)
    code = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert re.search(pattern, err), err
    assert not (tmp_path / "run" / "last.pt").exists() and not (tmp_path / "logs").exists()


@pytest.mark.parametrize("command", [
    ["train", "--steps", "10"], ["deploy", "--robot", "r.yaml", "--driver", "mock", "--episodes", "1", "--log-dir",
                                "logs", "scripted:hold"],
    ["simlogs", "--task", "dclaw-turn", "--log-dir", "logs"], ["sweep", "--episodes", "1", "run"],
    ["adapt", "--task", "dclaw-turn", "--prior", "p.yaml", "--log-dir", "logs", "--out", "o.yaml"],
    ["eval", "run"], ["finetune", "--robot", "r.yaml", "--episodes", "1", "run"],
    ["render", "--task", "dclaw-turn", "--out", "r.gif"], ["demo"],
])
def test_a_negative_seed_is_refused_by_every_command(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([*command, "--seed", "-1"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "argument --seed: expected an integer >= 0" in err and "Traceback" not in err
