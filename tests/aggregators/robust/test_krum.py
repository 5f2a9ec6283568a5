"""Krum and Multi-Krum against the paper's rule written plainly in NumPy, and Krum's breakdown
point."""

import numpy as np
import pytest
import tensorflow as tf

from fl_tff.aggregators.robust import krum


def _numpy_scores(x, f):
    n = len(x)
    scores = []
    for i in range(n):
        d = sorted(float(np.sum((x[i] - x[j]) ** 2)) for j in range(n) if j != i)
        scores.append(sum(d[:max(n - f - 2, 1)]))
    return np.array(scores)


def _numpy_multi_krum(x, f, m):
    order = np.argsort(_numpy_scores(x, f), kind='stable')
    return x[order[:m]].mean(axis=0)


@pytest.mark.parametrize('n,f', [(7, 2), (10, 3), (5, 1)])
def test_scores_and_selection_equal_the_rule_written_plainly(n, f):
    x = np.random.default_rng(n).normal(size=(n, 6)).astype(np.float32)
    np.testing.assert_allclose(krum.krum_scores(tf.constant(x), f).numpy(), _numpy_scores(x, f),
                               rtol=1e-5)
    np.testing.assert_allclose(krum.multi_krum(tf.constant(x), f, 1).numpy(),
                               _numpy_multi_krum(x, f, 1), rtol=1e-6)
    np.testing.assert_allclose(krum.multi_krum(tf.constant(x), f).numpy(),  # m = n - f
                               _numpy_multi_krum(x, f, n - f), rtol=1e-5)


@pytest.mark.parametrize('f', [1, 2, 3])
def test_krum_picks_an_honest_update_with_f_colluding_attackers_when_n_exceeds_2f_plus_2(f):
    rng = np.random.default_rng(f)
    n = 2 * f + 3
    honest = rng.normal(0.0, 1.0, size=(n - f, 50)).astype(np.float32)
    # The attackers agree on one point (collusion makes their mutual distances zero), placed
    # where it pulls the mean most while staying close to the honest cloud.
    attack = np.tile(honest.mean(0) + 3.0, (f, 1)).astype(np.float32)
    x = np.concatenate([attack, honest])
    chosen = krum.multi_krum(tf.constant(x), f, 1).numpy()
    assert any(np.array_equal(chosen, h) for h in honest)
    # The plain mean is pulled towards the attackers.
    assert np.linalg.norm(x.mean(0) - honest.mean(0)) > 1.0
