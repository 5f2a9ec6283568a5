"""Distributed DP (`--dp=distributed --secure_agg`): TFF's distributed discrete Gaussian
aggregator composed into our FedAvg. Updates reach the server only through secure sums, the
noise has the configured std, rounding error stays within its bound, and the ledger charges
the effective noise multiplier."""

import dataclasses
import math

import numpy as np
import pytest
import tensorflow_federated as tff
from tensorflow_federated.python.core.impl.compiler import tree_analysis

from fl_tff import experiment, simulation
from fl_tff.config import ConfigError, ExperimentConfig
from fl_tff.privacy import accounting, distributed
from tests.helpers import client_rounds, float_tensor_shapes

BASE = ExperimentConfig(hidden_units=32, clients_per_round=4, client_epochs=1, seed=2,
                        dp='distributed', secure_agg=True, client_weighting='uniform',
                        noise_multiplier=1.0, clip=0.5, secure_bits=16)


def _process(config):
    fed = experiment.load_federated_data(config)
    model_fn, _ = experiment.build_model(config, fed)
    return experiment.build_process(config, model_fn), fed, model_fn


def _float_sizes(type_spec) -> list:
    """Element counts of the float tensors inside a TFF type (None when a dimension is unknown)."""
    return [None if shape is None or None in shape else int(np.prod(shape))
            for shape in float_tensor_shapes(type_spec)]


def test_no_update_reaches_the_server_outside_a_secure_sum(tff_runtime):
    process, _, _ = _process(BASE)
    tree = process.next.to_building_block()
    assert tree_analysis.find_secure_aggregation_in_tree(tree)
    for call in tree_analysis.find_unsecure_aggregation_in_tree(tree):
        sizes = _float_sizes(call.argument.type_signature)
        # Metrics and scalar norms may go through plain sums; no vector of update size may.
        assert all(s is not None and s < 64 for s in sizes), call.function.compact_representation()


def _one_round(config):
    process, fed, model_fn = _process(config)
    select = simulation.build_training_selection_fn(
        fed.train, clients_per_round=config.clients_per_round, epochs=1,
        batch_size=config.client_batch_size, seed=config.seed)
    state = process.initialize()
    after = process.get_model_weights(process.next(state, client_rounds(select, 1)).state).trainable
    return np.concatenate([np.ravel(t) for t in after]), model_fn


def test_without_noise_it_is_central_dp_within_the_rounding_bound(tff_runtime):
    """With z = 0 the only difference from the central clipped mean is stochastic rounding to
    a grid of step gamma = 1/scale in the rotated domain: each client's error has L2 norm
    <= gamma sqrt(d) (d the padded dimension), and so does their mean; the rotation keeps norms."""
    quiet = dataclasses.replace(BASE, noise_multiplier=0.0, secure_bits=12)
    central, model_fn = _one_round(dataclasses.replace(quiet, dp='fixed', secure_agg=False))
    ddp, _ = _one_round(quiet)
    dim = central.size
    scale, _ = distributed._scale_and_inflated_norm(0.0, quiet.clients_per_round, quiet.clip,
                                                    quiet.secure_bits, dim)
    bound = math.sqrt(2 ** math.ceil(math.log2(dim))) / scale
    error = np.linalg.norm(ddp - central)
    assert 0 < error <= bound
    assert bound < 0.05 * quiet.clip  # The bound is small enough to mean something.


def test_noise_on_the_mean_has_std_z_c_over_k(tff_runtime):
    z, clip, k, n = 1.5, 2.0, 4, 1 << 15
    factory = distributed.build_distributed_dp_mean(noise_multiplier=z, clients_per_round=k,
                                                    clip=clip, bits=20)
    process = factory.create(tff.TensorType(np.float32, [n]))
    out = process.next(process.initialize(), [np.zeros(n, np.float32)] * k)
    assert np.std(out.result) == pytest.approx(z * clip / k, rel=0.03)


def test_ledger_charges_the_effective_multiplier(tff_runtime, tmp_path):
    config = dataclasses.replace(BASE, rounds=2, eval_every=2, output_dir=str(tmp_path),
                                 num_clients=20, clients_per_round=10)
    result = experiment.run_experiment(config, log=lambda _: None)
    privacy = result.summary['privacy']
    dim = sum(int(np.prod(np.shape(t))) for t in result.final_weights.trainable)
    z_eff = distributed.accounting_noise_multiplier(1.0, 10, 0.5, 16, dim)
    assert 0.9 < z_eff < 1.0  # Rounding inflates the sensitivity a little.
    expected = accounting.SampledGaussian.from_cohort(z_eff, 'uniform', 20, 10).epsilon(2, config.delta)
    assert privacy['epsilon'] == pytest.approx(expected, rel=1e-9)
    assert privacy['noise_multiplier'] == pytest.approx(z_eff)
    assert 'no party is trusted with the noise' in privacy['statement']
    assert result.history[-1]['uplink_bytes_per_client'] == math.ceil(
        (2 ** math.ceil(math.log2(dim)) * 16 + 11) / 8)


def test_accounting_includes_the_discretization_term_when_noise_is_coarse():
    """With scaled local noise std well below 1 the sum is far from Gaussian: the paper's tau
    term dominates and the charged multiplier collapses (we never over-credit the noise)."""
    fine = distributed.accounting_noise_multiplier(1.0, 10, 0.5, 16, 1000)
    coarse = distributed.accounting_noise_multiplier(1.0, 1000, 0.5, 10, 1000)
    assert fine == pytest.approx(1.0, abs=0.06)
    assert coarse < 0.5 * fine


@pytest.mark.parametrize('overrides,message', [
    (dict(secure_agg=False), '--secure_agg: --dp=distributed adds the noise on clients'),
    (dict(secure_bits=23), r'--secure_bits: must be in \[1, 22\], got 23'),
    (dict(client_sampling='poisson'), '--client_sampling: --dp=distributed splits the noise into K shares and needs exactly K clients'),
    (dict(dropout_rate=0.1), '--dropout_rate: --dp=distributed needs every selected client'),
    (dict(secure_bits=2, clients_per_round=8), '--secure_bits: TFF.s distributed DP refuses'),
    (dict(client_weighting='examples'), '--client_weighting:'),
])
def test_bad_distributed_settings_name_the_flag(overrides, message, tmp_path):
    config = dataclasses.replace(BASE, output_dir=str(tmp_path), **overrides)
    with pytest.raises(ConfigError, match=message):
        experiment.preflight(config.validate())  # TFF's own refusal needs its factory built.
