"""The `byzantine` study: Digits, 50 clients (20% malicious), 15 per round: attacks x aggregators."""

from __future__ import annotations

import math
from typing import Any

from fl_tff.workflow import plotting
from fl_tff.studies.base import BYZANTINE_AGGREGATORS, BYZANTINE_ATTACKS, PaperSetting, Rows, Study


def _byzantine_label(attack: str, aggregator: str) -> str:
    return f'{attack} / {aggregator}'


def _byzantine_grids(histories: dict[str, Rows]) -> dict[str, dict[str, dict[str, float]]]:
    """{'clean test accuracy': {attack: {aggregator: value}}, 'backdoor success': ...} from
    the last evaluation of each run (NaN where a run is missing)."""
    grids: dict[str, dict[str, dict[str, float]]] = {'final clean test accuracy': {},
                                                     'backdoor success rate': {}}
    for attack in BYZANTINE_ATTACKS:
        for aggregator in BYZANTINE_AGGREGATORS:
            rows = histories.get(_byzantine_label(attack, aggregator))
            last = [r for r in rows if 'test_accuracy' in r][-1] if rows else {}
            grids['final clean test accuracy'].setdefault(attack, {})[aggregator] = last.get(
                'test_accuracy', float('nan'))
            if 'backdoor_success' in last:
                grids['backdoor success rate'].setdefault(attack, {})[aggregator] = last.get(
                    'backdoor_success', float('nan'))
    return grids


def _plot_byzantine(histories: dict[str, Rows], path: str, title: str) -> None:
    grids = _byzantine_grids(histories)
    plotting.plot_heatmaps({k: v for k, v in grids.items() if v}, path, title=title,
                           rows_label='attack (20% of clients)', columns_label='aggregator',
                           missing='diverged')


def _byzantine_table(histories: dict[str, Rows]) -> list[dict[str, Any]]:
    out = []
    for label, rows in histories.items():
        last = [r for r in rows if 'test_accuracy' in r][-1]
        row = {'run': label, 'final test accuracy': f"{last['test_accuracy']:.4f}",
               'malicious updates': sum(r.get('malicious', 0) for r in rows)}
        if 'backdoor_success' in last:
            row['backdoor success'] = f"{last['backdoor_success']:.3f}"
        out.append(row)
    return out


def _byzantine_markdown(histories: dict[str, Rows]) -> str:
    lines = []
    for name, grid in _byzantine_grids(histories).items():
        if not grid:
            continue
        lines += [f'**{name}** (attack down, aggregator across):', '',
                  '| attack | ' + ' | '.join(BYZANTINE_AGGREGATORS) + ' |',
                  '|---|' + '---|' * len(BYZANTINE_AGGREGATORS)]
        lines += [f'| {attack} | ' + ' | '.join('diverged' if math.isnan(v) else f'{v:.3f}'
                                                for v in row.values()) + ' |'
                  for attack, row in grid.items()]
        lines.append('')
    return '\n'.join(lines)


NAME = 'byzantine'
STUDY = Study(
    title='Digits, 50 clients (20% malicious), 15 per round: attacks x aggregators',
    claim=('The mean fails under sign flipping and scaling, while Krum, the coordinate median, '
           'the trimmed mean and RFA hold (Blanchard et al. 2017; Yin et al. 2018; Pillutla '
           'et al. 2022); norm clipping blunts a boosted backdoor (Sun et al. 2019).'),
    base=dict(dataset='digits', model='2nn', partition='dirichlet', alpha=1.0,
              num_clients=50, clients_per_round=15, client_epochs=1, client_batch_size=10,
              client_learning_rate=0.05, client_weighting='uniform', rounds=40,
              eval_every=5, divergence_factor=0.0,
              seed=0),
    variants=tuple((_byzantine_label(attack, aggregator), {**a, **g})
                   for attack, a in BYZANTINE_ATTACKS.items()
                   for aggregator, g in BYZANTINE_AGGREGATORS.items()),
    plot_metrics=(),
    table=_byzantine_table,
    plot=_plot_byzantine,
    extra_markdown=_byzantine_markdown,
    designed_for='MNIST (Blanchard et al. 2017), EMNIST (Pillutla et al. 2022); here digits',
    paper_settings={'emnist': PaperSetting(
        source=('Pillutla et al. 2022 (RFA), Section 5: EMNIST with writers as clients. '
                'Here 100 writers of TFF\'s EMNIST digits, 20% of them malicious, with '
                'this study\'s attacks, model and local work.'),
        base=dict(dataset='emnist', partition='natural', alpha=None, num_clients=100,
                  rounds=100, eval_every=10))},
)
