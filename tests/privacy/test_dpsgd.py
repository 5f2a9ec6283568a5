"""Sample-level DP-SGD on clients: reduces to SGD without noise or clipping, clips each example,
and draws noise that differs per client and step yet repeats for the same seed."""

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fl_tff import simulation
from fl_tff.algorithms import build_fedavg
from fl_tff.privacy.dpsgd import DpSgd, build_dp_sgd_gradient_fn, clip_and_sum
from tests.helpers import client_rounds, max_abs_diff

UNIFORM = tff.learning.ClientWeighting.UNIFORM


def _train(model_fn, select, rounds, **kwargs):
    process = build_fedavg(model_fn, client_optimizer=tff.learning.optimizers.build_sgdm(0.1),
                           weighting=UNIFORM, **kwargs)
    state = process.initialize()
    for r in range(1, rounds + 1):
        state = process.next(state, client_rounds(select, r)).state
    return process.get_model_weights(state)


def _select(data, steps_per_epoch, seed=11):
    return simulation.build_training_selection_fn(data.train, clients_per_round=4, epochs=1,
                                                  batch_size=8, seed=seed,
                                                  steps_per_epoch=steps_per_epoch)


def test_without_noise_and_clipping_dp_sgd_is_fedavg(tff_runtime, model_fn, skewed_digits):
    plain = _train(model_fn, _select(skewed_digits, False), 3)
    dp = _train(model_fn, _select(skewed_digits, True), 3, dp_sgd=DpSgd(clip=1e9, noise_multiplier=0.0))
    assert max_abs_diff(plain, dp) <= 1e-5


def test_dp_sgd_runs_are_reproducible_and_noise_changes_the_result(tff_runtime, model_fn, skewed_digits):
    settings = DpSgd(clip=1.0, noise_multiplier=1.0)
    a = _train(model_fn, _select(skewed_digits, True), 2, dp_sgd=settings)
    b = _train(model_fn, _select(skewed_digits, True), 2, dp_sgd=settings)
    assert max_abs_diff(a, b) == 0.0
    clipped_only = _train(model_fn, _select(skewed_digits, True), 2,
                          dp_sgd=DpSgd(clip=1.0, noise_multiplier=0.0))
    assert max_abs_diff(a, clipped_only) > 1e-3


def test_per_example_clipping_then_sum():
    grads = [tf.constant([[3.0, 4.0], [0.3, 0.4], [0.0, 10.0]]), tf.constant([[0.0], [0.0], [0.0]])]
    summed = clip_and_sum(grads, clip=1.0)
    # Norms 5, 0.5 and 10: the first and last are scaled to norm 1, the middle one is kept.
    assert np.allclose(summed[0].numpy(), [0.6 + 0.3 + 0.0, 0.8 + 0.4 + 1.0], atol=1e-6)


def test_noise_differs_per_client_seed_and_step_and_repeats_for_the_same_seed(model_fn, skewed_digits):
    """DP-SGD's gradient on the same batch with different `noise_seed`s ([client seed, step], as
    `client_rounds.run_local_steps` passes them)."""
    model = model_fn()
    trainable = tuple(model.trainable_variables)
    gradient_fn = build_dp_sgd_gradient_fn(DpSgd(clip=1.0, noise_multiplier=1.0))
    batch = next(iter(skewed_digits.train.create_tf_dataset_for_client(
        skewed_digits.train.client_ids[0]).batch(8)))

    def gradient(seed):
        grads, _ = gradient_fn(model, collections.OrderedDict(
            [*batch.items(), ('noise_seed', tf.constant(seed, tf.int64))]), trainable)
        return [g.numpy() for g in grads]

    a, again, other_client, other_step = gradient([1, 0]), gradient([1, 0]), gradient([2, 0]), gradient([1, 1])
    assert all(np.array_equal(x, y) for x, y in zip(a, again))
    for other in (other_client, other_step):
        assert max(np.abs(x - y).max() for x, y in zip(a, other)) > 1e-3
