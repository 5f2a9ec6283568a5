"""Secure aggregation: the compiled round moves model updates only through secure sums, and its
result is plain FedAvg's within the derived quantization bound Δ/2 = R / (2^B - 1)."""

import dataclasses

import numpy as np
import pytest
import tensorflow_federated as tff
from tensorflow_federated.python.core.impl.compiler import tree_analysis

from fl_tff import experiment
from fl_tff.simulation.round_metrics import flatten_training_metrics
from fl_tff.communication.secure import SecureQuantizedSumFactory, quantization_step
from fl_tff.config import ConfigError, ExperimentConfig
from tests.helpers import client_rounds, float_tensor_shapes

BASE = ExperimentConfig(hidden_units=32, clients_per_round=4, client_epochs=1, seed=2)
WEIGHT_SHAPES = {(64, 32), (32, 32), (32, 10), (32,), (10,)}


def _process(config):
    fed = experiment.load_federated_data(config)
    model_fn, _ = experiment.build_model(config, fed)
    return experiment.build_process(config, model_fn, max_weight=1000.0), fed


def _shapes(type_spec) -> set:
    """Shapes of the float tensors inside a TFF type."""
    return set(float_tensor_shapes(type_spec))


@pytest.mark.parametrize('overrides', [
    dict(secure_agg=True, client_weighting='uniform'),
    dict(secure_agg=True, client_weighting='examples', secure_range=200.0),
    dict(secure_agg=True, dp='fixed', client_weighting='uniform', noise_multiplier=1.0, clip=0.5),
    dict(secure_agg=True, algorithm='fedprox', mu=0.1, client_weighting='uniform'),
    # A FedBuff buffer is a secure sum; FedAsync's one arriving update too.
    dict(secure_agg=True, algorithm='fedbuff', concurrency=8, buffer_size=4,
         client_weighting='uniform'),
    dict(secure_agg=True, algorithm='fedasync', concurrency=8, client_weighting='uniform'),
])
def test_model_updates_reach_the_server_only_through_secure_sums(tff_runtime, overrides):
    process, _ = _process(dataclasses.replace(BASE, **overrides))
    tree = getattr(process, 'next_computation', process.next).to_building_block()
    assert tree_analysis.find_secure_aggregation_in_tree(tree)
    for call in tree_analysis.find_unsecure_aggregation_in_tree(tree):
        leaked = _shapes(call.argument.type_signature) & WEIGHT_SHAPES
        assert not leaked, f'{call.function.compact_representation()} carries update tensors {leaked}'


def test_plain_fedavg_does_send_updates_through_a_non_secure_sum(tff_runtime):
    """The structural check above can fail: without --secure_agg it finds the update tensors."""
    process, _ = _process(BASE)
    tree = process.next.to_building_block()
    leaked = set().union(*(_shapes(c.argument.type_signature)
                           for c in tree_analysis.find_unsecure_aggregation_in_tree(tree)))
    assert leaked & WEIGHT_SHAPES


def _one_round(config):
    process, fed = _process(config)
    from fl_tff import simulation
    select = simulation.build_training_selection_fn(
        fed.train, clients_per_round=config.clients_per_round, epochs=1,
        batch_size=config.client_batch_size, seed=config.seed)
    state = process.initialize()
    before = process.get_model_weights(state).trainable
    after = process.get_model_weights(process.next(state, client_rounds(select, 1)).state).trainable
    return before, after


@pytest.mark.parametrize('bits', [8, 16])
def test_secure_mean_is_plain_fedavg_within_half_a_quantization_step(tff_runtime, bits):
    uniform = dataclasses.replace(BASE, client_weighting='uniform')
    before, plain = _one_round(uniform)
    _, secure = _one_round(dataclasses.replace(uniform, secure_agg=True, secure_bits=bits,
                                               secure_range=1.0))
    deltas = [np.abs(a - b).max() for a, b in zip(plain, before)]
    assert max(deltas) < 1.0  # No update left the range, so only rounding differs.
    error = max(np.abs(a - b).max() for a, b in zip(plain, secure))
    bound = quantization_step(bits, 1.0) / 2
    assert error <= bound + 1e-6
    if bits == 8:
        assert error > bound / 10  # The bound is tight enough to matter.


def test_dp_with_secure_sum_is_dp_within_half_a_step_of_the_clip(tff_runtime):
    dp = dataclasses.replace(BASE, dp='fixed', client_weighting='uniform', noise_multiplier=0.0,
                             clip=0.05)
    _, plain = _one_round(dp)
    _, secure = _one_round(dataclasses.replace(dp, secure_agg=True, secure_bits=10))
    # Each clipped record lies within ±C, the sum is divided by K: error <= Δ/2 with R = C.
    error = max(np.abs(a - b).max() for a, b in zip(plain, secure))
    assert error <= quantization_step(10, 0.05) / 2 + 1e-7


