"""The Python API (``s2r.api``): each function runs what its command runs (the command builds the config from its
flags and calls the function, so the two paths give the same result), configs refuse bad fields by name, importing
the API and the packages loads no torch, and the README's example runs."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from cli_runs import ROOT, fast_robot_config

from export.onnx_policy import OnnxPolicy
from s2r import api
from s2r.cli import main
from s2r.core.errors import ParameterError, UserError
from s2r.core.trajlog import read_episodes

PACKAGES = ("policies", "robot", "randomization", "export", "sim")
TINY = api.TrainConfig(task="dclaw-turn", steps=300, hidden=(32, 32), batch_size=32, eval_episodes=1,
                       warmup_steps=100)
"""The run of ``tests/cli_runs.py``'s ``train_tiny``: it only has to exist."""
PRIOR = {"task": "dclaw-turn", "parameters": {
    "valve_damping": {"dist": "log_uniform", "low": 0.02, "high": 0.3},
    "finger_kp": {"dist": "truncated_normal", "mean": 4.0, "std": 1.0, "low": 2.0, "high": 6.0},
}}


def last_json(capsys: pytest.CaptureFixture[str]) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> api.TrainResult:
    return api.train(TINY, tmp_path_factory.mktemp("api") / "run")


@pytest.fixture(scope="module")
def onnx(run: api.TrainResult) -> Path:
    return api.export(api.ExportJob(run.run_dir, run.run_dir / "api.onnx", api.ExportConfig(samples=1000))).path


@pytest.fixture(scope="module")
def fast_robot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fast_robot_config("dclaw", tmp_path_factory.mktemp("robot"))


