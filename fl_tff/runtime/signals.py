"""The drivers' signal handling: SIGTERM as `SystemExit`, so a killed run stops its worker.
The library itself changes no signal handler of its host."""

from __future__ import annotations

import signal
import threading



def _raise_system_exit(signum, frame):  # pylint: disable=unused-argument
    raise SystemExit(128 + signum)


def install_sigterm_as_exit() -> None:
    """Turns SIGTERM into SystemExit so finally blocks and atexit run, and the worker is stopped
    (main thread only; a handler the program set is kept). Called by the drivers: the library
    leaves its host's signal handlers alone."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _raise_system_exit)
