"""Reproductions of published results, each a small set of labelled experiment configs.

`run_study(name, ...)` runs the configs with `run_experiment` and writes `<name>.png` and
`<name>.md` (the numbers, the command, the settings) to the output directory.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
from typing import Any, Callable, Optional

import numpy as np

from fl_tff import files, plotting, sweep
from fl_tff.config import ExperimentConfig
from fl_tff.divergence import DivergenceError
from fl_tff.experiment import preflight, run_experiment

Rows = list[dict[str, Any]]


def _tail_accuracy(rows: Rows) -> float:
    """Mean test accuracy over the last 20% of evaluations (Reddi et al. 2021 select on the
    average over the last 100 rounds rather than one noisy final value)."""
    return _tail_mean([r for r in rows if 'test_accuracy' in r], 'test_accuracy')


@dataclasses.dataclass(frozen=True)
class Tuning:
    """Each variant's settings chosen from its own grid by the sweep: every grid point runs with
    `seeds` seeds, and the point with the highest mean `select` over its seeds wins (a point
    where any seed diverged is not chosen). The study's table and plot then receive, per
    variant, the histories of the chosen point's seeds."""

    grids: tuple[dict[str, list[Any]], ...]  # One per variant, in the variants' order.
    seeds: int = 3
    select: Callable[[Rows], float] = _tail_accuracy
    select_help: str = 'mean test accuracy over the last 20% of evaluations'


@dataclasses.dataclass(frozen=True)
class PaperSetting:
    """A study rerun on one of TFF's real datasets with the settings of the paper it reproduces.

    The run settings are the study's base, then the variant's own, then `base` (a None value
    removes a setting, e.g. a Dirichlet `alpha` once the partition is the dataset's own), then
    `replace` (only settings the run already has, e.g. the DP runs' `delta`), then `variants`
    for that label. Only the labels in `keep` run (all when None).
    """

    source: str  # The paper, where it states its setting, and what differs here.
    base: dict[str, Any]
    replace: dict[str, Any] = dataclasses.field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    keep: Optional[tuple[str, ...]] = None

    def settings(self, label: str, settings: dict[str, Any]) -> dict[str, Any]:
        """`settings` (the study's base and the variant's) with this paper's setting applied."""
        merged = {**settings, **self.base,
                  **{k: v for k, v in self.replace.items() if k in settings},
                  **self.variants.get(label, {})}
        return {k: v for k, v in merged.items() if v is not None}


@dataclasses.dataclass(frozen=True)
class Study:
    """A reproduction: shared settings, labelled variants, what to plot and tabulate.

    Without `tuning`, each variant is one run and `table` / `plot` take `{label: rows}`; with
    it, `{label: [rows of each seed of the chosen grid point]}`.
    """

    title: str
    claim: str
    base: dict[str, Any]
    variants: tuple[tuple[str, dict[str, Any]], ...]
    plot_metrics: tuple[str, ...]
    table: Callable[[dict[str, Rows]], list[dict[str, Any]]]
    log_scale: tuple[str, ...] = ()
    hlines: Optional[dict[str, float]] = None
    x_axes: tuple[tuple[str, str], ...] = (('round', 'round'),)
    # `(histories, png path, title)`: draws the PNG instead of the per-round curves.
    plot: Optional[Callable[[dict[str, Rows], str, str], None]] = None
    # `histories -> markdown`: more results after the per-run table (e.g. a grid).
    extra_markdown: Optional[Callable[[dict[str, Rows]], str]] = None
    tuning: Optional[Tuning] = None
    # Without tuning: each variant runs this many seeds (the base seed and the next ones), and
    # `table` / `plot` take `{label: [rows of each seed]}`, as with tuning.
    seeds: int = 1
    # The datasets of the paper(s) it reproduces, in words, and what it runs on here.
    designed_for: str = ''
    # TFF dataset name -> the paper's setting on it (`--dataset` of experiments.reproduce).
    paper_settings: dict[str, PaperSetting] = dataclasses.field(default_factory=dict)

    @property
    def runs(self) -> Optional[Tuning]:
        """How each variant is run when it is more than one run: its tuning, or its seeds as
        a grid of one point per variant; None for one run per variant."""
        if self.tuning is not None or self.seeds == 1:
            return self.tuning
        return Tuning(grids=({},) * len(self.variants), seeds=self.seeds)


