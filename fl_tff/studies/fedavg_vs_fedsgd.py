"""The `fedavg_vs_fedsgd` study: Digits, Dirichlet(0.5) over 20 clients, 10 per round: FedAvg vs FedSGD."""

from __future__ import annotations

from typing import Any

from fl_tff.studies.base import PaperSetting, Rows, Study, TARGET_ACCURACIES, last, rounds_to


def _fedsgd_table(histories: dict[str, Rows]) -> list[dict[str, Any]]:
    reached = {label: {t: rounds_to(rows, t) for t in TARGET_ACCURACIES}
               for label, rows in histories.items()}
    best_sgd = {t: min((r[t] for label, r in reached.items()
                        if label.startswith('FedSGD') and r[t]), default=None)
                for t in TARGET_ACCURACIES}
    out = []
    for label, rows in histories.items():
        row: dict[str, Any] = {'run': label}
        for t in TARGET_ACCURACIES:
            n = reached[label][t]
            row[f'rounds to {t:.0%}'] = n if n else f'not within {len(rows)}'
        for t in TARGET_ACCURACIES:
            n = reached[label][t]
            row[f'fewer rounds than best FedSGD ({t:.0%})'] = (
                f'{best_sgd[t] / n:.1f}x' if label.startswith('FedAvg') and n and best_sgd[t] else '')
        row['final test accuracy'] = f"{last(rows, 'test_accuracy'):.4f}"
        out.append(row)
    return out


NAME = 'fedavg_vs_fedsgd'
STUDY = Study(
    title='Digits, Dirichlet(0.5) over 20 clients, 10 per round: FedAvg vs FedSGD',
    claim=('FedAvg reaches a target test accuracy in several times fewer rounds than FedSGD, '
           'even with FedSGD at its better learning rate (McMahan et al. 2017, Table 2).'),
    base=dict(dataset='digits', model='2nn', num_clients=20, clients_per_round=10,
              rounds=200, eval_every=2, seed=0),
    variants=(
        ('FedAvg (E=2, B=10)', dict(algorithm='fedavg', client_epochs=2, client_batch_size=10,
                                    client_learning_rate=0.05)),
        ('FedAvg (E=5, B=10)', dict(algorithm='fedavg', client_epochs=5, client_batch_size=10,
                                    client_learning_rate=0.05)),
        ('FedSGD (lr 0.3)', dict(algorithm='fedsgd', client_batch_size=100, server_learning_rate=0.3)),
        ('FedSGD (lr 1.0)', dict(algorithm='fedsgd', client_batch_size=100, server_learning_rate=1.0)),
    ),
    plot_metrics=('test_accuracy', 'global_train_loss'),
    table=_fedsgd_table,
    log_scale=('global_train_loss',),
    hlines={'test_accuracy': TARGET_ACCURACIES[-1]},
    designed_for='MNIST (McMahan et al. 2017); here scikit-learn\'s 8x8 digits',
    paper_settings={'emnist': PaperSetting(
        source=('McMahan et al. 2017, Section 3 and Table 2: the 2NN on MNIST over 100 '
                'clients, C=0.1 (10 per round), FedAvg with B=10, FedSGD with each client\'s '
                'whole data as its batch. Here 100 writers of TFF\'s EMNIST digits (a '
                'naturally non-IID MNIST); the learning rates are this study\'s (the paper '
                'takes the best of a grid per method).'),
        base=dict(dataset='emnist', num_clients=100, clients_per_round=10),
        variants={'FedSGD (lr 0.3)': dict(client_batch_size=1000),
                  'FedSGD (lr 1.0)': dict(client_batch_size=1000)})},
)