# --- imports ---------------------------------------------------------------------------------------------------
def test_importing_the_api_and_the_packages_loads_no_torch() -> None:
    code = ("import sys; import s2r.api, policies, robot, randomization, export, sim; "
            "from policies import TrainConfig, FinetuneConfig; from export import ExportConfig; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("name", PACKAGES)
def test_each_package_exports_its_public_names(name: str) -> None:
    package = importlib.import_module(name)
    public = [n for names in package._PUBLIC.values() for n in names]
    eager = [n for n in package.__all__ if n not in public]
    assert len(set(package.__all__)) == len(package.__all__)
    assert set(public) <= set(package.__all__)
    assert all(n in vars(package) for n in eager)  # the rest is defined in the package itself
    for n in package.__all__:
        assert getattr(package, n) is not None
        # A public name that were also a submodule's would be replaced by the module once it is imported.
        assert importlib.util.find_spec(f"{name}.{n}") is None, n
    for module, names in package._PUBLIC.items():
        source = importlib.import_module(f"{name}.{module}")
        assert all(getattr(package, n) is getattr(source, n) for n in names)
    # What type checkers see, the package's `if TYPE_CHECKING:` re-exports, is what it imports on first use.
    tree = ast.parse(Path(package.__file__).read_text())
    checked = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    seen = {(imp.module, a.name) for imp in checked.body if isinstance(imp, ast.ImportFrom) for a in imp.names
            if a.asname == a.name}
    assert seen == {(f"{name}.{module}", n) for module, names in package._PUBLIC.items() for n in names}
    with pytest.raises(AttributeError, match=f"module '{name}' has no attribute 'no_such_name'"):
        package.no_such_name  # noqa: B018


# --- configs refuse bad fields by name -------------------------------------------------------------------------
def test_configs_name_the_bad_field(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match=r"^episodes must be >= 0; got -1$"):
        api.DeployJob("scripted:zero", "dclaw", tmp_path, episodes=-1)
    with pytest.raises(ParameterError, match=r"^reality applies to the emulator driver only$"):
        api.DeployJob("scripted:zero", "dclaw", tmp_path, driver="mock", reality=tmp_path / "r.yaml")
    with pytest.raises(ParameterError, match=r"^faults applies to the emulator and mock drivers only$"):
        api.DeployJob("scripted:zero", "dclaw", tmp_path, driver="dynamixel", faults="drop=0.1")
    with pytest.raises(UserError, match="unknown bus driver 'usb'"):
        api.DeployJob("scripted:zero", "dclaw", tmp_path, driver="usb")
    with pytest.raises(ParameterError, match=r"^view must be a Rerun recording file ending in \.rrd"):
        api.DeployJob("scripted:zero", "dclaw", tmp_path, view="policy.onnx")
    with pytest.raises(ParameterError, match=r"^episodes must be at least 1, got 0$"):
        api.EvalJob("policy.onnx", episodes=0)
    with pytest.raises(ParameterError, match=r"^eval seed must be >= 0"):
        api.EvalJob("policy.onnx", seed=-1)
    with pytest.raises(UserError, match="samples must be at least 1000, got 999"):
        api.ExportJob(tmp_path, config=api.ExportConfig(samples=999))
    with pytest.raises(ParameterError, match=r"^sb3 task must name"):
        api.Sb3Model(tmp_path / "model.zip", "")
    with pytest.raises(ParameterError, match=r"^out .* must name a \.yaml file"):
        api.AdaptJob("dclaw-turn", tmp_path / "prior.yaml", tmp_path, tmp_path / "posterior.txt")
    with pytest.raises(ParameterError, match=r"^axes must be 1 or 2 grid axes"):
        api.SweepJob("policy.onnx", ())
    with pytest.raises(UserError, match="must look like NAME=LO:HI:N"):
        api.SweepJob("policy.onnx", ("valve_damping",))
    with pytest.raises(ParameterError, match=r"^sweep episodes must be at least 1, got 0$"):
        api.SweepJob("policy.onnx", ("valve_damping=0.1:0.2:2",), episodes=0)
    assert api.SweepJob("p.onnx", ("valve_damping=0.1:0.2:2",)).axes[0].values() == (0.1, 0.2)


def test_train_checks_a_config_made_directly_before_writing(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="config field 'steps' must be at least 1, got 0"):
        api.train(api.TrainConfig(steps=0), tmp_path / "run")
    assert not (tmp_path / "run").exists()


# --- each function against its command -------------------------------------------------------------------------
def test_train_returns_the_summary_s2r_train_prints(run: api.TrainResult, capsys: pytest.CaptureFixture[str]) -> None:
    assert run.steps == 300 and not run.interrupted and run.eval is not None and run.eval.episodes == 1
    assert {p.name for p in run.run_dir.iterdir()} >= {"config.yaml", "best.pt", "last.pt", "metrics.jsonl"}
    # The command on the same run, resumed at its end: nothing left to train, the same summary shape and values.
    assert main(["train", "--out", str(run.run_dir), "--resume", "--quiet", "--json"]) == 0
    printed = last_json(capsys)
    assert printed["steps"] == run.steps and printed["episodes"] == run.episodes
    assert printed["eval"] == run.to_json()["eval"] and set(printed) == set(run.to_json())


def test_export_and_evaluate_match_their_commands(run: api.TrainResult, onnx: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(run.run_dir), "--out", str(tmp_path / "cli.onnx"), "--samples", "1000", "--json"]) == 0
    exported = last_json(capsys)
    assert exported["verification"]["passed"] and exported["env_id"] == "s2r/DClawTurnFixed-v0"
    obs = np.random.default_rng(0).normal(size=(16, OnnxPolicy(onnx).obs_size)).astype(np.float32)
    np.testing.assert_array_equal(OnnxPolicy(onnx).act(obs), OnnxPolicy(tmp_path / "cli.onnx").act(obs))

    result = api.evaluate(api.EvalJob(onnx, episodes=2, seed=5))
    assert result.kind == "onnx" and result.env_id == "s2r/DClawTurnFixed-v0" and result.evaluation.episodes == 2
    assert main(["eval", str(onnx), "--episodes", "2", "--seed", "5", "--json"]) == 0
    printed = last_json(capsys)
    assert {k: printed[k] for k in ("episodes", "success_rate", "return_mean", "return_std")} == {
        "episodes": 2, "success_rate": result.evaluation.success_rate, "return_mean": result.evaluation.return_mean,
        "return_std": result.evaluation.return_std}
    # The checkpoint the file was exported from gives the same episodes.
    from_checkpoint = api.evaluate(api.EvalJob(run.run_dir, episodes=2, seed=5))
    assert from_checkpoint.kind == "checkpoint" and from_checkpoint.path == run.run_dir / "best.pt"
    assert from_checkpoint.evaluation.return_mean == pytest.approx(result.evaluation.return_mean, abs=1e-4)


def test_deploy_on_the_lockstep_mock_matches_s2r_deploy(fast_robot: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    job = api.DeployJob("scripted:random", fast_robot, tmp_path / "api", driver="mock", episodes=2, seed=3,
                        lockstep=True, episode_steps=8)
    result = api.deploy(job)
    assert result.summary.episodes == 2 and result.summary.stop_kind == "completed" and result.summary.torque_off
    assert result.policy == "scripted:random" and result.driver == "mock"
    assert main(["deploy", "scripted:random", "--robot", str(fast_robot), "--driver", "mock", "--lockstep",
                 "--episodes", "2", "--seed", "3", "--episode-steps", "8", "--log-dir", str(tmp_path / "cli"),
                 "--json"]) == 0
    printed = last_json(capsys)
    assert {k: v for k, v in printed.items() if k not in ("loop", "log_dir")} == {
        k: v for k, v in result.to_json().items() if k not in ("loop", "log_dir")}
    ours, theirs = list(read_episodes(tmp_path / "api")), list(read_episodes(tmp_path / "cli"))
    assert len(ours) == len(theirs) == 2
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a["action"], b["action"])


