"""The `adaptive_optimizers` study: Digits, Dirichlet(0.1) (and 1), 50 clients: adaptive server optimizers."""

from __future__ import annotations

from typing import Any

from fl_tff.workflow import plotting
from fl_tff.studies.base import (DIGITS_SKEWED, PaperSetting, Rows, Study, Tuning, last, mean_std, rounds_to, tail_accuracy)


ADAPTIVE_TARGET = 0.80


def _adaptive_table(histories: dict[str, list[Rows]]) -> list[dict[str, Any]]:
    out = []
    for label, seeds in histories.items():
        reached = [r for r in (rounds_to(rows, ADAPTIVE_TARGET) for rows in seeds) if r is not None]
        out.append({
            'run': label,
            'final test accuracy': mean_std([last(rows, 'test_accuracy') for rows in seeds]),
            'test accuracy, last 20% of evaluations': mean_std([tail_accuracy(rows) for rows in seeds]),
            f'rounds to {ADAPTIVE_TARGET:.0%}': (mean_std(reached, 1) if reached else 'not reached')
            + f' ({len(reached)}/{len(seeds)} seeds)',
        })
    return out


def _plot_adaptive(histories: dict[str, list[Rows]], path: str, title: str) -> None:
    plotting.plot_seed_bands(histories, ('test_accuracy', 'global_train_loss'), path, title=title,
                             log_scale=('global_train_loss',),
                             hlines={'test_accuracy': ADAPTIVE_TARGET})


# Learning rates outermost, so that a value appended to a grid keeps the run names (and so the
# finished runs, which a rerun resumes) of the points before it.
_ADAPTIVE_GRID = {'server_learning_rate': [0.01, 0.03, 0.1], 'server_epsilon': [1e-3, 1e-2]}


_FEDAVG_GRID = {'server_learning_rate': [1.0, 2.0, 4.0]}


NAME = 'adaptive_optimizers'
STUDY = Study(
    title='Digits, Dirichlet(0.1) (and 1), 50 clients: adaptive server optimizers',
    claim=('Adaptive server optimizers (FedAdagrad, FedAdam, FedYogi) match or beat FedAvg and '
           'FedAvgM, and help most under heavy label skew (Reddi et al. 2021, Table 2 and '
           'Section 5), each with its server learning rate and tau tuned.'),
    base=dict(DIGITS_SKEWED, rounds=30, eval_every=3),
    variants=(
        ('FedAvg', dict(server_optimizer='sgd')),
        ('FedAvgM (momentum 0.9)', dict(server_optimizer='sgdm', server_momentum=0.9)),
        ('FedAdagrad', dict(server_optimizer='adagrad')),
        ('FedAdam', dict(server_optimizer='adam')),
        ('FedYogi', dict(server_optimizer='yogi')),
        # The same two methods under a milder skew: does the adaptive gain shrink?
        ('FedAvg, Dirichlet(1)', dict(server_optimizer='sgd', alpha=1.0)),
        ('FedAdam, Dirichlet(1)', dict(server_optimizer='adam', alpha=1.0)),
    ),
    plot_metrics=(),
    table=_adaptive_table,
    plot=_plot_adaptive,
    tuning=Tuning(grids=(
        _FEDAVG_GRID,
        {'server_learning_rate': [0.1, 0.3, 1.0]},
        {'server_learning_rate': [0.03, 0.1, 0.3], 'server_epsilon': [1e-3, 1e-2]},
        _ADAPTIVE_GRID,
        _ADAPTIVE_GRID,
        _FEDAVG_GRID,
        _ADAPTIVE_GRID,
    ), seeds=3),
    designed_for=('EMNIST, CIFAR-10/100, Shakespeare and Stack Overflow (Reddi et al. 2021); '
                  'here digits'),
    paper_settings={'emnist62': PaperSetting(
        source=('Reddi et al. 2021, Section 5 and Appendix D: EMNIST-62 character '
                'recognition with their CNN, the 3,400 writers as clients, 10 per round, '
                'E=1, B=20, 1,500 rounds, each method\'s learning rates tuned. Here '
                'fl_tff\'s `cnn`, and the grids above; the milder-skew pair does not apply '
                '(the partition is the writers\').'),
        base=dict(dataset='emnist62', model='cnn', partition='natural', alpha=None,
                  num_clients=3400, clients_per_round=10, client_epochs=1,
                  client_batch_size=20, rounds=1500, eval_every=50),
        keep=('FedAvg', 'FedAvgM (momentum 0.9)', 'FedAdagrad', 'FedAdam', 'FedYogi'))},
)
