"""The model aggregator is the chain of the layers the selected options declare: the order rules
on toy layers, and the chains a run builds against NumPy versions of what they compute
(robust rules on decoded compressed updates; DP on compressed updates)."""

import numpy as np
import pytest
import tensorflow_federated as tff

from fl_tff.aggregators import chain
from fl_tff import experiment
from fl_tff.config import ExperimentConfig


def _toy(level, name, **kwargs):
    """A layer whose 'factory' records what it wraps (and the bound its context carries)."""
    return chain.Layer(level, lambda params, context, inner: (name, params.get('p'),
                                                              context.value_bound, inner), **kwargs)


def test_a_reduction_that_takes_a_sum_gets_the_encoded_sum_inside_and_the_guard_outside():
    layers = [(_toy(chain.SUM, 'sum'), {}), (_toy(chain.GUARD, 'guard'), {'p': 1}),
              (_toy(chain.ENCODE, 'encode'), {}),
              (_toy(chain.REDUCE, 'mean', encodes_sum=True), {'p': 2})]
    built = chain.build(layers, chain.Context(uniform=True))
    assert built == ('guard', 1, None, ('mean', 2, None, ('encode', None, None,
                                                          ('sum', None, None, None))))


def test_dp_clips_what_compression_decoded_and_bounds_its_sum_by_the_clip():
    layers = [(_toy(chain.ENCODE, 'topk'), {}), (_toy(chain.SUM, 'secure_sum'), {}),
              (_toy(chain.REDUCE, 'dp', value_bound=lambda params: params['clip']), {'clip': 0.5})]
    built = chain.build(layers, chain.Context(uniform=True))
    assert built == ('topk', None, None, ('dp', None, None, ('secure_sum', None, 0.5, None)))


def test_a_gathering_rule_sees_each_decoded_update_and_no_sum():
    layers = [(_toy(chain.ENCODE, 'topk'), {}), (_toy(chain.REDUCE, 'median', takes_sum=False), {})]
    assert chain.build(layers, chain.Context(uniform=True)) == (
        'topk', None, None, ('median', None, None, None))
    # Clients that encode in their own work (error feedback) are not encoded again.
    assert chain.build(layers, chain.Context(uniform=True, client_encodes=True)) == (
        'median', None, None, None)


def test_two_layers_at_one_level_are_refused():
    with pytest.raises(ValueError, match="two aggregator layers at level 'reduce'"):
        chain.build([(_toy(chain.REDUCE, 'a'), {}), (_toy(chain.REDUCE, 'b'), {})],
                    chain.Context(uniform=True))
    with pytest.raises(ValueError, match='unknown aggregator level'):
        chain.Layer('middle', lambda params, context, inner: None)


DIM, K = 8, 5
RNG = np.random.default_rng(3)
UPDATES = [RNG.normal(0.0, 1.0, DIM).astype(np.float32) * (1 + i) for i in range(K)]


def _run(config: ExperimentConfig, values, weights=None) -> np.ndarray:
    """One aggregation of `values` by the chain a run of `config` builds."""
    factory = experiment.build_model_aggregator(config, max_weight=1.0)
    value_type = tff.TensorType(np.float32, [DIM])
    if isinstance(factory, tff.aggregators.WeightedAggregationFactory):
        process = factory.create(value_type, tff.TensorType(np.float32))
        out = process.next(process.initialize(), values, weights or [1.0] * len(values))
    else:
        process = factory.create(value_type)
        out = process.next(process.initialize(), values)
    return np.asarray(out.result)


def _top_k(u: np.ndarray, fraction: float) -> np.ndarray:
    keep = int(np.ceil(fraction * u.size))
    out = np.zeros_like(u)
    idx = np.argsort(-np.abs(u), kind='stable')[:keep]
    out[idx] = u[idx]
    return out


def test_median_of_top_k_updates_is_the_median_of_each_clients_decoded_update(tff_runtime):
    config = ExperimentConfig(compression='topk', compression_k=0.5, aggregator='median')
    expected = np.median([_top_k(u, 0.5) for u in UPDATES], axis=0)
    np.testing.assert_allclose(_run(config, UPDATES), expected, rtol=1e-6, atol=1e-7)
    # Top-k really acted: the median of the raw updates differs.
    assert np.abs(np.median(UPDATES, axis=0) - expected).max() > 0.1


def test_user_level_dp_clips_each_decoded_update_then_averages_over_k(tff_runtime):
    config = ExperimentConfig(compression='topk', compression_k=0.25, dp='fixed', clip=0.7,
                              noise_multiplier=0.0, clients_per_round=K,
                              client_weighting='uniform')

    def clipped(u):
        return u * min(1.0, 0.7 / np.linalg.norm(u))

    expected = np.sum([clipped(_top_k(u, 0.25)) for u in UPDATES], axis=0) / K
    np.testing.assert_allclose(_run(config, UPDATES), expected, rtol=1e-5, atol=1e-6)


def test_krum_on_rotated_quantized_updates_picks_the_update_numpy_krum_picks(tff_runtime):
    """Krum depends only on distances, which the random rotation keeps: the server may un-rotate
    the one update it picks (16-bit quantization moves it by less than 1e-3)."""
    values = [u + 5.0 for u in UPDATES[:4]] + [np.full(DIM, -40.0, np.float32)]
    d2 = np.array([[np.sum((a - b) ** 2) for b in values] for a in values])
    f = 1
    scores = [np.sort(np.delete(row, i))[:K - f - 2].sum() for i, row in enumerate(d2)]
    expected = values[int(np.argmin(scores))]
    config = ExperimentConfig(compression='rotate_quantize', compression_bits=16,
                              aggregator='krum', byzantine_f=f, clients_per_round=K)
    np.testing.assert_allclose(_run(config, values), expected, atol=2e-3)


def test_clipping_guards_the_mean_of_quantized_updates(tff_runtime):
    config = ExperimentConfig(compression='quantize', compression_bits=16, aggregator='clip',
                              clip_norm=1.5)
    weights = [float(i + 1) for i in range(K)]
    clipped = [u * min(1.0, 1.5 / np.linalg.norm(u)) for u in UPDATES]
    expected = np.average(clipped, axis=0, weights=weights)
    np.testing.assert_allclose(_run(config, UPDATES, weights), expected, atol=2e-3)

