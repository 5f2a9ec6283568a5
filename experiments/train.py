"""Train a federated model: `python -m experiments.train --algorithm=fedavg --rounds=30 ...`.

Every flag is a field of `fl_tff.config.ExperimentConfig`; `--helpfull` documents them.
Bad values exit with status 2 and one message naming the flag, before anything is traced;
a diverged run exits 3, Ctrl-C exits 130 (see `experiments.cli`).
"""

import dataclasses

from absl import app
from absl import flags

from experiments import cli
from fl_tff import experiment
from fl_tff.aggregation import AGGREGATORS
from fl_tff.algorithms import ALGORITHMS, SERVER_OPTIMIZERS
from fl_tff.config import PARTITIONS, WEIGHTINGS, ConfigError, ExperimentConfig
from fl_tff.data import DATASETS
from fl_tff.models import MODELS
from fl_tff.simulation.heterogeneity import STRAGGLER_POLICIES

_HELP = {
    'algorithm': f'Federated algorithm, one of: {", ".join(sorted(ALGORITHMS))}.',
    'dataset': f'Dataset, one of: {", ".join(sorted(DATASETS))} (all offline; synthetic = '
               'Synthetic(alpha, beta) of the FedProx paper; emnist/emnist62/cifar100/shakespeare/'
               'stackoverflow_nwp read --data_dir; --num_clients of their clients are sampled).',
    'model': f'Model, one of: {", ".join(sorted(MODELS))} (2nn = MLP of McMahan et al. 2017; '
             'char_lstm for shakespeare; word_lstm for stackoverflow_nwp).',
    'hidden_units': 'Width of the hidden layers of 2nn / char_lstm / word_lstm; 0 = the paper\'s '
                    '(200 / 256 / 670).',
    'partition': f'How examples are split into clients, one of: {", ".join(PARTITIONS)} '
                 '(auto = natural for naturally federated data, else dirichlet).',
    'alpha': 'Dirichlet concentration for --partition=dirichlet (> 0; small = more label skew).',
    'classes_per_client': 'Classes held by each client for --partition=shards.',
    'lognormal_sigma': 'Log-normal sigma of client sizes for --partition=quantity (>= 0).',
    'data_dir': 'Directory holding TFF dataset files (emnist_all.sqlite, cifar100.sqlite, '
                'shakespeare.sqlite, stackoverflow.sqlite + stackoverflow.word_count); nothing '
                'is downloaded.',
    'synthetic_alpha': 'Synthetic(alpha, beta): how much local models differ (>= 0).',
    'synthetic_beta': 'Synthetic(alpha, beta): how much local inputs differ (>= 0).',
    'num_clients': 'Number of clients in the population (devices, for synthetic data).',
    'heldout_clients': 'Extra clients never trained on; each evaluation reports per-client '
                       'accuracy on them (heldout_acc_mean/p10/p50/p90/worst10pct).',
    'clients_per_round': 'Clients aggregated each round (K): exactly K without replacement, or '
                         'each client with rate K/N under --client_sampling=poisson.',
    'test_fraction': "Fraction of each client's examples held out as its test data.",
    'rounds': 'Number of federated rounds.',
    'client_epochs': 'Local epochs (E) over its data per client per round (FedSGD: always 1 pass).',
    'client_batch_size': 'Local minibatch size.',
    'client_learning_rate': 'Client SGD learning rate.',
    'client_weighting': f'Weight of each client update, one of: {", ".join(WEIGHTINGS)}.',
    'mu': 'FedProx proximal strength (>= 0; --algorithm=fedprox only).',
    'server_optimizer': f'Server optimizer on the averaged update, one of: {", ".join(SERVER_OPTIMIZERS)} '
                        '(sgdm = FedAvgM; adam/yogi/adagrad = Reddi et al. 2021).',
    'server_learning_rate': 'Server learning rate (sgd at 1.0 = plain averaging; FedSGD step size).',
    'server_momentum': 'Momentum of --server_optimizer=sgdm, in [0, 1).',
    'server_beta1': 'First-moment decay of adam/yogi, in [0, 1).',
    'server_beta2': 'Second-moment decay of adam/yogi, in [0, 1).',
    'server_epsilon': 'Adaptivity tau (epsilon) of adam/yogi/adagrad (> 0).',
    'aggregator': f'Aggregation of client updates, one of: {", ".join(AGGREGATORS)}.',
    'clip_norm': 'L2 norm each update is clipped to, for --aggregator=clip.',
    'zeroing_norm': 'Updates with a larger L2 norm are zeroed, for --aggregator=zero.',
    'trim_fraction': 'Fraction trimmed at each end, for --aggregator=trimmed_mean, in [0, 0.5).',
    'dp': 'Differential privacy: none; fixed / adaptive = user-level DP-FedAvg (clip each client '
          'update to --clip, Gaussian noise z*C at the server; adaptive moves C toward '
          '--target_unclipped_quantile); distributed = user-level distributed DP (clients clip to '
          '--clip, round to --secure_bits integers and add discrete Gaussian noise shares; needs '
          '--secure_agg, the server never sees an un-noised sum); dpsgd = example-level DP-SGD on '
          'clients (per-example clip --clip, noise z*C per step).',
    'noise_multiplier': 'DP noise multiplier z (>= 0): noise std is z * --clip.',
    'clip': 'DP clip norm C (> 0): of each client update (fixed; the initial value for adaptive) or '
            'of each example gradient (dpsgd).',
    'target_unclipped_quantile': 'Adaptive clipping: fraction of client updates to leave unclipped.',
    'clip_learning_rate': 'Adaptive clipping: learning rate of the geometric clip-norm update.',
    'client_sampling': 'How each round\'s clients are drawn: uniform (exactly K, without replacement) '
                       'or poisson (each client independently with rate K/N); the privacy ledger '
                       'accounts for the one used.',
    'delta': 'DP delta of the reported epsilon, in (0, 1).',
    'target_epsilon': 'Privacy budget: stop before the round that would exceed this epsilon (0 = none).',
    'secure_agg': 'Secure aggregation: updates (and weights) reach the server only through TFF '
                  'secure sums, after clipping to +-secure_range and quantizing to secure_bits.',
    'secure_bits': 'Bits per value for --secure_agg, in [1, 24] ([1, 22], the modulus, with '
                   '--dp=distributed).',
    'secure_range': 'Each update value is clipped to [-R, R] before quantization (also with example '
                    'weighting: clients scale their weight to <= 1 first; with --dp=fixed the clip '
                    'norm is used); metrics report the fraction clipped (secure_clipped_fraction).',
    'compression': 'Uplink compression of client updates: none, quantize (unbiased stochastic, '
                   '--compression_bits), rotate_quantize (random Hadamard rotation, then quantize), '
                   'topk or randk (keep a --compression_k fraction of each tensor).',
    'compression_bits': 'Bits per value for quantize / rotate_quantize, in [1, 16].',
    'compression_k': 'Fraction of each tensor kept by topk / randk, in (0, 1].',
    'error_feedback': 'With topk / randk: each client adds what compression dropped last time to '
                      'its next update (a residual kept on the client across rounds).',
    'straggler_fraction': 'Fraction of selected clients that are stragglers (random epochs in [1, E)).',
    'straggler_policy': f'What happens to stragglers, one of: {", ".join(STRAGGLER_POLICIES)}.',
    'dropout_rate': 'Probability that a selected client returns nothing, in [0, 1).',
    'over_selection': 'Select ceil(K (1 + r)) clients and aggregate the first K to finish (r >= 0).',
    'simulation': 'How rounds run: tff (TFF\'s runtime; every feature), fast (local SGD and the '
                  'mean run in this process on a thread per core, same results as tff, several '
                  'times faster; fedavg/fedprox with the plain mean only) or fast_xla (fast with '
                  'the local loop XLA-compiled: faster still, float rounding differs).',
    'workers': 'Run rounds on TFF worker services at host:port,host:port (started with '
               '`python -m experiments.launch_workers`), splitting each round\'s clients across '
               'them; empty: one local worker owned by this run.',
    'seed': 'Seed for data, partitioning, sampling, devices, shuffling and initialization.',
    'eval_every': 'Evaluate on test data every this many rounds (and after the last round).',
    'checkpoint_every': 'Save the server state every this many rounds (0: only round 0 and the last); '
                        'rerunning the same command resumes from the newest checkpoint that loads '
                        '(a larger --rounds extends a finished run).',
    'divergence_factor': 'Stop (exit 3, last good checkpoint kept) when the train loss exceeds this '
                         'multiple of the initial model\'s loss; 0 = only on NaN/inf (see '
                         'fl_tff.divergence).',
    'output_dir': 'Directory that receives one subdirectory per run.',
    'experiment_name': 'Name of the run directory (default: built from the settings).',
    'wait_for_lock': 'When another run holds the run directory, wait for it to finish instead of '
                     'exiting with an error naming its PID.',
}

_DEFINE = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
           str: flags.DEFINE_string}


def define_flags(config_cls=ExperimentConfig, help_texts=None) -> None:
    """Defines one absl flag per config field, with the field's default and help text."""
    help_texts = help_texts or _HELP
    for field in dataclasses.fields(config_cls):
        _DEFINE[type(field.default)](field.name, field.default, help_texts[field.name])


def config_from_flags(config_cls=ExperimentConfig):
    """The config whose fields are the parsed flag values."""
    return config_cls(**{f.name: getattr(flags.FLAGS, f.name) for f in dataclasses.fields(config_cls)})


define_flags()


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')

    def train() -> int:
        experiment.run_experiment(config_from_flags().validate())
        return 0

    return cli.run_main(train)


if __name__ == '__main__':
    app.run(main)
