"""Personalized evaluation: each client's own model on its local test split, beside the global
model's (`evaluation.PerClientEvaluator`, `client_acc_*`).

* `personal_acc_*`: for a process whose clients keep a personal model part
  (`algorithms.personalization.PersonalizedProcess`: FedPer, FedRep, Ditto), each client's model
  built from the global weights and its stored state. A client that never trained uses its
  initial state (FedPer's initial head, Ditto's initial model): it counts as it is. For a
  process that reconstructs (`Reconstructs`: FedRecon), each client reconstructs its local
  layers on its training split (one epoch) and is scored on its test split.
* `finetuned_acc_*`: for every algorithm with `finetune_epochs` > 0, the global model fine-tuned
  by each client on its local training split (our client work's local SGD, `finetune_epochs`
  epochs at the client learning rate and batch size, a fixed seeded shuffle per client), then
  evaluated on its test split. All clients fine-tune in one TFF call per evaluation.
* `heldout_finetuned_acc_*` and `heldout_test_acc_*`: with fine-tuning, clients never trained on
  (`--heldout_clients`) fine-tune the same way; beside it, the global model on the same test
  splits.

Each is summarized as mean, p10, p50, p90 and the mean of the worst 10% of clients.
"""

from __future__ import annotations

import zlib
from typing import Callable, Optional, Protocol, Sequence, runtime_checkable

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fl_tff import client_state, evaluation
from fl_tff.algorithms import client_work as client_work_lib
from fl_tff.algorithms import personalization
from fl_tff.data import client_rounds
from fl_tff.models import model_fn as model_fn_lib
from fl_tff.models.model_fn import ModelFn


@runtime_checkable
class Reconstructs(Protocol):
    """A process whose clients rebuild their personal part at evaluation (FedRecon)."""

    def reconstructed_accuracies(self, weights: tff.learning.models.ModelWeights,
                                 clients: Sequence[tf.data.Dataset]) -> list[float]:
        """Each client's test accuracy after reconstructing on its training split (`clients`:
        each client's data as `evaluation_batches` makes it)."""

    def evaluation_batches(self, train: tf.data.Dataset, test: tf.data.Dataset,
                           batch_size: int) -> tf.data.Dataset:
        """A client's data for `reconstructed_accuracies`."""


def _arrays(client_data: tff.simulation.datasets.ClientData, cid: str) -> tuple[np.ndarray, np.ndarray]:
    batch = next(iter(client_data.create_tf_dataset_for_client(cid).batch(1 << 30)))
    return batch['x'].numpy(), batch['y'].numpy()


def build_finetune_computation(model_fn: ModelFn, learning_rate: float) -> tff.Computation:
    """`(global weights @SERVER, client rounds @CLIENTS) -> fine-tuned trainable deltas
    @CLIENTS`: our client work's local SGD from the global model."""
    optimizer = tff.learning.optimizers.build_sgdm(learning_rate)
    types = model_fn_lib.model_types(model_fn)
    weights_type = types.weights_type
    data_type = client_work_lib.client_round_type(types.input_spec)

    @tff.tensorflow.computation(weights_type, data_type)
    def finetune(weights, dataset):
        result, _ = client_work_lib.build_local_training_fn(
            model_fn, optimizer, tff.learning.ClientWeighting.NUM_EXAMPLES)(weights, dataset)
        return result.update

    @tff.federated_computation(tff.FederatedType(weights_type, tff.SERVER),
                               tff.FederatedType(data_type, tff.CLIENTS))
    def finetune_all(weights, client_data):
        return tff.federated_map(finetune, (tff.federated_broadcast(weights), client_data))

    return finetune_all


class _FineTuning:
    """The fine-tuned accuracies of one group of clients (their training and test splits)."""

    def __init__(self, computation: tff.Computation, train, test, *, epochs: int,
                 batch_size: int, seed: int):
        self._computation = computation
        self.ids = [cid for cid in test.client_ids if cid in set(train.client_ids)]
        self.tests = [_arrays(test, cid) for cid in self.ids]
        self._rounds = [client_rounds.make_round(
            train.create_tf_dataset_for_client(cid), epochs=epochs, batch_size=batch_size,
            shuffle_seed=zlib.crc32(f'{seed}:{cid}'.encode())) for cid in self.ids]

    def tuned_weights(self, weights: tff.learning.models.ModelWeights) -> list:
        """Each client's fine-tuned model (one TFF call for the group)."""
        deltas = self._computation(weights, self._rounds)
        return [personalization.replace_trainable(
            weights, range(len(tf.nest.flatten(d))),
            [np.asarray(w) - np.asarray(u) for w, u in zip(weights.trainable, tf.nest.flatten(d))])
            for d in deltas]


