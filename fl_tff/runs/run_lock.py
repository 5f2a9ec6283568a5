"""An exclusive lock on a run directory, held by the one run that uses it.

The lock is an advisory `flock` on `<run_dir>/.lock`, which also records the holder's PID for
messages. The kernel releases a `flock` when its holder dies (even by SIGKILL), so the lock of a
dead run is never stale: the next run simply takes it. The file itself is never removed (removing
a lock file races with a process about to lock it).
"""

from __future__ import annotations

import fcntl
import os
import time
from typing import Callable, Optional

LOCK_FILE = '.lock'


class RunDirInUseError(RuntimeError):
    """Another live process holds the run directory's lock."""

    def __init__(self, run_dir: str, holder: Optional[int]):
        who = f'PID {holder}' if holder else 'another process'
        super().__init__(f'{run_dir} is in use by {who} (a run of the same settings); wait for it '
                         'to finish, rerun with --wait_for_lock, or choose another --experiment_name')
        self.run_dir, self.holder = run_dir, holder


class RunDirLock:
    """The held lock of one run directory; `release()` (or process exit) frees it."""

    def __init__(self, run_dir: str, fd: int):
        self.run_dir, self._fd = run_dir, fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Releases the lock. Idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> 'RunDirLock':
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def holder_pid(run_dir: str) -> Optional[int]:
    """The PID recorded by the newest holder of `run_dir`'s lock (which may have exited)."""
    try:
        with open(os.path.join(run_dir, LOCK_FILE)) as f:
            return int(f.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


def acquire(run_dir: str, wait: bool = False, log: Callable[[str], None] = print,
            poll_seconds: float = 0.5) -> RunDirLock:
    """Locks `run_dir` for this process.

    Args:
      run_dir: An existing directory.
      wait: Wait for the holder to finish instead of failing.
      log: Receives one line when waiting starts.
      poll_seconds: How often a waiting call retries.

    Returns:
      The held `RunDirLock`.

    Raises:
      RunDirInUseError: Another live process holds the lock and `wait` is false.
    """
    fd = os.open(os.path.join(run_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    announced = False
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    raise RunDirInUseError(run_dir, holder_pid(run_dir)) from None
                if not announced:
                    log(f'waiting for PID {holder_pid(run_dir)} to release {run_dir}')
                    announced = True
                time.sleep(poll_seconds)  # Polled, so Ctrl-C interrupts the wait at once.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f'{os.getpid()}\n'.encode(), 0)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        raise
    return RunDirLock(run_dir, fd)
