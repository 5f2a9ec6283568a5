"""Sweeps: a grid of settings x several seeds, run sequentially, summarized as mean ± std."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import os
from typing import Any, Callable

import numpy as np

from fl_tff import files, plotting
from fl_tff.config import ConfigError, ExperimentConfig
from fl_tff.divergence import DivergenceError
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


def run_sweep(base: ExperimentConfig, grid: dict[str, list[Any]], seeds: int, name: str,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Runs every grid point x seed; writes summary.csv, summary.md and sweep.png under
    `base.output_dir/name`. Returns the summary rows.

    A run that diverges is recorded (the `status` column names its seed and round) and the sweep
    goes on; means and stds are over the seeds that finished.
    """
    configs = sweep_configs(base, grid, seeds, name)
    out_dir = os.path.join(base.output_dir, name)
    results: dict[str, list[dict[str, Any]]] = {}
    diverged: dict[str, list[str]] = {}
    histories: dict[str, list[dict[str, Any]]] = {}
    for n, (point, seed, config) in enumerate(configs, 1):
        label = ', '.join(f'{k}={v}' for k, v in point.items())
        log(f'[{n}/{len(configs)}] {label}, seed={seed}')
        results.setdefault(label, [])
        try:
            result = run_experiment(config, log=lambda _: None)
        except DivergenceError as e:
            log(f'   {e}')
            diverged.setdefault(label, []).append(f'seed {seed} at round {e.round_num}')
            continue
        results[label].append(result.summary)
        histories.setdefault(label, result.history)  # The first finished seed's curve, for the plot.
    rows = []
    for label, summaries in results.items():
        row: dict[str, Any] = {'setting': label, 'seeds': len(summaries),
                               'status': f'diverged: {", ".join(diverged[label])}'
                               if label in diverged else 'ok'}
        for metric in SUMMARY_METRICS:
            values = np.array([s[metric] for s in summaries], dtype=float)
            row[metric] = f'{values.mean():.4f} ± {values.std():.4f}' if summaries else ''
        rows.append(row)
    os.makedirs(out_dir, exist_ok=True)
    _write_tables(out_dir, rows)
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
