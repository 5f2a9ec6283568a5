"""Error feedback for sparsified uplinks (Seide et al. 2014; Stich, Cordonnier & Jaggi 2018,
"Sparsified SGD with Memory"; Karimireddy et al. 2019, "Error Feedback Fixes SignSGD").

Each client keeps the part of its updates that compression dropped, e_i, and adds it to its
next update before compressing: send c = C(Δ + e_i), keep e_i ← Δ + e_i − c. Nothing is lost,
only delayed, which restores convergence of biased compressors such as top-k.

The residual is client state that lives across rounds: the round is TFF's composition
(`fl_tff.round_composer`, same state, so initialize / get_model_weights / checkpoints are
unchanged) with an upload stage that takes each client's residual and seed and returns the new
residuals, CLIENTS-placed: the server never sees them.
It is a `client_state.StatefulLearningProcess`; the simulation keeps the residuals by client id.
"""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fl_tff import aggregation, client_state, options, round_composer
from fl_tff.communication import compression

SPARSIFIERS = ('topk', 'randk')  # The compressions `ErrorFeedback.compress` implements.


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


RESIDUAL_SLOT = 'residual'  # Each client's error-feedback residual (its client-state slot).


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
) -> client_state.StatefulLearningProcess:
    """TFF's learning-process composition with error-feedback compression as the upload stage,
    between client work and the aggregator (which should be a plain or weighted mean of the sent updates); each
    client's residual is its client state (zeros at first), its seed a per-client input."""
    update_type = client_work.next.type_signature.result.result.member.update
    weight_type = client_work.next.type_signature.result.result.member.update_weight
    seed_type = tff.TensorType(np.int64, [2])

    @tff.tensorflow.computation(update_type, update_type, seed_type, weight_type)
    def client_compress(update, residual, seed, weight):
        return compensate_and_compress(feedback, update, residual, seed, weight)

    def upload(r: round_composer.Round) -> round_composer.Stage:
        sent, new_residuals = tff.federated_map(client_compress, (
            r.work.result.update, r.values[RESIDUAL_SLOT], r.values['seed'],
            r.work.result.update_weight))
        return round_composer.Stage((sent, r.work.result.update_weight), (),
                                    client_states={RESIDUAL_SLOT: new_residuals})

    composed, next_fn = round_composer.compose(round_composer.RoundStages(
        round_composer.LearningParts(initial_model_weights_fn, distributor, client_work,
                                     aggregator, finalizer),
        client_values={RESIDUAL_SLOT: update_type, 'seed': seed_type}, slots=(RESIDUAL_SLOT,),
        upload=upload))

    return client_state.StatefulLearningProcess(
        composed, next_fn, update_type,
        client_inputs=lambda round_num, ids: [feedback.client_seed(round_num, c) for c in ids],
        slot=RESIDUAL_SLOT)


ERROR_FEEDBACK = options.Registry(
    'error_feedback', 'With a sparsifier (topk / randk): each client adds what compression dropped '
    'last time to its next update (a residual kept on the client across rounds).', [
        options.Option('off', 'no residuals'),
        options.Option(
            'on', 'client residuals of what the sparsifier dropped',
            provides={options.CLIENT_STATE},
            requires={options.SPARSIFIER: 'keeps what a sparsifier dropped for the next round',
                      options.ERROR_FEEDBACK_CLIENT: 'needs an algorithm whose clients can keep '
                                                     'residuals'},
            # Clients sparsify (see `compose_with_error_feedback`); the server averages.
            aggregator=lambda config, selection, uniform, max_weight: aggregation.mean_factory(uniform),
            client_extras=lambda config, masked_labels: {'error_feedback': ErrorFeedback(
                config.compression, config.compression_k, config.seed)}),
    ], default=False, boolean=True)
