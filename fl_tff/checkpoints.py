"""Checkpoints of the learning process state, one per saved round, via tff.program.

The program state is the LearningProcess state; the round is the checkpoint's version.
Nothing else needs saving (except client state such as error-feedback residuals, saved beside
it): client sampling, shuffling and device behaviour are pure functions
of (seed, round), so a resumed run draws exactly what the uninterrupted run would have.
(The privacy ledger is not saved: it is a function of the rounds' client plans, which are
deterministic, and is rebuilt by replaying them on resume.)
"""

from __future__ import annotations

import os
from typing import Any, Optional

import tensorflow_federated as tff

from fl_tff import runtime

CHECKPOINT_DIR = 'checkpoints'


class Checkpointer:
    """Saves the state every `every` rounds (and when forced); loads the latest one.

    With `client_states` (a process with `save_client_states(path)` / `load_client_states(path)`,
    e.g. error feedback's residuals), their snapshot of the same round is saved beside the
    state as `client_states_<round>.npz` and restored with it.
    """

    def __init__(self, run_dir: str, every: int, keep: int = 3, client_states: Any = None):
        self.directory = os.path.join(run_dir, CHECKPOINT_DIR)
        self._every = every
        self._client_states = client_states
        self._manager = tff.program.FileProgramStateManager(self.directory, keep_total=keep,
                                                            keep_first=False)

    def _client_states_path(self, round_num: int) -> str:
        return os.path.join(self.directory, f'client_states_{round_num}.npz')

    def latest(self, structure: Any) -> tuple[Optional[Any], int]:
        """(state, round) of the newest checkpoint, or (None, 0) when there is none."""
        state, version = runtime.run_coroutine(self._manager.load_latest(structure))
        if state is None:
            return None, 0
        if self._client_states is not None:
            path = self._client_states_path(int(version))
            if int(version) > 0 and not os.path.exists(path):
                raise FileNotFoundError(f'{path} is missing: the client states (residuals) of '
                                        f'round {version} cannot be restored')
            self._client_states.load_client_states(path if os.path.exists(path) else None)
        return state, int(version)

    def latest_round(self) -> int:
        """The round of the newest checkpoint (0 when there is none)."""
        versions = runtime.run_coroutine(self._manager.get_versions())
        return max(versions) if versions else 0

    def maybe_save(self, state: Any, round_num: int, force: bool = False) -> bool:
        """Saves when `round_num` is a multiple of `every` (or `force`); True if it saved."""
        if not (force or (self._every and round_num % self._every == 0)):
            return False
        if round_num in (runtime.run_coroutine(self._manager.get_versions()) or []):
            return False
        if self._client_states is not None:  # Written first: a state never lacks its clients'.
            os.makedirs(self.directory, exist_ok=True)
            self._client_states.save_client_states(self._client_states_path(round_num))
        runtime.run_coroutine(self._manager.save(state, round_num))
        if self._client_states is not None:
            kept = set(runtime.run_coroutine(self._manager.get_versions()) or [])
            for name in os.listdir(self.directory):
                if name.startswith('client_states_') and int(name[14:-4]) not in kept:
                    os.remove(os.path.join(self.directory, name))
        return True
