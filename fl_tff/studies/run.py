"""Running a study: its configs (on digits or synthetic data, or on a TFF dataset with the paper's
settings), the runs, and the page and plot it writes."""

from __future__ import annotations

import dataclasses
import math
import os
import platform
from typing import Any, Callable, Optional

import numpy as np

from fl_tff import files
from fl_tff.workflow import plotting
from fl_tff.workflow import sweep
from fl_tff.config import ExperimentConfig
from fl_tff.runs.divergence import DivergenceError
from fl_tff.experiment import preflight, run_experiment
from fl_tff.studies.base import PaperSetting, Study
from fl_tff.studies.registry import STUDIES


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
