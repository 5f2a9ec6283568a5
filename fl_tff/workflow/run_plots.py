"""Plots comparing finished runs from their run directories (metrics.csv + config.json)."""

from __future__ import annotations

import json
import os
from typing import Any

from fl_tff.workflow import plotting
from fl_tff.runs import reporting

# x axes besides the round, used when a run reports them (the simulated clock, the
# communication and privacy ledgers).
_X_AXES = (('sim_time', 'simulated seconds'), ('uplink_bytes_total', 'uplink bytes'),
           ('epsilon', 'epsilon'))


def load_run(run_dir: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(config dict, metric rows) of a run directory; ValueError naming what is missing."""
    config_path = os.path.join(run_dir, reporting.CONFIG_FILE)
    if not os.path.exists(config_path) or not os.path.exists(os.path.join(run_dir, reporting.METRICS_FILE)):
        raise ValueError(f'{run_dir!r} is not a run directory (no {reporting.CONFIG_FILE} and '
                         f'{reporting.METRICS_FILE})')
    with open(config_path) as f:
        return json.load(f), reporting.read_metrics(run_dir)


def legend_labels(configs: list[dict[str, Any]]) -> list[str]:
    """One label per run from the settings that differ between runs (ignoring output names)."""
    ignore = {'output_dir', 'experiment_name'}
    keys = [k for k in configs[0] if k not in ignore and len({json.dumps(c.get(k)) for c in configs}) > 1]
    if not keys:
        return [c.get('experiment_name') or f'run {i}' for i, c in enumerate(configs)]
    return [', '.join(f'{k}={c.get(k)}' for k in keys) for c in configs]


def plot_runs(run_dirs: list[str], output: str) -> str:
    """Writes accuracy and loss against rounds (and against bytes or epsilon when present)."""
    runs = [load_run(d) for d in run_dirs]
    labels = legend_labels([config for config, _ in runs])
    histories = {label: rows for label, (_, rows) in zip(labels, runs)}
    metrics = [m for m in ('test_accuracy', 'train_loss', 'global_train_loss')
               if any(m in r for rows in histories.values() for r in rows)]
    extra = [(key, name) for key, name in _X_AXES
             if any(key in r for rows in histories.values() for r in rows)]
    plotting.plot_curves(histories, metrics, output, title=f'{len(run_dirs)} run(s)',
                         log_scale=[m for m in metrics if 'loss' in m],
                         x_axes=[('round', 'round')] + extra)
    return output
