"""Error feedback for sparsified uplinks (Seide et al. 2014; Stich, Cordonnier & Jaggi 2018,
"Sparsified SGD with Memory"; Karimireddy et al. 2019, "Error Feedback Fixes SignSGD").

Each client keeps the part of its updates that compression dropped, e_i, and adds it to its
next update before compressing: send c = C(Δ + e_i), keep e_i ← Δ + e_i − c. Nothing is lost,
only delayed, which restores convergence of biased compressors such as top-k.

The residual is client state that lives across rounds: `with_error_feedback` wraps any round's
upload stage (`fl_tff.round_composer`; FedAvg's, SCAFFOLD's, FedDyn's, a personalized
algorithm's) with one that takes each client's residual and seed and returns the new residuals,
CLIENTS-placed: the server never sees them. The residual is a client-state slot of its own
beside any the algorithm has; the simulation keeps it by client id.
"""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fl_tff import options, round_composer
from fl_tff.communication import compression

# The compressions error feedback applies to: those declared sparsifiers.
SPARSIFIERS = tuple(name for name in compression.COMPRESSIONS
                    if options.SPARSIFIER in compression.COMPRESSIONS.get(name).provides)


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
        return compression.codec(self.name).contraction(value, seed, self.k)

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


SEED = 'error_feedback_seed'  # Each client's per-round compression seed (a client input).


def with_error_feedback(stages: round_composer.RoundStages,
                        feedback: ErrorFeedback) -> round_composer.RoundStages:
    """`stages` whose upload is followed by error-feedback compression: each client sends
    C(update + residual) in place of the update the round's upload stage produced, and keeps
    the rest as its residual (slot `RESIDUAL_SLOT`, zeros at first; its seed a client input).
    Whatever else the round uploads (e.g. SCAFFOLD's control-variate deltas) is untouched, and
    the aggregator should be a plain or weighted mean of the sent updates.

    Raises:
      ValueError: `stages` already has a residual slot.
    """
    if RESIDUAL_SLOT in stages.client_values:
        raise ValueError(f'the round already has a {RESIDUAL_SLOT!r} client value')
    result_type = stages.parts.client_work.next.type_signature.result.result.member
    update_type = stages.parts.aggregator.next.type_signature.parameter[1].member
    weight_type = result_type.update_weight
    seed_type = tff.TensorType(np.int64, [2])

    @tff.tensorflow.computation(update_type, update_type, seed_type, weight_type)
    def client_compress(update, residual, seed, weight):
        return compensate_and_compress(feedback, update, residual, seed, weight)

    previous = round_composer.stage_fn(stages, 'upload')

    def upload(r: round_composer.Round) -> round_composer.Stage:
        before = previous(r)
        value, weight = before.result
        sent, new_residuals = tff.federated_map(client_compress, (
            value, r.values[RESIDUAL_SLOT], r.values[SEED], weight))
        return dataclasses.replace(before, result=(sent, weight), client_states={
            **before.client_states, RESIDUAL_SLOT: new_residuals})

    return dataclasses.replace(
        stages, client_values={**stages.client_values, RESIDUAL_SLOT: update_type,
                               SEED: seed_type},
        slots=(*stages.slots, RESIDUAL_SLOT),
        client_inputs={**stages.client_inputs,
                       SEED: lambda round_num, ids: [feedback.client_seed(round_num, c)
                                                     for c in ids]},
        upload=upload)


ERROR_FEEDBACK = options.Registry(
    'error_feedback', 'With a sparsifier (topk / randk): each client adds what compression dropped '
    'last time to its next update (a residual kept on the client across rounds).', [
        options.Option('off', 'no residuals'),
        options.Option(
            'on', 'client residuals of what the sparsifier dropped',
            provides={options.CLIENT_STATE, options.CLIENT_ENCODES},
            requires={options.SPARSIFIER: 'keeps what a sparsifier dropped for the next round',
                      options.ERROR_FEEDBACK_CLIENT: 'needs an algorithm whose clients can keep '
                                                     'residuals'},
            # Clients sparsify (see `with_error_feedback`), so the aggregator does not.
            client_extras=lambda config, masked_labels: {'error_feedback': ErrorFeedback(
                config.compression, config.compression_k, config.seed)}),
    ], default=False, boolean=True)
