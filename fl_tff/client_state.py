"""Per-client state as a first-class part of a learning process, kept by the simulation.

TFF's `LearningProcess` has server state only. A `StatefulLearningProcess` adds state that each
client keeps across rounds (error feedback's residuals; later control variates, personal
layers):

* the process declares the state's type and initial value (`initial_client_state`);
* its `next(state, client_data, *, client_ids, round_num, client_states)` takes the selected
  clients' states CLIENTS-placed and returns their new ones CLIENTS-placed, so the server never
  sees them. `next` is pure: the same inputs give the same outputs, and nothing is stored inside
  the process (per-client inputs such as random seeds are derived from `round_num` and the ids);
* the simulation keeps the states in a `ClientStateStore` keyed by client id, which the
  checkpointer saves beside the server state of the same round and restores on resume.

The process otherwise keeps the `LearningProcess` interface (`initialize`, `get_model_weights`,
`set_model_weights`, `get_hparams`, `set_hparams`) and the composed process's server state, so
checkpoints and evaluators are unchanged. (A process with client state cannot run under
`tff.simulation.run_training_process`, whose `next` takes data only.)

How states reach the clients: by default `next` hands them to TFF, which serializes every
selected client's state into its request to the worker. `reading_values_from(directory)` gives
the same process whose workers read them from files instead, and write the new states to files
the driver reads back (`fl_tff.worker_values`). Either way `next` takes the states and returns
the new ones, and the simulation owns and stores them.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from typing import Any, Callable, Optional, Protocol, runtime_checkable

import numpy as np
import tensorflow_federated as tff

from fl_tff import composed_process, rounds

# A client's state as the store keeps it: its tensors, flattened in the state type's order.
FlatState = rounds.FlatState


@runtime_checkable
class ProcessWithClientState(Protocol):
    """A learning process whose clients keep state across rounds (see the module docstring)."""

    def initial_client_state(self) -> FlatState:
        """A client's state before it first trains (flattened)."""

    def next(self, state: Any, client_data: list, *, client_ids: Sequence[str], round_num: int,
             client_states: Sequence[FlatState]) -> 'StatefulOutput':
        """One round for `client_data` of the clients `client_ids` with their `client_states`."""


@dataclasses.dataclass(frozen=True)
class StatefulOutput:
    """A round's output: TFF's (state, metrics) plus the participants' new client states."""

    state: Any
    metrics: Any
    client_states: list[FlatState]


class StatefulLearningProcess(composed_process.ComposedNextProcess):
    """A `LearningProcess` composition whose `next` also carries client states (in and out:
    after `reading_values_from`, both travel as files).

    Args:
      composed: The process without client state (same server state), for `initialize`,
        weights and hyperparameters.
      next_fn: A federated computation `(server state, client data, client states
        @CLIENTS[, client inputs @CLIENTS]) -> (server state, metrics, client states @CLIENTS)`
        (client inputs only when `client_inputs` is given).
      client_state_type: The TFF type of one client's state.
      client_inputs: `(round_num, client_ids) -> [input per client]`, deterministic (e.g. seeds);
        None when the clients take none.
      initial_client_state: A client's first state, flattened (default: zeros of the type).
      slot: The name of its client-state slot (what the simulation stores it under).
    """

    RETURNED_VALUES_AT = 2  # The participants' new client states.

    def __init__(self, composed: tff.learning.templates.LearningProcess, next_fn: tff.Computation,
                 client_state_type: tff.Type,
                 client_inputs: Optional[Callable[[int, Sequence[str]], list]] = None,
                 initial_client_state: Optional[FlatState] = None, slot: str = 'client_state'):
        super().__init__(composed, next_fn)
        self._state_type, self._client_inputs = client_state_type, client_inputs
        self._initial = initial_client_state or [
            np.zeros(t.shape, t.dtype) for t in tff.structure.flatten(client_state_type)]
        self.slot = slot

    def initial_client_state(self) -> FlatState:
        return [t.copy() for t in self._initial]

    @property
    def needs(self) -> rounds.RoundNeeds:
        """Its one client-state slot (`rounds.RoundProcess`)."""
        return rounds.RoundNeeds(client_states={self.slot: self.initial_client_state()})

    def run_round(self, state: Any, client_data: list,
                  inputs: rounds.RoundInputs) -> rounds.RoundOutput:
        """`next` for the round's participants and their states in its slot."""
        output = self.next(state, client_data, client_ids=inputs.client_ids,
                           round_num=inputs.round_num,
                           client_states=inputs.client_states[self.slot])
        return rounds.RoundOutput(output.state, output.metrics,
                                  {self.slot: output.client_states})

    def next(self, state: Any, client_data: list, *, client_ids: Sequence[str], round_num: int,
             client_states: Sequence[FlatState]) -> StatefulOutput:
        """One round; pure (the participants' new states are returned, not stored)."""
        if not len(client_ids) == len(client_data) == len(client_states):
            raise ValueError(f'{len(client_ids)} client ids, {len(client_data)} datasets and '
                             f'{len(client_states)} client states: one each per participant')
        inputs = () if self._client_inputs is None else (self._client_inputs(round_num, client_ids),)
        packed = [tff.structure.pack_sequence_as(self._state_type, list(s)) for s in client_states]
        new_state, metrics, new_states = self._next_with_values(
            state, client_data, packed, *inputs, flatten=tff.structure.flatten)
        return StatefulOutput(new_state, metrics, list(new_states))


