"""The `scaffold_heterogeneity` study: Digits, one class per client (shards), E=5: FedAvg, FedProx, SCAFFOLD."""

from __future__ import annotations

from typing import Any

from fl_tff.studies.base import PaperSetting, Rows, Study, last, rounds_to


SCAFFOLD_TARGETS = (0.80, 0.90)


def _scaffold_table(histories: dict[str, Rows]) -> list[dict[str, Any]]:
    """Rounds to each target accuracy and the final global training loss; the FedProx run with
    the lowest final loss is marked as the tuned one."""
    final_loss = {label: last(rows, 'global_train_loss') for label, rows in histories.items()}
    fedprox = [label for label in histories if label.startswith('FedProx')]
    tuned = min(fedprox, key=final_loss.get) if fedprox else None
    out = []
    for label, rows in histories.items():
        row: dict[str, Any] = {'run': label}
        for t in SCAFFOLD_TARGETS:
            n = rounds_to(rows, t)
            row[f'rounds to {t:.0%} test accuracy'] = n if n else f'not within {rows[-1]["round"]}'
        row['final global train loss'] = f'{final_loss[label]:.4f}'
        row['final test accuracy'] = f"{last(rows, 'test_accuracy'):.4f}"
        row['FedProx tuning'] = 'best mu (lowest final loss)' if label == tuned else ''
        out.append(row)
    return out


NAME = 'scaffold_heterogeneity'
STUDY = Study(
    title='Digits, one class per client (shards), E=5: FedAvg, FedProx, SCAFFOLD',
    claim=('Under extreme label skew, client drift slows FedAvg; FedProx\'s proximal term '
           'limits it; SCAFFOLD\'s control variates correct it and need fewer rounds '
           '(Karimireddy et al. 2020, Table 3 / Fig. 3).'),
    base=dict(dataset='digits', model='logreg', partition='shards', classes_per_client=1,
              num_clients=20, clients_per_round=10, client_epochs=5, client_batch_size=10,
              client_learning_rate=0.05, client_weighting='uniform', rounds=200,
              eval_every=2, seed=0),
    variants=(
        ('FedAvg', dict(algorithm='fedavg')),
        ('FedProx mu=0.01', dict(algorithm='fedprox', mu=0.01)),
        ('FedProx mu=0.1', dict(algorithm='fedprox', mu=0.1)),
        ('FedProx mu=1', dict(algorithm='fedprox', mu=1.0)),
        ('SCAFFOLD', dict(algorithm='scaffold')),
    ),
    plot_metrics=('test_accuracy', 'global_train_loss'),
    table=_scaffold_table,
    log_scale=('global_train_loss',),
    hlines={'test_accuracy': SCAFFOLD_TARGETS[-1]},
    designed_for='EMNIST (Karimireddy et al. 2020); here digits',
    paper_settings={'emnist62': PaperSetting(
        source=('Karimireddy et al. 2020, Section 7 and Table 3: EMNIST with logistic '
                'regression, examples sorted by label so that clients share no classes '
                '(similarity 0%), 20% of clients per round, E=5. Here 100 shards of one '
                'class each over TFF\'s EMNIST-62 (the paper uses EMNIST\'s 47 balanced '
                'classes).'),
        base=dict(dataset='emnist62', num_clients=100, clients_per_round=20))},
)
