"""``s2r params`` and ``s2r render`` through the real command line, and the rollout/GIF pieces behind them."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import imageio.v3 as iio
import numpy as np
import pytest

from s2r.cli import main
from s2r.core.errors import UserError
from sim.engines import ENGINES
from sim.render import FrameOptions, random_policy, render_frame, rollout_frames, with_inset, write_gif

CLAW_PARAMS = {
    "valve_damping": "N m s/rad",
    "valve_frictionloss": "N m",
    "valve_mass": "kg",
    "finger_damping": "N m s/rad",
    "finger_kp": "N m/rad",
    "tip_friction": "-",
    "finger_mass_scale": "-",
    "action_latency": "s",
    "obs_noise_std": "rad",
    "control_jitter_std": "s",
}
CLAW_EPISODE_STEPS = 40
CLAW_CONTROL_PERIOD_MS = 100


def _gif_durations_ms(path: Path, n: int) -> list[int]:
    return [int(iio.immeta(path, index=i)["duration"]) for i in range(n)]


# --- s2r params -------------------------------------------------------------------------------------
def test_params_json_lists_the_claw_parameters_with_units(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["params", "dclaw-turn", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["task"] == "s2r/DClawTurnFixed-v0"
    assert set(report["engines"]) == {"mujoco", "pybullet"}
    assert report["engines"]["mujoco"]["available"] is True
    pybullet = report["engines"]["pybullet"]
    has_pybullet = importlib.util.find_spec("pybullet") is not None
    assert pybullet["available"] is has_pybullet
    if not has_pybullet:
        assert "s2r[pybullet]" in pybullet["reason"]
    rows = {row["name"]: row for row in report["params"]}
    assert len(rows) >= len(CLAW_PARAMS)
    for name, unit in CLAW_PARAMS.items():
        row = rows[name]
        assert row["unit"] == unit
        assert isinstance(row["nominal"], float)
        assert row["doc"]
        assert row["supported"]["mujoco"] is True
        assert set(row["supported"]) == {"mujoco", "pybullet"}
        assert row["supported"]["pybullet"] in ((True, False) if has_pybullet else (None,))
    assert rows["tip_friction"]["high"] == 5.0
    assert rows["valve_damping"]["high"] is None  # unbounded: JSON has no infinity
    assert rows["action_latency"]["applied_by"] == "env"
    assert rows["finger_kp"]["applied_by"] == "engine"


def test_params_table_and_engine_filter(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["params", "s2r/DClawTurnRandom-v0", "--engine", "mujoco"]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[1].split()
    assert header[:5] == ["name", "unit", "nominal", "range", "mujoco"]
    assert "pybullet" not in header
    for name in CLAW_PARAMS:
        assert name in out
    line = next(ln for ln in out.splitlines() if ln.startswith("finger_kp "))
    assert line.split()[1:4] == ["N", "m/rad", "4"]


def test_params_unknown_task_exits_2_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["params", "dclaw-twist"]) == 2
    err = capsys.readouterr().err
    assert "'dclaw-twist'" in err and "dclaw-turn" in err


# --- s2r render -------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ENGINES)
def test_render_writes_a_gif_with_one_frame_per_step(
    engine: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if engine == "pybullet":
        pytest.importorskip("pybullet")
    out = tmp_path / "sub" / "claw.gif"
    args = ["render", "--task", "dclaw-turn", "--engine", engine, "--width", "48", "--height", "32", "--episodes", "1"]
    assert main([*args, "--seed", "3", "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    frames = iio.imread(out)
    n = CLAW_EPISODE_STEPS + 1  # the reset state, then one frame per control step
    assert frames.shape == (n, 32, 48, 3)
    assert _gif_durations_ms(out, n) == [CLAW_CONTROL_PERIOD_MS] * n
    assert [p.name for p in out.parent.iterdir()] == ["claw.gif"]  # no temporary file left behind


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--task", "dclaw-twist", "--out", "x.gif"], "'dclaw-twist'"),
        (["--task", "dclaw-turn", "--out", "x.png"], "x.png"),
        (["--task", "dclaw-turn", "--out", "x.gif", "--episodes", "0"], "--episodes"),
        (["--task", "dclaw-turn", "--out", "x.gif", "--width", "0"], "width"),
        (["--task", "dclaw-turn", "--out", "x.gif", "missing.pt"], "missing.pt"),
    ],
)
def test_render_bad_input_exits_2(
    argv: list[str], needle: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["render", *argv]) == 2
    assert needle in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_render_unknown_camera_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.gif"
    argv = ["render", "--task", "dclaw-turn", "--width", "16", "--height", "16", "--camera", "nope", "--out", str(out)]
    assert main(argv) == 2
    assert "'nope'" in capsys.readouterr().err
    assert not out.exists()


# --- the pieces: rollout frames, GIF writing ---------------------------------------------------------
@pytest.fixture
def short_env() -> Iterator[gym.Env]:
    """The claw with a 1 s control period: 4 steps per episode, so rollouts render few frames."""
    env = gym.make("s2r/DClawTurnRandom-v0", engine="mujoco", control_period=1.0)
    yield env
    env.close()


def test_rollout_frames_counts_and_reproducibility(short_env: gym.Env) -> None:
    opts = FrameOptions(width=24, height=16, camera="top")
    seen: list[np.ndarray] = []

    def policy(obs: np.ndarray) -> np.ndarray:
        seen.append(obs)
        return random_policy(short_env.action_space, len(seen))(obs)

    a = rollout_frames(short_env, policy, episodes=2, seed=5, options=opts)
    assert len(a.frames) == 2 * (4 + 1) and len(seen) == 2 * 4
    assert all(f.shape == (16, 24, 3) and f.dtype == np.uint8 for f in a.frames)
    assert len(a.returns) == 2 and len(a.successes) == 2 and a.frame_period == 1.0
    seen.clear()
    b = rollout_frames(short_env, policy, episodes=2, seed=5, options=opts)
    np.testing.assert_array_equal(np.stack(a.frames), np.stack(b.frames))
    assert a.returns == b.returns


def test_rollout_rejects_a_policy_with_the_wrong_action_size(short_env: gym.Env) -> None:
    with pytest.raises(UserError, match="3 action values"):
        rollout_frames(short_env, lambda obs: np.zeros(3), episodes=1, seed=0, options=FrameOptions(8, 8))


def test_random_policy_is_seeded_and_in_bounds(short_env: gym.Env) -> None:
    a, b = random_policy(short_env.action_space, 1), random_policy(short_env.action_space, 1)
    obs = np.zeros(21, dtype=np.float32)
    for _ in range(20):
        x = a(obs)
        np.testing.assert_array_equal(x, b(obs))
        assert x.dtype == np.float32 and np.all(np.abs(x) <= 1.0)
    assert not np.array_equal(a(obs), random_policy(short_env.action_space, 2)(obs))


def test_write_gif_round_trip_and_atomic(tmp_path: Path) -> None:
    frames = [np.full((6, 8, 3), 30 * i, dtype=np.uint8) for i in range(5)]
    out = write_gif(frames, tmp_path / "a.gif", 0.05)
    back = iio.imread(out)
    assert back.shape == (5, 6, 8, 3)
    np.testing.assert_array_equal(back[:, 0, 0, 0], [0, 30, 60, 90, 120])
    assert _gif_durations_ms(out, 5) == [50] * 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gif"]


@pytest.mark.parametrize(
    ("name", "period", "needle"),
    [("a.png", 0.1, ".gif"), ("a.gif", 0.0, "period"), ("a.gif", float("nan"), "period")],
)
def test_write_gif_rejects_bad_input(name: str, period: float, needle: str, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=needle):
        write_gif([np.zeros((4, 4, 3), dtype=np.uint8)], tmp_path / name, period)
    with pytest.raises(UserError, match="no frames"):
        write_gif([], tmp_path / "b.gif", 0.1)
    assert list(tmp_path.iterdir()) == []


# --- the task camera's view in the corner ------------------------------------------------------------------------
def test_the_inset_is_the_task_cameras_image_enlarged_in_the_corner(short_env: gym.Env) -> None:
    short_env.reset(seed=1)
    sim = short_env.unwrapped
    view = sim.render_camera("top")  # type: ignore[attr-defined]
    assert view.shape == (84, 84, 3)
    plain = render_frame(short_env, FrameOptions(width=400, height=360))
    framed = render_frame(short_env, FrameOptions(width=400, height=360, inset="top"))
    # 2x: the largest whole factor within half the frame (2 * 84 + 2 <= 180)
    np.testing.assert_array_equal(framed[1:169, 1:169], np.repeat(np.repeat(view, 2, axis=0), 2, axis=1))
    assert (framed[0, :170] == 255).all() and (framed[169, :170] == 255).all() and (framed[:170, 169] == 255).all()
    np.testing.assert_array_equal(framed[170:], plain[170:])
    np.testing.assert_array_equal(framed[:, 170:], plain[:, 170:])


def test_an_inset_larger_than_half_the_frame_is_strided_down() -> None:
    frame = np.zeros((40, 60, 3), np.uint8)
    view = np.arange(84 * 84 * 3, dtype=np.uint32).reshape(84, 84, 3).astype(np.uint8)
    out = with_inset(frame, view)
    # 18 rows fit: stride ceil(84 / 18) = 5 gives 17 of them
    np.testing.assert_array_equal(out[1:18, 1:18], view[::5, ::5])
    assert frame.sum() == 0  # the input is not drawn on


def test_render_with_an_unknown_inset_camera_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.gif"
    argv = ["render", "--task", "dclaw-turn", "--width", "16", "--height", "16", "--inset", "side", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "'side'" in err and "top" in err
    assert not out.exists()
