"""Client data built where it is used: the driver sends client tasks, TFF's workers build data.

A client's task is its id plus what this round's selection decided for it: its local epochs
(partial for stragglers), the seed of its shuffle, the seed of its DP-SGD noise and whether it
is malicious (it then applies the run's attack, `fl_tff.attacks`, to its data and update). A TFF
dataset computation (`build_dataset_computation`) turns a task into the client's round
(`fl_tff.data.client_rounds`) inside the worker, reading the client's examples there (from the
files of `fl_tff.data.client_files`, or generating them from the id). `compose` puts the dataset
computation in front of a learning process's `next` with TFF's own composition
(`tff.simulation.compose_dataset_computation_with_computation`), so the process takes tasks
CLIENTS-placed: per round the driver sends the model and the tasks, never examples.

The same function builds the round in the driver (`client_round`): a process that takes data
(the uncomposed one) trains on exactly the same batches.
"""

from __future__ import annotations

import collections
from typing import Any, Mapping, Optional, Protocol, Union, runtime_checkable

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fl_tff import attacks, client_state, options
from fl_tff.data import client_rounds

TASK_SPEC = collections.OrderedDict(client_id=np.str_, epochs=np.int32, shuffle_seed=np.int64,
                                    noise_seed=np.int64, malicious=np.int32)


def make_task(client_id: str, epochs: int, *, shuffle_seed: int, noise_seed: int,
              malicious: bool = False) -> collections.OrderedDict:
    """A client's task (see the module docstring)."""
    return collections.OrderedDict(client_id=np.str_(client_id), epochs=np.int32(epochs),
                                   shuffle_seed=np.int64(shuffle_seed),
                                   noise_seed=np.int64(noise_seed),
                                   malicious=np.int32(bool(malicious)))


def _round(client_data: tff.simulation.datasets.ClientData, client_id, task: Mapping,
           batch_size: int, steps_per_epoch: bool, attack: Optional[attacks.Attack], *,
           in_graph: bool) -> tf.data.Dataset:
    """The client's round: from its stacked examples where the client data has them; a
    malicious client's examples poisoned and its round carrying its update attack."""
    stacked = isinstance(client_data, client_rounds.StackedClientData)
    if stacked:
        examples = client_data.serializable_stacked_dataset_fn(client_id)
    elif in_graph:
        examples = client_data.serializable_dataset_fn(client_id)
    else:
        examples = client_data.create_tf_dataset_for_client(client_id)
    fields = {}
    if attack is not None:
        if not stacked:
            examples, stacked = client_rounds.stack(examples), True
        # Which examples a client poisons depends on the client alone, not on the round.
        client_seed = tf.strings.to_hash_bucket_fast(client_id, 2 ** 62)
        examples = attack.poison_examples(examples, task['malicious'], client_seed)
        fields = dict(zip(('update_scale', 'update_noise'),
                          attack.round_fields(task['malicious'])))
    return client_rounds.make_round(examples, epochs=task['epochs'], batch_size=batch_size,
                                    shuffle_seed=task['shuffle_seed'],
                                    noise_seed=task['noise_seed'],
                                    batch_per_epoch=steps_per_epoch, stacked=stacked, **fields)


def build_dataset_computation(client_data: tff.simulation.datasets.ClientData, *,
                              batch_size: int, steps_per_epoch: bool = False,
                              attack: Optional[attacks.Attack] = None) -> tff.Computation:
    """A `tff.tensorflow.computation` task -> the client's round, built from
    `client_data.serializable_dataset_fn` (or its stacked form) where it runs.

    Args:
      client_data: The clients. File-backed (`fl_tff.data.client_files`) or generated ones read
        or make only the task's client; an in-memory `ClientData` carries all its examples in
        the computation.
      batch_size: Examples per local step.
      steps_per_epoch: Whether local steps stop at epoch boundaries (DP-SGD).
      attack: What malicious clients (tasks with `malicious` set) do; None: nothing.

    Returns:
      The dataset computation.
    """
    @tff.tensorflow.computation(TASK_SPEC)
    def dataset_computation(task):
        task = collections.OrderedDict(zip(TASK_SPEC, task.values()) if isinstance(
            task, Mapping) else zip(TASK_SPEC, task))
        # Built here and handed over materialized: the worker passes a lazy dataset to the
        # client computation as a graph it re-instantiates there, twice the cost at K = 50.
        built = _round(client_data, task['client_id'], task, batch_size, steps_per_epoch,
                       attack, in_graph=True)
        return tf.data.Dataset.from_tensors(built.get_single_element())

    return dataset_computation


