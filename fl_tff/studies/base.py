"""What every study shares: the `Study` declaration, its tuning and paper settings, and the
helpers the studies' tables use."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import numpy as np


Rows = list[dict[str, Any]]


def tail_accuracy(rows: Rows) -> float:
    """Mean test accuracy over the last 20% of evaluations (Reddi et al. 2021 select on the
    average over the last 100 rounds rather than one noisy final value)."""
    return tail_mean([r for r in rows if 'test_accuracy' in r], 'test_accuracy')


@dataclasses.dataclass(frozen=True)
class Tuning:
    """Each variant's settings chosen from its own grid by the sweep: every grid point runs with
    `seeds` seeds, and the point with the highest mean `select` over its seeds wins (a point
    where any seed diverged is not chosen). The study's table and plot then receive, per
    variant, the histories of the chosen point's seeds."""

    grids: tuple[dict[str, list[Any]], ...]  # One per variant, in the variants' order.
    seeds: int = 3
    select: Callable[[Rows], float] = tail_accuracy
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


def last(rows: Rows, metric: str) -> float:
    return [r[metric] for r in rows if metric in r][-1]


def tail_mean(rows: Rows, metric: str, fraction: float = 0.2) -> float:
    tail = rows[-max(1, int(len(rows) * fraction)):]
    return sum(r[metric] for r in tail) / len(tail)


TARGET_ACCURACIES = (0.90, 0.95)


def rounds_to(rows: Rows, target: float) -> Optional[int]:
    hits = [r['round'] for r in rows if r.get('test_accuracy', 0.0) >= target]
    return hits[0] if hits else None


def to_target(rows: Rows, target: float) -> tuple[Optional[dict[str, Any]], int]:
    """The first row whose test accuracy reaches `target` (None if none does), and the client
    updates aggregated up to it (all of them if none does)."""
    hit = next((r for r in rows if r.get('test_accuracy', 0.0) >= target), None)
    updates = 0
    for r in rows:
        updates += int(r['aggregated'])
        if r is hit:
            break
    return hit, updates


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


DP = dict(dp='fixed', clip=0.5, delta=1e-3)


# Digits under a heavy label skew, shared by the q-FFL and adaptive-optimizer studies.
DIGITS_SKEWED = dict(dataset='digits', model='2nn', partition='dirichlet', alpha=0.1,
                      num_clients=50, clients_per_round=10, client_epochs=1,
                      client_batch_size=10, client_learning_rate=0.05, seed=0)


def mean_std(values: list[float], digits: int = 3) -> str:
    return f'{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}' if values else ''
