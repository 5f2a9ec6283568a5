"""Sample-level DP-SGD on clients (Abadi et al. 2016, "Deep Learning with Differential
Privacy"): every local step clips each example's gradient to L2 norm C, sums them, adds
N(0, (zC)²) and divides by the batch size.

Our own gradient function rather than TF Privacy's DP Keras optimizers: TFF's client loop takes
only `tff.learning.optimizers` and sees only the mean loss, and TF Privacy's noise comes from
TF's unseeded generator. Here the noise is stateless, keyed by the `noise_seed` each step
carries ([the client's seed this round, the step]; the seed is derived from the run's seed, the
round and the client, see `fl_tff.data.client_rounds` and `fl_tff.simulation.selection`), so it
differs per client and step and a rerun repeats it.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import tensorflow as tf

from fl_tff import options
from fl_tff.data import client_rounds
from fl_tff.models.losses import per_example_loss
from fl_tff.privacy import dp_options


@dataclasses.dataclass(frozen=True)
class DpSgd:
    """DP-SGD settings: per-example clip norm C, noise multiplier z, labels left out of the loss."""

    clip: float
    noise_multiplier: float
    masked_labels: tuple[int, ...] = ()

    def __post_init__(self):
        if not self.clip > 0:
            raise ValueError(f'clip must be > 0, got {self.clip}')
        if self.noise_multiplier < 0:
            raise ValueError(f'noise_multiplier must be >= 0, got {self.noise_multiplier}')


def clip_and_sum(per_example_grads: Sequence[tf.Tensor], clip: float) -> list[tf.Tensor]:
    """Sum over the batch axis of per-example gradients, each scaled to global L2 norm <= clip."""
    squared = tf.add_n([tf.reduce_sum(tf.reshape(tf.square(g), [tf.shape(g)[0], -1]), axis=1)
                        for g in per_example_grads])
    scale = tf.minimum(1.0, clip / tf.maximum(tf.sqrt(squared), 1e-12))
    return [tf.tensordot(scale, g, axes=1) for g in per_example_grads]


def build_dp_sgd_gradient_fn(settings: DpSgd):
    """A `GradientFn` (see `fl_tff.algorithms.client_work`) computing DP-SGD gradients."""
    clip, z, masked = float(settings.clip), float(settings.noise_multiplier), settings.masked_labels

    def gradients(model, batch, trainable):
        seed = batch[client_rounds.NOISE_SEED_KEY]
        inputs = client_rounds.model_inputs(batch)
        with tf.GradientTape() as tape:
            output = model.forward_pass(inputs, training=True)
            losses = per_example_loss(inputs['y'], output.predictions, masked)
        per_example = tape.jacobian(losses, list(trainable), experimental_use_pfor=True)
        summed = clip_and_sum(per_example, clip)
        batch_size = tf.cast(tf.shape(losses)[0], tf.float32)
        noised = [
            (s + tf.random.stateless_normal(
                tf.shape(s), seed=tf.random.experimental.stateless_fold_in(seed, i),
                stddev=z * clip, dtype=s.dtype)) / batch_size
            for i, s in enumerate(summed)]
        return noised, output

    return gradients


def _ledger(config, select, client_sizes, model_size):
    del select, model_size
    from fl_tff.privacy import ledger
    return ledger.ExampleLevelLedger(config.noise_multiplier, config.client_batch_size,
                                     client_sizes, config.delta, config.target_epsilon)


OPTION = options.Option(
    'dpsgd', 'example-level DP-SGD on clients (Abadi et al. 2016): per-example clip --clip, noise '
    'z*C per step', params=dp_options.COMMON,
    provides={options.STEPS_PER_EPOCH, options.EXAMPLE_LEVEL_DP},
    requires={options.DP_SGD_CLIENT: 'runs in the clients\' local SGD'},
    client_extras=lambda config, masked_labels: {
        'dp_sgd': DpSgd(config.clip, config.noise_multiplier, tuple(masked_labels))},
    privacy_ledger=_ledger, check=dp_options.check_budget_has_noise)
