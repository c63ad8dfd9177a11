"""``s2r sweep``: success rate over a grid of physics parameters (``randomization/sweep.py``).

The policy is a random-initialized actor saved as a checkpoint: nothing here depends on a trained
run, and sweeps are 2x2 cells of 1-2 episodes of the 40-step claw task.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from export.onnx_export import ExportConfig, export_policy
from policies.checkpoint import BEST_NAME, LAST_NAME, Checkpoint, save_checkpoint
from policies.evaluate import evaluate
from policies.networks import Actor
from randomization.parallel import ExecutorConfig
from randomization.sweep import (
    GridAxis,
    SweepResult,
    default_out_dir,
    parse_grid_axis,
    robustness_summary,
    run_sweep,
    worst_cell_count,
    write_sweep,
)
from s2r.cli import main
from s2r.core.errors import UserError
from s2r.policy_files import evaluate_policy_file, load_policy
from sim.tasks import make_task

CLAW_ID = "s2r/DClawTurnFixed-v0"
CLAW_SPEC = make_task(CLAW_ID).spec
HIDDEN = (16, 16)
GRID = ("valve_damping=0.02:0.4:2", "tip_friction=0.3:1.5:2")
EPISODES = 2
SEED = 5
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _claw_checkpoint(seed: int = 0) -> Checkpoint:
    """A SAC actor with random weights for the claw (observation normalization off)."""
    obs_dim, act_dim = CLAW_SPEC.obs_layout.size, CLAW_SPEC.n_joints
    actor = Actor(obs_dim, act_dim, HIDDEN, "relu", stochastic=True, generator=torch.Generator().manual_seed(seed))
    return Checkpoint(
        algo="sac", env_id=CLAW_ID, task="dclaw-turn", engine="mujoco", step=0,
        config={"task": "dclaw-turn", "env_kwargs": {}}, obs_dim=obs_dim, act_dim=act_dim, hidden=HIDDEN,
        activation="relu", stochastic=True, actor_state=actor.state_dict(), obs_norm=False,
        obs_mean=np.zeros(obs_dim), obs_var=np.ones(obs_dim), obs_count=0.0, obs_clip=10.0, obs_eps=1e-8,
        action_low=-np.ones(act_dim), action_high=np.ones(act_dim),
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory holding best.pt (the policy swept) and a different last.pt."""
    run = tmp_path_factory.mktemp("sweep") / "claw-run"
    run.mkdir()
    save_checkpoint(run / BEST_NAME, _claw_checkpoint(seed=0))
    save_checkpoint(run / LAST_NAME, _claw_checkpoint(seed=1))
    return run


@pytest.fixture(scope="module")
def serial(run_dir: Path) -> SweepResult:
    return run_sweep(run_dir, GRID, EPISODES, load_policy=load_policy, seed=SEED,
                     executor_config=ExecutorConfig(workers=1))


# --- the summary ---------------------------------------------------------------------------------------------
def test_summary_of_25_cells_averages_the_lowest_3() -> None:
    rates = np.random.default_rng(0).permutation(np.arange(25) / 24.0)
    summary = robustness_summary(rates.tolist())
    assert summary["cells"] == 25
    assert summary["worst10_cells"] == 3
    assert summary["worst10_success"] == pytest.approx((0.0 + 1 / 24 + 2 / 24) / 3)
    assert summary["mean_success"] == pytest.approx(0.5)


@pytest.mark.parametrize(("cells", "worst"), [(1, 1), (9, 1), (10, 1), (11, 2), (20, 2), (25, 3), (30, 3), (31, 4)])
def test_worst_cells_are_the_ceiling_of_a_tenth(cells: int, worst: int) -> None:
    assert worst_cell_count(cells) == worst == math.ceil(cells / 10)


def test_summary_of_a_single_cell_and_of_equal_cells() -> None:
    assert robustness_summary([0.25]) == {"cells": 1, "mean_success": 0.25, "worst10_success": 0.25,
                                          "worst10_cells": 1}
    assert robustness_summary([1.0] * 12)["worst10_success"] == 1.0


@pytest.mark.parametrize("rates", [[], [0.5, 1.5], [-0.1], [float("nan")]])
def test_summary_rejects_bad_rates(rates: list[float]) -> None:
    with pytest.raises(ValueError, match="success rates"):
        robustness_summary(rates)


# --- the grid ------------------------------------------------------------------------------------------------
def test_grid_text_is_parsed_into_evenly_spaced_values() -> None:
    axis = parse_grid_axis(" valve_damping = 0.01:0.3:3 ")
    assert axis == GridAxis("valve_damping", 0.01, 0.3, 3)
    assert axis.values() == pytest.approx((0.01, 0.155, 0.3))
    assert axis.values()[-1] == 0.3
    assert parse_grid_axis("tip_friction=1e-1:1e-1:1").values() == (0.1,)


