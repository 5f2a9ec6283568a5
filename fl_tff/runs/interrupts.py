"""Ctrl-C is never lost: a KeyboardInterrupt Python had to drop is raised again at a safe point.

Python's SIGINT handler raises `KeyboardInterrupt` in whatever bytecode runs next. When that is a
`__del__` or a weakref callback run by the garbage collector (TensorFlow's caches use
`WeakKeyDictionary`), Python cannot propagate it: it prints "Exception ignored in ..." with a
traceback and drops it, and the run carries on as if Ctrl-C had never been pressed. Inside
`never_dropped()` such an interrupt is remembered instead of printed, and `raise_if_dropped()`
(called by the training loop after each round's metrics and checkpoint are written) raises it.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator

_dropped = threading.Event()


def _remember_dropped_interrupts(previous_hook):
    def hook(unraisable) -> None:
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
            _dropped.set()
            return
        previous_hook(unraisable)
    return hook


@contextlib.contextmanager
def never_dropped() -> Iterator[None]:
    """Inside the block, a KeyboardInterrupt Python drops is remembered, not printed.

    Other exceptions Python cannot propagate still reach the previous `sys.unraisablehook`.
    """
    previous = sys.unraisablehook
    _dropped.clear()
    sys.unraisablehook = _remember_dropped_interrupts(previous)
    try:
        yield
    finally:
        sys.unraisablehook = previous
        _dropped.clear()


def raise_if_dropped() -> None:
    """Raises the KeyboardInterrupt Python dropped since the last call, if there was one.

    Raises:
      KeyboardInterrupt: Ctrl-C arrived while Python could not raise it where it was.
    """
    if _dropped.is_set():
        _dropped.clear()
        raise KeyboardInterrupt