def test_quantized_secure_sum_clips_to_the_range(tff_runtime):
    process = SecureQuantizedSumFactory(12, 2.0).create(tff.TensorType(np.float32, [3]))
    out = process.next(process.initialize(), [np.array([5.0, -7.0, 0.3], np.float32)] * 3)
    assert np.allclose(out.result, [6.0, -6.0, 0.9], atol=3 * quantization_step(12, 2.0) / 2)


@pytest.mark.parametrize('overrides,message', [
    (dict(secure_bits=0), r'--secure_bits: must be in \[1, 24\]'),
    (dict(secure_bits=32), r'--secure_bits: must be in \[1, 24\]'),
    (dict(secure_range=0.0), '--secure_range: must be > 0'),
    (dict(aggregator='median'), '--aggregator: --aggregator=median does not combine with --secure_agg: it must see each update'),
    (dict(dp='adaptive', client_weighting='uniform', noise_multiplier=0.1), '--secure_agg: --secure_agg does not combine with --dp=adaptive: adaptive clipping has no fixed range'),
])
def test_bad_secure_settings_name_the_flag(overrides, message):
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(BASE, secure_agg=True, **overrides).validate()


def _weights_of_round_1(config, fed):
    from fl_tff import simulation
    select = simulation.build_training_selection_fn(
        fed.train, clients_per_round=config.clients_per_round, epochs=1,
        batch_size=config.client_batch_size, seed=config.seed)
    return [fed.train_sizes[cid] for cid, _ in select.plan(1).participants]


def test_weighted_secure_mean_bounds_the_update_not_update_times_examples(tff_runtime):
    """Example weights of ~100 used to be multiplied in before the ±R clip, so ~7% of values
    were clipped at R = 1: the weighted secure mean N/D must be plain weighted FedAvg within its
    rounding bound (n Δ / 2 + |N/D| n / (2 L)) / (D - n / (2 L)), L = 2^B - 1 (the weight sum D
    is rounded too)."""
    weighted = dataclasses.replace(BASE, client_weighting='examples_processed')
    before, plain = _one_round(weighted)
    config = dataclasses.replace(weighted, secure_agg=True, secure_bits=16, secure_range=1.0)
    _, secure = _one_round(config)
    fed = experiment.load_federated_data(config)
    normalized = np.array(_weights_of_round_1(config, fed)) / 1000.0  # max_weight in _process
    n, levels = len(normalized), 2 ** 16 - 1
    largest = max(np.abs(a - b).max() for a, b in zip(plain, before))
    assert largest < 1.0  # Updates fit R = 1.
    bound = ((n * quantization_step(16, 1.0) / 2 + largest * n / (2 * levels))
             / (normalized.sum() - n / (2 * levels)))
    error = max(np.abs(a - b).max() for a, b in zip(plain, secure))
    assert error <= bound + 1e-6, (error, bound)
    assert error > bound / 20  # The bound is tight enough to matter.


@pytest.mark.parametrize('secure_range,clipped', [(1.0, 0.0), (1e-5, 0.5)])
def test_the_fraction_of_clipped_values_is_reported(tff_runtime, secure_range, clipped):
    from fl_tff import simulation
    config = dataclasses.replace(BASE, client_weighting='uniform', secure_agg=True,
                                 secure_range=secure_range)
    process, fed = _process(config)
    select = simulation.build_training_selection_fn(
        fed.train, clients_per_round=config.clients_per_round, epochs=1,
        batch_size=config.client_batch_size, seed=config.seed)
    row = flatten_training_metrics(process.next(process.initialize(), client_rounds(select, 1)).metrics)
    if clipped:
        assert row['secure_clipped_fraction'] > clipped  # Most update values exceed 1e-5.
    else:
        assert row['secure_clipped_fraction'] == 0.0


def test_a_value_clipped_to_the_range_packs_to_the_top_level_at_24_bits(tff_runtime):
    """In float32, (R + R) / Δ rounds to 2^24 for R = 0.3 at B = 24, one past the top level: a
    masked sum (which does not clip integers) would overflow its modulus."""
    import tensorflow as tf
    from fl_tff.communication.secure import Packing
    step = quantization_step(24, 0.3)
    assert int(tf.round(tf.constant(0.6, tf.float32) / tf.constant(step, tf.float32))) == 2 ** 24
    packed = Packing(24, 0.3, tff.TensorType(np.float32, [3])).encode(
        tf.constant([5.0, 0.3, -9.0]))
    assert list(packed.numpy()[:3]) == [2 ** 24 - 1, 2 ** 24 - 1, 0]
