"""The `private_async` study: private_async."""

from __future__ import annotations

from typing import Any

from fl_tff.studies.base import PaperSetting, Rows, Study, to_target


PRIVATE_ASYNC_TARGET = 0.70


def _private_async_table(histories: dict[str, Rows]) -> list[dict[str, Any]]:
    """Per run: the epsilon spent when it stopped, and the simulated time and client updates to
    the target accuracy."""
    out = []
    for label, rows in histories.items():
        hit, updates = to_target(rows, PRIVATE_ASYNC_TARGET)
        evaluated = [r for r in rows if 'test_accuracy' in r]
        out.append({
            'run': label,
            'epsilon spent (RDP)': f"{rows[-1]['epsilon']:.3g}" if 'epsilon' in rows[-1] else
                                   'inf (no DP)',
            'server updates': int(rows[-1]['round']),
            'client updates': sum(int(r['aggregated']) for r in rows),
            f'simulated seconds to {PRIVATE_ASYNC_TARGET:.0%}':
                f"{hit['sim_time']:.0f}" if hit else 'not reached',
            f'client updates to {PRIVATE_ASYNC_TARGET:.0%}': updates if hit else 'not reached',
            'final test accuracy': f"{evaluated[-1]['test_accuracy']:.4f}",
            'best test accuracy': f"{max(r['test_accuracy'] for r in evaluated):.4f}",
            'simulated seconds (total)': f"{rows[-1]['sim_time']:.0f}",
        })
    return out


# The private_async study's budget, and its buffered runs.
_EPSILON_5 = dict(dp='fixed', clip=0.5, delta=1e-3, target_epsilon=5.0)


_FEDBUFF_SECAGG = dict(algorithm='fedbuff', concurrency=60, buffer_size=30, secure_agg=True,
                       secagg=True)


NAME = 'private_async'
STUDY = Study(
    title=('Digits, 300 clients on heterogeneous devices, epsilon = 5: synchronous DP-FedAvg '
           'against DP-FedBuff with SecAgg'),
    claim=('Buffered asynchronous aggregation makes user-level DP and secure aggregation '
           'possible without waiting for stragglers (Nguyen et al. 2022; Huba et al. 2022, '
           '"Papaya"): each buffer of K arrivals is one SecAgg instance and one Gaussian '
           'mechanism. At the same privacy budget, is it faster in simulated time? The '
           'synchronous run\'s ledger assumes its uniform sampling of K of N clients '
           '(amplification by sampling); asynchronous arrival breaks that assumption, so '
           'FedBuff\'s ledger composes one Gaussian mechanism per participation of each '
           'client with no amplification, and needs more noise per update for the same '
           'epsilon. Every run stops before the update that would exceed epsilon = 5 '
           '(delta = 1e-3 < 1/N).'),
    base=dict(dataset='digits', model='logreg', num_clients=300, clients_per_round=30,
              partition='dirichlet', alpha=1.0, client_weighting='uniform', client_epochs=2,
              client_learning_rate=0.1, eval_every=5, seed=0, rounds=150,
              device_speed_sigma=1.0, intermittent_fraction=0.2, availability_period=60.0,
              availability_on_fraction=0.5),
    variants=(
        ('DP-FedAvg K=30 (synchronous, Poisson q=0.1), z=1', dict(
            **_EPSILON_5, client_sampling='poisson', noise_multiplier=1.0)),
        ('DP-FedBuff K=30, C=60, SecAgg, z=3', dict(
            **_EPSILON_5, **_FEDBUFF_SECAGG, noise_multiplier=3.0)),
        ('DP-FedBuff K=30, C=60, SecAgg, z=5', dict(
            **_EPSILON_5, **_FEDBUFF_SECAGG, noise_multiplier=5.0)),
        ('FedBuff K=30, C=60, SecAgg, no DP (reference)', dict(
            **_FEDBUFF_SECAGG, rounds=60)),
    ),
    plot_metrics=('test_accuracy',),
    table=_private_async_table,
    x_axes=(('sim_time', 'simulated seconds'), ('epsilon', 'epsilon spent (RDP)')),
    hlines={'test_accuracy': PRIVATE_ASYNC_TARGET},
    designed_for=('CelebA, Sent140 and Stack Overflow (Nguyen et al. 2022); here digits'),
    paper_settings={'stackoverflow_nwp': PaperSetting(
        source=('Nguyen et al. 2022 (FedBuff), Section 5: Stack Overflow next-word '
                'prediction with users as clients, buffer K=10, with user-level DP. The '
                'population, concurrency, noise and budget are this study\'s.'),
        base=dict(dataset='stackoverflow_nwp', model='word_lstm', partition='natural',
                  alpha=None, num_clients=1000, clients_per_round=10, client_batch_size=16,
                  client_learning_rate=0.3),
        replace=dict(buffer_size=10))},
)
