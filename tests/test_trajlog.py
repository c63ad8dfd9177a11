"""Trajectory logs: round trip, crash safety, never an overwrite, clear errors for damaged or foreign logs,
and readers that skip a damaged episode (or fail with --strict)."""

import dataclasses
import errno
import hashlib
import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from s2r.cli import main as s2r_main
from s2r.core.errors import UserError
from s2r.core.trajlog import (
    RunInfo,
    SkippedFile,
    TrajectoryWriter,
    episode_files,
    read_episodes,
    read_run,
    temp_files,
    write_new_file,
)

CLAW_CONFIG = Path(__file__).resolve().parents[1] / "hardware_configs" / "dclaw.yaml"
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


def test_an_episode_that_never_started_keeps_its_meta_beside_the_episodes(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    w = TrajectoryWriter(tmp_path, INFO)
    w.write_episode(_episode(2, rng), {"n": 0})
    first = w.write_unstarted({"reset_failed": "still fallen", "base_reset": {"righting_attempts": 2},
                               "reset_error_rad": math.inf, "tilts": [0.5, math.nan]})
    second = TrajectoryWriter(tmp_path, INFO).write_unstarted({"reset_failed": "not at the start pose"})
    assert (first.name, second.name) == ("unstarted_000000.json", "unstarted_000001.json")  # never over another
    meta = json.loads(first.read_text(), parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))
    assert meta["reset_failed"] == "still fallen" and meta["base_reset"] == {"righting_attempts": 2}
    assert meta["reset_error_rad"] is None and meta["tilts"] == [0.5, None]  # strict JSON: no NaN or Infinity
    assert (meta["before_episode"], meta["control_period"], meta["source"]) == (1, 0.1, "sim")
    assert json.loads(second.read_text())["before_episode"] == 1
    # Readers of episodes see the episodes only.
    assert [e.meta["n"] for e in read_episodes(tmp_path)] == [0] and len(episode_files(tmp_path)) == 1


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


