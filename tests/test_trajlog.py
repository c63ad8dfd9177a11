"""Trajectory logs: round trip, crash safety, and clear errors for damaged or foreign logs."""

from pathlib import Path

import numpy as np
import pytest

from robot.trajlog import RunInfo, TrajectoryWriter, episode_files, read_episodes, read_run
from s2r.errors import UserError

INFO = RunInfo("dclaw-turn", "dclaw", tuple(f"j{i}" for i in range(9)), ("valve",), 0.1, "sim")


def _episode(steps: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    r = steps + 1
    return {
        "time": np.arange(r) * 0.1,
        "joint_pos": rng.normal(size=(r, 9)),
        "joint_vel": rng.normal(size=(r, 9)),
        "joint_effort": np.zeros((r, 9)),
        "passive_pos": rng.normal(size=(r, 1)),
        "passive_vel": rng.normal(size=(r, 1)),
        "stale": np.zeros(r, dtype=np.uint8),
        "obs": rng.normal(size=(r, 21)).astype(np.float32),
        "action": rng.uniform(-1, 1, size=(steps, 9)),
        "command": rng.normal(size=(steps, 9)),
        "reward": rng.normal(size=steps),
        "reward_terms": rng.normal(size=(steps, 5)),
        "comm_errors": np.zeros(steps, dtype=np.int64),
        "cycle_time": np.full(steps, 1e-3),
        "period_error": np.zeros(steps),
    }


def test_round_trip_and_resume_numbering(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    first = _episode(5, rng)
    w = TrajectoryWriter(tmp_path, INFO)
    w.write_episode(first, {"success": True, "goal": {"target": 3.14}})
    w2 = TrajectoryWriter(tmp_path, INFO)  # a resumed run appends after the existing episodes
    assert w2.episodes_written == 1
    w2.write_episode(_episode(3, rng), {"success": False})
    assert read_run(tmp_path) == INFO
    episodes = list(read_episodes(tmp_path))
    assert [e.index for e in episodes] == [0, 1]
    assert episodes[0].steps == 5 and episodes[1].steps == 3
    np.testing.assert_array_equal(episodes[0]["command"], first["command"])
    assert episodes[0].meta["success"] is True


def test_unfinished_temporary_file_is_ignored(tmp_path: Path) -> None:
    w = TrajectoryWriter(tmp_path, INFO)
    w.write_episode(_episode(2, np.random.default_rng(1)), {})
    (tmp_path / ".episode_000001.npz.abc.tmp").write_bytes(b"partial")
    assert len(episode_files(tmp_path)) == 1
    assert len(list(read_episodes(tmp_path))) == 1


def test_truncated_episode_is_a_clear_error(tmp_path: Path) -> None:
    w = TrajectoryWriter(tmp_path, INFO)
    path = w.write_episode(_episode(2, np.random.default_rng(2)), {})
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(UserError, match="damaged or truncated"):
        list(read_episodes(tmp_path))


def test_missing_or_foreign_logs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        read_run(tmp_path / "nope")
    with pytest.raises(UserError, match=r"run\.json is missing"):
        read_run(tmp_path)
    TrajectoryWriter(tmp_path, INFO)
    other = RunInfo("dkitty-stand", "dkitty", INFO.joint_names, (), 0.1, "sim")
    with pytest.raises(UserError, match="refusing"):
        TrajectoryWriter(tmp_path, other)


def test_wrong_shapes_are_refused(tmp_path: Path) -> None:
    w = TrajectoryWriter(tmp_path, INFO)
    bad = _episode(4, np.random.default_rng(3))
    bad["command"] = bad["command"][:-1]
    with pytest.raises(ValueError, match="command has 3 rows, expected 4"):
        w.write_episode(bad, {})
