"""Synthetic(alpha, beta): shapes, sizes, seeding, and heterogeneity growing with alpha, beta."""

import numpy as np
import pytest

from fl_tff.data import synthetic


def test_shapes_sizes_and_natural_partition():
    ds = synthetic.synthetic(1.0, 1.0, num_devices=30, seed=0)
    assert ds.x.shape[1] == 60 and ds.x.dtype == np.float32 and ds.num_classes == 10
    parts = ds.natural_partition
    assert len(parts) == 30 and all(p.size >= 50 for p in parts)
    assert np.array_equal(np.concatenate(parts), np.arange(len(ds.y)))
    assert set(np.unique(ds.y)) <= set(range(10))


def test_seeded():
    a, b, c = (synthetic.synthetic(0.5, 0.5, seed=s) for s in (1, 1, 2))
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    assert a.x.shape != c.x.shape or not np.array_equal(a.x, c.x)


def _label_spread(ds) -> float:
    """Mean total-variation distance between each device's label distribution and the pooled one."""
    pooled = np.bincount(ds.y, minlength=10) / len(ds.y)
    dists = [np.bincount(ds.y[p], minlength=10) / p.size for p in ds.natural_partition]
    return float(np.mean([0.5 * np.abs(d - pooled).sum() for d in dists]))


def _input_spread(ds) -> float:
    """Mean distance between each device's mean input and the pooled mean input."""
    pooled = ds.x.mean(axis=0)
    return float(np.mean([np.linalg.norm(ds.x[p].mean(axis=0) - pooled) for p in ds.natural_partition]))


def _mean_over_seeds(measure, alpha, beta, iid=False):
    return np.mean([measure(synthetic.synthetic(alpha, beta, seed=s, iid=iid)) for s in range(5)])


def test_larger_alpha_beta_give_more_heterogeneous_devices():
    inputs = [_mean_over_seeds(_input_spread, a, b) for a, b in [(0, 0), (0.5, 0.5), (1, 1), (2, 2)]]
    assert inputs == sorted(inputs) and inputs[-1] > 1.5 * inputs[0]
    # Synthetic-IID is far more homogeneous than even Synthetic(0, 0), in inputs and in labels
    # (per-device labels are already very skewed at (0, 0): each device has its own W_k).
    assert _mean_over_seeds(_input_spread, 0, 0, iid=True) < 0.1 * inputs[0]
    iid_labels = _mean_over_seeds(_label_spread, 0, 0, iid=True)
    assert iid_labels < 0.15 < 0.5 < _mean_over_seeds(_label_spread, 0, 0)


def test_bad_parameters_raise():
    with pytest.raises(ValueError, match='alpha and beta must be >= 0'):
        synthetic.synthetic(-1.0, 1.0)