class ClientStateStore:
    """Client states by client id, kept by the simulation (implements
    `checkpoints.ClientStateStore`).

    Memory is bounded: the `max_in_memory` most recently used clients' states stay in memory;
    older ones are spilled to one .npz file each in a temporary directory of the store's own
    (inside `spill_dir` when given; removed by `close()`), and read back when their client is
    selected again. Saving and loading a snapshot also go one client at a time. With
    model-sized states (e.g. a 2NN's 200k floats, 0.8 MB) the default of 1,000 clients keeps
    about 0.8 GB in memory.

    Args:
      initial: A client's state before it first trains (flattened).
      max_in_memory: How many clients' states to keep in memory (>= 1).
      spill_dir: Where spilled states go.
    """

    def __init__(self, initial: FlatState, max_in_memory: int = 1000,
                 spill_dir: Optional[str] = None):
        if max_in_memory < 1:
            raise ValueError(f'max_in_memory must be >= 1, got {max_in_memory}')
        self._initial = [np.asarray(t) for t in initial]
        self._max = max_in_memory
        self._memory: collections.OrderedDict[str, FlatState] = collections.OrderedDict()
        if spill_dir is not None:
            os.makedirs(spill_dir, exist_ok=True)
        # A directory of its own (also inside a given one): stores never share spill files.
        self._spill_dir = tempfile.mkdtemp(prefix='fl_tff_client_states_', dir=spill_dir)
        self._spilled: set[str] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._memory) + len(self._spilled)

    @property
    def in_memory(self) -> int:
        """How many clients' states are in memory now."""
        return len(self._memory)

    def get(self, client_id: str) -> FlatState:
        """`client_id`'s state (the initial state if it never trained)."""
        self._check_open()
        if client_id in self._memory:
            self._memory.move_to_end(client_id)
            return self._memory[client_id]
        if client_id in self._spilled:
            with np.load(self._spill_path(client_id)) as saved:
                state = [saved[f'{i}'] for i in range(len(saved.files))]
            self._spilled.discard(client_id)
            os.remove(self._spill_path(client_id))
            self._remember(client_id, state)
            return state
        return [t.copy() for t in self._initial]

    def update(self, client_ids: Sequence[str], states: Sequence[FlatState]) -> None:
        """Stores the new states of `client_ids` (same order)."""
        self._check_open()
        for client_id, state in zip(client_ids, states, strict=True):
            if client_id in self._spilled:
                self._spilled.discard(client_id)
                os.remove(self._spill_path(client_id))
            self._remember(client_id, [np.asarray(t) for t in state])

    def _remember(self, client_id: str, state: FlatState) -> None:
        self._memory[client_id] = state
        self._memory.move_to_end(client_id)
        while len(self._memory) > self._max:
            old_id, old_state = self._memory.popitem(last=False)
            np.savez(self._spill_path(old_id), **{f'{i}': t for i, t in enumerate(old_state)})
            self._spilled.add(old_id)

    def _spill_path(self, client_id: str) -> str:
        return os.path.join(self._spill_dir,
                            hashlib.sha1(client_id.encode()).hexdigest() + '.npz')

    def items(self):
        """(client id, state) of every client that has a state, spilled ones included."""
        for client_id in list(self._memory):
            yield client_id, self._memory[client_id]
        for client_id in sorted(self._spilled):
            with np.load(self._spill_path(client_id)) as saved:
                yield client_id, [saved[f'{i}'] for i in range(len(saved.files))]

    def save_client_states(self, path: str) -> None:
        """Writes every client's state to `path` (.npz, keys `<client id>::<tensor index>`),
        one array at a time: spilled states are read back one client at a time, so saving
        needs no more memory than the store does."""
        self._check_open()
        with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED, allowZip64=True) as archive:
            for client_id, state in self.items():
                for i, tensor in enumerate(state):
                    with archive.open(f'{client_id}::{i}.npy', 'w', force_zip64=True) as f:
                        np.lib.format.write_array(f, np.asanyarray(tensor), allow_pickle=False)

    def load_client_states(self, path: Optional[str]) -> None:
        """Replaces every state with those saved at `path` (none when `path` is None), one client
        at a time (beyond `max_in_memory` they spill as they are read)."""
        self._check_open()
        self._memory.clear()
        for client_id in self._spilled:
            os.remove(self._spill_path(client_id))
        self._spilled.clear()
        if path is None:
            return
        with np.load(path) as saved:  # Lazy: an array is read when its key is.
            grouped: dict[str, list[tuple[int, str]]] = {}
            for key in saved.files:
                client_id, i = key.rsplit('::', 1)
                grouped.setdefault(client_id, []).append((int(i), key))
            for client_id, keys in grouped.items():
                self._remember(client_id, [saved[key] for _, key in sorted(keys)])

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError('this ClientStateStore was closed')

    def close(self) -> None:
        """Removes the spilled states; the store cannot be used afterwards."""
        self._closed = True
        self._memory.clear()
        self._spilled.clear()
        shutil.rmtree(self._spill_dir, ignore_errors=True)