def test_deploy_stops_when_asked(fast_robot: Path, tmp_path: Path) -> None:
    job = api.DeployJob("scripted:zero", fast_robot, tmp_path / "logs", driver="mock", episodes=3, lockstep=True,
                        episode_steps=8)
    result = api.deploy(job, should_stop=lambda: "asked")
    assert result.summary.stop_kind == "requested" and result.summary.episodes == 0 and result.summary.torque_off


def test_deploy_records_its_view_to_an_rrd_file(fast_robot: Path, tmp_path: Path) -> None:
    pytest.importorskip("rerun")
    rrd = tmp_path / "view" / "run.rrd"
    job = api.DeployJob("scripted:random", fast_robot, tmp_path / "logs", driver="mock", episodes=1, lockstep=True,
                        episode_steps=6, view=rrd)
    assert api.deploy(job).summary.episodes == 1
    assert sorted(p.name for p in rrd.parent.iterdir()) == ["run.rrd"] and rrd.stat().st_size > 0


def test_finetune_refuses_a_bad_view_before_writing(fast_robot: Path, tmp_path: Path) -> None:
    config = api.FinetuneConfig(run_dir=tmp_path / "run", robot=fast_robot, out=tmp_path / "ft")
    with pytest.raises(ParameterError, match=r"^view must be a Rerun recording file ending in \.rrd"):
        api.finetune(config, view=tmp_path / "policy.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_adapt_matches_s2r_adapt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs = tmp_path / "logs"
    assert main(["simlogs", "--task", "dclaw-turn", "--log-dir", str(logs), "--episodes", "1", "--param",
                 "valve_damping=0.15", "--seed", "3"]) == 0
    prior = tmp_path / "prior.yaml"
    prior.write_text(yaml.safe_dump(PRIOR, sort_keys=False))
    config = api.AdaptConfig(iterations=1, samples=6, max_transitions=10)
    run = api.adapt(api.AdaptJob("dclaw-turn", prior, logs, tmp_path / "api" / "posterior.yaml", config=config))
    assert run.result.names == ("valve_damping", "finger_kp") and run.skipped_files == ()
    assert run.yaml.is_file() and run.json.is_file() and run.png.is_file()
    capsys.readouterr()
    assert main(["adapt", "--task", "dclaw-turn", "--prior", str(prior), "--log-dir", str(logs), "--out",
                 str(tmp_path / "cli" / "posterior.yaml"), "--iterations", "1", "--samples", "6",
                 "--max-transitions", "10", "--workers", "1", "--json"]) == 0
    printed = last_json(capsys)
    ours = run.to_json()
    assert {k: v for k, v in printed.items() if k not in ("yaml", "json", "png")} == {
        k: v for k, v in ours.items() if k not in ("yaml", "json", "png")}
    assert run.yaml.read_text() == (tmp_path / "cli" / "posterior.yaml").read_text()


def test_sweep_matches_s2r_sweep(onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    grid = ("action_latency=0:0.04:2",)
    run = api.sweep(api.SweepJob(onnx, grid, episodes=1, out=tmp_path / "api"))
    assert len(run.result.cells) == 2 and run.json == tmp_path / "api" / "sweep.json" and run.png.is_file()
    assert main(["sweep", str(onnx), "--grid", grid[0], "--episodes", "1", "--workers", "1", "--out",
                 str(tmp_path / "cli"), "--json"]) == 0
    capsys.readouterr()
    cells = [json.loads((tmp_path / d / "sweep.json").read_text())["cells"] for d in ("api", "cli")]
    assert cells[0] == cells[1]


def test_finetune_measures_the_incumbent_on_the_lockstep_emulator(run: api.TrainResult, fast_robot: Path,
                                                                  tmp_path: Path) -> None:
    config = api.FinetuneConfig(run_dir=run.run_dir, robot=fast_robot, lockstep=True, episodes=1,
                                out=tmp_path / "ft", incumbent_episodes=1, explore_episodes=1, gate_episodes=1)
    summary = api.finetune(config)
    assert summary.episodes_done == 1 and summary.stop_kind == "completed" and summary.torque_off
    assert [e.kind for e in summary.episodes] == ["eval-incumbent"]
    assert summary.policy == str(tmp_path / "ft" / "policy.onnx") and Path(summary.policy).is_file()


# --- the README ------------------------------------------------------------------------------------------------
def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the Python API section holds one example"
    return blocks[0]


@pytest.mark.slow
def test_the_readme_example_runs(tmp_path: Path) -> None:
    # As a user runs it: a fresh interpreter in an empty directory.
    done = subprocess.run([sys.executable, "-c", readme_example()], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "runs" / "api-demo" / "policy.onnx").is_file()
    assert len(list((tmp_path / "runs" / "api-demo" / "deploy").glob("*.npz"))) == 1