def client_round(client_data: tff.simulation.datasets.ClientData, task: Mapping, *,
                 batch_size: int, steps_per_epoch: bool = False,
                 attack: Optional[attacks.Attack] = None) -> tf.data.Dataset:
    """The client's round for `task`, built here (eagerly) with the dataset computation's ops."""
    client_id = str(task['client_id'])
    task = {k: task.get(k, 0) for k in TASK_SPEC}
    return _round(client_data, client_id, task, batch_size, steps_per_epoch, attack,
                  in_graph=False)


Process = Union[tff.learning.templates.LearningProcess, client_state.StatefulLearningProcess]


def compose(process: Process, dataset_computation: tff.Computation) -> Process:
    """`process` whose `next` takes client tasks CLIENTS-placed instead of client datasets; each
    worker builds its clients' data with `dataset_computation`.

    Args:
      process: A learning process over client rounds, with or without client state.
      dataset_computation: task -> the client's round (`build_dataset_computation`).

    Returns:
      The same kind of process, with the same state, weights and hyperparameters.

    Raises:
      TypeError: The process's client data does not match the dataset computation's rounds.
    """
    next_fn = process.next_computation if isinstance(process, ComposableNext) else process.next
    if not client_rounds.takes_rounds(next_fn.type_signature.parameter[1].member):
        dataset_computation = as_batches(dataset_computation)
    if isinstance(process, ComposableNext):
        return process.with_next(tff.simulation.compose_dataset_computation_with_computation(
            dataset_computation, next_fn))
    return tff.simulation.compose_dataset_computation_with_learning_process(
        dataset_computation, process)


@runtime_checkable
class ComposableNext(Protocol):
    """A process that composes its own `next` (it has more than TFF's `LearningProcess` does:
    client state, or other weights)."""

    @property
    def next_computation(self) -> tff.Computation:
        """The federated computation behind `next`."""

    def with_next(self, next_fn: tff.Computation) -> Any:
        """The same process with `next_fn` behind `next`."""


def as_batches(dataset_computation: tff.Computation) -> tff.Computation:
    """`dataset_computation` whose rounds are handed over as datasets of their steps' batches
    (`client_rounds.to_batches`), for processes built by TFF's own builders (e.g. FedRecon)."""
    @tff.tensorflow.computation(dataset_computation.type_signature.parameter)
    def batched(task):
        return client_rounds.to_batches(dataset_computation(task))
    return batched


def _retired(name: str):
    def check(config, selection) -> None:
        del config, selection
        raise options.OptionError(
            'simulation', f'--simulation={name} was retired: TFF\'s runtime now builds each '
                          'client\'s data in the worker and trains it in one graph loop, about '
                          'as fast as the fast path was (docs/benchmarks.md), with every feature; '
                          'use --simulation=tff (the default)')
    return check


# Each builder is `(process, dataset_computation) -> the process that runs the rounds`.
SIMULATIONS = options.Registry('simulation', 'How rounds run.', [
    options.Option('tff', 'TFF\'s runtime; the driver sends client tasks and each worker builds '
                   'its clients\' data', build=compose),
    options.Option('fast', 'retired (was: local SGD in this process); use tff',
                   check=_retired('fast'), build=compose),
    options.Option('fast_xla', 'retired (was: the fast path, XLA-compiled); use tff',
                   check=_retired('fast_xla'), build=compose),
], default='tff')
