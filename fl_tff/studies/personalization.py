"""The `personalization` study: personalization."""

from __future__ import annotations

from typing import Any

import numpy as np

from fl_tff.workflow import plotting
from fl_tff.studies.base import PaperSetting, Rows, Study, mean_std


_STATS = ('mean', 'p10', 'p50', 'p90', 'worst10pct')


def _personalized_kind(last: dict[str, Any]) -> str:
    """Which personalized accuracy a run reports: its personal state's, else fine-tuning's."""
    return 'personal' if 'personal_acc_mean' in last else 'finetuned'


def _last_evaluations(seeds: list[Rows]) -> list[dict[str, Any]]:
    """Each seed's last row with per-client accuracies."""
    return [[r for r in rows if 'client_acc_mean' in r][-1] for rows in seeds]




def _plot_personalization(histories: dict[str, list[Rows]], path: str, title: str) -> None:
    """The last evaluation's per-client accuracy distributions, global and personalized, each
    statistic averaged over the seeds."""
    distributions = {}
    for label, seeds in histories.items():
        lasts = _last_evaluations(seeds)
        kind = _personalized_kind(lasts[0])
        distributions[label] = {
            name: {s: float(np.mean([last[f'{prefix}_{s}'] for last in lasts])) for s in _STATS}
            for name, prefix in (('global model', 'client_acc'),
                                 ('personalized', f'{kind}_acc'))}
    plotting.plot_distributions(distributions, path, title=title)


def _personalization_table(histories: dict[str, list[Rows]]) -> list[dict[str, Any]]:
    """Per-client test accuracy at the last evaluation, mean ± std over the seeds: the global
    model's, and each client's personalized model's (personal state, or fine-tuning for
    FedAvg)."""
    out = []
    for label, seeds in histories.items():
        lasts = _last_evaluations(seeds)
        kind = _personalized_kind(lasts[0])
        row: dict[str, Any] = {'run': label, 'seeds': len(lasts)}
        row['personalized by'] = ('its personal part (FedRecon: reconstructed)' if kind == 'personal'
                                  else 'fine-tuning the global model')
        for stat in ('mean', 'worst10pct'):
            row[f'global {stat}'] = mean_std([last[f'client_acc_{stat}'] for last in lasts])
        for stat in ('mean', 'p10', 'worst10pct'):
            row[f'personalized {stat}'] = mean_std([last[f'{kind}_acc_{stat}'] for last in lasts])
        out.append(row)
    return out


# The personalization study's two settings (label -> overrides) and its methods.
_PERSONALIZATION_SETTINGS = {
    '2 classes': {},
    '5 classes, half held out': dict(classes_per_client=5, test_fraction=0.5),
}


_PERSONALIZATION_METHODS = (
    ('FedAvg (+ fine-tuning, 1 epoch)', dict(algorithm='fedavg', finetune_epochs=1)),
    ('FedPer (1 personal layer)', dict(algorithm='fedper', personal_layers=1)),
    ('FedRep (1 personal layer, 1 head epoch)', dict(algorithm='fedrep', personal_layers=1,
                                                     head_epochs=1)),
    ('Ditto lambda=0.1', dict(algorithm='ditto', ditto_lambda=0.1)),
    ('Ditto lambda=1', dict(algorithm='ditto', ditto_lambda=1.0)),
    ('FedRecon (1 local layer)', dict(algorithm='fedrecon', personal_layers=1,
                                      client_weighting='examples_processed')),
    ('local training only (Ditto lambda=0)', dict(algorithm='ditto', ditto_lambda=0.0)),
)


_GLOBAL_FEDAVG = 'FedAvg (global model)'


def _personalization_markdown(histories: dict[str, list[Rows]]) -> str:
    """What the runs can and cannot show, per setting: each model's mean per-client accuracy
    (mean ± std over seeds, best first), and which differences exceed the seeds' spread (the
    two means further apart than the sum of their stds)."""
    lines = ['What the data can and cannot show (mean per-client accuracy, mean ± std over the '
             'seeds; "separated" when two means differ by more than the sum of their stds):']
    for setting in _PERSONALIZATION_SETTINGS:
        scores = {}
        for label, seeds in histories.items():
            if not label.startswith(f'{setting}: '):
                continue
            lasts = _last_evaluations(seeds)
            kind = _personalized_kind(lasts[0])
            method = label[len(setting) + 2:]
            scores[method] = [last[f'{kind}_acc_mean'] for last in lasts]
            if label.endswith(_PERSONALIZATION_METHODS[0][0]):  # FedAvg's own global model too.
                scores[_GLOBAL_FEDAVG] = [last['client_acc_mean'] for last in lasts]
        if not scores:
            continue
        ranked = sorted(scores, key=lambda m: -np.mean(scores[m]))
        best = ranked[0]
        tied = [m for m in ranked[1:] if abs(np.mean(scores[best]) - np.mean(scores[m]))
                <= np.std(scores[best]) + np.std(scores[m])]
        lines += ['', f'- **{setting}**: ' + '; '.join(
            f'{m} {mean_std(scores[m])}' for m in ranked) + '.',
            f'  Best: {best}; ' + (f'not separated from it: {", ".join(tied)}.' if tied else
                                   'separated from every other model.')]
    return '\n'.join(lines)


NAME = 'personalization'
STUDY = Study(
    title=('Digits, 50 clients (shards): personalized per-client accuracy with 2 classes per '
           'client, and with 5 classes and half the examples held out, 3 seeds'),
    claim=('On pathological label splits personalized models beat the global model by a wide '
           'margin and local training alone (Li et al. 2021, Table 1; Collins et al. 2021; '
           'Arivazhagan et al. 2019; Singhal et al. 2021). Two settings test it: 2 classes per '
           'client (about 29 training examples each), where a client\'s task is nearly binary, '
           'and 5 classes per client with half of each client\'s examples held out for its test '
           '(about 18 training examples each), where a client alone has too little data. The '
           'global model of FedPer, FedRep and FedRecon is the shared layers with the initial '
           'personal layers, so only their personalized columns mean anything.'),
    base=dict(dataset='digits', model='2nn', partition='shards', classes_per_client=2,
              num_clients=50, clients_per_round=10, client_epochs=2, client_batch_size=10,
              client_learning_rate=0.05, rounds=100, eval_every=10, seed=0),
    variants=tuple((f'{setting}: {label}', {**overrides, **method})
                   for setting, overrides in _PERSONALIZATION_SETTINGS.items()
                   for label, method in _PERSONALIZATION_METHODS),
    plot_metrics=(),
    table=_personalization_table,
    plot=_plot_personalization,
    extra_markdown=_personalization_markdown,
    seeds=3,
    designed_for=('CIFAR-10/100 and FEMNIST (Collins et al. 2021; Li et al. 2021); here digits'),
    paper_settings={'cifar100': PaperSetting(
        source=('Collins et al. 2021 (FedRep), Section 5 and Table 1: CIFAR-100 over 100 '
                'clients, 10% per round, a CNN. The study\'s two label splits (2 and 5 '
                'classes per client, the second with half held out) are kept; FedRep\'s '
                'CIFAR-100 setting gives each client 20 classes.'),
        base=dict(dataset='cifar100', model='cnn', num_clients=100, clients_per_round=10,
                  rounds=200, eval_every=20))},
)
