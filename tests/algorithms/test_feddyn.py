"""FedDyn: parity with the paper's Algorithm 1 (Acar et al. 2021) written plainly in eager TF."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from fl_tff import simulation
from fl_tff.algorithms import build_fedavg
from fl_tff.algorithms.feddyn import build_feddyn
from tests.algorithms.test_fedavg import run_rounds
from fl_tff.privacy.dpsgd import DpSgd
from tests.helpers import (clipped_mean_gradients, max_abs_diff, plan_rounds,
                           run_with_client_states, to_batches)

SGD = tff.learning.optimizers.build_sgdm
LR, ALPHA, NUM_CLIENTS = 0.05, 0.1, 6


def _reference_round(keras_fn, x, h, gradients, ids, datasets, clip=None):
    """One round of Algorithm 1: each client k solves min L_k(v) - <g_k, v> + (alpha/2)
    ||v - x||^2 by SGD from v = x, then g_k <- g_k - alpha (v - x); the server sets
    h <- h - (alpha / m) sum_k (v_k - x) and x <- mean_k v_k - h / alpha. With `clip`, the
    gradient of L_k is DP-SGD's without noise (per-example gradients clipped, averaged)."""
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    zeros = [np.zeros_like(w) for w in x]
    model = keras_fn()

    @tf.function(reduce_retracing=True)  # One SGD step on the local objective.
    def step(inputs, labels, g, start):
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(inputs, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        for v, gr, gk, s in zip(model.trainable_variables, grads, g, start):
            v.assign_sub(LR * (gr - gk + ALPHA * (v - s)))

    models = []
    for cid, ds in zip(ids, datasets):
        model.set_weights(x)
        g = gradients.get(cid, zeros)
        for batch in ds:
            if clip is None:
                step(batch['x'], batch['y'], [tf.constant(t) for t in g],
                     [tf.constant(t) for t in x])
                continue
            grads = clipped_mean_gradients(model, batch['x'], batch['y'], clip)
            for v, gr, gk, s in zip(model.trainable_variables, grads, g, x):
                v.assign_sub(LR * (gr - gk + ALPHA * (v - s)))
        v = [t.numpy() for t in model.trainable_variables]
        gradients[cid] = [gk - ALPHA * (vv - xx) for gk, vv, xx in zip(g, v, x)]
        models.append(v)
    h = [hh - ALPHA / NUM_CLIENTS * sum(v[i] - x[i] for v in models) for i, hh in enumerate(h)]
    x = [np.mean([v[i] for v in models], axis=0) - h[i] / ALPHA for i in range(len(x))]
    return x, h


def test_three_rounds_equal_algorithm_1_written_plainly(tff_runtime, setup, keras_fn):
    model_fn, select = setup
    process = build_feddyn(model_fn, feddyn_alpha=ALPHA, num_clients=NUM_CLIENTS,
                           client_optimizer=SGD(LR), server_optimizer=SGD(1.0))
    assert process.slots == ('dyn_gradient',)
    initial = process.get_model_weights(process.initialize())
    state, stored = run_with_client_states(process, select, 3)

    x = [np.asarray(w) for w in initial.trainable]
    h = [np.zeros_like(w) for w in x]
    gradients = {}
    for r in range(1, 4):
        plan = select.plan(r)
        x, h = _reference_round(keras_fn, x, h, gradients, list(plan.participants),
                                [to_batches(d) for d in plan_rounds(select, plan)])
    assert max(np.abs(t).max() for t in h) > 1e-4  # The server's correction moved.
    assert max_abs_diff(process.get_model_weights(state).trainable, x) <= 1e-5
    assert max_abs_diff(state.finalizer[1], h) <= 1e-6
    assert set(stored) == set(gradients)
    for cid, expected in gradients.items():
        assert max_abs_diff(stored[cid], expected) <= 1e-6

    fedavg, _ = run_rounds(build_fedavg(model_fn, client_optimizer=SGD(LR),
                                        weighting=tff.learning.ClientWeighting.UNIFORM),
                           select, 3, initial)
    assert max_abs_diff(fedavg.trainable, x) > 1e-4  # The regularizer matters.


def test_with_dp_sgd_two_rounds_equal_algorithm_1_with_clipped_gradients(
        tff_runtime, setup, keras_fn, skewed_digits):
    """Example-level DP-SGD inside FedDyn: the gradient of L_k in each local step is the
    clipped per-example mean (noise 0 here, so the oracle can follow it)."""
    model_fn, _ = setup  # Two clients a round, one epoch: the oracle loops over examples.
    select = simulation.build_training_selection_fn(
        skewed_digits.train, clients_per_round=2, epochs=1, batch_size=8, seed=11)
    process = build_feddyn(model_fn, feddyn_alpha=ALPHA, num_clients=NUM_CLIENTS,
                           client_optimizer=SGD(LR), server_optimizer=SGD(1.0),
                           dp_sgd=DpSgd(clip=0.05, noise_multiplier=0.0))
    initial = process.get_model_weights(process.initialize())
    state, stored = run_with_client_states(process, select, 2)
    x = [np.asarray(w) for w in initial.trainable]
    h = [np.zeros_like(w) for w in x]
    gradients = {}
    for r in range(1, 3):
        plan = select.plan(r)
        data = [to_batches(d) for d in plan_rounds(select, plan)]
        if r == 1:  # Clipping is active: round 1 without it ends elsewhere.
            unclipped, _ = _reference_round(keras_fn, x, h, {}, list(plan.participants), data)
        x, h = _reference_round(keras_fn, x, h, gradients, list(plan.participants), data,
                                clip=0.05)
        if r == 1:
            assert max_abs_diff(x, unclipped) > 1e-3
    assert max_abs_diff(process.get_model_weights(state).trainable, x) <= 1e-5
    assert max_abs_diff(state.finalizer[1], h) <= 1e-6
    for cid, expected in gradients.items():
        assert max_abs_diff(stored[cid], expected) <= 1e-6


@pytest.mark.parametrize('alpha,clients,message', [
    (0.0, 6, 'feddyn_alpha must be > 0'), (0.1, 0, 'num_clients must be >= 1')])
def test_refuses_settings_outside_the_paper(setup, alpha, clients, message):
    model_fn, _ = setup
    with pytest.raises(ValueError, match=message):
        build_feddyn(model_fn, feddyn_alpha=alpha, num_clients=clients)
