"""The project's one way to write a file atomically: a temporary sibling, flushed and fsynced, renamed over the target.

A reader (or a process that resumes after a crash) sees either the old file or the whole new one, never a file cut
short. Everything that writes an output file goes through :func:`atomic_path`, or :func:`write_bytes_atomic` /
:func:`write_text_atomic` for data already in memory. The one exception is :mod:`s2r.core.trajlog`, whose episode files
must never replace an existing file (it links rather than renames). A new directory of files (a dataset) is
written through :func:`new_directory`.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temp_sibling(path: Path) -> Path:
    """A hidden, unique name beside ``path`` (same filesystem, so the rename is atomic), ending in ``.tmp``: a
    writer that picks the format from the suffix must be told the format."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    # The rename is durable only once the directory entry is on disk; some filesystems refuse to fsync a directory.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, durable: bool = True) -> Iterator[Path]:
    """A temporary path for the caller to write; on a clean exit it is fsynced and renamed over ``path``.

    The parent directory is created if missing. On an exception the temporary file is removed and ``path`` is left
    as it was. ``durable`` (the default) fsyncs the file and then the directory, so the new content survives a
    power loss; scratch files that nothing reads after a crash pass ``durable=False``. The file is created by the
    caller's writer like any new file (umask included), not with ``mkstemp``'s private mode.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(target)
    try:
        yield tmp
        if durable:
            _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync_dir(target.parent)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes, *, durable: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`); returns the path."""
    target = Path(path)
    with atomic_path(target, durable=durable) as tmp:
        tmp.write_bytes(data)
    return target


def write_text_atomic(path: str | os.PathLike[str], text: str, *, durable: bool = True) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_path`); returns the path."""
    return write_bytes_atomic(path, text.encode("utf-8"), durable=durable)


@contextmanager
def new_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary directory for the caller to fill; on a clean exit it is renamed to ``path``, which must not
    exist. On an exception (or if ``path`` appeared meanwhile: the rename then fails) the temporary directory is
    removed, so a failed write leaves nothing behind."""
    target = Path(path)
    if target.exists():
        raise FileExistsError(f"{target} exists")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(target)
    tmp.mkdir()
    try:
        yield tmp
        os.rename(tmp, target)  # fails on an existing non-empty directory: another writer's output is never replaced
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(target.parent)
