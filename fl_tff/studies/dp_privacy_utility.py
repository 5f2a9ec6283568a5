"""The `dp_privacy_utility` study: Digits, 300 clients: user-level DP-FedAvg (Poisson q=0.1) and DP-FTRL."""

from __future__ import annotations

from typing import Any

from fl_tff.studies.base import DP, PaperSetting, Rows, Study


def _privacy_table(histories: dict[str, Rows]) -> list[dict[str, Any]]:
    out = []
    for label, rows in histories.items():
        last = [r for r in rows if 'test_accuracy' in r][-1]
        out.append({
            'run': label,
            'epsilon (RDP)': f"{last['epsilon']:.3g}" if 'epsilon' in last else 'inf (no DP)',
            'epsilon (PLD)': f"{last['epsilon_pld']:.3g}" if 'epsilon_pld' in last else '',
            'final test accuracy': f"{last['test_accuracy']:.4f}",
            'final global train loss': f"{last['global_train_loss']:.4f}",
        })
    return out


_FTRL = dict(dp='tree', clip=0.5, delta=1e-3, client_sampling='epochs')


NAME = 'dp_privacy_utility'
STUDY = Study(
    title='Digits, 300 clients: user-level DP-FedAvg (Poisson q=0.1) and DP-FTRL',
    claim=('More noise buys a smaller epsilon at a cost in accuracy (McMahan et al. 2018): '
           'the privacy-utility trade-off of user-level DP-FedAvg, delta = 1e-3 < 1/N. '
           'DP-FTRL (Kairouz et al. 2021) needs no sampling assumption; without '
           'amplification by sampling it needs more noise for the same epsilon, which tree '
           'aggregation offsets in part.'),
    base=dict(dataset='digits', model='logreg', num_clients=300, clients_per_round=30,
              partition='dirichlet', alpha=1.0, client_weighting='uniform',
              client_sampling='poisson', rounds=100, eval_every=5, client_epochs=2,
              client_learning_rate=0.1, seed=0),
    variants=(
        ('no DP', dict()),
        ('z=0.5', dict(**DP, noise_multiplier=0.5)),
        ('z=1', dict(**DP, noise_multiplier=1.0)),
        ('z=2', dict(**DP, noise_multiplier=2.0)),
        ('z=4', dict(**DP, noise_multiplier=4.0)),
        # DP-FTRL at the epsilon of z=1 and z=2 above (noise multipliers found with the
        # tree ledger): clients in epochs of the population, one tree per epoch, no sampling.
        ('DP-FTRL, eps of z=1 (z=4.33)', dict(**_FTRL, noise_multiplier=4.332)),
        ('DP-FTRL, eps of z=2 (z=11.1)', dict(**_FTRL, noise_multiplier=11.124)),
        ('DP-FTRLM m=0.9 lr=0.1, eps of z=1', dict(
            **_FTRL, noise_multiplier=4.332, server_optimizer='ftrlm', server_momentum=0.9,
            server_learning_rate=0.1)),
    ),
    plot_metrics=('test_accuracy',),
    table=_privacy_table,
    x_axes=(('round', 'round'), ('epsilon', 'epsilon spent (RDP)')),
    designed_for=('Reddit posts (McMahan et al. 2018), EMNIST and Stack Overflow (Kairouz et al. '
                  '2021); here digits'),
    paper_settings={'emnist62': PaperSetting(
        source=('Kairouz et al. 2021, Section 5: EMNIST-62 with its 3,400 writers as the '
                'population and 100 clients per round; delta = 1e-4 < 1/N. The noise '
                'multipliers, clip norm and learning rates are this study\'s, so the epsilons '
                'differ from the paper\'s; each run\'s ledger reports its own.'),
        base=dict(dataset='emnist62', num_clients=3400, clients_per_round=100,
                  partition='natural', alpha=None, rounds=300, eval_every=10),
        replace=dict(delta=1e-4))},
)
