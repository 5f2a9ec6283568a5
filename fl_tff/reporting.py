"""Run directories, metric files and the one-line-per-round console report."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import json
import os
import sys
from typing import Any, Callable, Optional, TextIO

import tensorflow_federated as tff

from fl_tff import runtime

METRICS_FILE = 'metrics.csv'
TENSORBOARD_DIR = 'tensorboard'
FINAL_MODEL_FILE = 'final_model.keras'
CONFIG_FILE = 'config.json'
FLAGS_FILE = 'flags.txt'
SUMMARY_FILE = 'summary.json'
PARTITION_FILE = 'partition.json'


def prepare_run_dir(output_dir: str, name: str, config) -> tuple[str, bool]:
    """(run directory, resuming).

    `output_dir/name` (or `name_2`, `name_3`, ...) whose saved config equals `config` is resumed
    (settings missing from it count as their defaults);
    otherwise the first free one is created. An existing run with other settings is never touched.
    """
    os.makedirs(output_dir, exist_ok=True)
    encode = lambda value: json.loads(json.dumps(value, default=str))
    wanted = encode(dataclasses.asdict(config))
    # Settings added since a run was saved take their defaults (the behaviour it ran with).
    defaults = encode(dataclasses.asdict(type(config)()))
    candidate, n = os.path.join(output_dir, name), 1
    while True:
        saved = os.path.join(candidate, CONFIG_FILE)
        if os.path.exists(saved):
            with open(saved) as f:
                if {**defaults, **json.load(f)} == wanted:
                    return candidate, True
        else:
            try:
                os.makedirs(candidate)
                return candidate, False
            except FileExistsError:
                if not os.listdir(candidate):  # An empty directory left by a failed start.
                    return candidate, False
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


class MetricsReleaser:
    """Releases each round's row through tff.program release managers: CSV (metrics.csv),
    TensorBoard (tensorboard/) and logging. Re-releasing a round replaces it and every later one
    in the CSV, so a resumed run leaves no stale rows."""

    def __init__(self, run_dir: str):
        self.path = os.path.join(run_dir, METRICS_FILE)
        self._managers = [
            tff.program.CSVFileReleaseManager(self.path, save_mode=tff.program.CSVSaveMode.APPEND,
                                              key_fieldname='round'),
            tff.program.TensorBoardReleaseManager(os.path.join(run_dir, TENSORBOARD_DIR)),
            tff.program.LoggingReleaseManager(),
        ]

    def release(self, row: dict[str, Any]) -> None:
        values = {k: v for k, v in row.items() if k != 'round'}

        async def release_all():
            await asyncio.gather(*[m.release(values, key=row['round']) for m in self._managers])

        runtime.run_coroutine(release_all())


def read_metrics(run_dir: str, up_to_round: Optional[int] = None) -> list[dict[str, Any]]:
    """The rows of a run's metrics.csv as numbers (empty cells omitted)."""
    path = os.path.join(run_dir, METRICS_FILE)
    if not os.path.exists(path):
        return []
    rows = []
    with open(path) as f:
        for raw in csv.DictReader(f):
            row = {k: (int(v) if k == 'round' else float(v)) for k, v in raw.items() if v != ''}
            if up_to_round is None or row['round'] <= up_to_round:
                rows.append(row)
    return rows


class RoundReporter:
    """One line per round; in a terminal also a progress bar with ETA (tqdm), plain lines otherwise."""

    def __init__(self, total_rounds: int, start_round: int, log: Callable[[str], None],
                 stream: TextIO = sys.stdout):
        self._total, self._start, self._log, self._stream = total_rounds, start_round, log, stream
        self._bar = None
        if stream.isatty():
            from tqdm import tqdm  # Only terminals get a bar.
            self._bar = tqdm(total=total_rounds, initial=start_round - 1, unit='round',
                             file=stream, dynamic_ncols=True, leave=False)

    def round(self, row: dict[str, Any]) -> None:
        line = format_round_line(row, self._total, self._start)
        if self._bar is not None:
            self._bar.write(line, file=self._stream)
            self._bar.update(1)
        else:
            self._log(line)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def format_round_line(row: dict[str, Any], total_rounds: int, start_round: int = 1) -> str:
    """E.g. `round  5/30 [###.......]  train loss 0.512 acc 0.861 | test acc 0.903 | 0.41s eta 12s`."""
    r = row['round']
    filled = round(10 * r / total_rounds)
    eta = row['elapsed_seconds'] / (r - start_round + 1) * (total_rounds - r)
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
    if 'epsilon' in row:
        parts.append(f'eps {row["epsilon"]:.3g}')
    if 'uplink_bytes_total' in row:
        parts.append(f'up {row["uplink_bytes_total"] / 1e6:.3g} MB')
    parts.append(f'{row["round_seconds"]:.2f}s eta {eta:.0f}s')
    return ' | '.join(parts)
