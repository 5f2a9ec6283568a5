"""The `qffl_fairness` study: Digits, Dirichlet(0.1), 50 clients: q-FFL against FedAvg."""

from __future__ import annotations

from typing import Any

from fl_tff.studies.base import DIGITS_SKEWED, PaperSetting, Rows, Study


def _qffl_table(histories: dict[str, Rows]) -> list[dict[str, Any]]:
    """The global model's per-client test accuracy: its mean and its low tail."""
    out = []
    for label, rows in histories.items():
        last = [r for r in rows if 'client_acc_mean' in r][-1]
        out.append({'run': label, 'final test accuracy': f"{last['test_accuracy']:.4f}",
                    **{f'per-client accuracy {s}': f"{last[f'client_acc_{s}']:.3f}"
                       for s in ('mean', 'p10', 'worst10pct', 'p90')}})
    return out


NAME = 'qffl_fairness'
STUDY = Study(
    title='Digits, Dirichlet(0.1), 50 clients: q-FFL against FedAvg',
    claim=('Raising q spreads accuracy more evenly across clients: the worst clients gain '
           'while the mean changes little (Li et al. 2020, Table 2: q-FFL cuts the variance '
           'of accuracy across devices by 45% on average).'),
    base=dict(DIGITS_SKEWED, rounds=100, eval_every=10),
    variants=(
        ('FedAvg (example-weighted)', dict(algorithm='fedavg')),
        ('q-FFL q=0 (uniform FedAvg)', dict(algorithm='qffl', qffl_q=0.0)),
        ('q-FFL q=1', dict(algorithm='qffl', qffl_q=1.0)),
        ('q-FFL q=5', dict(algorithm='qffl', qffl_q=5.0)),
    ),
    plot_metrics=('test_accuracy', 'client_acc_worst10pct'),
    table=_qffl_table,
    designed_for=('Synthetic, Vehicle, Sent140 and Shakespeare (Li et al. 2020, q-FFL); here '
                  'digits'),
    paper_settings={'shakespeare': PaperSetting(
        source=('Li et al. 2020 (q-FFL), Section 5: Shakespeare\'s speakers as devices, '
                'next-character prediction with an LSTM. The population, clients per round, '
                'local work and q values are this study\'s.'),
        base=dict(dataset='shakespeare', model='char_lstm', partition='natural', alpha=None,
                  num_clients=100, client_learning_rate=0.5, rounds=100))},
)
