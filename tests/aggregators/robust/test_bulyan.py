"""Bulyan against the paper's two stages written plainly in NumPy."""

import numpy as np
import pytest
import tensorflow as tf

from fl_tff.aggregators.robust import bulyan


def _numpy_bulyan(x, f):
    n = len(x)
    remaining, selected = list(range(n)), []
    for _ in range(n - 2 * f):
        k = max(len(remaining) - f - 2, 1)
        scores = {i: sum(sorted(float(np.sum((x[i] - x[j]) ** 2))
                                for j in remaining if j != i)[:k]) for i in remaining}
        best = min(remaining, key=lambda i: (scores[i], i))
        selected.append(best)
        remaining.remove(best)
    s = x[selected]
    theta, beta = len(s), len(s) - 2 * f
    median = np.median(s, axis=0)
    out = np.empty(x.shape[1])
    for c in range(x.shape[1]):
        order = np.argsort(np.abs(s[:, c] - median[c]), kind='stable')
        out[c] = s[order[:beta], c].mean()
    return out


@pytest.mark.parametrize('n,f', [(7, 1), (11, 2)])
def test_bulyan_equals_the_rule_written_plainly(n, f):
    x = np.random.default_rng(n).normal(size=(n, 8)).astype(np.float32)
    np.testing.assert_allclose(bulyan.bulyan(tf.constant(x), f).numpy(), _numpy_bulyan(x, f),
                               rtol=1e-5, atol=1e-6)


def test_bulyan_resists_f_attackers_that_defeat_the_mean():
    rng = np.random.default_rng(0)
    honest = rng.normal(1.0, 0.1, size=(9, 20)).astype(np.float32)
    attack = np.full((2, 20), -50.0, np.float32)
    x = np.concatenate([honest, attack])
    result = bulyan.bulyan(tf.constant(x), 2).numpy()
    assert np.abs(result - honest.mean(0)).max() < 0.15
    assert np.abs(x.mean(0) - honest.mean(0)).max() > 5