def test_default_output_directory_is_named_after_the_axes(run_dir: Path) -> None:
    axes = [parse_grid_axis(g) for g in GRID]
    assert default_out_dir(run_dir, axes) == run_dir / "sweep_valve_damping_tip_friction"
    onnx = run_dir / "export" / "claw.onnx"
    assert default_out_dir(onnx, axes[:1]) == run_dir / "export" / "claw_sweep_valve_damping"


# --- the sweep -----------------------------------------------------------------------------------------------
def test_sweep_evaluates_every_cell_on_the_same_seeds(serial: SweepResult, run_dir: Path) -> None:
    assert serial.policy == str(run_dir / BEST_NAME)
    assert (serial.env_id, serial.engine, serial.workers) == (CLAW_ID, "mujoco", 1)
    assert serial.seeds == (SEED, SEED + 1)
    assert [(a.name, a.unit, a.values) for a in serial.axes] == [
        ("valve_damping", "N m s/rad", pytest.approx((0.02, 0.4))), ("tip_friction", "-", pytest.approx((0.3, 1.5)))]
    assert [c.index for c in serial.cells] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert serial.cells[2].params == {"valve_damping": pytest.approx(0.4), "tip_friction": pytest.approx(0.3)}
    assert all(c.episodes == EPISODES and 0.0 <= c.success_rate <= 1.0 for c in serial.cells)
    # The same seeds everywhere: cells differ by the parameter values only, and these change the outcome.
    assert len({c.return_mean for c in serial.cells}) == 4
    assert serial.success_grid().shape == (2, 2)
    assert serial.summary == robustness_summary(c.success_rate for c in serial.cells)


def test_a_cell_equals_an_evaluation_of_a_fresh_env_with_its_values(serial: SweepResult, run_dir: Path) -> None:
    # The last cell runs after three others in the same env: it must not inherit any of their values.
    cell = serial.cells[-1]
    fresh = evaluate(load_policy(run_dir).act, CLAW_ID, EPISODES, SEED, "mujoco", {"params": dict(cell.params)})
    assert (cell.success_rate, cell.return_mean, cell.return_std) == (
        fresh["success_rate"], fresh["return_mean"], fresh["return_std"])


def test_two_local_workers_give_identical_results(serial: SweepResult, run_dir: Path) -> None:
    parallel = run_sweep(run_dir, GRID, EPISODES, load_policy=load_policy, seed=SEED,
                         executor_config=ExecutorConfig(workers=2))
    assert parallel.workers == 2
    assert parallel.cells == serial.cells
    assert parallel.summary == serial.summary


def test_progress_reports_every_cell_with_units(run_dir: Path) -> None:
    lines: list[str] = []
    run_sweep(run_dir, [GridAxis("valve_damping", 0.05, 0.1, 2)], 1, load_policy=load_policy, progress=lines.append)
    assert len(lines) == 2
    assert lines[0].startswith("[1/2] valve_damping=0.05 N m s/rad: success ")


def test_onnx_policy_sweeps_like_s2r_eval(run_dir: Path, tmp_path: Path) -> None:
    onnx = export_policy(run_dir, tmp_path / "claw.onnx", ExportConfig(samples=1000, rollout_fraction=0.0)).path
    result = run_sweep(onnx, ["valve_damping=0.05:0.05:1"], 1, load_policy=load_policy, seed=SEED)  # the nominal value
    reference = evaluate_policy_file(onnx, 1, SEED)
    assert result.policy_kind == "onnx"
    assert (result.cells[0].success_rate, result.cells[0].return_mean) == (
        reference["success_rate"], reference["return_mean"])


def test_written_files(serial: SweepResult, tmp_path: Path) -> None:
    json_path, png_path = write_sweep(serial, tmp_path / "out")
    data = json.loads(json_path.read_text())
    assert data["cells"][3]["index"] == [1, 1]
    assert data["summary"]["worst10_cells"] == 1
    assert data["summary"]["wall_time_s"] == serial.wall_time_s
    assert png_path.read_bytes().startswith(PNG_MAGIC)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["sweep.json", "sweep.png"]  # no temporaries


