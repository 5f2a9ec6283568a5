"""Every bad setting is rejected by validation with the flag name and the valid choices (an
unknown choice of any kind: tests/test_contracts.py, its list taken from the registry)."""

import dataclasses

import pytest

from fl_tff.algorithms import ALGORITHMS
from fl_tff.config import ConfigError, ExperimentConfig

BAD = [
    ({'partition': 'natural'}, r'--dataset: --partition=natural needs a dataset with its own clients \(--dataset=digits does not\): choose --dataset=synthetic or'),
    ({'algorithm': 'fedprox', 'mu': -1.0}, '--mu: must be >= 0'),
    ({'mu': 1.0}, '--mu: is a setting of --algorithm=fedprox; it has no effect with --algorithm=fedavg'),
    ({'clip_norm': 2.0}, '--clip_norm: is a setting of --aggregator=clip; it has no effect with --aggregator=mean'),
    ({'server_epsilon': 0.1}, '--server_epsilon: is a setting of --server_optimizer=adam, --server_optimizer=yogi, --server_optimizer=adagrad'),
    ({'server_optimizer': 'sgdm', 'server_momentum': 1.0}, r'--server_momentum: must be in \[0, 1\)'),
    ({'server_optimizer': 'adam', 'server_beta2': 1.5}, r'--server_beta2: must be in \[0, 1\)'),
    ({'server_optimizer': 'adagrad', 'server_epsilon': 0.0}, '--server_epsilon: must be > 0'),
    ({'algorithm': 'qffl', 'client_weighting': 'uniform'}, '--client_weighting: --client_weighting=uniform does not combine with --algorithm=qffl: q-FedAvg weighs each update by its h_k'),
    ({'algorithm': 'qffl', 'qffl_q': -1.0}, '--qffl_q: must be >= 0'),
    ({'algorithm': 'fedrecon'}, r"--client_weighting: --algorithm=fedrecon weighs clients as TFF's build_fed_recon does \(--client_weighting=examples does not\)"),
    ({'algorithm': 'mimelite', 'dp': 'dpsgd', 'client_weighting': 'uniform'}, '--dp: --dp=dpsgd does not combine with --algorithm=mimelite: each client also sends its full-batch gradient'),
    ({'algorithm': 'mimelite', 'client_weighting': 'uniform', 'mime_momentum': 1.0}, r'--mime_momentum: must be in \[0, 1\)'),
    ({'algorithm': 'fednova', 'secure_agg': True}, '--secure_agg: --secure_agg does not combine with --algorithm=fednova: each client sends w_i tau_i'),
    ({'aggregator': 'krum', 'byzantine_f': 4}, r'--byzantine_f: --aggregator=krum with --byzantine_f=4 needs n > 2f \+ 2 clients per round, i.e. --clients_per_round >= 11 \(it is 10\)'),
    ({'aggregator': 'bulyan', 'byzantine_f': 2}, r'--byzantine_f: --aggregator=bulyan with --byzantine_f=2 needs n >= 4f \+ 3 clients per round, i.e. --clients_per_round >= 11'),
    ({'aggregator': 'multikrum', 'multikrum_m': 11}, r'--multikrum_m: Multi-Krum averages at most n - f = 9 updates .*got 11; choose a value in \[1, 9\]'),
    ({'aggregator': 'multikrum', 'byzantine_f': 2, 'multikrum_m': 9}, r'--multikrum_m: Multi-Krum averages at most n - f = 8 updates'),
    ({'aggregator': 'rfa', 'secure_agg': True}, '--aggregator: --aggregator=rfa does not combine with --secure_agg'),
    ({'aggregator': 'trimmed_mean', 'trim_fraction': 0.5}, r'--trim_fraction: must be in \[0, 0.5\)'),
    ({'aggregator': 'clip', 'clip_norm': 0.0}, '--clip_norm: must be > 0'),
    ({'straggler_fraction': 1.2}, r'--straggler_fraction: straggler_fraction must be in \[0, 1\]'),
    ({'straggler_fraction': -0.1}, r'--straggler_fraction: straggler_fraction must be in \[0, 1\]'),
    ({'straggler_fraction': 0.5, 'client_epochs': 1}, '--straggler_fraction: stragglers run fewer than E local epochs'),
    ({'attack': 'scale', 'attack_scale': 0.0}, '--attack_scale: must be > 0, got 0.0'),
    ({'attack_fraction': 0.5}, '--attack_fraction: is a setting of'),
    ({'dropout_rate': 1.0}, r'--dropout_rate: dropout_rate must be in \[0, 1\)'),
    ({'over_selection': 1.5}, r'--over_selection: selecting ceil\(10 x 2.5\) clients exceeds --num_clients=20'),
    ({'dataset': 'synthetic', 'synthetic_alpha': -1.0}, '--synthetic_alpha: must be >= 0'),
    ({'clients_per_round': 30, 'num_clients': 20}, r'--clients_per_round: 30 exceeds --num_clients=20; choose a value in \[1, 20\]'),
    ({'rounds': 0}, '--rounds: must be > 0, got 0'),
    ({'rounds': -3}, '--rounds: must be > 0, got -3'),
    ({'client_learning_rate': 0.0}, '--client_learning_rate: must be > 0'),
    ({'server_learning_rate': -1.0}, '--server_learning_rate: must be > 0'),
    ({'client_batch_size': 0}, '--client_batch_size: must be > 0'),
    ({'client_epochs': 0}, '--client_epochs: must be > 0'),
    ({'num_clients': 0}, '--num_clients: must be > 0'),
    ({'heldout_clients': -1}, '--heldout_clients: must be >= 0'),
    ({'dp': 'tree', 'client_weighting': 'uniform', 'client_sampling': 'epochs', 'tree_restart': -1},
     '--tree_restart: must be >= 0, got -1'),
    ({'dp': 'fixed', 'client_weighting': 'uniform', 'noise_multiplier': -0.5}, '--noise_multiplier: must be >= 0'),
    ({'dp': 'fixed', 'client_weighting': 'uniform', 'clip': 0.0}, '--clip: must be > 0'),
    ({'dp': 'dpsgd', 'clip': -1.0}, '--clip: must be > 0'),
    ({'dp': 'dpsgd', 'delta': 0.0}, r'--delta: must be in \(0, 1\)'),
    ({'dp': 'dpsgd', 'delta': 1.0}, r'--delta: must be in \(0, 1\)'),
    ({'dp': 'fixed'}, r'--client_weighting: --dp=fixed clips and sums .* \(--client_weighting=examples does not\): choose --client_weighting=uniform'),
    ({'dp': 'fixed', 'client_weighting': 'uniform', 'aggregator': 'median'}, '--aggregator: --aggregator=median does not combine with --dp=fixed: its noise is calibrated to how much one client can move a sum of clipped updates'),
    ({'dp': 'adaptive', 'client_weighting': 'uniform', 'noise_multiplier': 1.0, 'clients_per_round': 10},
     '--clients_per_round: adaptive clipping at --noise_multiplier=1 needs at least 11 client updates per aggregation'),
    ({'dp': 'adaptive', 'client_weighting': 'uniform', 'noise_multiplier': 0.5, 'target_unclipped_quantile': 1.0},
     r'--target_unclipped_quantile: must be in \(0, 1\)'),
    ({'dp': 'dpsgd', 'algorithm': 'fedsgd'}, r"--algorithm: --dp=dpsgd runs in the clients' local SGD \(--algorithm=fedsgd does not\): choose --algorithm=fedavg or --algorithm=fedprox"),
    ({'target_epsilon': 3.0}, '--target_epsilon: is a setting of --dp=fixed, --dp=adaptive, --dp=distributed, --dp=dpsgd, --dp=tree; it has no effect with --dp=none'),
    ({'dp': 'dpsgd', 'noise_multiplier': 0.0, 'target_epsilon': 3.0}, '--target_epsilon: cannot be met without noise'),
    ({'dp': 'dpsgd', 'target_epsilon': -1.0}, '--target_epsilon: must be >= 0'),
    ({'client_sampling': 'poisson', 'over_selection': 0.2}, '--over_selection: needs a fixed cohort'),
    ({'secure_agg': True, 'secure_bits': 24, 'clients_per_round': 200, 'num_clients': 300},
     '--secure_bits: 24 bits x up to 200 clients per round overflows the 32-bit secure sum; use at most 23 bits'),
    ({'hidden_units': -5}, '--hidden_units: must be >= 0'),
    ({'partition': 'dirichlet', 'alpha': 0.0}, '--alpha: must be > 0, got 0.0'),
    ({'partition': 'dirichlet', 'alpha': -0.5}, '--alpha: must be > 0'),
    ({'eval_every': 0}, '--eval_every: must be > 0'),
    ({'test_fraction': 1.0}, r'--test_fraction: must be in \(0, 1\)'),
    ({'algorithm': 'fedbuff', 'buffer_size': 30}, r'--buffer_size: 30 updates cannot fill the buffer with --concurrency=20 clients training; choose a value in \[1, concurrency\]'),
    ({'algorithm': 'fedbuff', 'concurrency': 21}, r'--concurrency: 21 clients cannot train at once among --num_clients=20; choose a value in \[1, 20\]'),
    ({'algorithm': 'fedbuff', 'staleness_weighting': 'hinge'}, '--staleness_weighting: unknown value .hinge.; '
     'valid choices: ' + ', '.join(next(p for p in ALGORITHMS['fedbuff'].params
                                        if p.name == 'staleness_weighting').choices)),
    ({'algorithm': 'fedasync', 'async_mixing': 0.0}, r'--async_mixing: must be in \(0, 1\]'),
    ({'algorithm': 'fedbuff', 'over_selection': 0.2}, '--over_selection: --algorithm=fedbuff is asynchronous: there are no rounds to over-select for'),
    ({'algorithm': 'fedasync', 'round_deadline': 5.0}, '--round_deadline: --algorithm=fedasync is asynchronous: there are no rounds to end'),
    ({'algorithm': 'fedbuff', 'client_sampling': 'poisson'}, '--client_sampling: --algorithm=fedbuff draws clients as slots free up'),
    ({'algorithm': 'fedasync', 'dp': 'adaptive', 'client_weighting': 'uniform'}, r'--dp: adaptive clipping at --noise_multiplier=1 needs at least 11 client updates per aggregation .* got 1 \(--algorithm=fedasync applies one update at a time\)'),
    ({'algorithm': 'fedbuff', 'dp': 'adaptive', 'client_weighting': 'uniform'}, r'--buffer_size: adaptive clipping at --noise_multiplier=1 needs at least 11 client updates per aggregation .* got 10 \(--buffer_size\)'),
    ({'buffer_size': 5}, '--buffer_size: is a setting of --algorithm=fedbuff; it has no effect with --algorithm=fedavg'),
    ({'device_speed_sigma': -1.0}, '--device_speed_sigma: must be >= 0, got -1.0'),
    ({'intermittent_fraction': 1.5}, r'--intermittent_fraction: must be in \[0, 1\], got 1.5'),
    ({'availability_on_fraction': 0.0}, r'--availability_on_fraction: must be in \(0, 1\], got 0.0'),
    ({'round_deadline': -1.0}, '--round_deadline: must be >= 0'),
    ({'device_profiles': '/nonexistent/devices.csv'}, "--device_profiles: cannot read '/nonexistent/devices.csv'"),
]


@pytest.mark.parametrize('overrides,message', BAD)
def test_bad_values_raise_config_error_naming_the_flag(overrides, message):
    config = dataclasses.replace(ExperimentConfig(), **overrides)
    with pytest.raises(ConfigError, match=message):
        config.validate()


def test_output_dir_that_is_a_file_is_rejected(tmp_path):
    a_file = tmp_path / 'results.txt'
    a_file.write_text('earlier results')
    with pytest.raises(ConfigError, match='--output_dir: .* exists and is not a directory'):
        ExperimentConfig(output_dir=str(a_file)).validate()
    assert a_file.read_text() == 'earlier results'


def test_defaults_are_valid():
    config = ExperimentConfig().validate()
    assert config.clients_per_round < config.num_clients and config.num_clients >= 20
