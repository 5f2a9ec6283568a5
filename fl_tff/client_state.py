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
selected client's state into the request to the worker, and costs the driver several copies of
it (at K = 50 with a 2NN's 200k floats per state, about 0.5 s of a 3 s round).
`reading_states_from(directory)` gives the same process with a TFF computation in front of
`next` that reads each client's state from a file in `directory` inside the worker: `next`
writes the participants' states there for the round (one raw file per client, removed after the
round) and sends paths. The new states come back through TFF as before, so the simulation still
owns and stores them; the results are identical (a test compares them bit for bit).
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
import tensorflow as tf
import tensorflow_federated as tff

from fl_tff import composed_process

# A client's state as the store keeps it: its tensors, flattened in the state type's order.
FlatState = list[np.ndarray]


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
    """A `LearningProcess` composition whose `next` also carries client states.

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
    """

    def __init__(self, composed: tff.learning.templates.LearningProcess, next_fn: tff.Computation,
                 client_state_type: tff.Type,
                 client_inputs: Optional[Callable[[int, Sequence[str]], list]] = None,
                 initial_client_state: Optional[FlatState] = None):
        super().__init__(composed, next_fn)
        self._state_type, self._client_inputs = client_state_type, client_inputs
        self._initial = initial_client_state or [
            np.zeros(t.shape, t.dtype) for t in tff.structure.flatten(client_state_type)]
        self._state_dir: Optional[str] = None  # Set by `reading_states_from`.

    def initial_client_state(self) -> FlatState:
        return [t.copy() for t in self._initial]

    def reading_states_from(self, directory: str) -> 'StatefulLearningProcess':
        """The same process whose clients read their states inside the worker from files that
        `next` writes in `directory` (see the module docstring). The workers must see
        `directory` at the same path (the run's client-files directory is such a place).

        Args:
          directory: Where each round's state files go (created if missing).

        Returns:
          A process of the same class with the same state, weights and results.

        Raises:
          TypeError: A client state tensor whose dtype cannot be read back from raw bytes.
        """
        if self._state_dir is not None:
            raise ValueError(f'this process already reads client states from {self._state_dir}')
        read_state = build_state_reader(self._state_type)
        inner = self._next_fn
        params = list(inner.type_signature.parameter)
        paths_type = tff.FederatedType(np.str_, tff.CLIENTS)

        if len(params) == 3:
            @tff.federated_computation(params[0], params[1], paths_type)
            def next_fn(state, client_data, state_paths):
                return inner(state, client_data, tff.federated_map(read_state, state_paths))
        else:
            @tff.federated_computation(params[0], params[1], paths_type, params[3])
            def next_fn(state, client_data, state_paths, client_inputs):
                return inner(state, client_data, tff.federated_map(read_state, state_paths),
                             client_inputs)

        process = self.with_next(next_fn)
        process._state_dir = directory
        return process

    def next(self, state: Any, client_data: list, *, client_ids: Sequence[str], round_num: int,
             client_states: Sequence[FlatState]) -> StatefulOutput:
        """One round; pure (the participants' new states are returned, not stored)."""
        if not len(client_ids) == len(client_data) == len(client_states):
            raise ValueError(f'{len(client_ids)} client ids, {len(client_data)} datasets and '
                             f'{len(client_states)} client states: one each per participant')
        inputs = () if self._client_inputs is None else (self._client_inputs(round_num, client_ids),)
        if self._state_dir is None:
            packed = [tff.structure.pack_sequence_as(self._state_type, list(s))
                      for s in client_states]
            new_state, metrics, new_states = self._next_fn(state, client_data, packed, *inputs)
        else:
            os.makedirs(self._state_dir, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix='round_', dir=self._state_dir) as round_dir:
                paths = [_write_state(os.path.join(round_dir, f'{i}.bin'), s)
                         for i, s in enumerate(client_states)]
                new_state, metrics, new_states = self._next_fn(state, client_data, paths, *inputs)
        return StatefulOutput(new_state, metrics, [
            [np.asarray(t) for t in tff.structure.flatten(s)] for s in new_states])


# decode_raw's dtypes: what a state file can hold.
_RAW_DTYPES = (np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64,
               np.uint8, np.uint16, np.complex64, np.complex128, np.bool_)


def _write_state(path: str, state: FlatState) -> str:
    """Writes a client's state as its tensors' little-endian bytes, one after another."""
    with open(path, 'wb') as f:
        for tensor in state:
            tensor = np.asarray(tensor)
            f.write(np.ascontiguousarray(tensor, tensor.dtype.newbyteorder('<')).data)
    return path


def build_state_reader(state_type: tff.Type) -> tff.Computation:
    """A `tff.tensorflow.computation` path -> the client state of `state_type` written at
    `path` by `_write_state` (what runs in the worker).

    Raises:
      TypeError: A tensor of `state_type` whose dtype cannot be read back from raw bytes.
    """
    tensors = tff.structure.flatten(state_type)
    for t in tensors:
        if t.dtype.type not in _RAW_DTYPES:
            raise TypeError(f'client state dtype {t.dtype} cannot be read from a file; '
                            f'supported: {", ".join(np.dtype(d).name for d in _RAW_DTYPES)}')
    sizes = [int(np.prod(t.shape, dtype=np.int64)) * np.dtype(t.dtype.type).itemsize
             for t in tensors]
    offsets = np.cumsum([0, *sizes[:-1]]).tolist()

    @tff.tensorflow.computation(np.str_)
    def read_state(path):
        content = tf.io.read_file(path)
        flat = [tf.reshape(tf.io.decode_raw(tf.strings.substr(content, offset, size),
                                            tf.as_dtype(t.dtype.type), little_endian=True),
                           t.shape)
                for t, offset, size in zip(tensors, offsets, sizes)]
        return tff.structure.pack_sequence_as(state_type, flat)

    return read_state


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