def _last(rows: Rows, metric: str) -> float:
    return [r[metric] for r in rows if metric in r][-1]


def _fedprox_table(histories: dict[str, Rows]) -> list[dict[str, Any]]:
    out = []
    for label, rows in histories.items():
        evaluated = [r for r in rows if 'global_train_loss' in r]
        out.append({
            'run': label,
            'final global train loss': f"{evaluated[-1]['global_train_loss']:.4f}",
            'mean global train loss, last 20% of rounds': f"{_tail_mean(evaluated, 'global_train_loss'):.4f}",
            'final test accuracy': f"{evaluated[-1]['test_accuracy']:.4f}",
            'clients aggregated per round (mean)': f"{sum(r['aggregated'] for r in rows) / len(rows):.2f}",
        })
    return out


def _tail_mean(rows: Rows, metric: str, fraction: float = 0.2) -> float:
    tail = rows[-max(1, int(len(rows) * fraction)):]
    return sum(r[metric] for r in tail) / len(tail)


TARGET_ACCURACIES = (0.90, 0.95)


def _rounds_to(rows: Rows, target: float) -> Optional[int]:
    hits = [r['round'] for r in rows if r.get('test_accuracy', 0.0) >= target]
    return hits[0] if hits else None


def _fedsgd_table(histories: dict[str, Rows]) -> list[dict[str, Any]]:
    reached = {label: {t: _rounds_to(rows, t) for t in TARGET_ACCURACIES}
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
        row['final test accuracy'] = f"{_last(rows, 'test_accuracy'):.4f}"
        out.append(row)
    return out


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


def _compression_table(histories: dict[str, Rows]) -> list[dict[str, Any]]:
    baseline = list(histories.values())[0][-1]['uplink_bytes_total']
    out = []
    for label, rows in histories.items():
        target = next((r for r in rows if r.get('test_accuracy', 0.0) >= COMPRESSION_TARGET), None)
        out.append({
            'run': label,
            'uplink bytes per client': rows[-1]['uplink_bytes_per_client'],
            'uplink MB, all rounds': f"{rows[-1]['uplink_bytes_total'] / 1e6:.2f}",
            'x smaller': f"{baseline / rows[-1]['uplink_bytes_total']:.1f}",
            f'uplink MB to {COMPRESSION_TARGET:.0%} test accuracy':
                f"{target['uplink_bytes_total'] / 1e6:.2f} (round {target['round']})" if target
                else f'not within {len(rows)} rounds',
            'final test accuracy': f"{_last(rows, 'test_accuracy'):.4f}",
        })
    return out


SCAFFOLD_TARGETS = (0.80, 0.90)


def _scaffold_table(histories: dict[str, Rows]) -> list[dict[str, Any]]:
    """Rounds to each target accuracy and the final global training loss; the FedProx run with
    the lowest final loss is marked as the tuned one."""
    final_loss = {label: _last(rows, 'global_train_loss') for label, rows in histories.items()}
    fedprox = [label for label in histories if label.startswith('FedProx')]
    tuned = min(fedprox, key=final_loss.get) if fedprox else None
    out = []
    for label, rows in histories.items():
        row: dict[str, Any] = {'run': label}
        for t in SCAFFOLD_TARGETS:
            n = _rounds_to(rows, t)
            row[f'rounds to {t:.0%} test accuracy'] = n if n else f'not within {rows[-1]["round"]}'
        row['final global train loss'] = f'{final_loss[label]:.4f}'
        row['final test accuracy'] = f"{_last(rows, 'test_accuracy'):.4f}"
        row['FedProx tuning'] = 'best mu (lowest final loss)' if label == tuned else ''
        out.append(row)
    return out


ASYNC_TARGET = 0.90


def _to_target(rows: Rows, target: float) -> tuple[Optional[dict[str, Any]], int]:
    """The first row whose test accuracy reaches `target` (None if none does), and the client
    updates aggregated up to it (all of them if none does)."""
    hit = next((r for r in rows if r.get('test_accuracy', 0.0) >= target), None)
    updates = 0
    for r in rows:
        updates += int(r['aggregated'])
        if r is hit:
            break
    return hit, updates


def _async_table(histories: dict[str, Rows]) -> list[dict[str, Any]]:
    """Simulated time and client updates to the target accuracy, and what the clock saw."""
    out = []
    for label, rows in histories.items():
        hit, updates = _to_target(rows, ASYNC_TARGET)
        stale = [r['staleness_mean'] for r in rows if 'staleness_mean' in r]
        out.append({
            'run': label,
            f'simulated seconds to {ASYNC_TARGET:.0%}':
                f"{hit['sim_time']:.0f}" if hit else f"not within {rows[-1]['sim_time']:.0f}",
            f'client updates to {ASYNC_TARGET:.0%}': updates if hit else 'not reached',
            'final test accuracy': f"{_last(rows, 'test_accuracy'):.4f}",
            'simulated seconds (total)': f"{rows[-1]['sim_time']:.0f}",
            'server updates': int(rows[-1]['round']),
            'mean staleness': f'{sum(stale) / len(stale):.2f}' if stale else '0',
            'clients lost or dropped': int(sum(r.get('lost', 0) + r.get('dropped', 0)
                                               + r.get('offline', 0) for r in rows)),
        })
    return out


PRIVATE_ASYNC_TARGET = 0.70


def _private_async_table(histories: dict[str, Rows]) -> list[dict[str, Any]]:
    """Per run: the epsilon spent when it stopped, and the simulated time and client updates to
    the target accuracy."""
    out = []
    for label, rows in histories.items():
        hit, updates = _to_target(rows, PRIVATE_ASYNC_TARGET)
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


def _qffl_table(histories: dict[str, Rows]) -> list[dict[str, Any]]:
    """The global model's per-client test accuracy: its mean and its low tail."""
    out = []
    for label, rows in histories.items():
        last = [r for r in rows if 'client_acc_mean' in r][-1]
        out.append({'run': label, 'final test accuracy': f"{last['test_accuracy']:.4f}",
                    **{f'per-client accuracy {s}': f"{last[f'client_acc_{s}']:.3f}"
                       for s in ('mean', 'p10', 'worst10pct', 'p90')}})
    return out


_STATS = ('mean', 'p10', 'p50', 'p90', 'worst10pct')


def _personalized_kind(last: dict[str, Any]) -> str:
    """Which personalized accuracy a run reports: its personal state's, else fine-tuning's."""
    return 'personal' if 'personal_acc_mean' in last else 'finetuned'


def _last_evaluations(seeds: list[Rows]) -> list[dict[str, Any]]:
    """Each seed's last row with per-client accuracies."""
    return [[r for r in rows if 'client_acc_mean' in r][-1] for rows in seeds]


def _mean_std(values: list[float], digits: int = 3) -> str:
    return f'{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}' if values else ''


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
            row[f'global {stat}'] = _mean_std([last[f'client_acc_{stat}'] for last in lasts])
        for stat in ('mean', 'p10', 'worst10pct'):
            row[f'personalized {stat}'] = _mean_std([last[f'{kind}_acc_{stat}'] for last in lasts])
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
            f'{m} {_mean_std(scores[m])}' for m in ranked) + '.',
            f'  Best: {best}; ' + (f'not separated from it: {", ".join(tied)}.' if tied else
                                   'separated from every other model.')]
    return '\n'.join(lines)


