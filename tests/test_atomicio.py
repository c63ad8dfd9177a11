"""s2r.core.atomicio: the one atomic write (temporary sibling, fsync, rename)."""

from __future__ import annotations

from pathlib import Path

import pytest

from s2r.core.atomicio import atomic_path, new_directory, write_bytes_atomic, write_text_atomic


def test_write_replaces_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.json"
    assert write_text_atomic(target, "one\n") == target
    write_bytes_atomic(target, b"two\n")
    assert target.read_text() == "two\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]


def test_a_failing_writer_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="verification"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("verification failed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_the_temporary_name_is_a_hidden_sibling(tmp_path: Path) -> None:
    target = tmp_path / "curve.png"
    with atomic_path(target, durable=False) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".curve.png.") and tmp.name.endswith(".tmp")
        assert not tmp.exists()
        tmp.write_bytes(b"x")
    assert target.read_bytes() == b"x"


def test_a_new_directory_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "dataset"
    with pytest.raises(RuntimeError, match="cut short"), new_directory(target) as tmp:
        (tmp / "part.bin").write_bytes(b"x")
        raise RuntimeError("cut short")
    assert not target.exists() and list((tmp_path / "sub").iterdir()) == []
    with new_directory(target) as tmp:
        (tmp / "meta").mkdir()
        (tmp / "meta" / "info.json").write_text("{}")
        assert not target.exists()
    assert (target / "meta" / "info.json").read_text() == "{}" and list((tmp_path / "sub").iterdir()) == [target]
    with pytest.raises(FileExistsError, match="exists"), new_directory(target):
        pass
