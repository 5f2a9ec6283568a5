"""Robust aggregation keeps the aggregate near the honest mean when a few clients attack (that
every aggregator runs inside a round: tests/test_contracts.py)."""

import numpy as np
import pytest
import tensorflow_federated as tff

from fl_tff.aggregators import registry as aggregation
from fl_tff.aggregators.registry import AGGREGATORS
from tests.helpers import valid_choices

DIM = 20
rng = np.random.default_rng(0)
HONEST = [rng.normal(1.0, 0.1, DIM).astype(np.float32) for _ in range(10)]
ATTACKERS = [np.full(DIM, 1e4, np.float32), np.full(DIM, -3e3, np.float32)]
HONEST_MEAN = np.mean(HONEST, axis=0)


def _aggregate(name, values, **kwargs):
    factory = aggregation.build_model_aggregator(name, **kwargs)
    value_type = tff.TensorType(np.float32, [DIM])
    if isinstance(factory, tff.aggregators.WeightedAggregationFactory):
        process = factory.create(value_type, tff.TensorType(np.float32))
        return np.asarray(process.next(process.initialize(), values, [1.0] * len(values)).result)
    process = factory.create(value_type)
    return np.asarray(process.next(process.initialize(), values).result)


def test_plain_mean_is_dragged_away_but_robust_aggregates_stay_close(tff_runtime):
    values = HONEST + ATTACKERS
    mean = _aggregate('mean', values)
    assert np.max(np.abs(mean - HONEST_MEAN)) > 100
    for name, kwargs, tolerance in [('median', {}, 0.15), ('trimmed_mean', {'trim_fraction': 0.2}, 0.15),
                                    ('krum', {'byzantine_f': 2}, 0.5),
                                    ('multikrum', {'byzantine_f': 2}, 0.15),
                                    ('bulyan', {'byzantine_f': 2}, 0.15),
                                    ('rfa', {'rfa_iterations': 10}, 0.15),
                                    ('zero', {'zeroing_norm': 20.0}, 0.3),
                                    ('clip', {'clip_norm': 5.0}, 1.5)]:
        robust = _aggregate(name, values, **kwargs)
        assert np.max(np.abs(robust - HONEST_MEAN)) < tolerance, name


def test_median_and_trimmed_mean_exact_values(tff_runtime):
    values = [np.full(DIM, v, np.float32) for v in (5.0, 1.0, 100.0, 2.0, 3.0, -50.0)]
    np.testing.assert_allclose(_aggregate('median', values), 2.5)
    # Six values, trim 1 from each end: mean of (1, 2, 3, 5).
    np.testing.assert_allclose(_aggregate('trimmed_mean', values, trim_fraction=0.2), 2.75)
    np.testing.assert_allclose(_aggregate('median', values[:5]), 3.0)


def test_clip_bounds_every_update_norm(tff_runtime):
    values = [np.full(DIM, 10.0, np.float32), np.full(DIM, 0.01, np.float32)]
    result = _aggregate('clip', values, clip_norm=1.0)
    # The big update is scaled to norm 1; the small one is untouched.
    expected = (np.full(DIM, 10.0) / np.linalg.norm(np.full(DIM, 10.0)) + 0.01) / 2
    np.testing.assert_allclose(result, expected, rtol=1e-5)


@pytest.mark.parametrize('name,kwargs,match', [
    ('trimmed_mean', {'trim_fraction': 0.5}, r'trim_fraction must be in \[0, 0.5\)'),
    ('clip', {'clip_norm': 0.0}, 'clip_norm must be > 0'),
    ('zero', {'zeroing_norm': -1.0}, 'zeroing_norm must be > 0'),
    ('geomed', {}, f"unknown aggregator 'geomed'; valid choices: {valid_choices(AGGREGATORS)}$"),
    ('krum', {'byzantine_f': -1}, 'byzantine_f must be >= 0'),
    ('krum', {'clip_norm': 1.0}, '--aggregator=krum takes no clip_norm'),
])
def test_bad_aggregator_settings_raise(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        aggregation.build_model_aggregator(name, **kwargs)
