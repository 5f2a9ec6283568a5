"""Compression: unbiased stochastic quantization, rotation, top-k / random-k, their byte counts."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from fl_tff.communication import compression, ledger
from fl_tff.config import ConfigError, ExperimentConfig

SIZES = [64 * 32, 32, 32 * 32, 32, 32 * 10, 10]  # The 2NN of width 32 on digits.


def test_stochastic_quantization_is_unbiased_and_on_the_grid():
    value = tf.constant(np.random.default_rng(0).normal(size=50), tf.float32)
    draws = np.stack([compression.stochastic_quantize(value, 2, tf.constant([s, 1], tf.int64)).numpy()
                      for s in range(3000)])
    lo, hi = float(tf.reduce_min(value)), float(tf.reduce_max(value))
    step = (hi - lo) / 3
    assert np.abs(draws.mean(0) - value.numpy()).max() < 0.06 * step * 3  # ~5 standard errors.
    assert len(np.unique(np.round((draws - lo) / step, 4))) <= 4  # 2 bits: four levels.
    assert np.abs(draws - value.numpy()).max() <= step + 1e-5


def test_top_k_keeps_the_largest_and_random_k_is_unbiased():
    value = tf.constant([0.1, -5.0, 0.3, 2.0, -0.2, 0.05, 1.0, 0.0, 0.0, 0.4])
    kept = compression.top_k(value, 0.3).numpy()
    assert np.count_nonzero(kept) == 3 and set(np.flatnonzero(kept)) == {1, 3, 6}
    draws = np.stack([compression.random_k(value, 0.2, tf.constant([s, 2], tf.int64)).numpy()
                      for s in range(4000)])
    assert all(np.count_nonzero(d[value.numpy() != 0]) <= 2 for d in draws[:50])
    assert np.abs(draws.mean(0) - value.numpy()).max() < 0.4


def _aggregate(factory, values, rounds=1):
    process = factory.create(tff.TensorType(np.float32, values[0].shape))
    state, results = process.initialize(), []
    for _ in range(rounds):
        out = process.next(state, values)
        state = out.state
        results.append(out.result)
    return np.array(results)


def test_compressed_sum_is_unbiased_across_rounds_and_repeats_for_the_seed(tff_runtime):
    rng = np.random.default_rng(1)
    values = [rng.normal(size=64).astype(np.float32) for _ in range(3)]
    exact = np.sum(values, axis=0)
    factory = compression.build_compressed_sum('quantize', bits=2, seed=5)
    results = _aggregate(factory, values, rounds=300)
    assert np.abs(results[0] - exact).max() > 0.05  # Two bits are lossy...
    assert np.abs(results.mean(0) - exact).max() < 0.25  # ...but unbiased.
    assert np.array_equal(_aggregate(factory, values, rounds=2), results[:2])


def test_rotation_shrinks_the_quantization_error_of_a_spiky_update(tff_runtime):
    value = np.random.default_rng(2).normal(0.0, 0.1, 256).astype(np.float32)
    value[7] = 10.0  # One outlier stretches the plain quantizer's range.
    errors = {}
    for name in ('quantize', 'rotate_quantize'):
        results = _aggregate(compression.build_compressed_sum(name, bits=2, seed=3), [value], rounds=20)
        errors[name] = np.mean((results - value) ** 2)
    assert errors['rotate_quantize'] < errors['quantize'] / 2


def test_uplink_bytes_of_each_encoding():
    b8 = compression.uplink_encoding('quantize', weighted=True, bits=8)
    assert b8.client_bytes(SIZES) == -(-(32 + 8 * sum(SIZES) + 64 * len(SIZES)) // 8) == 3518
    rotated = compression.uplink_encoding('rotate_quantize', weighted=False, bits=2)
    padded = [2048, 32, 1024, 32, 512, 16]
    assert rotated.client_bytes(SIZES) == -(-(2 * sum(padded) + 64 * 6) // 8)
    topk = compression.uplink_encoding('topk', weighted=False, k=0.1)
    kept = [205, 4, 103, 4, 32, 1]  # ceil(0.1 n)
    index_bits = [11, 5, 10, 5, 9, 4]  # ceil(log2 n)
    assert topk.client_bytes(SIZES) == -(-sum(k * (32 + i) for k, i in zip(kept, index_bits)) // 8)
    randk = compression.uplink_encoding('randk', weighted=False, k=0.1)
    assert randk.client_bytes(SIZES) == -(-(32 * sum(kept) + 64) // 8)
    assert compression.uplink_encoding('none', weighted=True).client_bytes(SIZES) == 4 * sum(SIZES) + 4
    assert ledger.kept_values(10, 0.01) == 1


@pytest.mark.parametrize('overrides,message', [
        (dict(compression='quantize', compression_bits=0), r'--compression_bits: must be in \[1, 16\]'),
    (dict(compression='rotate_quantize', compression_bits=17), r'--compression_bits: must be in \[1, 16\]'),
    (dict(compression='topk', compression_k=0.0), r'--compression_k: must be in \(0, 1\], got 0.0'),
    (dict(compression='randk', compression_k=-1.0), r'--compression_k: must be in \(0, 1\], got -1.0'),
    (dict(compression='quantize', secure_agg=True), '--secure_agg: --secure_agg does not combine with --compression=quantize: a secure sum already sends every value'),
    (dict(compression='rotate_quantize', aggregator='median'), '--compression: --compression=rotate_quantize does not combine with --aggregator=median: a coordinate-wise rule needs each client\'s decoded update'),
])
def test_bad_compression_settings_name_the_flag(overrides, message):
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(ExperimentConfig(), **overrides).validate()
