"""Robust aggregation keeps the aggregate near the honest mean when a few clients attack."""

import numpy as np
import pytest
import tensorflow_federated as tff

from fl_tff import aggregation, models
from fl_tff.algorithms import build_fedavg
from fl_tff.data import client_rounds

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


def test_robust_aggregators_compose_into_fedavg(tff_runtime, skewed_digits):
    model_fn, _ = models.model_fn_for_dataset('logreg', skewed_digits.element_spec, 10)
    datasets = [client_rounds.from_batches(skewed_digits.train.create_tf_dataset_for_client(c).batch(32))
                for c in skewed_digits.train.client_ids[:5]]
    for name in ('median', 'trimmed_mean', 'clip', 'zero', 'krum', 'multikrum', 'bulyan', 'rfa'):
        process = build_fedavg(model_fn, model_aggregator=aggregation.build_model_aggregator(name))
        state = process.initialize()
        before = process.get_model_weights(state).trainable
        after = process.get_model_weights(process.next(state, datasets).state).trainable
        assert all(np.all(np.isfinite(w)) for w in after)
        assert max(np.max(np.abs(a - b)) for a, b in zip(after, before)) > 1e-4, name


@pytest.mark.parametrize('name,kwargs,match', [
    ('trimmed_mean', {'trim_fraction': 0.5}, r'trim_fraction must be in \[0, 0.5\)'),
    ('clip', {'clip_norm': 0.0}, 'clip_norm must be > 0'),
    ('zero', {'zeroing_norm': -1.0}, 'zeroing_norm must be > 0'),
    ('geomed', {}, "unknown aggregator 'geomed'; valid choices: bulyan, clip, krum, mean, median, multikrum, rfa, trimmed_mean, zero"),
    ('krum', {'byzantine_f': -1}, 'byzantine_f must be >= 0'),
    ('krum', {'clip_norm': 1.0}, '--aggregator=krum takes no clip_norm'),
])
def test_bad_aggregator_settings_raise(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        aggregation.build_model_aggregator(name, **kwargs)