# The Byzantine grid: each attack (with its strength) against each aggregator.
BYZANTINE_ATTACKS: dict[str, dict[str, Any]] = {
    'none': dict(attack='none'),
    'label flip': dict(attack='label_flip', attack_fraction=0.2),
    'sign flip x10': dict(attack='sign_flip', attack_fraction=0.2, attack_scale=10.0),
    'scale x10': dict(attack='scale', attack_fraction=0.2, attack_scale=10.0),
    'gaussian s=1': dict(attack='gaussian', attack_fraction=0.2, attack_scale=1.0),
    'backdoor, boost x3': dict(attack='backdoor', attack_fraction=0.2, attack_scale=3.0,
                               backdoor_target=0),
}
BYZANTINE_AGGREGATORS: dict[str, dict[str, Any]] = {
    'mean': dict(aggregator='mean'),
    # About the median norm of an honest update in the first round (0.19; p90 0.28).
    'clip 0.2': dict(aggregator='clip', clip_norm=0.2),
    'median': dict(aggregator='median'),
    'trimmed mean 20%': dict(aggregator='trimmed_mean', trim_fraction=0.2),
    'Krum f=3': dict(aggregator='krum', byzantine_f=3),
    'Multi-Krum f=3': dict(aggregator='multikrum', byzantine_f=3),
    'Bulyan f=3': dict(aggregator='bulyan', byzantine_f=3),
    'RFA': dict(aggregator='rfa'),
}


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


