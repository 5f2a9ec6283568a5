"""The geometric median (RFA) against Weiszfeld's algorithm written plainly, and its
robustness."""

import numpy as np
import tensorflow as tf

from fl_tff.aggregators.robust import rfa


def _numpy_weiszfeld(x, iterations, nu=1e-6):
    v = x.mean(axis=0)
    for _ in range(iterations):
        w = 1.0 / np.maximum(np.linalg.norm(x - v, axis=1), nu)
        v = (w[:, None] * x).sum(0) / w.sum()
    return v


def test_equals_weiszfeld_written_plainly():
    x = np.random.default_rng(3).normal(size=(9, 5)).astype(np.float32)
    for iterations in (1, 3, 10):
        np.testing.assert_allclose(rfa.geometric_median(tf.constant(x), iterations).numpy(),
                                   _numpy_weiszfeld(x.astype(np.float64), iterations), rtol=1e-5)


def test_collinear_points_have_the_middle_point_as_geometric_median():
    x = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [100.0, 100.0], [3.0, 3.0]], np.float32)
    np.testing.assert_allclose(rfa.geometric_median(tf.constant(x), 200).numpy(), [2.0, 2.0],
                               atol=1e-3)


def test_outliers_barely_move_the_geometric_median():
    rng = np.random.default_rng(1)
    honest = rng.normal(1.0, 0.1, size=(10, 20)).astype(np.float32)
    x = np.concatenate([honest, np.full((3, 20), 1e4, np.float32)])
    assert np.abs(rfa.geometric_median(tf.constant(x), 10).numpy() - honest.mean(0)).max() < 0.2
