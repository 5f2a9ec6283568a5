"""The private event loop that runs tff.program's checkpoint and release writes, with Ctrl-C
deferred until they end."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import signal
import threading
import weakref
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from fl_tff import tff_compat

T = TypeVar('T')

def run_coroutine(coroutine_fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
    """Runs `coroutine_fn(*args)` to completion on this thread's private event loop, with Ctrl-C
    deferred until it ends. The coroutine is made inside the deferred section: one made by the
    caller could meet a Ctrl-C before it ran and never run ("coroutine ... was never awaited"
    on the user's terminal).

    Our coroutines are tff.program's checkpoint and release writes, which run in executor
    threads: a `KeyboardInterrupt` in the middle leaves them writing behind the caller's back and
    asyncio logging tracebacks about abandoned tasks. They take well under a second, so a Ctrl-C
    that arrives meanwhile is raised when they are done.

    Unlike `asyncio.run`, it leaves the thread's current event loop alone: `asyncio.run` ends by
    setting it to None, after which TFF's own `tff.simulation.run_training_process` (which calls
    `asyncio.get_event_loop()`) fails with "There is no current event loop". When this thread
    already runs a loop (a Jupyter cell runs inside the kernel's), that loop is set aside while the
    private one runs in the same thread, and put back after: the caller is synchronous, so the
    outer loop could not run meanwhile anyway.

    The private loop, and so its executor threads, live as long as the thread: a new loop per
    call would write each checkpoint from a new thread, and Jupyter's kernel opens a socket for
    every thread that prints (TensorFlow logs each SavedModel it writes) and polls them all, which
    slowed a notebook's checkpoint writes to minutes and ran out of file descriptors.
    """
    loop = getattr(_PRIVATE, 'loop', None)
    if loop is None or loop.is_closed():
        loop = _PRIVATE.loop = asyncio.new_event_loop()
        # One writer thread: the writes are small and one coroutine runs at a time anyway.
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix='fl_tff-writes'))
        # Closed when the thread object goes, or at exit: no process-wide atexit hook.
        weakref.finalize(threading.current_thread(), loop.close)
    outer = tff_compat.swap_running_loop(None)
    try:
        with _sigint_deferred():
            return loop.run_until_complete(coroutine_fn(*args))
    finally:
        tff_compat.swap_running_loop(outer)


_PRIVATE = threading.local()


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Holds back SIGINT inside the block (main thread only) and delivers it at the end."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received and callable(previous):
            previous(signal.SIGINT, received[0])
