"""FedProx: mu = 0 is our FedAvg; parity with the paper's objective; mu pulls clients in."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from fl_tff.algorithms import build_fedavg, build_fedprox, client_work
from fl_tff.algorithms.fedavg import compose_algorithm
from tests.algorithms.test_fedavg import run_rounds
from tests.helpers import client_rounds, max_abs_diff, to_batches

SGD = tff.learning.optimizers.build_sgdm


def test_mu_zero_is_exactly_fedavg(tff_runtime, setup):
    model_fn, select = setup
    fedavg = build_fedavg(model_fn, client_optimizer=SGD(0.05))
    prox = build_fedprox(model_fn, mu=0.0, client_optimizer=SGD(0.05))
    initial = fedavg.get_model_weights(fedavg.initialize())
    a, _ = run_rounds(fedavg, select, 2, initial)
    b, _ = run_rounds(prox, select, 2, initial)
    assert max_abs_diff(a.trainable, b.trainable) == 0.0


def _reference_fedprox_round(keras_fn, weights, datasets, mu, lr, weighting):
    """The paper's FedProx round in plain TF: each client runs SGD on
    loss + (mu/2)||w - w_global||^2 (gradient by autodiff), the server averages."""
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model = keras_fn()
    global_w = [tf.constant(w) for w in weights]

    @tf.function(reduce_retracing=True)  # One SGD step; the loop over batches stays in Python.
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
            loss += mu / 2 * tf.add_n([tf.reduce_sum(tf.square(v - g))
                                       for v, g in zip(model.trainable_variables, global_w)])
        grads = tape.gradient(loss, model.trainable_variables)
        for v, g in zip(model.trainable_variables, grads):
            v.assign_sub(lr * g)

    deltas, client_weights = [], []
    for ds in datasets:
        model.set_weights(weights)
        n = 0
        for batch in ds:
            step(batch['x'], batch['y'])
            n += int(batch['y'].shape[0])
        deltas.append([w - v.numpy() for w, v in zip(weights, model.trainable_variables)])
        client_weights.append(float(n) if weighting == tff.learning.ClientWeighting.NUM_EXAMPLES else 1.0)
    total = sum(client_weights)
    return [w - sum(cw * d[i] for cw, d in zip(client_weights, deltas)) / total
            for i, w in enumerate(weights)]


@pytest.mark.parametrize('weighting', [tff.learning.ClientWeighting.NUM_EXAMPLES,
                                       tff.learning.ClientWeighting.UNIFORM])
def test_parity_with_the_papers_objective_after_three_rounds(tff_runtime, setup, keras_fn, weighting):
    model_fn, select = setup
    ours = build_fedprox(model_fn, mu=0.5, client_optimizer=SGD(0.05), server_optimizer=SGD(1.0),
                         weighting=weighting)
    initial = ours.get_model_weights(ours.initialize())
    a, _ = run_rounds(ours, select, 3, initial)
    expected = [np.asarray(w) for w in initial.trainable]
    for r in range(1, 4):
        expected = _reference_fedprox_round(keras_fn, expected,
                                            [to_batches(d) for d in client_rounds(select, r)],
                                            0.5, 0.05, weighting)
    assert max_abs_diff(a.trainable, initial.trainable) > 1e-2
    assert max_abs_diff(a.trainable, expected) <= 1e-5


def test_tff_087_fed_prox_has_the_opposite_proximal_sign(tff_runtime, setup):
    """Pins an upstream bug: TFF 0.87's build_weighted_fed_prox adds mu (w_global - w) to the
    gradient (proximal_client_work.py), which pushes clients away from the global model, so
    parity with it is impossible. If this test fails, TFF fixed it: switch the parity test
    above back to TFF's builder."""
    model_fn, select = setup
    initial = None
    movement = {}
    for name, process in [
            ('fedavg', build_fedavg(model_fn, client_optimizer=SGD(0.05))),
            ('ours', build_fedprox(model_fn, mu=2.0, client_optimizer=SGD(0.05))),
            ('tff', tff.learning.algorithms.build_weighted_fed_prox(
                model_fn, proximal_strength=2.0, client_optimizer_fn=SGD(0.05)))]:
        if initial is None:
            initial = process.get_model_weights(process.initialize())
        w, _ = run_rounds(process, select, 1, initial)
        movement[name] = max_abs_diff(w.trainable, initial.trainable)
    assert movement['ours'] < movement['fedavg'] < movement['tff']


def test_with_tffs_sign_flipped_ours_matches_tff_fed_prox(tff_runtime, setup):
    """Our FedProx differs from TFF 0.87's only by the sign of the proximal term: composing
    our client work with strength -mu reproduces build_weighted_fed_prox(mu) to 1e-5."""
    model_fn, select = setup
    mu = 0.1
    flipped = compose_algorithm(
        model_fn, client_work.build_model_delta_client_work(model_fn, SGD(0.05), proximal_strength=-mu),
        SGD(1.0), tff.aggregators.MeanFactory())
    reference = tff.learning.algorithms.build_weighted_fed_prox(
        model_fn, proximal_strength=mu, client_optimizer_fn=SGD(0.05), server_optimizer_fn=SGD(1.0))
    initial = flipped.get_model_weights(flipped.initialize())
    a, _ = run_rounds(flipped, select, 3, initial)
    b, _ = run_rounds(reference, select, 3, initial)
    assert max_abs_diff(a.trainable, b.trainable) <= 1e-5


def test_larger_mu_keeps_the_update_closer_to_the_global_model(tff_runtime, setup):
    model_fn, select = setup
    initial = None
    movement = []
    for mu in (0.0, 1.0, 10.0):
        process = build_fedprox(model_fn, mu=mu, client_optimizer=SGD(0.05))
        if initial is None:
            initial = process.get_model_weights(process.initialize())
        w, _ = run_rounds(process, select, 1, initial)
        movement.append(max_abs_diff(w.trainable, initial.trainable))
    assert movement[0] > movement[1] > movement[2]


def test_negative_mu_is_rejected(setup):
    with pytest.raises(ValueError, match='mu must be >= 0'):
        build_fedprox(setup[0], mu=-0.1)
