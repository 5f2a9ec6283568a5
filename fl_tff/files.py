"""Atomic, durable file writes: a crash leaves either the old file or the new one, never half.

Every file a run directory keeps (checkpoints, client states, metrics.csv, summary.json, the
config) is written to a temporary name in the same directory, flushed to disk (fsync), renamed
over the final name and the directory entry flushed too. Written here because Python's standard
library and TFF's writers rename without fsync, so a power loss can leave a renamed but empty file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Iterator
from typing import IO, Any

# Temporary names start with this, so directory listings (checkpoint versions) never match them.
PARTIAL_PREFIX = '.partial-'


def fsync_directory(path: str) -> None:
    """Flushes a directory's entries (renames, new files) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as e:  # Some file systems (FUSE, SMB) cannot fsync a directory.
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def fsync_tree(path: str) -> None:
    """Flushes every file and directory under `path` (and `path` itself) to disk."""
    for root, _, names in os.walk(path):
        for name in names:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_directory(root)


def partial_path(path: str) -> str:
    """The temporary name beside `path` under which its new version is written (same suffix)."""
    head, tail = os.path.split(path)
    return os.path.join(head, f'{PARTIAL_PREFIX}{os.getpid()}-{tail}')


@contextlib.contextmanager
def atomic_write(path: str, mode: str = 'w', **open_kwargs) -> Iterator[IO[Any]]:
    """Opens a temporary file beside `path`; on a clean exit it is fsynced and renamed to `path`.

    On an exception the temporary file is removed and `path` is left as it was.
    """
    tmp = partial_path(path)
    try:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    fsync_directory(os.path.dirname(os.path.abspath(path)))


def write_json(path: str, value: Any) -> None:
    """Writes `value` as indented JSON, atomically."""
    with atomic_write(path) as f:
        json.dump(value, f, indent=2, sort_keys=True, default=str)
        f.write('\n')


def replace_directory(tmp_dir: str, path: str) -> None:
    """Makes the fully written directory `tmp_dir` appear as `path` (which must not exist)."""
    fsync_tree(tmp_dir)
    os.rename(tmp_dir, path)
    fsync_directory(os.path.dirname(os.path.abspath(path)))


def remove_partials(directory: str) -> list[str]:
    """Removes what interrupted atomic writes left in `directory`; returns the names removed."""
    removed = []
    if not os.path.isdir(directory):
        return removed
    for name in os.listdir(directory):
        if name.startswith(PARTIAL_PREFIX):
            full = os.path.join(directory, name)
            if os.path.isdir(full):
                shutil.rmtree(full, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.remove(full)
            removed.append(name)
    return removed
