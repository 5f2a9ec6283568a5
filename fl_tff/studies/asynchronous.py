"""The `async` study: Digits, 50 clients, log-normal speeds, 20% intermittent: sync vs async."""

from __future__ import annotations

from typing import Any

from fl_tff.studies.base import PaperSetting, Rows, Study, last, to_target


ASYNC_TARGET = 0.90


def _async_table(histories: dict[str, Rows]) -> list[dict[str, Any]]:
    """Simulated time and client updates to the target accuracy, and what the clock saw."""
    out = []
    for label, rows in histories.items():
        hit, updates = to_target(rows, ASYNC_TARGET)
        stale = [r['staleness_mean'] for r in rows if 'staleness_mean' in r]
        out.append({
            'run': label,
            f'simulated seconds to {ASYNC_TARGET:.0%}':
                f"{hit['sim_time']:.0f}" if hit else f"not within {rows[-1]['sim_time']:.0f}",
            f'client updates to {ASYNC_TARGET:.0%}': updates if hit else 'not reached',
            'final test accuracy': f"{last(rows, 'test_accuracy'):.4f}",
            'simulated seconds (total)': f"{rows[-1]['sim_time']:.0f}",
            'server updates': int(rows[-1]['round']),
            'mean staleness': f'{sum(stale) / len(stale):.2f}' if stale else '0',
            'clients lost or dropped': int(sum(r.get('lost', 0) + r.get('dropped', 0)
                                               + r.get('offline', 0) for r in rows)),
        })
    return out


NAME = 'async'
STUDY = Study(
    title='Digits, 50 clients, log-normal speeds, 20% intermittent: sync vs async',
    claim=('With heterogeneous devices a synchronous round waits for its slowest client; '
           'FedBuff keeps C clients busy and applies every K arrivals, reaching a target '
           'accuracy 2.5-3.8x faster in wall-clock time than synchronous FedAvgM and '
           'FedAsync (Nguyen et al. 2022, Table 2).'),
    base=dict(dataset='digits', model='2nn', partition='dirichlet', alpha=0.5,
              num_clients=50, clients_per_round=10, client_epochs=2, client_batch_size=10,
              client_learning_rate=0.05, rounds=60, eval_every=2, seed=0,
              device_speed_sigma=1.0, intermittent_fraction=0.2, availability_period=60.0,
              availability_on_fraction=0.5, client_weighting='uniform'),
    variants=(
        ('FedAvg K=10 (synchronous)', dict(algorithm='fedavg')),
        ('FedAvg K=10, 30% over-selection', dict(algorithm='fedavg', over_selection=0.3)),
        ('FedAsync C=20, alpha=0.6', dict(algorithm='fedasync', concurrency=20,
                                          async_mixing=0.6, rounds=600, eval_every=20)),
        ('FedBuff K=10, C=20', dict(algorithm='fedbuff', concurrency=20, buffer_size=10)),
        ('FedBuff K=10, C=50', dict(algorithm='fedbuff', concurrency=50, buffer_size=10)),
    ),
    plot_metrics=('test_accuracy',),
    table=_async_table,
    x_axes=(('sim_time', 'simulated seconds'), ('round', 'round (server update)')),
    hlines={'test_accuracy': ASYNC_TARGET},
    designed_for='CelebA, Sent140 and Stack Overflow (Nguyen et al. 2022); here digits',
    paper_settings={'stackoverflow_nwp': PaperSetting(
        source=('Nguyen et al. 2022 (FedBuff), Section 5: Stack Overflow next-word '
                'prediction with an LSTM, users as clients, buffer K=10. The device speeds, '
                'concurrency and population are this study\'s (the paper simulates '
                'thousands of concurrent clients).'),
        base=dict(dataset='stackoverflow_nwp', model='word_lstm', partition='natural',
                  alpha=None, num_clients=500, client_learning_rate=0.3,
                  client_batch_size=16))},
)
