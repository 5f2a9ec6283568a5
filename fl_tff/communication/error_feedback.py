"""Error feedback for sparsified uplinks (Seide et al. 2014; Stich, Cordonnier & Jaggi 2018,
"Sparsified SGD with Memory"; Karimireddy et al. 2019, "Error Feedback Fixes SignSGD").

Each client keeps the part of its updates that compression dropped, e_i, and adds it to its
next update before compressing: send c = C(Δ + e_i), keep e_i ← Δ + e_i − c. Nothing is lost,
only delayed, which restores convergence of biased compressors such as top-k.

The residual is client state that lives across rounds. TFF's `LearningProcess` has none, so this
module builds the same composition as `tff.learning.templates.compose_learning_process` (and
shares its state, so initialize / get_model_weights / checkpoints are unchanged) with a `next`
that also takes each client's residual and seed and returns the new residuals, CLIENTS-placed:
the server never sees them. `ErrorFeedbackProcess` keeps them in the simulation, by client id.
"""

from __future__ import annotations

import collections
import dataclasses
import zlib
from typing import Any, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fl_tff.communication import compression

SPARSIFIERS = ('topk', 'randk')


@dataclasses.dataclass(frozen=True)
class ErrorFeedback:
    """Sparsification `name` ('topk' or 'randk') keeping fraction `k` of each tensor, with
    client-side error feedback; `seed` keys rand-k's choice of coordinates."""

    name: str
    k: float
    seed: int = 0

    def __post_init__(self):
        if self.name not in SPARSIFIERS:
            raise ValueError(f'error feedback applies to sparsifiers ({", ".join(SPARSIFIERS)}), '
                             f'got {self.name!r}')
        compression.check(self.name, 8, self.k)

    def compress(self, value: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """The decoded sparsified `value` (what the server receives). Rand-k is not rescaled
        by n/k here: error feedback needs a contraction (||x - C(x)|| < ||x||), and the
        rescaled residual would grow by (n/k - 1) each round."""
        if self.name == 'topk':
            return compression.top_k(value, self.k)
        return compression.random_k(value, self.k, seed, unbiased=False)

    def client_seed(self, round_num: int, client_id: str) -> np.ndarray:
        """The stateless seed of `client_id`'s compression in `round_num`."""
        entropy = [self.seed, round_num, zlib.crc32(client_id.encode())]
        return np.random.SeedSequence(entropy).generate_state(2, np.uint64).astype(np.int64)


def compensate_and_compress(feedback: ErrorFeedback, update, residual, seed, weight=None):
    """(sent, new residual) for one client: sent = C(update + residual) tensor by tensor,
    new residual = update + residual - sent. A client of weight 0 (a zeroed, diverged update)
    sends zeros and keeps its residual, so no owed mass is dropped."""
    corrected = tf.nest.map_structure(tf.add, update, residual)
    flat = tf.nest.flatten(corrected)
    sent = [feedback.compress(v, tf.random.experimental.stateless_fold_in(seed, i))
            for i, v in enumerate(flat)]
    sent = tf.nest.pack_sequence_as(corrected, sent)
    new_residual = tf.nest.map_structure(tf.subtract, corrected, sent)
    if weight is not None:
        keep = weight > 0
        sent = tf.nest.map_structure(lambda t: tf.where(keep, t, tf.zeros_like(t)), sent)
        new_residual = tf.nest.map_structure(lambda new, old: tf.where(keep, new, old),
                                             new_residual, residual)
    return sent, new_residual


def compose_with_error_feedback(
        feedback: ErrorFeedback,
        initial_model_weights_fn: tff.Computation,
        distributor: tff.templates.MeasuredProcess,
        client_work: tff.learning.templates.ClientWorkProcess,
        aggregator: tff.templates.AggregationProcess,
        finalizer: tff.learning.templates.FinalizerProcess,
) -> 'ErrorFeedbackProcess':
    """TFF's learning-process composition with error-feedback compression between client work
    and the aggregator (which should be a plain or weighted mean of the sent updates)."""
    composed = tff.learning.templates.compose_learning_process(
        initial_model_weights_fn, distributor, client_work, aggregator, finalizer)
    state_type = composed.next.type_signature.parameter[0]
    data_type = composed.next.type_signature.parameter[1]
    update_type = client_work.next.type_signature.result.result.member.update
    seed_type = tff.TensorType(np.int64, [2])

    weight_type = client_work.next.type_signature.result.result.member.update_weight

    @tff.tensorflow.computation(update_type, update_type, seed_type, weight_type)
    def client_compress(update, residual, seed, weight):
        return compensate_and_compress(feedback, update, residual, seed, weight)

    @tff.federated_computation(state_type, data_type,
                               tff.FederatedType(update_type, tff.CLIENTS),
                               tff.FederatedType(seed_type, tff.CLIENTS))
    def next_fn(state, client_data, residuals, seeds):
        distributed = distributor.next(state.distributor, state.global_model_weights)
        work = client_work.next(state.client_work, distributed.result, client_data)
        sent, new_residuals = tff.federated_map(
            client_compress, (work.result.update, residuals, seeds, work.result.update_weight))
        aggregated = aggregator.next(state.aggregator, sent, work.result.update_weight)
        final = finalizer.next(state.finalizer, state.global_model_weights, aggregated.result)
        new_state = tff.federated_zip(tff.learning.templates.LearningAlgorithmState(
            final.result, distributed.state, work.state, aggregated.state, final.state))
        metrics = tff.federated_zip(collections.OrderedDict(
            distributor=distributed.measurements, client_work=work.measurements,
            aggregator=aggregated.measurements, finalizer=final.measurements))
        return new_state, metrics, new_residuals

    zeros = [np.zeros(t.shape, np.float32) for t in tff.structure.flatten(update_type)]
    return ErrorFeedbackProcess(composed, next_fn, feedback, zeros, update_type)


class ErrorFeedbackProcess:
    """A learning process whose clients keep their compression residuals between rounds.

    Same state, `initialize`, `get_model_weights` and `set_model_weights` as the plain
    composition; `next(state, client_data, client_ids=..., round_num=...)` looks up each
    client's residual (zeros the first time) and stores the new ones. The residuals
    (`client_states`) are checkpointed with the state (see `fl_tff.checkpoints`).
    Memory: one model-sized residual per client that has trained.
    """

    needs_client_ids = True

    def __init__(self, composed: tff.learning.templates.LearningProcess, next_fn: tff.Computation,
                 feedback: ErrorFeedback, zeros: list[np.ndarray], update_type):
        self._next_fn, self._feedback = next_fn, feedback
        self._zeros, self._update_type = zeros, update_type
        self.client_states: dict[str, list[np.ndarray]] = {}
        self.initialize = composed.initialize
        self.get_model_weights = composed.get_model_weights
        self.set_model_weights = composed.set_model_weights

    def _pack(self, flat: Sequence[np.ndarray]) -> Any:
        return tff.structure.pack_sequence_as(self._update_type, list(flat))

    def next(self, state, client_data: list, *, client_ids: Sequence[str],
             round_num: int) -> tff.learning.templates.LearningProcessOutput:
        """One round for `client_data` of the clients `client_ids` (same order)."""
        if len(client_ids) != len(client_data):
            raise ValueError(f'{len(client_ids)} client ids for {len(client_data)} datasets')
        residuals = [self._pack(self.client_states.get(cid, self._zeros)) for cid in client_ids]
        seeds = [self._feedback.client_seed(round_num, cid) for cid in client_ids]
        new_state, metrics, new_residuals = self._next_fn(state, client_data, residuals, seeds)
        for cid, residual in zip(client_ids, new_residuals):
            self.client_states[cid] = [np.asarray(t) for t in tff.structure.flatten(residual)]
        return tff.learning.templates.LearningProcessOutput(new_state, metrics)

    def save_client_states(self, path: str) -> None:
        """Writes the residuals to `path` (.npz)."""
        arrays = {f'{cid}::{i}': t for cid, flat in self.client_states.items()
                  for i, t in enumerate(flat)}
        with open(path, 'wb') as f:
            np.savez(f, **arrays)

    def load_client_states(self, path: Optional[str]) -> None:
        """Replaces the residuals with those saved at `path` (none when `path` is None)."""
        self.client_states = {}
        if path is None:
            return
        with np.load(path) as saved:
            grouped: dict[str, dict[int, np.ndarray]] = {}
            for key in saved.files:
                cid, i = key.rsplit('::', 1)
                grouped.setdefault(cid, {})[int(i)] = saved[key]
        self.client_states = {cid: [parts[i] for i in range(len(parts))]
                              for cid, parts in grouped.items()}