ADAPTIVE_TARGET = 0.80


def _adaptive_table(histories: dict[str, list[Rows]]) -> list[dict[str, Any]]:
    out = []
    for label, seeds in histories.items():
        reached = [r for r in (_rounds_to(rows, ADAPTIVE_TARGET) for rows in seeds) if r is not None]
        out.append({
            'run': label,
            'final test accuracy': _mean_std([_last(rows, 'test_accuracy') for rows in seeds]),
            'test accuracy, last 20% of evaluations': _mean_std([_tail_accuracy(rows) for rows in seeds]),
            f'rounds to {ADAPTIVE_TARGET:.0%}': (_mean_std(reached, 1) if reached else 'not reached')
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


COMPRESSION_TARGET = 0.9
_DP = dict(dp='fixed', clip=0.5, delta=1e-3)
_FTRL = dict(dp='tree', clip=0.5, delta=1e-3, client_sampling='epochs')

# The private_async study's budget, and its buffered runs.
_EPSILON_5 = dict(dp='fixed', clip=0.5, delta=1e-3, target_epsilon=5.0)
_FEDBUFF_SECAGG = dict(algorithm='fedbuff', concurrency=60, buffer_size=30, secure_agg=True,
                       secagg=True)

# Digits under a heavy label skew, shared by the q-FFL and adaptive-optimizer studies.
_DIGITS_SKEWED = dict(dataset='digits', model='2nn', partition='dirichlet', alpha=0.1,
                      num_clients=50, clients_per_round=10, client_epochs=1,
                      client_batch_size=10, client_learning_rate=0.05, seed=0)

STUDIES: dict[str, Study] = {
    'fedprox_stragglers': Study(
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
    ),
    'fedavg_vs_fedsgd': Study(
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
    ),
    'dp_privacy_utility': Study(
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
            ('z=0.5', dict(**_DP, noise_multiplier=0.5)),
            ('z=1', dict(**_DP, noise_multiplier=1.0)),
            ('z=2', dict(**_DP, noise_multiplier=2.0)),
            ('z=4', dict(**_DP, noise_multiplier=4.0)),
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
    ),
    'compression_uplink': Study(
        title='Digits, Dirichlet(0.5), 2NN: accuracy against uplink bytes',
        claim=('Quantizing client updates to a few bits cuts uplink bytes several-fold at little '
               'cost in accuracy (Suresh et al. 2017; Konecny et al. 2016); top-k trades more, '
               'and error feedback recovers aggressive top-k (Stich et al. 2018).'),
        base=dict(dataset='digits', model='2nn', num_clients=20, clients_per_round=10,
                  rounds=60, eval_every=2, seed=0),
        variants=(
            ('float32 (no compression)', dict()),
            ('8-bit', dict(compression='quantize', compression_bits=8)),
            ('4-bit', dict(compression='quantize', compression_bits=4)),
            ('2-bit', dict(compression='quantize', compression_bits=2)),
            ('rotated 2-bit', dict(compression='rotate_quantize', compression_bits=2)),
            ('top-10%', dict(compression='topk', compression_k=0.1)),
            ('top-1%', dict(compression='topk', compression_k=0.01)),
            ('top-1% + error feedback', dict(compression='topk', compression_k=0.01,
                                             error_feedback=True)),
        ),
        plot_metrics=('test_accuracy',),
        table=_compression_table,
        log_scale=('uplink_bytes_total',),
        x_axes=(('round', 'round'), ('uplink_bytes_total', 'uplink bytes (all clients, cumulative)')),
        hlines={'test_accuracy': COMPRESSION_TARGET},
        designed_for=('MNIST (Suresh et al. 2017), CIFAR-10 (Konecny et al. 2016); here digits'),
        paper_settings={'emnist': PaperSetting(
            source=('McMahan et al. 2017\'s MNIST setting, on which the compression papers '
                    'build: the 2NN over 100 clients, 10 per round. Here 100 writers of TFF\'s '
                    'EMNIST digits, each its own client; bits, k and error feedback as above.'),
            base=dict(dataset='emnist', num_clients=100, clients_per_round=10, rounds=200))},
    ),
    'scaffold_heterogeneity': Study(
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
    ),
    'personalization': Study(
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
    ),
    'qffl_fairness': Study(
        title='Digits, Dirichlet(0.1), 50 clients: q-FFL against FedAvg',
        claim=('Raising q spreads accuracy more evenly across clients: the worst clients gain '
               'while the mean changes little (Li et al. 2020, Table 2: q-FFL cuts the variance '
               'of accuracy across devices by 45% on average).'),
        base=dict(_DIGITS_SKEWED, rounds=100, eval_every=10),
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
    ),
    'async': Study(
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
    ),
    'private_async': Study(
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
    ),
    'adaptive_optimizers': Study(
        title='Digits, Dirichlet(0.1) (and 1), 50 clients: adaptive server optimizers',
        claim=('Adaptive server optimizers (FedAdagrad, FedAdam, FedYogi) match or beat FedAvg and '
               'FedAvgM, and help most under heavy label skew (Reddi et al. 2021, Table 2 and '
               'Section 5), each with its server learning rate and tau tuned.'),
        base=dict(_DIGITS_SKEWED, rounds=30, eval_every=3),
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
    ),
    'byzantine': Study(
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
    ),
}


def paper_settings_markdown() -> str:
    """A table of each study's paper datasets and its settings on them (for the README)."""
    rows = [f'| `{name}` | {study.designed_for} | `--dataset={dataset}`: {paper.source} |'
            for name, study in STUDIES.items() for dataset, paper in study.paper_settings.items()]
    return '\n'.join(['| study | designed for | on the paper\'s data |', '|---|---|---|', *rows])


@dataclasses.dataclass(frozen=True)
class RealData:
    """Where a study's rerun on a TFF dataset reads it: `experiments.reproduce --dataset=NAME
    --data_dir=DIR [--download]`."""

    dataset: str
    data_dir: str
    download: bool = False
    dataset_url: Optional[str] = None  # None: the dataset option's default.


def paper_setting(name: str, dataset: str) -> PaperSetting:
    """Study `name`'s paper setting on TFF dataset `dataset`.

    Raises:
      ValueError: Naming the datasets the study has a paper setting for.
    """
    study = _study(name)
    if dataset not in study.paper_settings:
        raise ValueError(f'study {name!r} has no paper setting on dataset {dataset!r}; valid '
                         f'choices: {", ".join(sorted(study.paper_settings)) or "none"} '
                         f'(it was designed for {study.designed_for})')
    return study.paper_settings[dataset]


def _study(name: str) -> Study:
    if name not in STUDIES:
        raise ValueError(f'unknown study {name!r}; valid choices: {", ".join(sorted(STUDIES))}')
    return STUDIES[name]


def _runs(name: str, real: Optional[RealData]) -> tuple[str, list[tuple[str, dict[str, Any], int]]]:
    """The name of the study's outputs, and per run: its label, settings and variant index."""
    study = _study(name)
    if real is None:
        return name, [(label, {**study.base, **overrides}, i)
                      for i, (label, overrides) in enumerate(study.variants)]
    paper = paper_setting(name, real.dataset)
    data = dict(data_dir=real.data_dir, download=real.download,
                **({'dataset_url': real.dataset_url} if real.dataset_url else {}))
    return f'{name}_{real.dataset}', [
        (label, {**paper.settings(label, {**study.base, **overrides}), **data}, i)
        for i, (label, overrides) in enumerate(study.variants)
        if paper.keep is None or label in paper.keep]


def study_configs(name: str, output_dir: str, rounds: Optional[int] = None,
                  real: Optional[RealData] = None) -> list[tuple[str, ExperimentConfig]]:
    """The labelled, validated configs of study `name` (runs go under `output_dir/runs`), on
    `real.dataset` with its paper's setting when `real` is given. Every config is validated
    before any preflight runs (a `--download` fetches in the first preflight).

    Raises:
      ValueError: An unknown study, or a dataset it has no paper setting for.
      ConfigError: A setting that does not validate.
    """
    study = _study(name)
    output_name, runs = _runs(name, real)
    configs = []
    for label, settings, i in runs:
        settings = {**settings, 'output_dir': os.path.join(output_dir, 'runs'),
                    'experiment_name': f'{output_name}_{i}'}
        if rounds is not None:
            settings['rounds'] = rounds
        configs.append((label, ExperimentConfig(**settings).validate()))
    if study.runs is not None:
        if len(study.runs.grids) != len(study.variants):
            raise ValueError(f'study {name!r} has {len(study.variants)} variants but '
                             f'{len(study.runs.grids)} tuning grids')
        _grid_configs(name, configs, real)  # Every grid point and seed is valid too.
    for _, config in configs:
        preflight(config)
    return configs


def _grid_configs(name: str, configs: list[tuple[str, ExperimentConfig]],
                  real: Optional[RealData]) -> list[list[tuple[dict[str, Any], int, ExperimentConfig]]]:
    """Per run, every (grid point, seed, config) of its variant's tuning grid, validated."""
    study = STUDIES[name]
    output_name, runs = _runs(name, real)
    return [sweep.sweep_configs(config, study.runs.grids[i], study.runs.seeds,
                                f'{output_name}_{i}')
            for (_, config), (_, _, i) in zip(configs, runs)]


def run_study(name: str, output_dir: str, rounds: Optional[int] = None,
              log: Callable[[str], None] = print, real: Optional[RealData] = None
              ) -> dict[str, Any]:
    """Runs study `name`, on `real.dataset` with its paper's setting when `real` is given.

    Writes `<name>.png` and `<name>.md` (`<name>_<dataset>.*` on a real dataset) into
    `output_dir`.

    Returns:
      The paths written, the table rows, each run's directory and the grid rows.

    Raises:
      ValueError: An unknown study, or a dataset it has no paper setting for.
      ConfigError: A setting that does not validate (before anything runs).
    """
    study = _study(name)
    configs = study_configs(name, output_dir, rounds, real)  # Validates everything first.
    grids = _grid_configs(name, configs, real) if study.runs else None
    output_name, runs = _runs(name, real)
    os.makedirs(output_dir, exist_ok=True)
    histories, run_dirs, diverged, chosen, grid_rows = {}, {}, {}, {}, []
    for i, (label, config) in enumerate(configs):
        log(f'== {label}')
        if grids is not None:  # Tuned: run the grid x seeds, keep the best point's seeds.
            points = sweep.run_grid(grids[i], log=lambda line: log('   ' + line))
            scores = {id(p): float(np.mean([study.runs.select(h) for h in p.histories]))
                      if p.histories and not p.diverged else -math.inf for p in points}
            best = max(points, key=lambda p: scores[id(p)])
            finished = math.isfinite(scores[id(best)])
            grid_rows += [{'run': label, **sweep.summary_row(p),
                           'selected by': f'{scores[id(p)]:.4f}' if math.isfinite(scores[id(p)]) else '',
                           'chosen': 'yes' if p is best and finished else ''} for p in points]
            if not finished:
                diverged[label] = 'every grid point diverged: ' + ', '.join(
                    f'{p.label} ({"; ".join(p.diverged)})' for p in points)
                continue
            histories[label] = best.histories
            run_dirs[label] = os.path.join(config.output_dir, f'{output_name}_{runs[i][2]}')
            if study.tuning is not None:
                chosen[label] = best.label
                log(f'   chosen: {best.label}')
            continue
        try:
            result = run_experiment(config, log=lambda line: None)
        except DivergenceError as e:  # Recorded in the table; the other variants still run.
            diverged[label], run_dirs[label] = f'diverged at round {e.round_num}', e.run_dir
            log(f'   {e}')
            continue
        histories[label], run_dirs[label] = result.history, result.run_dir
        log(f'   {result.summary}')
    png = os.path.join(output_dir, f'{output_name}.png')
    if study.plot is not None:
        study.plot(histories, png, study.title)
    else:
        plotting.plot_curves(histories, study.plot_metrics, png, title=study.title,
                             log_scale=study.log_scale, hlines=study.hlines, x_axes=study.x_axes)
    table = {row['run']: row for row in (study.table(histories) if histories else [])}
    rows = [{'run': label, 'status': diverged[label]}
            if label in diverged else {'run': label, **({'chosen': chosen[label]} if chosen else {}),
                                       **table[label], 'status': 'ok'} for label, _ in configs]
    if study.tuning is None:  # Seeds only: no grid to show.
        grid_rows = []
    md = os.path.join(output_dir, f'{output_name}.md')
    with files.atomic_write(md) as f:
        f.write(_markdown(name, study, runs, rows, rounds, histories, grid_rows, real))
    return {'png': png, 'markdown': md, 'rows': rows, 'run_dirs': run_dirs, 'grid': grid_rows}


def _markdown(name, study, runs, rows, rounds, histories=None, grid_rows=(), real=None) -> str:
    """The study's page: claim, command, plot, table, grid and settings. `runs` are
    `_runs`' (label, settings, variant index) triples."""
    output_name = name if real is None else f'{name}_{real.dataset}'
    header = list(dict.fromkeys(h for r in rows for h in r))  # Every column, in first-seen order.
    command = (f'python -m experiments.reproduce --study={name}'
               + (f' --dataset={real.dataset} --data_dir=DIR' if real else '')
               + (f' --rounds={rounds}' if rounds else ''))
    paper = [f'On {real.dataset} with the paper\'s setting: '
             f'{study.paper_settings[real.dataset].source}', ''] if real else []
    lines = [f'# {study.title}' + (f' (on {real.dataset})' if real else ''), '',
             f'Claim: {study.claim}', '', *paper,
             *([f'Each run is {study.seeds} seeds ({study.base.get("seed", 0)} to '
                f'{study.base.get("seed", 0) + study.seeds - 1}): mean ± std over them.', '']
               if study.tuning is None and study.seeds > 1 else []),
             f'Command: `{command}`', '',
             f'![{output_name}]({output_name}.png)', '',
             '| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(str(r.get(h, '')) for h in header) + ' |' for r in rows]
    if study.extra_markdown is not None and histories:
        lines += ['', study.extra_markdown(histories)]
    if grid_rows:
        grid_header = list(dict.fromkeys(h for r in grid_rows for h in r))
        lines += ['', f'Every grid point, {study.tuning.seeds} seeds each (mean ± std); chosen by '
                  f'the highest {study.tuning.select_help}:', '',
                  '| ' + ' | '.join(grid_header) + ' |', '|' + '---|' * len(grid_header)]
        lines += ['| ' + ' | '.join(str(r.get(h, '')) for h in grid_header) + ' |' for r in grid_rows]
    # Shared: what every run sets alike (the study's base, or the base with the paper's setting).
    hidden = {'data_dir', 'download', 'dataset_url'} | ({'rounds'} if rounds else set())
    shared = {k: v for k, v in runs[0][1].items()
              if k not in hidden and all(k in r[1] and r[1][k] == v for r in runs)}
    lines += ['', 'Settings (shared, then per run):', '',
              '```', ' '.join(f'--{k}={v}' for k, v in shared.items())
              + (f' --rounds={rounds}' if rounds else ''), *[
                  f'{label}: ' + ' '.join(f'--{k}={v}' for k, v in settings.items()
                                          if k not in shared and k not in hidden)
                  + (' grid: ' + '; '.join(f'{k}={",".join(map(str, v))}' for k, v in
                                          study.tuning.grids[i].items()) if study.tuning else '')
                  for label, settings, i in runs], '```', '',
              f'Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}.',
              '']
    return '\n'.join(lines)


