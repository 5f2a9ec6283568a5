"""Ctrl-C that Python drops (raised in a weakref callback) is raised again, nothing else changes."""

import sys

import pytest

from fl_tff.runs import interrupts
from tests.helpers import raise_in_a_weakref_callback


def test_a_dropped_keyboard_interrupt_is_raised_once_at_the_next_check_and_not_printed():
    seen = []
    before, sys.unraisablehook = sys.unraisablehook, seen.append
    try:
        with interrupts.never_dropped():
            interrupts.raise_if_dropped()  # Nothing dropped yet: no-op.
            raise_in_a_weakref_callback(KeyboardInterrupt)
            with pytest.raises(KeyboardInterrupt):
                interrupts.raise_if_dropped()
            interrupts.raise_if_dropped()  # Raised once, then forgotten.
        assert seen == []
    finally:
        sys.unraisablehook = before


def test_other_dropped_exceptions_reach_the_previous_hook_and_the_hook_is_restored():
    seen = []
    before, sys.unraisablehook = sys.unraisablehook, seen.append
    try:
        with interrupts.never_dropped():
            raise_in_a_weakref_callback(ValueError)
            interrupts.raise_if_dropped()
        assert [u.exc_type for u in seen] == [ValueError]
        assert sys.unraisablehook == seen.append
        raise_in_a_weakref_callback(KeyboardInterrupt)  # Outside: the previous hook gets it.
        assert [u.exc_type for u in seen] == [ValueError, KeyboardInterrupt]
    finally:
        sys.unraisablehook = before
