"""EPOpt-epsilon: the worst-fraction rule, the probe/focus schedule, the env wrapper, and ``s2r train`` wiring."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from policies.envs import make_env
from randomization.distributions import load_distribution
from randomization.epopt import EpoptConfig, EpoptEnv, EpoptSchedule, worst_fraction
from randomization.wrapper import param_rng
from s2r.cli import main
from s2r.core.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
CLAW_DIST = ROOT / "randomization" / "configs" / "dclaw.yaml"
KITTY_DIST = ROOT / "randomization" / "configs" / "dkitty.yaml"
TINY = ["--set", "hidden=[32,32]", "--set", "batch_size=32", "--set", "eval_episodes=1", "--set", "log_interval=100",
        "--set", "warmup_steps=100", "--quiet"]


def test_worst_fraction_keeps_the_lowest_ceil_eps_n() -> None:
    returns = list(np.arange(25, 0, -1, dtype=float))  # 25 .. 1: the lowest are the last ones
    assert worst_fraction(returns, 0.1) == [24, 23, 22]  # ceil(2.5) = 3
    assert worst_fraction(returns, 1.0) == list(range(24, -1, -1))
    assert worst_fraction([5.0, 1.0, 1.0, 3.0], 0.5) == [1, 2]  # ties keep their order
    assert worst_fraction([2.0], 0.01) == [0]  # at least one
    assert worst_fraction([], 0.1) == []


def _drive(schedule: EpoptSchedule, hardness: str, episodes: int) -> list[tuple[dict[str, float], bool]]:
    """Run ``episodes`` episodes whose return is minus the parameter ``hardness``."""
    seen = []
    for _ in range(episodes):
        values, probe = schedule.next_model()
        seen.append((values, probe is not None))
        if probe is not None:
            schedule.report(probe, -values[hardness])
    return seen


def test_focus_episodes_run_in_the_worst_probed_models_after_the_warm_up() -> None:
    dist = load_distribution(CLAW_DIST)
    n = 10
    schedule = EpoptSchedule(EpoptConfig(eps=0.2, models=n, warmup_iterations=1), dist, np.random.default_rng(0))
    first = _drive(schedule, "valve_damping", 2 * n)
    assert [p for _, p in first] == [True] * n + [False] * n
    # Warm-up (eps = 1): the focus models are any of the probed ones.
    probed = {v["valve_damping"] for v, p in first[:n]}
    assert {v["valve_damping"] for v, p in first[n:]} <= probed
    assert schedule.last["eps"] == 1.0 and schedule.last["hard_models"] == n

    second = _drive(schedule, "valve_damping", 2 * n)
    assert schedule.iteration == 2 and schedule.last["eps"] == 0.2
    dampings = sorted((v["valve_damping"] for v, p in second[:n]), reverse=True)
    hardest = set(dampings[:2])  # return = -damping: the two largest are the worst
    focus = {v["valve_damping"] for v, p in second[n:]}
    assert focus <= hardest and len(focus) == 2
    assert schedule.last["threshold_return"] == pytest.approx(-dampings[1])
    assert schedule.last["hard_return_mean"] < schedule.last["probe_return_mean"]


def test_an_unreported_probe_does_not_stall_the_schedule() -> None:
    dist = load_distribution(CLAW_DIST)
    schedule = EpoptSchedule(EpoptConfig(eps=0.5, models=2, warmup_iterations=0), dist, np.random.default_rng(1))
    v0, p0 = schedule.next_model()
    assert p0 == 0
    schedule.next_model()  # probe 1 never reports (its episode was cut short)
    schedule.report(0, -1.0)
    values, probe = schedule.next_model()
    assert probe is None and values == v0  # ranked on what came back


@pytest.mark.parametrize(("eps", "models", "warmup", "message"), [
    (0.0, 4, 1, "epopt eps must be in"), (1.5, 4, 1, "epopt eps must be in"),
    (0.1, 0, 1, "epopt models must be at least 1"), (0.1, 4, -1, "epopt warmup_iterations must be >= 0")])
def test_bad_schedules_are_refused(eps: float, models: int, warmup: int, message: str) -> None:
    with pytest.raises(UserError, match=message):
        EpoptConfig(eps, models, warmup)


def test_the_wrapper_applies_the_schedule_and_reports_returns() -> None:
    dist = load_distribution(CLAW_DIST)
    env = EpoptEnv(make_env("s2r/DClawTurnFixed-v0"), dist, EpoptConfig(0.5, 2, 0), seed=3)
    try:
        probes, applied = [], []
        rng = np.random.default_rng(0)
        for _ in range(4):
            _, info = env.reset()
            probes.append(info["epopt_probe"])
            applied.append(env.sim.params.get("valve_damping"))
            assert applied[-1] == pytest.approx(info["params"]["valve_damping"])
            done = False
            while not done:
                _, _, term, trunc, _ = env.step(rng.uniform(-1, 1, 9).astype(np.float32))
                done = term or trunc
        assert probes == [True, True, False, False]
        ranked = env.schedule.last
        assert ranked["hard_models"] == 1.0 and ranked["iteration"] == 1.0
        assert applied[2] == applied[3] and applied[2] in applied[:2]  # the worse of the two probes, twice
    finally:
        env.close()
    # Seeded: the same schedule draws the same models.
    again = EpoptSchedule(EpoptConfig(0.5, 2, 0), dist, param_rng(3))
    assert again.next_model()[0]["valve_damping"] == pytest.approx(applied[0])


def test_train_with_randomize_and_epopt_keeps_the_distribution_and_logs_the_ranking(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    args = ["train", "--task", "dclaw-turn", "--steps", "400", "--randomize", str(CLAW_DIST), "--epopt-eps", "0.5",
            "--epopt-models", "2", "--epopt-warmup", "1", "--out", str(out), *TINY]
    assert main(args) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["randomize"]["task"] == "dclaw-turn"
    assert set(saved["randomize"]["parameters"]) == set(yaml.safe_load(CLAW_DIST.read_text())["parameters"])
    assert saved["epopt_eps"] == 0.5 and saved["epopt_models"] == 2
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    ranked = [r for r in rows if "epopt/iteration" in r]
    assert ranked and ranked[-1]["epopt/iteration"] >= 2 and ranked[-1]["epopt/eps"] == 0.5
    # Resume continues the schedule past its warm-up.
    assert main(["train", "--steps", "500", "--out", str(out), "--resume", "--quiet"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r for r in rows if "epopt/eps" in r][-1]["epopt/eps"] == 0.5


@pytest.mark.parametrize(("extra", "message"), [
    (["--epopt-eps", "0.1"], "EPOpt needs a distribution"),
    (["--randomize", str(CLAW_DIST), "--epopt-eps", "2"], "'epopt_eps' must be in"),
    (["--randomize", str(KITTY_DIST)], "whose parameters differ"),
    (["--randomize", "no/such/file.yaml"], "does not exist"),
])
def test_bad_randomization_arguments_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            extra: list[str], message: str) -> None:
    rc = main(["train", "--task", "dclaw-turn", "--steps", "100", "--out", str(tmp_path / "r"), *extra, *TINY])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r" / "metrics.jsonl").exists()
