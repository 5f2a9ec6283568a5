"""q-FedAvg against Algorithm 2 of Li et al. 2020 written plainly; q = 0 is uniform FedAvg."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from fl_tff.algorithms import build_fedavg
from fl_tff.algorithms.qffl import build_qffl
from tests.algorithms.test_fedavg import run_rounds
from tests.helpers import PlainSgd, client_rounds, max_abs_diff, to_batches

SGD = tff.learning.optimizers.build_sgdm
LR = 0.05


def _plain_round(keras_fn, w, rounds_data, q):
    """One round of q-FedAvg: local SGD from w, then w - sum Delta_k / sum h_k, L = 1 / lr."""
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    lipschitz = 1.0 / LR
    deltas, hs = [], []
    sgd = PlainSgd(keras_fn, LR)
    for data in rounds_data:
        sgd.load(w)
        batches = list(to_batches(data))
        losses = [float(loss_fn(b['y'], sgd.model(b['x'], training=False))) for b in batches]
        sizes = [int(b['y'].shape[0]) for b in batches]
        f_k = float(np.dot(losses, sizes) / np.sum(sizes))  # F_k(w) on the round's examples.
        for b in batches:
            sgd.step(b['x'], b['y'])
        delta_w = [lipschitz * (a - v) for a, v in zip(w, sgd.weights())]
        deltas.append([f_k ** q * d for d in delta_w])
        hs.append(q * f_k ** (q - 1) * sum(float(np.sum(d * d)) for d in delta_w)
                  + lipschitz * f_k ** q)
    return [a - sum(d[i] for d in deltas) / sum(hs) for i, a in enumerate(w)]


@pytest.mark.parametrize('q', [1.0, 5.0])
def test_two_rounds_equal_algorithm_2_written_plainly(tff_runtime, setup, keras_fn, q):
    model_fn, select = setup
    process = build_qffl(model_fn, qffl_q=q, client_optimizer=SGD(LR), server_optimizer=SGD(1.0))
    initial = process.get_model_weights(process.initialize())
    weights, _ = run_rounds(process, select, 2)
    w = [np.asarray(t) for t in initial.trainable]
    for r in (1, 2):
        w = _plain_round(keras_fn, w, client_rounds(select, r), q)
    assert max_abs_diff(weights.trainable, initial.trainable) > 1e-3  # It trained.
    assert max_abs_diff(weights.trainable, w) <= 1e-5


def test_q_zero_is_uniformly_weighted_fedavg(tff_runtime, setup):
    model_fn, select = setup
    qffl, _ = run_rounds(build_qffl(model_fn, qffl_q=0.0, client_optimizer=SGD(LR)), select, 3)
    fedavg, _ = run_rounds(build_fedavg(model_fn, client_optimizer=SGD(LR),
                                        weighting=tff.learning.ClientWeighting.UNIFORM), select, 3)
    assert max_abs_diff(qffl.trainable, fedavg.trainable) <= 1e-6
