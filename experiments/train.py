"""Train a federated model: `python -m experiments.train --algorithm=fedavg --rounds=30 ...`.

Every flag is a field of `fl_tff.config.ExperimentConfig`; `--helpfull` documents them.
Bad values exit with status 2 and one message naming the flag, before anything is traced.
"""

import dataclasses
import sys

from absl import app
from absl import flags
from absl import logging

from fl_tff import experiment
from fl_tff.config import WEIGHTINGS, ConfigError, ExperimentConfig
from fl_tff.algorithms import ALGORITHMS
from fl_tff.data import DATASETS, PARTITIONERS
from fl_tff.models import MODELS

_HELP = {
    'algorithm': f'Federated algorithm, one of: {", ".join(sorted(ALGORITHMS))}.',
    'dataset': f'Dataset, one of: {", ".join(sorted(DATASETS))} (all offline).',
    'model': f'Model, one of: {", ".join(sorted(MODELS))} (2nn = MLP of McMahan et al. 2017).',
    'hidden_units': 'Width of each hidden layer of the 2nn model.',
    'partition': f'How examples are split into clients, one of: {", ".join(sorted(PARTITIONERS))}.',
    'alpha': 'Dirichlet concentration for --partition=dirichlet (> 0; small = more label skew).',
    'classes_per_client': 'Classes held by each client for --partition=shards.',
    'lognormal_sigma': 'Log-normal sigma of client sizes for --partition=quantity (>= 0).',
    'num_clients': 'Number of clients in the population.',
    'clients_per_round': 'Clients sampled (uniformly, without replacement) each round.',
    'test_fraction': "Fraction of each client's examples held out as its test data.",
    'rounds': 'Number of federated rounds.',
    'client_epochs': 'Local epochs over its data per client per round.',
    'client_batch_size': 'Local minibatch size.',
    'client_learning_rate': 'Client SGD learning rate.',
    'server_learning_rate': 'Server SGD learning rate applied to the averaged update (1 = plain averaging).',
    'client_weighting': f'Weight of each client update, one of: {", ".join(WEIGHTINGS)}.',
    'seed': 'Seed for partitioning, sampling, shuffling and initialization (same seed, same run).',
    'eval_every': 'Evaluate on test data every this many rounds (and after the last round).',
    'output_dir': 'Directory that receives one subdirectory per run.',
    'experiment_name': 'Name of the run directory (default: built from the settings).',
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
    logging.set_verbosity(logging.WARNING)  # TFF logs every model build at INFO.
    try:
        experiment.run_experiment(config_from_flags().validate())
    except ConfigError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    app.run(main)
