"""Checkpoints of the learning process state, one per saved round, via tff.program.

The program state is the LearningProcess state; the round is the checkpoint's version.
Nothing else needs saving (except client state such as error-feedback residuals, saved beside
it): client sampling, shuffling and device behaviour are pure functions
of (seed, round), so a resumed run draws exactly what the uninterrupted run would have.
(The privacy ledger is not saved: it is a function of the rounds' client plans, which are
deterministic, and is rebuilt by replaying them on resume.)

Checkpoints are written atomically (a temporary directory, fsynced, renamed), so a crash while
one is written never leaves a half checkpoint under a checkpoint's name. A checkpoint that does
not load all the same (a truncated file, a disk error) is moved aside as `corrupt_<name>` on
resume, and the newest one that loads is used instead.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
import zipfile
from typing import Any, Optional, Protocol, runtime_checkable

import tensorflow_federated as tff

from fl_tff import files, runtime, tff_compat

CHECKPOINT_DIR = 'checkpoints'
_PREFIX = 'program_state_'
CORRUPT_PREFIX = 'corrupt_'


def saved_rounds(run_dir: str) -> list[int]:
    """The rounds of the checkpoints in `run_dir` (set-aside and partial ones excluded), sorted;
    read from the directory listing, without loading anything."""
    directory = os.path.join(run_dir, CHECKPOINT_DIR)
    if not os.path.isdir(directory):
        return []
    return sorted(int(m[1]) for m in (re.fullmatch(rf'{_PREFIX}(\d+)', n)
                                      for n in os.listdir(directory)) if m)


@runtime_checkable
class ClientStateStore(Protocol):
    """Per-client state kept across rounds (e.g. error feedback's residuals), saved with the
    server state of the same round."""

    def save_client_states(self, path: str) -> None:
        """Writes every client's state to the file `path` (may be written non-atomically)."""

    def load_client_states(self, path: Optional[str]) -> None:
        """Replaces the states with those saved at `path` (empty when `path` is None)."""


class SlotStores:
    """Several `ClientStateStore`s (a process's client-state slots, asynchronous start weights)
    saved as one: each one's file inside one zip archive, named after its slot."""

    def __init__(self, stores: dict[str, ClientStateStore]):
        self._stores = dict(stores)

    def save_client_states(self, path: str) -> None:
        with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(path))) as tmp:
            with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED, allowZip64=True) as archive:
                for slot, store in self._stores.items():
                    part = os.path.join(tmp, f'{slot}.npz')
                    store.save_client_states(part)
                    archive.write(part, f'{slot}.npz')

    def load_client_states(self, path: Optional[str]) -> None:
        if path is None:
            for store in self._stores.values():
                store.load_client_states(None)
            return
        with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            for slot, store in self._stores.items():
                if f'{slot}.npz' not in names:
                    raise ValueError(f'{path} holds no client states of slot {slot!r}')
                store.load_client_states(archive.extract(f'{slot}.npz', tmp))


def stores_of(stores: dict[str, ClientStateStore]) -> Optional[ClientStateStore]:
    """What a `Checkpointer` saves for `stores` (slot -> store): nothing, the one store itself (its
    file as before slots), or all of them (`SlotStores`)."""
    if not stores:
        return None
    if len(stores) == 1:
        return next(iter(stores.values()))
    return SlotStores(stores)


class CheckpointLoadError(RuntimeError):
    """No checkpoint of a run loads; the message names each one and why."""


class ClientStatesMissingError(CheckpointLoadError, FileNotFoundError):
    """A checkpoint's client states file is missing: resuming without it would silently change
    the run (e.g. error-feedback residuals restart at zero), so the resume is refused."""


