"""User-level DP aggregation: noise of std z·C / K, the clip bound, seeded noise, adaptive clipping."""

import numpy as np
import pytest
import tensorflow_federated as tff

from fl_tff.privacy.aggregators import build_dp_aggregator


def _process(mode, n, **kwargs):
    return build_dp_aggregator(mode, **kwargs).create(tff.TensorType(np.float32, [n]))


def test_server_noise_has_std_z_c_over_expected_clients(tff_runtime):
    z, clip, k = 1.5, 2.0, 4
    process = _process('fixed', 40_000, noise_multiplier=z, clients_per_round=k, clip=clip, seed=1)
    out = process.next(process.initialize(), [np.zeros(40_000, np.float32)] * k)
    assert np.std(out.result) == pytest.approx(z * clip / k, rel=0.02)
    assert abs(np.mean(out.result)) < 3 * z * clip / k / np.sqrt(40_000) * 2


def test_noise_is_fresh_each_round_and_repeats_for_the_same_seed(tff_runtime):
    process = _process('fixed', 1000, noise_multiplier=1.0, clients_per_round=2, clip=1.0, seed=7)
    zeros = [np.zeros(1000, np.float32)] * 2
    first = process.next(process.initialize(), zeros)
    second = process.next(first.state, zeros)
    assert abs(np.corrcoef(first.result, second.result)[0, 1]) < 0.1
    again = process.next(process.initialize(), zeros)
    assert np.array_equal(first.result, again.result)


def test_each_update_is_clipped_to_c(tff_runtime):
    process = _process('fixed', 3, noise_multiplier=0.0, clients_per_round=1, clip=0.5, seed=0)
    big = process.next(process.initialize(), [np.array([30.0, 40.0, 0.0], np.float32)]).result
    assert np.linalg.norm(big) == pytest.approx(0.5, abs=1e-6)
    assert np.allclose(big, [0.3, 0.4, 0.0], atol=1e-6)  # Direction kept.
    small = process.next(process.initialize(), [np.array([0.1, 0.2, 0.0], np.float32)]).result
    assert np.allclose(small, [0.1, 0.2, 0.0], atol=1e-7)


@pytest.mark.parametrize('initial_clip', [0.1, 100.0])
def test_adaptive_clipping_moves_toward_the_target_quantile(tff_runtime, initial_clip):
    norms = np.arange(1.0, 11.0)  # Client update norms 1..10: the median is 5.5.
    process = _process('adaptive', 2, noise_multiplier=0.0, clients_per_round=10, clip=initial_clip,
                       target_unclipped_quantile=0.5, clip_learning_rate=0.5)
    state, clips = process.initialize(), []
    for _ in range(60):
        out = process.next(state, [np.array([n, 0.0], np.float32) for n in norms])
        state = out.state
        clips.append(float(out.measurements['dp_query_metrics']['clip']))
    assert 4.0 <= np.mean(clips[-10:]) <= 7.0
    assert abs(np.log(clips[-1] / 5.5)) < abs(np.log(initial_clip / 5.5)) / 3


def test_adaptive_clipping_with_too_few_clients_for_the_noise_is_refused():
    with pytest.raises(ValueError, match='adaptive clipping with noise multiplier 1.0 needs at least '
                                         '11 clients per round, got 10'):
        build_dp_aggregator('adaptive', noise_multiplier=1.0, clients_per_round=10, clip=1.0)
    with pytest.raises(ValueError, match='clip must be > 0'):
        build_dp_aggregator('fixed', noise_multiplier=1.0, clients_per_round=10, clip=0.0)
