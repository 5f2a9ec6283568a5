"""DP through the experiment: z = 0 with a huge clip is FedAvg, Poisson sampling matches its
rate, the ledger stops a run at its budget and a rerun keeps the stop."""

import dataclasses
import json
import os

import numpy as np
import pytest

from fl_tff import experiment, simulation
from fl_tff.config import ConfigError, ExperimentConfig
from fl_tff.privacy.accounting import SampledGaussian
from tests.helpers import max_abs_diff

QUIET = dict(log=lambda _: None)


@pytest.mark.parametrize('algorithm', [dict(algorithm='fedavg'), dict(algorithm='fedprox', mu=0.1)])
def test_dp_aggregation_without_noise_and_with_a_huge_clip_is_the_plain_algorithm(
        tff_runtime, tmp_path, algorithm):
    base = ExperimentConfig(client_weighting='uniform', rounds=3, eval_every=3, hidden_units=32,
                            output_dir=str(tmp_path), **algorithm)
    plain = experiment.run_experiment(base, **QUIET)
    dp = experiment.run_experiment(dataclasses.replace(base, dp='fixed', noise_multiplier=0.0,
                                                       clip=1e6), **QUIET)
    assert max_abs_diff(plain.final_weights.trainable, dp.final_weights.trainable) <= 1e-5
    assert all(np.isinf(r['epsilon']) for r in dp.history)  # No noise, no privacy: honestly inf.


def test_poisson_sampling_draws_each_client_with_rate_k_over_n(skewed_digits):
    select = simulation.build_training_selection_fn(skewed_digits.train, clients_per_round=2,
                                                    epochs=1, batch_size=8, seed=3, sampling='poisson')
    sizes = [len(select.plan(r).selected) for r in range(1, 2001)]
    assert np.mean(sizes) == pytest.approx(2.0, abs=0.1)  # 6 clients, rate 1/3.
    assert np.var(sizes) == pytest.approx(6 * (1 / 3) * (2 / 3), abs=0.15)  # Binomial, not fixed.
    assert [select.plan(r).selected for r in (1, 2)] == [select.plan(r).selected for r in (1, 2)]


def test_target_epsilon_stops_before_the_round_that_would_exceed_it(tff_runtime, tmp_path):
    mechanism = SampledGaussian.from_cohort(1.0, 'uniform', population=20, cohort=10)
    target = (mechanism.epsilon(2, 1e-5) + mechanism.epsilon(3, 1e-5)) / 2
    config = ExperimentConfig(dp='fixed', client_weighting='uniform', noise_multiplier=1.0, clip=0.5,
                              rounds=30, eval_every=10, target_epsilon=target, hidden_units=32,
                              output_dir=str(tmp_path))
    result = experiment.run_experiment(config, **QUIET)
    rounds = [r['round'] for r in result.history]
    assert rounds == [1, 2] and 'test_accuracy' in result.history[-1]  # The last round is evaluated.
    assert result.history[-1]['epsilon'] == pytest.approx(mechanism.epsilon(2, 1e-5))
    assert result.summary['stopped'].startswith('stopped before round 3: it would raise user-level epsilon')
    privacy = result.summary['privacy']
    assert privacy['epsilon'] == result.history[-1]['epsilon'] and privacy['level'] == 'user'
    assert 'fixed-size sampling of 10 of 20 clients' in privacy['statement']
    with open(os.path.join(result.run_dir, 'summary.json')) as f:
        assert json.load(f)['privacy']['rounds'] == 2
    again = experiment.run_experiment(config, **QUIET)  # Rerun: resumes, and stays stopped.
    assert again.run_dir == result.run_dir and [r['round'] for r in again.history] == [1, 2]
    assert again.summary['privacy']['epsilon'] == pytest.approx(privacy['epsilon'])


def test_a_budget_too_small_for_one_round_is_a_config_error(tmp_path):
    config = ExperimentConfig(dp='fixed', client_weighting='uniform', noise_multiplier=1.0,
                              target_epsilon=0.01, output_dir=str(tmp_path))
    with pytest.raises(ConfigError, match='--target_epsilon: stopped before round 1: .* not even one round fits'):
        experiment.run_experiment(config, **QUIET)
    assert not any(tmp_path.iterdir())  # Nothing was written.
