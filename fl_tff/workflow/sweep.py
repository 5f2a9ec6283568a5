"""Sweeps: a grid of settings x several seeds, run sequentially, summarized as mean ± std."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import os
from typing import Any, Callable

import numpy as np

from fl_tff import files
from fl_tff.workflow import plotting
from fl_tff.config import ConfigError, ExperimentConfig
from fl_tff.runs.divergence import DivergenceError
from fl_tff.experiment import preflight, run_experiment

SUMMARY_METRICS = ('final_test_accuracy', 'best_test_accuracy', 'final_global_train_loss')


def parse_grid(text: str) -> dict[str, list[Any]]:
    """'client_learning_rate=0.02,0.05;mu=0,1' -> {'client_learning_rate': [0.02, 0.05], 'mu': [0, 1]},
    values converted to each setting's type; ConfigError('grid', ...) on a bad entry."""
    fields = {f.name: f for f in dataclasses.fields(ExperimentConfig)}
    grid: dict[str, list[Any]] = {}
    for part in filter(None, (p.strip() for p in text.split(';'))):
        name, sep, values = part.partition('=')
        name = name.strip()
        if not sep or not values.strip():
            raise ConfigError('grid', f'{part!r} is not NAME=V1,V2,...')
        if name not in fields or name in ('seed', 'output_dir', 'experiment_name'):
            raise ConfigError('grid', f'unknown or reserved setting {name!r}; valid: '
                              f'{", ".join(n for n in fields if n not in ("seed", "output_dir", "experiment_name"))}')
        kind = type(fields[name].default)
        try:
            grid[name] = [_convert(kind, v.strip()) for v in values.split(',')]
        except ValueError as e:
            raise ConfigError('grid', f'{name}: {e}') from e
    if not grid:
        raise ConfigError('grid', 'empty grid; expected NAME=V1,V2[;NAME=...]')
    return grid


def _convert(kind, value: str):
    if kind is bool:
        if value.lower() not in ('true', 'false', '1', '0'):
            raise ValueError(f'{value!r} is not a boolean')
        return value.lower() in ('true', '1')
    return kind(value)


def sweep_configs(base: ExperimentConfig, grid: dict[str, list[Any]], seeds: int, name: str
                  ) -> list[tuple[dict[str, Any], int, ExperimentConfig]]:
    """(grid point, seed, validated config) for every combination; all validated up front."""
    if seeds < 1:
        raise ConfigError('seeds', f'must be >= 1, got {seeds}')
    out = []
    keys = list(grid)
    for i, values in enumerate(itertools.product(*grid.values())):
        point = dict(zip(keys, values))
        for seed in range(base.seed, base.seed + seeds):
            config = dataclasses.replace(base, **point, seed=seed,
                                         output_dir=os.path.join(base.output_dir, name, 'runs'),
                                         experiment_name=f'{name}_{i}_s{seed}')
            preflight(config.validate())
            out.append((point, seed, config))
    return out


@dataclasses.dataclass
class GridPoint:
    """One grid point's runs: the summaries and histories of the seeds that finished, and where
    the others diverged."""

    point: dict[str, Any]
    summaries: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    histories: list[list[dict[str, Any]]] = dataclasses.field(default_factory=list)
    diverged: list[str] = dataclasses.field(default_factory=list)

    @property
    def label(self) -> str:
        return ', '.join(f'{k}={v}' for k, v in self.point.items())

    def mean(self, metric: str) -> float:
        """The mean of `metric` over the finished seeds (nan if none finished)."""
        values = [s[metric] for s in self.summaries]
        return float(np.mean(values)) if values else float('nan')


def run_grid(configs: list[tuple[dict[str, Any], int, ExperimentConfig]],
             log: Callable[[str], None] = print) -> list[GridPoint]:
    """Runs `sweep_configs`' output one after another; a run that diverges is recorded in its
    point's `diverged` and the grid goes on."""
    points: dict[str, GridPoint] = {}
    for n, (point, seed, config) in enumerate(configs, 1):
        entry = points.setdefault(repr(point), GridPoint(point))
        log(f"[{n}/{len(configs)}] {entry.label + ', ' if entry.label else ''}seed={seed}")
        try:
            result = run_experiment(config, log=lambda _: None)
        except DivergenceError as e:
            log(f'   {e}')
            entry.diverged.append(f'seed {seed} at round {e.round_num}')
            continue
        entry.summaries.append(result.summary)
        entry.histories.append(result.history)
    return list(points.values())


def summary_row(entry: GridPoint) -> dict[str, Any]:
    """A grid point's row: seeds finished, status, and mean ± std of `SUMMARY_METRICS`."""
    row: dict[str, Any] = {'setting': entry.label, 'seeds': len(entry.summaries),
                           'status': f'diverged: {", ".join(entry.diverged)}'
                           if entry.diverged else 'ok'}
    for metric in SUMMARY_METRICS:
        values = np.array([s[metric] for s in entry.summaries], dtype=float)
        row[metric] = f'{values.mean():.4f} ± {values.std():.4f}' if entry.summaries else ''
    return row


def run_sweep(base: ExperimentConfig, grid: dict[str, list[Any]], seeds: int, name: str,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Runs every grid point x seed; writes summary.csv, summary.md and sweep.png under
    `base.output_dir/name`. Returns the summary rows.

    A run that diverges is recorded (the `status` column names its seed and round) and the sweep
    goes on; means and stds are over the seeds that finished.
    """
    points = run_grid(sweep_configs(base, grid, seeds, name), log)
    out_dir = os.path.join(base.output_dir, name)
    rows = [summary_row(entry) for entry in points]
    os.makedirs(out_dir, exist_ok=True)
    _write_tables(out_dir, rows)
    histories = {e.label: e.histories[0] for e in points if e.histories}  # First finished seed.
    plotting.plot_curves(histories, ['test_accuracy', 'global_train_loss'],
                         os.path.join(out_dir, 'sweep.png'), title=f'sweep {name} (first seed)',
                         log_scale=['global_train_loss'])
    return {'rows': rows, 'dir': out_dir}


def _write_tables(out_dir: str, rows: list[dict[str, Any]]) -> None:
    header = list(rows[0])
    with files.atomic_write(os.path.join(out_dir, 'summary.md')) as f:
        f.write('| ' + ' | '.join(header) + ' |\n|' + '---|' * len(header) + '\n')
        f.writelines('| ' + ' | '.join(str(r[h]) for h in header) + ' |\n' for r in rows)
    with files.atomic_write(os.path.join(out_dir, 'summary.csv'), newline='') as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
