"""Per-client state as a first-class part of a learning process, kept by the simulation.

TFF's `LearningProcess` has server state only. A round built by the round composer
(`fl_tff.round_composer`) may declare client-state slots: state that each client keeps across
rounds (error feedback's residual, SCAFFOLD's control variate, FedDyn's gradient, a personal
model part). `StagedProcess` is such a round as a process (slots, per-client inputs such as
seeds, and values a subclass provides, e.g. SecAgg masks); `StatefulLearningProcess` is one
with at least one slot:

* the round declares each slot's type and initial value (zeros unless declared);
* `next(state, client_data, *, client_ids, round_num, client_states)` takes the selected
  clients' states in each slot CLIENTS-placed and returns their new ones CLIENTS-placed, so the
  server never sees them. `next` is pure: the same inputs give the same outputs, and nothing is
  stored inside the process (per-client inputs such as random seeds are derived from
  `round_num` and the ids);
* the simulation keeps each slot's states in a `ClientStateStore` keyed by client id, which
  the checkpointer saves beside the server state of the same round and restores on resume.

The process otherwise keeps the `LearningProcess` interface (`initialize`, `get_model_weights`,
`set_model_weights`, `get_hparams`, `set_hparams`) and the composed process's server state, so
checkpoints and evaluators are unchanged. (A process with client state cannot run under
`tff.simulation.run_training_process`, whose `next` takes data only.)

How states reach the clients: by default `next` hands them to TFF, which serializes every
selected client's state into its request to the worker. `reading_values_from(directory)` gives
the same process whose workers read them from files instead, and write the new states to files
the driver reads back (`fl_tff.runtime.worker_values`). Either way `next` takes the states and returns
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
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Protocol, runtime_checkable

import numpy as np
import tensorflow_federated as tff

from fl_tff import composed_process, round_composer, rounds

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
    """A round's output: TFF's (state, metrics) plus the participants' new client states.

    Attributes:
      state, metrics: TFF's.
      client_states: The participants' new states in the process's slot (a process with one
        slot), or slot -> them (several slots), in the shape `next` was given them.
      by_slot: Slot -> the participants' new states, whatever the number of slots.
    """

    state: Any
    metrics: Any
    client_states: Any
    by_slot: Mapping[str, list[FlatState]] = dataclasses.field(default_factory=dict)


class StagedProcess(composed_process.ComposedNextProcess):
    """The round of `stages` (`round_composer.RoundStages`) as a process, with the
    `LearningParts`' `LearningProcess` interface: it owns the round's client-state slots (none
    or several), computes its client inputs (e.g. seeds) and runs `next` with the values a
    subclass provides by name (`PROVIDED`: SecAgg's masks, asynchronous start weights). The
    per-client values travel packed, as files after `reading_values_from`.

    Args:
      stages: The round: every client value it declares is a slot, has a `client_inputs`
        function or is `PROVIDED`; each slot starts from its `initial_states` entry, zeros of
        its type otherwise.

    Raises:
      ValueError: A client value nothing supplies.
    """

    PROVIDED: tuple[str, ...] = ()  # Client values the subclass supplies each round.

    def __init__(self, stages: round_composer.RoundStages):
        unsupplied = [name for name in stages.client_values if name not in stages.slots
                      and name not in stages.client_inputs and name not in self.PROVIDED]
        if unsupplied:
            raise ValueError(f'client values {unsupplied} are neither slots, client inputs nor '
                             f'provided by {type(self).__name__}')
        # The participants' new client states (all slots), when the round has any.
        self.RETURNED_VALUES_AT = 2 if stages.slots else None
        composed, next_fn = round_composer.compose(stages)
        super().__init__(composed, next_fn)
        self.stages = stages
        self.slots = tuple(stages.slots)
        self._initial = {
            slot: [np.asarray(t) for t in stages.initial_states[slot]]
            if slot in stages.initial_states else
            [np.zeros(t.shape, t.dtype) for t in tff.structure.flatten(stages.client_values[slot])]
            for slot in self.slots}

    @property
    def needs(self) -> rounds.RoundNeeds:
        """Its client-state slots (`rounds.RoundProcess`)."""
        return rounds.RoundNeeds(client_states={
            slot: [t.copy() for t in initial] for slot, initial in self._initial.items()})

    def _run_stages(self, state: Any, client_data: list, *,
                    slot_states: Mapping[str, Sequence[FlatState]],
                    client_ids: Optional[Sequence[str]] = None, round_num: int = 0,
                    provided: Optional[Mapping[str, Sequence[Any]]] = None,
                    server_values: Sequence[Any] = ()) -> tuple[Any, Any, dict]:
        """`next` for the participants' `client_data`, their states in each slot, the
        `provided` values (name -> one value per participant, flattened) and the server values;
        `client_ids` and `round_num` key the client inputs (needed when there are any). Returns
        (new state, metrics, slot -> the participants' new states)."""
        provided = provided or {}
        if set(slot_states) != set(self.slots):
            raise ValueError(f'client states for slots {sorted(slot_states)}; the process has '
                             f'{sorted(self.slots)}')
        if client_ids is None and self.stages.client_inputs:
            raise ValueError(f'client inputs {list(self.stages.client_inputs)} need client ids')
        for name, values in {**slot_states, **provided,
                             **({} if client_ids is None else {'client ids': client_ids})}.items():
            if len(values) != len(client_data):
                raise ValueError(f'{len(client_data)} datasets and {len(values)} {name!r}: one '
                                 'each per participant')
        inputs = {name: fn(round_num, client_ids) for name, fn in self.stages.client_inputs.items()}
        by_name = {**slot_states, **inputs, **provided}
        values = []
        for i in range(len(client_data)):
            flat = []
            for name in self.stages.client_values:
                value = by_name[name][i]
                flat.extend(np.asarray(t) for t in
                            (value if isinstance(value, (list, tuple)) else [value]))
            values.append(flat)
        result = self._next_with_values(state, client_data, values, *server_values)
        if not self.slots:
            return result.state, result.metrics, {}
        new_state, metrics, returned = result
        counts = [len(self._initial[slot]) for slot in self.slots]
        new_by_slot: dict[str, list[FlatState]] = {slot: [] for slot in self.slots}
        for flat in returned:
            start = 0
            for slot, count in zip(self.slots, counts):
                new_by_slot[slot].append(list(flat[start:start + count]))
                start += count
        return new_state, metrics, new_by_slot


class StatefulLearningProcess(StagedProcess):
    """A `StagedProcess` whose clients keep state: its `next` also carries the participants'
    states in each of its client-state slots (see the module docstring).

    Raises:
      ValueError: A round without slots, or a client value nothing supplies.
    """

    def __init__(self, stages: round_composer.RoundStages):
        if not stages.slots:
            raise ValueError('a StatefulLearningProcess needs a client-state slot')
        super().__init__(stages)

    @property
    def slot(self) -> str:
        """The process's one slot (ValueError when it has several)."""
        if len(self.slots) != 1:
            raise ValueError(f'this process has client-state slots {list(self.slots)}')
        return self.slots[0]

    def initial_client_state(self) -> FlatState:
        """A client's first state in the process's one slot (flattened)."""
        return [t.copy() for t in self._initial[self.slot]]

    def run_round(self, state: Any, client_data: list,
                  inputs: rounds.RoundInputs) -> rounds.RoundOutput:
        """`next` for the round's participants and their states in each slot."""
        output = self.next(state, client_data, client_ids=inputs.client_ids,
                           round_num=inputs.round_num,
                           client_states={s: inputs.client_states[s] for s in self.slots})
        return rounds.RoundOutput(output.state, output.metrics, output.by_slot)

    def next(self, state: Any, client_data: list, *, client_ids: Sequence[str], round_num: int,
             client_states: Any) -> StatefulOutput:
        """One round; pure (the participants' new states are returned, not stored).

        Args:
          state: The server state.
          client_data: The participants' data.
          client_ids: The participants (for per-client inputs such as seeds).
          round_num: The round.
          client_states: The participants' states: a list (one state per participant) for a
            process with one slot, else slot -> such a list.
        """
        by_slot = (dict(client_states) if isinstance(client_states, Mapping)
                   else {self.slot: client_states})
        new_state, metrics, new_by_slot = self._run_stages(
            state, client_data, client_ids=client_ids, round_num=round_num, slot_states=by_slot)
        shaped = new_by_slot if isinstance(client_states, Mapping) else new_by_slot[self.slot]
        return StatefulOutput(new_state, metrics, shaped, new_by_slot)


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