# --- the command line ----------------------------------------------------------------------------------------
def test_cli_writes_json_and_png_and_prints_the_summary_last(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["sweep", str(run_dir), "--grid", "action_latency=0:0.04:2", "--episodes", "1", "--workers", "1",
                 "--seed", "3", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    out_dir = run_dir / "sweep_action_latency"
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["json"] == str(out_dir / "sweep.json")
    assert summary["cells"] == 2 and summary["env_id"] == CLAW_ID
    assert "[2/2] action_latency=0.04 s" in captured.err
    data = json.loads((out_dir / "sweep.json").read_text())
    assert data["policy"] == str(run_dir / BEST_NAME)
    assert data["engine"] == "mujoco" and data["seeds"] == [3]
    assert data["axes"] == [{"name": "action_latency", "unit": "s", "nominal": 0.0, "values": [0.0, 0.04]}]
    assert set(data["cells"][0]) == {"index", "params", "success_rate", "return_mean", "return_std", "episodes"}
    assert data["summary"]["mean_success"] == summary["mean_success"]
    assert (out_dir / "sweep.png").read_bytes().startswith(PNG_MAGIC)


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        (["no_such_param=0:1:2"], "unknown parameter 'no_such_param'.*valid names: valve_damping, "),
        (["valve_mass=0:1:2"],
         r"valve_mass=0:1:2: LO = 0 is outside the valid range of valve_mass, \[0.0001, inf\] kg"),
        (["tip_friction=1:9:2"], r"HI = 9 is outside the valid range of tip_friction, \[0.001, 5\]"),
        (["valve_damping=0:1:0"], "N must be at least 1, got 0"),
        (["valve_damping=1:0:3"], r"LO \(1\) is greater than HI \(0\); expected LO <= HI"),
        (["valve_damping=0:1:1"], "N=1 gives a single value, so LO and HI must be equal"),
        (["valve_damping=0.1"], "'valve_damping=0.1' must look like NAME=LO:HI:N"),
        (["valve_damping:0:1:2"], "must look like NAME=LO:HI:N"),
        (["valve_damping=a:1:2"], r"LO \('a'\) and HI \('1'\) must be numbers"),
        (["valve_damping=0:1:2.5"], r"N \('2.5'\) must be a whole number"),
        ([], r"--grid must be 1 or 2 grid axes \(NAME=LO:HI:N each\), got 0"),
        (["valve_damping=0:1:2", "tip_friction=1:2:2", "valve_mass=0.1:0.2:2"],
         "--grid must be 1 or 2 grid axes.*got 3"),
        (["valve_damping=0:1:2", "valve_damping=0:2:2"], "must name different parameters"),
    ],
)
def test_bad_grids_are_user_errors(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], grid: list[str], message: str
) -> None:
    flags = [f for g in grid for f in ("--grid", g)]
    code = main(["sweep", str(run_dir), *flags, "--episodes", "1", "--workers", "1", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("s2r sweep: error: ")
    assert re.search(message, err), err
    assert not (tmp_path / "sweep.json").exists()


def _sweep_cli(policy: Path, out: Path, episodes: int = 1) -> list[str]:
    return ["sweep", str(policy), "--grid", "valve_damping=0:1:2", "--episodes", str(episodes), "--workers", "1",
            "--out", str(out)]


def test_missing_policy_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_sweep_cli(tmp_path / "nope.pt", tmp_path / "out")) == 2
    expected = "does not exist: expected an .onnx file, a checkpoint (.pt), a training run directory"
    assert f"policy {str(tmp_path / 'nope.pt')!r} {expected}" in capsys.readouterr().err


def test_empty_run_directory_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_sweep_cli(tmp_path, tmp_path / "out")) == 2
    assert "holds no checkpoint (best.pt or last.pt)" in capsys.readouterr().err


def test_no_episodes_is_a_user_error(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_sweep_cli(run_dir, tmp_path / "out", episodes=0)) == 2
    assert "--episodes must be at least 1, got 0" in capsys.readouterr().err


def test_output_that_is_a_file_is_a_user_error(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "out").write_text("not a directory")
    assert main(_sweep_cli(run_dir, tmp_path / "out")) == 2
    assert "is a file; expected a directory (created if missing)" in capsys.readouterr().err


def test_policy_for_another_task_is_a_user_error(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _sweep_cli(run_dir, tmp_path / "out")
    args[args.index("valve_damping=0:1:2")] = "obs_noise_std=0:0.01:2"
    assert main([*args, "--task", "dkitty-stand"]) == 2
    assert "sweep it on the task it was trained for" in capsys.readouterr().err


def test_grid_axis_checks_itself() -> None:
    with pytest.raises(UserError, match="N must be at least 1"):
        GridAxis("valve_damping", 0.0, 1.0, -2)
    with pytest.raises(UserError, match="must be finite"):
        GridAxis("valve_damping", 0.0, float("inf"), 2)
