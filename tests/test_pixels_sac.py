"""End-to-end SAC from pixels (``s2r train-pixels``): the asymmetric update, the privileged state, the
checkpoint, the command."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from export.pixels_policy import OnnxPixelsPolicy  # noqa: E402 -- after the torch check
from policies.pixels_config import PixelsSacConfig  # noqa: E402
from policies.pixels_sac import (  # noqa: E402
    PixelsBatch,
    PixelsPolicy,
    load_actor,
    make_model,
    pixels_sac_update,
    save_checkpoint,
)
from s2r.cli import main  # noqa: E402
from s2r.core.errors import UserError  # noqa: E402
from sim.env import SimEnv  # noqa: E402
from sim.pixels_env import PixelsEnv  # noqa: E402
from sim.tasks.dclaw_turn import OBS_LAYOUT, DClawTurn  # noqa: E402

TINY = ["--steps", "240", "--warmup-steps", "80", "--batch-size", "16", "--actor-batch-size", "8",
        "--eval-interval", "120", "--eval-episodes", "1", "--final-episodes", "1"]


def test_the_privileged_state_is_the_flat_envs_observation() -> None:
    task = DClawTurn(variant="random")
    pixels, flat = PixelsEnv(task, privileged=True), SimEnv(task)
    try:
        obs, _ = pixels.reset(seed=4)
        flat_obs, _ = flat.reset(seed=4)
        np.testing.assert_array_equal(obs["state"], flat_obs)
        action = np.full(9, 0.3, np.float32)
        obs, *_ = pixels.step(action)
        flat_obs, *_ = flat.step(action)
        np.testing.assert_array_equal(obs["state"], flat_obs)
    finally:
        pixels.close()
        flat.close()
    plain = PixelsEnv(task)
    try:
        assert "state" not in plain.reset(seed=4)[0]
    finally:
        plain.close()


def _batch(n: int, rng: np.random.Generator) -> PixelsBatch:
    def t(*shape: int) -> Any:
        return torch.from_numpy(rng.normal(size=shape).astype(np.float32))

    frames = torch.from_numpy(rng.integers(0, 256, (n, 84, 84, 3), np.uint8))
    return PixelsBatch(frames, t(n, 19), t(n, 21), t(n, 9).clamp(-1, 1), t(n), torch.zeros(n),
                       torch.from_numpy(rng.integers(0, 256, (n, 84, 84, 3), np.uint8)), t(n, 19), t(n, 21))


def test_the_critics_step_every_update_and_the_actor_every_policy_delay_th() -> None:
    cfg = PixelsSacConfig(batch_size=16, actor_batch_size=8, policy_delay=3).validated()
    torch.manual_seed(0)
    model = make_model(cfg, 84, 84, 19, 21, 9)
    batch = _batch(16, np.random.default_rng(0))
    generator = torch.Generator().manual_seed(0)
    valve = OBS_LAYOUT.slice("valve_cos_sin")

    def snapshot(module: Any) -> list[Any]:
        return [p.detach().clone() for p in module.parameters()]

    for update in range(1, 7):
        actor, critics = snapshot(model.actor), snapshot(model.critics)
        stats = pixels_sac_update(model, batch, cfg, valve, generator)
        actor_moved = any(not torch.equal(a, b) for a, b in zip(actor, model.actor.parameters(), strict=True))
        assert any(not torch.equal(a, b) for a, b in zip(critics, model.critics.parameters(), strict=True))
        assert actor_moved == (update % 3 == 0) == ("aux_loss" in stats), update
    assert all(np.isfinite(v) for v in stats.values())


def test_the_auxiliary_read_out_learns_the_valve_from_the_frames() -> None:
    """Frames whose valve direction is painted as a bright dot: the encoder and read-out fit it."""
    cfg = PixelsSacConfig(batch_size=32, actor_batch_size=32, policy_delay=1, aux_weight=1.0, shift=0).validated()
    torch.manual_seed(0)
    model = make_model(cfg, 84, 84, 19, 21, 9)
    rng = np.random.default_rng(0)
    generator = torch.Generator().manual_seed(0)
    valve = OBS_LAYOUT.slice("valve_cos_sin")
    losses = []
    for _ in range(60):
        batch = _batch(32, rng)
        angles = rng.uniform(-np.pi, np.pi, 32)
        frames = np.zeros((32, 84, 84, 3), np.uint8)
        for i, a in enumerate(angles):
            y, x = int(42 - 30 * np.sin(a)), int(42 + 30 * np.cos(a))
            frames[i, y - 3:y + 4, x - 3:x + 4] = 255
        state = batch.state.clone()
        state[:, valve] = torch.from_numpy(np.stack([np.cos(angles), np.sin(angles)], 1).astype(np.float32))
        batch = PixelsBatch(torch.from_numpy(frames), batch.proprio, state, batch.action, batch.reward,
                            batch.terminated, batch.next_frames, batch.next_proprio, batch.next_state)
        losses.append(pixels_sac_update(model, batch, cfg, valve, generator)["aux_loss"])
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10]), (losses[:10], losses[-10:])


def test_the_checkpoint_holds_the_averaged_policy_and_loads_with_weights_only(tmp_path: Path) -> None:
    cfg = PixelsSacConfig().validated()
    model = make_model(cfg, 84, 84, 19, 21, 9)
    with torch.no_grad():
        for p in model.average.parameters():
            p.add_(0.01)  # the policy differs from the online actor
    dims = {"height": 84, "width": 84, "proprio": 19, "state": 21, "actions": 9}
    path = save_checkpoint(tmp_path / "best.pt", model, cfg, dims, 1234, 0.5)
    assert torch.load(path, weights_only=True)["step"] == 1234
    actor, loaded_cfg, info = load_actor(path)
    assert loaded_cfg == cfg and info == {"step": 1234, "success": 0.5}
    rng = np.random.default_rng(1)
    obs = {"image": rng.integers(0, 256, (84, 84, 3), np.uint8), "joint_pos": rng.normal(size=9).astype(np.float32),
           "last_action": np.zeros(9, np.float32), "goal": np.array([np.pi])}
    np.testing.assert_array_equal(PixelsPolicy(actor)(obs), PixelsPolicy(model.average)(obs))
    assert not np.array_equal(PixelsPolicy(actor)(obs), PixelsPolicy(model.actor)(obs))
    (tmp_path / "other.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read pixels SAC checkpoint"):
        load_actor(tmp_path / "other.pt")
    torch.save({"format": "else"}, tmp_path / "else.pt")
    with pytest.raises(UserError, match="is not a pixels SAC checkpoint"):
        load_actor(tmp_path / "else.pt")


def _train_tiny(out: Path) -> dict[str, Any]:
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        assert main(["train-pixels", "--out", str(out), *TINY, "--quiet", "--json"]) == 0
    result: dict[str, Any] = json.loads(buffer.getvalue().strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("pixels_sac") / "run"
    return out, _train_tiny(out)


def test_the_command_learns_evaluates_and_writes_the_run_the_same_every_time(
        tiny_run: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    out, first = tiny_run
    assert [r["step"] for r in first["curve"]] == [120, 240]
    assert "aux_loss" in first["curve"][-1] and first["final"]["episodes"] == 1
    assert {"best.pt", "last.pt", "metrics.jsonl"} <= {p.name for p in out.iterdir()}
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [120, 240]

    def learned(run: dict[str, Any]) -> list[Any]:
        return [{k: v for k, v in row.items() if k != "train_s"} for row in run["curve"]]

    assert learned(first) == learned(_train_tiny(tmp_path / "again"))


def test_the_run_exports_to_a_verified_camera_policy_that_eval_runs_as_the_checkpoint(
        tiny_run: tuple[Path, dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "camera.onnx"
    assert main(["export", str(tiny_run[0]), "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["checkpoint"] == str(tiny_run[0] / "best.pt") and summary["verification"]["passed"]
    policy = OnnxPixelsPolicy(out)
    assert policy.info.kind == "end_to_end" and policy.info.algo == "pixels-crossq"
    assert policy.state_info is None and policy.perception is None
    actor = load_actor(tiny_run[0] / "best.pt")[0]
    assert policy.info.training_steps == torch.load(tiny_run[0] / "best.pt", weights_only=True)["step"]
    env = PixelsEnv(DClawTurn(variant="fixed"))
    try:
        obs, _ = env.reset(seed=3)
        for _ in range(5):
            action = policy(obs)
            np.testing.assert_allclose(action, PixelsPolicy(actor)(obs), atol=1e-5)
            obs, *_ = env.step(action)
    finally:
        env.close()
    assert main(["eval", str(out), "--episodes", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["env_id"] == "s2r/DClawTurnPixels-v0"


def test_deploy_feeds_the_end_to_end_policy_each_cycles_frame_and_readings(
        tiny_run: tuple[Path, dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("cv2")  # the emulator's camera stream (the `camera` extra)
    out = tmp_path / "camera.onnx"
    assert main(["export", str(tiny_run[0]), "--out", str(out), "--json"]) == 0
    logs = tmp_path / "logs"
    assert main(["deploy", str(out), "--robot", "dclaw", "--driver", "emulator", "--lockstep", "--episodes", "1",
                 "--seed", "1", "--log-dir", str(logs), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["stop_kind"] == "completed" and summary["policy"] == f"camera policy {out}"
    policy = OnnxPixelsPolicy(out)
    last_action = OBS_LAYOUT.slice("last_action")
    with np.load(logs / "episode_000000.npz") as log:
        steps = len(log["action"])
        assert steps > 10
        for t in range(steps):  # what the robot did is the file's action on what the robot saw
            frame = log["camera_top"][t]
            expected = policy.act_frame(frame, log["joint_pos"][t], log["obs"][t][last_action], log["goal"][t])
            np.testing.assert_allclose(log["action"][t], expected, atol=1e-6)
            assert log["passive_estimate"][t][0] == pytest.approx(policy.angle(frame), abs=1e-6)
    assert json.loads((logs / "run.json").read_text())["extra"]["camera_policy"] == str(out)


def test_an_end_to_end_policy_is_refused_by_a_robot_it_was_not_made_for(
        tiny_run: tuple[Path, dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "camera.onnx"
    assert main(["export", str(tiny_run[0]), "--out", str(out), "--json"]) == 0
    capsys.readouterr()
    assert main(["deploy", str(out), "--robot", "dkitty", "--driver", "mock", "--episodes", "1",
                 "--log-dir", str(tmp_path / "logs")]) == 2
    err = capsys.readouterr().err
    assert f"refusing to deploy {str(out)!r} on the dkitty" in err and "task: the file has 'dclaw-turn'" in err
    assert "has no camera section" in err and not (tmp_path / "logs").exists()


@pytest.mark.parametrize(("extra", "message"), [
    (["--task", "s2r/DClawTurnFixed-v0"], "--task must be a camera env (s2r/DClawTurnPixels-v0, "),
    (["--actor-batch-size", "64", "--batch-size", "32"], "--actor-batch-size must be at most batch_size (32)"),
    (["--steps", "0"], "--steps must be a whole number >= 1"),
    (["--aux-weight", "-1"], "--aux-weight must be >= 0"),
])
def test_bad_settings_exit_2_naming_them(extra: list[str], message: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train-pixels", "--out", str(tmp_path / "run"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()
