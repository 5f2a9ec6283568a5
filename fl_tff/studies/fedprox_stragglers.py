"""The `fedprox_stragglers` study: Synthetic(1,1), 90% stragglers, E=20: FedAvg (drop) vs FedProx."""

from __future__ import annotations

from typing import Any

from fl_tff.studies.base import PaperSetting, Rows, Study, tail_mean


def _fedprox_table(histories: dict[str, Rows]) -> list[dict[str, Any]]:
    out = []
    for label, rows in histories.items():
        evaluated = [r for r in rows if 'global_train_loss' in r]
        out.append({
            'run': label,
            'final global train loss': f"{evaluated[-1]['global_train_loss']:.4f}",
            'mean global train loss, last 20% of rounds': f"{tail_mean(evaluated, 'global_train_loss'):.4f}",
            'final test accuracy': f"{evaluated[-1]['test_accuracy']:.4f}",
            'clients aggregated per round (mean)': f"{sum(r['aggregated'] for r in rows) / len(rows):.2f}",
        })
    return out


NAME = 'fedprox_stragglers'
STUDY = Study(
    title='Synthetic(1,1), 90% stragglers, E=20: FedAvg (drop) vs FedProx',
    claim=('FedProx with mu=1 ends with lower training loss than FedAvg that drops '
           'stragglers; mu=0 with partial work lies in between (Li et al. 2020, Fig. 1).'),
    base=dict(dataset='synthetic', synthetic_alpha=1.0, synthetic_beta=1.0, num_clients=30,
              clients_per_round=10, model='logreg', client_epochs=20, client_batch_size=10,
              client_learning_rate=0.01, rounds=200, eval_every=2, straggler_fraction=0.9,
              seed=0),
    variants=(
        ('FedAvg, stragglers dropped', dict(algorithm='fedavg', straggler_policy='drop')),
        ('FedProx mu=0, partial work', dict(algorithm='fedprox', mu=0.0, straggler_policy='partial')),
        ('FedProx mu=1, partial work', dict(algorithm='fedprox', mu=1.0, straggler_policy='partial')),
    ),
    plot_metrics=('global_train_loss', 'test_accuracy'),
    table=_fedprox_table,
    log_scale=('global_train_loss',),
    designed_for=('Synthetic(1,1), MNIST, FEMNIST, Shakespeare and Sent140 (Li et al. 2020); '
                  'here Synthetic(1,1), the paper\'s own generator'),
    paper_settings={'emnist62': PaperSetting(
        source=('Li et al. 2020, Section 5.1 and Appendix C: FEMNIST with multinomial '
                'logistic regression, 200 devices, 10 per round, E=20, B=10, learning rate '
                '0.003, 90% stragglers. The paper\'s FEMNIST is LEAF\'s subsample of 10 '
                'lower-case letters; here 200 writers of TFF\'s EMNIST-62.'),
        base=dict(dataset='emnist62', model='logreg', num_clients=200,
                  client_learning_rate=0.003, synthetic_alpha=None, synthetic_beta=None))},
)
