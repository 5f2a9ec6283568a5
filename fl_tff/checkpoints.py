"""Checkpoints of the learning process state, one per saved round, via tff.program.

The program state is the LearningProcess state; the round is the checkpoint's version.
Nothing else needs saving: client sampling, shuffling and device behaviour are pure functions
of (seed, round), so a resumed run draws exactly what the uninterrupted run would have.
(The privacy ledger is not saved: it is a function of the rounds' client plans, which are
deterministic, and is rebuilt by replaying them on resume.)
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Optional

import tensorflow_federated as tff

CHECKPOINT_DIR = 'checkpoints'


class Checkpointer:
    """Saves the state every `every` rounds (and when forced); loads the latest one."""

    def __init__(self, run_dir: str, every: int, keep: int = 3):
        self.directory = os.path.join(run_dir, CHECKPOINT_DIR)
        self._every = every
        self._manager = tff.program.FileProgramStateManager(self.directory, keep_total=keep,
                                                            keep_first=False)

    def latest(self, structure: Any) -> tuple[Optional[Any], int]:
        """(state, round) of the newest checkpoint, or (None, 0) when there is none."""
        state, version = asyncio.run(self._manager.load_latest(structure))
        return (state, int(version)) if state is not None else (None, 0)

    def latest_round(self) -> int:
        """The round of the newest checkpoint (0 when there is none)."""
        versions = asyncio.run(self._manager.get_versions())
        return max(versions) if versions else 0

    def maybe_save(self, state: Any, round_num: int, force: bool = False) -> bool:
        """Saves when `round_num` is a multiple of `every` (or `force`); True if it saved."""
        if not (force or (self._every and round_num % self._every == 0)):
            return False
        if round_num in (asyncio.run(self._manager.get_versions()) or []):
            return False
        asyncio.run(self._manager.save(state, round_num))
        return True