class PersonalizedEvaluator:
    """`personal_acc_*`, `finetuned_acc_*` and, for held-out clients, `heldout_test_acc_*` and
    `heldout_finetuned_acc_*` (see the module docstring).

    Args:
      keras_fn: The Keras model behind `model_fn` (for scoring).
      model_fn: The model (for fine-tuning).
      train: The clients' local training splits.
      test: Their local test splits (the same client ids).
      process: The learning process (personal models when it is a `PersonalizedProcess`).
      client_states: The simulation's client-state store (read at each call).
      finetune_epochs: Local epochs of fine-tuning (0: none).
      batch_size: Fine-tuning batch size.
      learning_rate: Fine-tuning SGD learning rate.
      seed: Seed of the fine-tuning shuffles.
      heldout_train, heldout_test: Training and test splits of clients never trained on: with
        fine-tuning, they are scored on their test split before and after fine-tuning on their
        training split (they have no personal state).
      masked_labels, accuracy_masked_labels: As `evaluation.PerClientEvaluator`.
    """

    def __init__(self, keras_fn: Callable[[], tf.keras.Model], model_fn: ModelFn,
                 train: tff.simulation.datasets.ClientData,
                 test: tff.simulation.datasets.ClientData, *, process,
                 client_states: Optional[client_state.ClientStateStore],
                 finetune_epochs: int, batch_size: int, learning_rate: float, seed: int,
                 heldout_train: Optional[tff.simulation.datasets.ClientData] = None,
                 heldout_test: Optional[tff.simulation.datasets.ClientData] = None,
                 masked_labels: Sequence[int] = (), accuracy_masked_labels: Sequence[int] = ()):
        self._keras_fn = keras_fn
        self._ids = list(test.client_ids)
        self._tests = [_arrays(test, cid) for cid in self._ids]
        self._score = evaluation.Scorer(masked_labels, accuracy_masked_labels)
        self._process = process if isinstance(
            process, personalization.PersonalizedProcess) else None
        self._states = client_states
        self._reconstructs = process if isinstance(process, Reconstructs) else None
        if self._reconstructs is not None:
            self._split_batches = [process.evaluation_batches(
                train.create_tf_dataset_for_client(cid), test.create_tf_dataset_for_client(cid),
                batch_size) for cid in self._ids]
        self._finetune = self._heldout = None
        if finetune_epochs > 0:
            computation = build_finetune_computation(model_fn, learning_rate)
            kwargs = dict(epochs=finetune_epochs, batch_size=batch_size, seed=seed)
            self._finetune = _FineTuning(computation, train, test, **kwargs)
            if heldout_train is not None and heldout_test is not None:
                self._heldout = _FineTuning(computation, heldout_train, heldout_test, **kwargs)

    @property
    def active(self) -> bool:
        """Whether a call reports anything."""
        return (self._finetune is not None or self._reconstructs is not None
                or (self._process is not None and self._states is not None))

    def _accuracies(self, models_weights, tests=None) -> list[float]:
        model = self._keras_fn()
        out = []
        for weights, (x, y) in zip(models_weights, self._tests if tests is None else tests):
            weights.assign_weights_to(model)
            _, _, correct, n = self._score(model, x, y)
            if n > 0:
                out.append(correct / n)
        return out

    def __call__(self, weights: tff.learning.models.ModelWeights) -> dict[str, float]:
        row: dict[str, float] = {}
        if self._process is not None and self._states is not None:
            personal = [self._process.personal_weights(weights, self._states.get(cid))
                        for cid in self._ids]
            row.update(evaluation.distribution('personal_acc', self._accuracies(personal)))
        if self._reconstructs is not None:
            row.update(evaluation.distribution('personal_acc', [
                a for a in self._reconstructs.reconstructed_accuracies(
                    weights, self._split_batches) if np.isfinite(a)]))
        if self._finetune is not None:
            row.update(evaluation.distribution('finetuned_acc', self._accuracies(
                self._finetune.tuned_weights(weights), self._finetune.tests)))
        if self._heldout is not None:
            tests = self._heldout.tests
            row.update(evaluation.distribution('heldout_test_acc', self._accuracies(
                [weights] * len(tests), tests)))
            row.update(evaluation.distribution('heldout_finetuned_acc', self._accuracies(
                self._heldout.tuned_weights(weights), tests)))
        return row
