"""Run directories, metric files and the one-line-per-round console report."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from typing import Any

import tensorflow_federated as tff

METRICS_FILE = 'metrics.csv'
CONFIG_FILE = 'config.json'
FLAGS_FILE = 'flags.txt'
SUMMARY_FILE = 'summary.json'
PARTITION_FILE = 'partition.json'


def create_run_dir(output_dir: str, name: str) -> str:
    """Creates `output_dir/name`; if that exists, `name_2`, `name_3`, ... so no earlier run is touched."""
    os.makedirs(output_dir, exist_ok=True)
    candidate, n = os.path.join(output_dir, name), 1
    while True:
        try:
            os.makedirs(candidate)
            return candidate
        except FileExistsError:
            n += 1
            candidate = os.path.join(output_dir, f'{name}_{n}')


def write_json(path: str, value: Any) -> None:
    """Writes JSON atomically (temp file + rename), so a crash never leaves half a file."""
    tmp = f'{path}.tmp'
    with open(tmp, 'w') as f:
        json.dump(value, f, indent=2, sort_keys=True, default=str)
        f.write('\n')
    os.replace(tmp, path)


def save_config(run_dir: str, config) -> None:
    """Saves the config as JSON and as an absl flagfile (`--flagfile=flags.txt` reruns it)."""
    values = dataclasses.asdict(config)
    write_json(os.path.join(run_dir, CONFIG_FILE), values)
    with open(os.path.join(run_dir, FLAGS_FILE), 'w') as f:
        f.writelines(f'--{k}={v}\n' for k, v in values.items())


class MetricsWriter:
    """Appends each round's row to `metrics.csv` through TFF's CSV release manager."""

    def __init__(self, run_dir: str):
        self.path = os.path.join(run_dir, METRICS_FILE)
        self._manager = tff.program.CSVFileReleaseManager(
            self.path, save_mode=tff.program.CSVSaveMode.APPEND, key_fieldname='round')

    def write(self, row: dict[str, Any]) -> None:
        values = {k: v for k, v in row.items() if k != 'round'}
        asyncio.run(self._manager.release(values, key=row['round']))


def format_round_line(row: dict[str, Any], total_rounds: int) -> str:
    """E.g. `round  5/30 [###.......]  train loss 0.512 acc 0.861 | test acc 0.903 | 0.41s eta 12s`."""
    r = row['round']
    filled = round(10 * r / total_rounds)
    eta = row['elapsed_seconds'] / r * (total_rounds - r)
    width = len(str(total_rounds))
    parts = [f'round {r:>{width}}/{total_rounds} [{"#" * filled}{"." * (10 - filled)}]',
             f'train loss {row["train_loss"]:.4f} acc {row["train_accuracy"]:.4f}']
    if 'selected' in row and row['aggregated'] != row['selected']:
        parts.append(f'clients {row["aggregated"]}/{row["selected"]} (dropped {row["dropped"]}, '
                     f'stragglers {row["stragglers"]}, partial {row["partial"]}, late {row["late"]})')
    if 'test_accuracy' in row:
        parts.append(f'test acc {row["test_accuracy"]:.4f}')
    if 'fed_eval_accuracy' in row:
        parts.append(f'fed eval acc {row["fed_eval_accuracy"]:.4f}')
    parts.append(f'{row["round_seconds"]:.2f}s eta {eta:.0f}s')
    return ' | '.join(parts)