class _AtomicProgramStateManager(tff.program.FileProgramStateManager):
    """TFF's file program-state manager whose saves are durable and atomic: the SavedModel is
    written under a temporary name, fsynced, then renamed to `program_state_<version>`."""

    async def save(self, program_state: Any, version: int) -> None:
        path = tff_compat.program_state_path(self, version)
        if os.path.exists(path):
            raise tff.program.ProgramStateExistsError(
                version=version, path=tff_compat.program_state_root(self))
        # As TFF's `save`, but into a temporary directory published by an fsynced rename.
        value = await tff.program.materialize_value(program_state)
        tmp = files.partial_path(path)
        await tff_compat.write_saved_model(value, tmp)
        files.replace_directory(tmp, path)
        await tff_compat.remove_old_program_state(self)


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A checkpoint that did not load on resume, and why."""

    round_num: int
    reason: str
    moved_to: str


class Checkpointer:
    """Saves the state every `every` rounds (and when forced); loads the newest one that loads.

    With `client_states` (a `ClientStateStore`, e.g. error feedback's residuals), their snapshot
    of the same round is saved beside the state as `client_states_<round>.npz` and restored
    with it.
    """

    def __init__(self, run_dir: str, every: int, keep: int = 3,
                 client_states: Optional[ClientStateStore] = None):
        self.directory = os.path.join(run_dir, CHECKPOINT_DIR)
        self._every = every
        self._client_states = client_states
        os.makedirs(self.directory, exist_ok=True)
        files.remove_partials(self.directory)  # Interrupted saves: never valid checkpoints.
        self._manager = _AtomicProgramStateManager(self.directory, prefix=_PREFIX,
                                                   keep_total=keep, keep_first=False)
        self.skipped: list[Skipped] = []

    def _client_states_path(self, round_num: int) -> str:
        return os.path.join(self.directory, f'client_states_{round_num}.npz')

    def _versions(self) -> list[int]:
        return runtime.run_coroutine(self._manager.get_versions) or []

    def latest(self, structure: Any) -> tuple[Optional[Any], int]:
        """(state, round) of the newest checkpoint that loads, or (None, 0) when there is none.

        Checkpoints that fail to load are moved aside (`corrupt_program_state_<round>`) and
        recorded in `skipped`. Raises CheckpointLoadError when checkpoints exist but none loads,
        or when only set-aside ones are left (a fresh start would overwrite the run's metrics);
        ClientStatesMissingError when a checkpoint's client states file is missing (resuming
        without them would silently change the run, so there is no fallback for that).
        """
        versions = sorted(self._versions(), reverse=True)
        for version in versions:
            if self._client_states is not None:
                self._check_client_states_exist(version)
            try:
                state = runtime.run_coroutine(self._manager.load, version, structure)
                if self._client_states is not None:
                    self._load_client_states(version)
            except Exception as e:  # pylint: disable=broad-except  # Any failure: try an older one.
                self._set_aside(version, f'{type(e).__name__}: {_first_line(e)}')
                continue
            return state, version
        set_aside = sorted(n for n in os.listdir(self.directory) if n.startswith(CORRUPT_PREFIX))
        if set_aside and not self.skipped:  # An earlier resume found none that loads.
            raise CheckpointLoadError(
                f'no checkpoint in {self.directory} loads (set aside: {", ".join(set_aside)}); '
                'move the run directory away to start over')
        if versions:
            raise CheckpointLoadError(
                f'no checkpoint in {self.directory} loads (' + '; '.join(
                    f'round {s.round_num}: {s.reason}' for s in self.skipped) + '); they were moved '
                'aside as corrupt_*: move the run directory away to start over')
        return None, 0

    def _check_client_states_exist(self, version: int) -> None:
        path = self._client_states_path(version)
        if version > 0 and not os.path.exists(path):
            raise ClientStatesMissingError(
                f'{path} is missing: the client states of round {version} cannot be restored; '
                'move the run directory away to start over')

    def _load_client_states(self, version: int) -> None:
        path = self._client_states_path(version)
        self._client_states.load_client_states(path if os.path.exists(path) else None)

    def _set_aside(self, version: int, reason: str) -> None:
        path = tff_compat.program_state_path(self._manager, version)
        moved = _free_name(os.path.join(self.directory, CORRUPT_PREFIX + os.path.basename(path)))
        os.rename(path, moved)
        client_states = self._client_states_path(version)
        if os.path.exists(client_states):
            os.rename(client_states, _free_name(os.path.join(
                self.directory, CORRUPT_PREFIX + os.path.basename(client_states))))
        files.fsync_directory(self.directory)
        self.skipped.append(Skipped(version, reason, moved))

    def latest_round(self) -> int:
        """The round of the newest checkpoint (0 when there is none)."""
        versions = self._versions()
        return max(versions) if versions else 0

    def maybe_save(self, state: Any, round_num: int, force: bool = False) -> bool:
        """Saves when `round_num` is a multiple of `every` (or `force`); True if it saved."""
        if not (force or (self._every and round_num % self._every == 0)):
            return False
        if round_num in self._versions():
            return False
        if self._client_states is not None:  # Written first: a state never lacks its clients'.
            path = self._client_states_path(round_num)
            tmp = files.partial_path(path)
            self._client_states.save_client_states(tmp)
            with open(tmp, 'rb') as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        runtime.run_coroutine(self._manager.save, state, round_num)
        if self._client_states is not None:
            kept = set(self._versions())
            for name in os.listdir(self.directory):
                match = re.fullmatch(r'client_states_(\d+)\.npz', name)
                if match and int(match[1]) not in kept:
                    os.remove(os.path.join(self.directory, name))
        return True


def _free_name(path: str) -> str:
    """`path`, or `path.2`, `path.3`, ... : the first that does not exist."""
    candidate, n = path, 1
    while os.path.exists(candidate):
        n += 1
        candidate = f'{path}.{n}'
    return candidate


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else ''