# --- never overwrite -------------------------------------------------------------------------------------
def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_gap_in_the_indices_is_not_refilled_and_no_episode_is_overwritten(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    w = TrajectoryWriter(tmp_path, INFO)
    paths = [w.write_episode(_episode(3, rng), {"n": k}) for k in range(3)]
    paths[1].unlink()
    before = {p.name: _digest(p) for p in episode_files(tmp_path)}
    w2 = TrajectoryWriter(tmp_path, INFO)
    assert (w2.next_index, w2.episodes_written) == (3, 2)
    assert w2.write_episode(_episode(2, rng), {"n": 3}).name == "episode_000003.npz"
    assert {p.name: _digest(p) for p in episode_files(tmp_path)[:2]} == before
    assert [(e.index, e.meta["n"]) for e in read_episodes(tmp_path)] == [(0, 0), (2, 2), (3, 3)]


def test_an_existing_final_name_is_kept_and_the_episode_takes_the_next_index(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    first, second = TrajectoryWriter(tmp_path, INFO), TrajectoryWriter(tmp_path, INFO)  # both will write index 0
    path = first.write_episode(_episode(2, rng), {"by": "first"})
    digest = _digest(path)
    moved = second.write_episode(_episode(4, rng), {"by": "second"})
    assert moved.name == "episode_000001.npz" and second.next_index == 2
    assert _digest(path) == digest
    assert [(e.index, e.meta["by"]) for e in read_episodes(tmp_path)] == [(0, "first"), (1, "second")]
    assert temp_files(tmp_path) == []


def _no_hard_links(src: str, dst: Path) -> None:
    raise OSError(errno.EPERM, "Operation not permitted", str(dst))  # what FAT answers to link()


def test_without_hard_links_a_new_name_is_still_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "episode_000000.npz"
    write_new_file(path, lambda fh: fh.write(b"first"), link=_no_hard_links)
    with pytest.raises(FileExistsError):
        write_new_file(path, lambda fh: fh.write(b"second"), link=_no_hard_links)
    assert path.read_bytes() == b"first" and temp_files(tmp_path) == []


# --- appending must match run.json ----------------------------------------------------------------------
@pytest.mark.parametrize(("change", "field"), [
    ({"control_period": 0.05}, "control_period"),
    ({"source": "emulator"}, "source"),
    ({"passive_joints": ()}, "passive_joints"),
    ({"config_hash": "b" * 64}, "config_hash"),
])
def test_appending_episodes_recorded_differently_is_refused(tmp_path: Path, change: dict[str, Any],
                                                            field: str) -> None:
    TrajectoryWriter(tmp_path, dataclasses.replace(INFO, config_hash="a" * 64))
    with pytest.raises(UserError, match=rf"run\.json: refusing to add episodes recorded differently \({field} "):
        TrajectoryWriter(tmp_path, dataclasses.replace(INFO, **{"config_hash": "a" * 64, **change}))
    assert read_run(tmp_path).config_hash == "a" * 64


def test_an_unknown_config_hash_appends_and_each_episode_records_its_period_and_source(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    TrajectoryWriter(tmp_path, INFO).write_episode(_episode(2, rng), {})  # a log from before config hashes
    hashed = dataclasses.replace(INFO, config_hash="c" * 64)
    TrajectoryWriter(tmp_path, hashed).write_episode(_episode(2, rng), {})
    old, new = read_episodes(tmp_path)
    assert (new.meta["control_period"], new.meta["source"], new.meta["config_hash"]) == (0.1, "sim", "c" * 64)
    assert (old.control_period, old.source, new.control_period, new.source) == (0.1, "sim", 0.1, "sim")


def test_an_episode_is_read_at_its_own_period_and_source(tmp_path: Path) -> None:
    fast = tmp_path / "fast"
    TrajectoryWriter(fast, dataclasses.replace(INFO, control_period=0.05, source="emulator")).write_episode(
        _episode(2, np.random.default_rng(7)), {})
    mixed = tmp_path / "mixed"
    TrajectoryWriter(mixed, INFO).write_episode(_episode(2, np.random.default_rng(8)), {})
    shutil.copy(fast / "episode_000000.npz", mixed / "episode_000001.npz")  # merged by hand
    assert [(e.index, e.control_period, e.source) for e in read_episodes(mixed)] == [
        (0, 0.1, "sim"), (1, 0.05, "emulator")]


def _claw_config(path: Path, period_s: float) -> Path:
    data = yaml.safe_load(CLAW_CONFIG.read_text())
    data.update(control_period_s=period_s, control_period_override=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_deploy_refuses_to_append_another_source_period_or_config(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs = tmp_path / "logs"
    fast = _claw_config(tmp_path / "fast.yaml", 0.01)

    def deploy(config: Path, driver: str) -> int:
        return s2r_main(["deploy", "scripted:random", "--robot", str(config), "--driver", driver, "--lockstep",
                         "--episodes", "1", "--episode-steps", "3", "--log-dir", str(logs)])

    assert deploy(fast, "mock") == 0
    digest = _digest(logs / "episode_000000.npz")
    capsys.readouterr()
    assert deploy(fast, "emulator") == 2  # refused before any emulator starts
    assert "refusing to add episodes recorded differently (source 'mock' there, 'emulator' here)" in \
        capsys.readouterr().err
    assert deploy(_claw_config(tmp_path / "slow.yaml", 0.02), "mock") == 2
    err = capsys.readouterr().err
    assert "control_period 0.01 there, 0.02 here" in err and "config_hash" in err and "Traceback" not in err
    assert deploy(_claw_config(tmp_path / "copy.yaml", 0.01), "mock") == 0  # same contents elsewhere: one config
    assert [p.name for p in episode_files(logs)] == ["episode_000000.npz", "episode_000001.npz"]
    assert _digest(logs / "episode_000000.npz") == digest


# --- temporary files of a killed writer -----------------------------------------------------------------
def test_leftover_temporary_files_are_removed_at_open_and_reported_by_readers(tmp_path: Path) -> None:
    TrajectoryWriter(tmp_path, INFO).write_episode(_episode(2, np.random.default_rng(9)), {})
    old_style = tmp_path / ".episode_000001.npz.abc.tmp"
    dead = tmp_path / ".run.json.999999999.x1.tmp"  # above any Linux pid_max: no such process
    live = tmp_path / f".episode_000001.npz.{os.getpid()}.x2.tmp"  # a writer still at work
    for p in (old_style, dead, live):
        p.write_bytes(b"partial")
    renamed = tmp_path / "episode_7.npz"
    shutil.copy(tmp_path / "episode_000000.npz", renamed)
    skipped: list[SkippedFile] = []
    assert len(list(read_episodes(tmp_path, on_skip=skipped.append))) == 1
    assert sorted(s.path.name for s in skipped[:3]) == sorted(p.name for p in (old_style, dead, live))
    assert all("unfinished write" in s.problem for s in skipped[:3])
    assert skipped[3].path == renamed and "not named like an episode file" in skipped[3].problem
    w = TrajectoryWriter(tmp_path, INFO)
    assert sorted(w.removed_temp_files) == sorted([old_style, dead])
    assert temp_files(tmp_path) == [live]


# --- run.json that is nonsense --------------------------------------------------------------------------
GOOD_RUN = {**INFO.to_json()}


@pytest.mark.parametrize(("text", "match"), [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "expected a JSON object, got list"),
    (json.dumps({**GOOD_RUN, "control_period": "abc"}), "field control_period must be a finite number"),
    (json.dumps({**GOOD_RUN, "control_period": -0.1}), "field control_period must be a finite number"),
    (json.dumps({**GOOD_RUN, "control_period": float("inf")}), "field control_period must be a finite number"),
    (json.dumps({**GOOD_RUN, "control_period": True}), "field control_period must be a finite number"),
    (json.dumps({**GOOD_RUN, "joint_names": "j0"}), "field joint_names must be a list of joint names"),
    (json.dumps({**GOOD_RUN, "joint_names": [1, 2]}), "field joint_names must be a list of joint names"),
    (json.dumps({**GOOD_RUN, "source": 3}), "field source must be a non-empty string"),
    (json.dumps({**GOOD_RUN, "extra": []}), "field extra must be a JSON object"),
    (json.dumps({k: v for k, v in GOOD_RUN.items() if k != "task"}), "missing field 'task'"),
    (json.dumps({**GOOD_RUN, "format": "x"}), "format is 'x'"),
])
def test_a_nonsense_run_file_is_a_user_error_in_reader_and_writer(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "run.json").write_text(text)
    with pytest.raises(UserError, match=rf"{tmp_path}/run\.json.*{match}"):
        read_run(tmp_path)
    with pytest.raises(UserError, match=rf"{tmp_path}/run\.json.*{match}"):
        TrajectoryWriter(tmp_path, INFO)
    assert (tmp_path / "run.json").read_text() == text and not episode_files(tmp_path)


# --- a damaged episode is skipped (or, strict, an error) ------------------------------------------------
def _damage(directory: Path, how: str) -> Path:
    """Damage episode 1 of ``directory`` in one of several ways; returns its path."""
    path = directory / "episode_000001.npz"
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:100])
        return path
    if how == "wrong_shape":
        arrays["joint_vel"] = arrays["joint_vel"][:, :4]
    elif how == "meta_not_json":
        arrays["meta"] = np.array("{oops")
    elif how == "meta_a_list":
        arrays["meta"] = np.array("[1]")
    elif how == "meta_period":
        arrays["meta"] = np.array(json.dumps({"control_period": -1}))
    with path.open("wb") as fh:
        np.savez(fh, **arrays)
    return path


DAMAGE = {
    "truncated": "damaged or truncated",
    "wrong_shape": r"joint_vel has shape \(3, 4\), expected \(T\+1, 9\)",
    "meta_not_json": "meta is not valid JSON",
    "meta_a_list": "meta must be a JSON object",
    "meta_period": "meta.control_period must be a finite number",
}


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_a_damaged_episode_is_skipped_with_its_reason_or_strict_fails(tmp_path: Path, how: str) -> None:
    w = TrajectoryWriter(tmp_path, INFO)
    for _ in range(3):
        w.write_episode(_episode(2, np.random.default_rng(10)), {})
    path = _damage(tmp_path, how)
    skipped: list[SkippedFile] = []
    assert [e.index for e in read_episodes(tmp_path, strict=False, on_skip=skipped.append)] == [0, 2]
    assert [s.path for s in skipped] == [path]
    assert str(skipped[0]).startswith(f"skipped {path}: ") and re.search(DAMAGE[how], skipped[0].problem)
    with pytest.raises(UserError, match=DAMAGE[how]):
        list(read_episodes(tmp_path, strict=True))
    with pytest.warns(UserWarning, match="episode_000001"):
        assert len(list(read_episodes(tmp_path, strict=False))) == 2


def test_every_episode_damaged_is_an_error_even_when_skipping(tmp_path: Path) -> None:
    path = TrajectoryWriter(tmp_path, INFO).write_episode(_episode(2, np.random.default_rng(11)), {})
    path.write_bytes(b"")
    skipped: list[SkippedFile] = []
    with pytest.raises(UserError, match=r"every episode file is damaged \(1\); the first: .*damaged or truncated"):
        list(read_episodes(tmp_path, strict=False, on_skip=skipped.append))
    assert len(skipped) == 1


def test_no_usable_transition_names_the_directory_and_include_partial(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from policies.dataset import trajlog_to_dataset

    logs = tmp_path / "logs"
    TrajectoryWriter(logs, INFO).write_episode(_episode(4, np.random.default_rng(13)), {"complete": False})
    # The library names its parameters; the command line its flags.
    with pytest.raises(UserError) as info:
        trajlog_to_dataset(logs)
    assert str(info.value) == (f"directory {str(logs)!r} holds no usable transitions (no complete episode with good "
                               "readings; include_partial also uses stopped ones)")
    assert len(trajlog_to_dataset(logs, include_partial=True)["rewards"]) == 4
    out = tmp_path / "data.npz"
    assert s2r_main(["trajlog-dataset", "--log-dir", str(logs), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"s2r trajlog-dataset: error: --log-dir {str(logs)!r} holds no usable transitions" in err
    assert "; --include-partial also uses stopped ones)" in err and not out.exists()


def test_trajlog_dataset_skips_a_damaged_episode_with_a_warning_and_strict_fails(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs = tmp_path / "logs"
    w = TrajectoryWriter(logs, INFO)
    for k in range(3):
        w.write_episode(_episode(4, np.random.default_rng(12 + k)), {"complete": True})
    path = _damage(logs, "truncated")
    out = tmp_path / "data.npz"
    assert s2r_main(["trajlog-dataset", "--log-dir", str(logs), "--out", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    assert f"s2r trajlog-dataset: warning: skipped {path}: episode file {path} is damaged or truncated" in captured.err
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["episodes"] == 2 and [f["path"] for f in summary["skipped_files"]] == [str(path)]
    with np.load(out) as data:
        assert sorted(set(data["episode"].tolist())) == [0, 2]
    out.unlink()
    assert s2r_main(["trajlog-dataset", "--log-dir", str(logs), "--out", str(out), "--strict"]) == 2
    err = capsys.readouterr().err
    assert f"s2r trajlog-dataset: error: episode file {path} is damaged or truncated" in err
    assert "Traceback" not in err and not out.exists()
