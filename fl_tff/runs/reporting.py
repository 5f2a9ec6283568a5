"""Run directories, metric files and the one-line-per-round console report."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import dataclasses
import json
import os
import sys
import time
from typing import Any, Callable, Optional, TextIO

import tensorflow_federated as tff

from fl_tff import files, runtime
from fl_tff.runs import run_lock
from fl_tff.config import result_settings
from fl_tff.secagg import protocol

METRICS_FILE = 'metrics.csv'
TENSORBOARD_DIR = 'tensorboard'
FINAL_MODEL_FILE = 'final_model.keras'
CONFIG_FILE = 'config.json'
FLAGS_FILE = 'flags.txt'
SUMMARY_FILE = 'summary.json'
PARTITION_FILE = 'partition.json'


@dataclasses.dataclass
class RunDir:
    """A run directory this process holds the lock of.

    Attributes:
      path: The directory.
      resuming: Whether it holds an earlier run of the same settings (to resume or extend).
      lock: The held lock; release it when the run ends.
      note: Why a new directory was started beside an existing one of the same name ('' if not).
    """

    path: str
    resuming: bool
    lock: run_lock.RunDirLock
    note: str = ''


def open_run_dir(output_dir: str, name: str, config, *, wait_for_lock: bool = False,
                 log: Callable[[str], None] = print) -> RunDir:
    """Finds or creates the run directory of `config` under `output_dir` and locks it.

    `output_dir/name` (or `name_2`, `name_3`, ...) whose saved config computes the same thing is
    resumed: settings that only say where files go, how often to evaluate or checkpoint, where to
    run or when to give up (`ExperimentConfig`'s result-neutral fields) may differ, and so may
    `rounds` as long as the saved run has not run past it (a larger value extends a finished
    run). Settings missing from a saved config count as their defaults. Otherwise the first free
    name is created, and `note` says which settings differ from the run named `name`. An
    existing run with other settings is never touched. The saved config is updated to `config`.

    Raises:
      run_lock.RunDirInUseError: Another live run holds the directory (and not `wait_for_lock`).
    """
    os.makedirs(output_dir, exist_ok=True)
    encode = lambda value: json.loads(json.dumps(value, default=str))
    wanted = encode(dataclasses.asdict(config))
    # Settings added since a run was saved take their defaults (the behaviour it ran with).
    defaults = encode(dataclasses.asdict(type(config)()))
    note = ''
    candidate, n = os.path.join(output_dir, name), 1
    while True:
        saved = _read_saved_config(candidate)
        if saved == {}:
            note = note or f'{candidate} has an unreadable {CONFIG_FILE}'
        elif saved is not None:
            why = _why_not_resumable(candidate, {**defaults, **saved}, wanted)
            if not why:
                lock = run_lock.acquire(candidate, wait_for_lock, log)
                with _released_on_error(lock):
                    # Rechecked under the lock: the holder we waited for may have changed it.
                    again = _read_saved_config(candidate)
                    if again and not _why_not_resumable(candidate, {**defaults, **again}, wanted):
                        save_config(candidate, config)
                        return RunDir(candidate, True, lock)
                lock.release()
                continue
            note = note or f'{candidate} {why}'
        elif saved is None and _claimable(candidate):
            # New, or left without a config by a start that failed (or is starting right now).
            try:
                lock = run_lock.acquire(candidate)
            except run_lock.RunDirInUseError:
                if _config_appears(candidate):  # Another run is claiming it: judge its settings.
                    continue
                raise
            with _released_on_error(lock):
                if _read_saved_config(candidate) is None and _claimable(candidate):
                    save_config(candidate, config)
                    return RunDir(candidate, False, lock, note)
            lock.release()
            continue
        n += 1
        candidate = os.path.join(output_dir, f'{name}_{n}')


@contextlib.contextmanager
def _released_on_error(lock: run_lock.RunDirLock):
    try:
        yield
    except BaseException:
        lock.release()
        raise


def _claimable(path: str) -> bool:
    """Whether `path` can become a new run directory: absent (then created here), or a
    directory holding nothing but a lock file (a start that failed before saving its config)."""
    if _make_dir(path):
        return not set(os.listdir(path)) - {run_lock.LOCK_FILE}
    return False


def _config_appears(run_dir: str, seconds: float = 5.0) -> bool:
    """Waits briefly for a run that just locked `run_dir` to save its config."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _read_saved_config(run_dir) is not None:
            return True
        time.sleep(0.05)
    return False


def _make_dir(path: str) -> bool:
    try:
        os.makedirs(path)
        return True
    except FileExistsError:
        return os.path.isdir(path)


def _read_saved_config(run_dir: str) -> Optional[dict[str, Any]]:
    """The saved config; {} when it cannot be read (such a directory is never resumed or
    reused); None when there is none."""
    try:
        with open(os.path.join(run_dir, CONFIG_FILE)) as f:
            saved = json.load(f)
        return saved if isinstance(saved, dict) else {}
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def _why_not_resumable(run_dir: str, saved: dict[str, Any], wanted: dict[str, Any]) -> str:
    """'' when a run saved with settings `saved` can be resumed with `wanted`, else the reason."""
    ours, theirs = result_settings(wanted), result_settings(saved)
    differing = [k for k in ours if ours[k] != theirs.get(k)]
    if differing:
        return 'has other settings: ' + ', '.join(
            f'--{k}={theirs.get(k)} there, {ours[k]} here' for k in differing)
    done = max((row['round'] for row in read_metrics(run_dir)), default=0)
    if done > wanted['rounds']:
        return f'has already run {done} rounds, more than --rounds={wanted["rounds"]}'
    return ''


def write_json(path: str, value: Any) -> None:
    """Writes JSON atomically and durably, so a crash never leaves half a file."""
    files.write_json(path, value)


def save_config(run_dir: str, config) -> None:
    """Saves the config as JSON and as an absl flagfile (`--flagfile=flags.txt` reruns it)."""
    values = dataclasses.asdict(config)
    write_json(os.path.join(run_dir, CONFIG_FILE), values)
    with files.atomic_write(os.path.join(run_dir, FLAGS_FILE)) as f:
        f.writelines(f'--{k}={v}\n' for k, v in values.items())


class _AtomicCSVReleaseManager(tff.program.CSVFileReleaseManager):
    """TFF's CSV release manager rewriting the whole file each release through an atomic,
    durable write (TFF's append mode can leave half a row after a crash; its rewrite does
    not fsync)."""

    def __init__(self, path: str, key_fieldname: str):
        super().__init__(path, save_mode=tff.program.CSVSaveMode.WRITE, key_fieldname=key_fieldname)

    def _write_values(self, fieldnames, values) -> None:
        with files.atomic_write(os.fspath(self._file_path), newline='') as f:
            writer = csv.DictWriter(f, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(values)


class MetricsReleaser:
    """Releases each round's row through tff.program release managers: CSV (metrics.csv,
    rewritten atomically), TensorBoard (tensorboard/) and logging. Re-releasing a round replaces
    it and every later one in the CSV, so a resumed run leaves no stale rows."""

    def __init__(self, run_dir: str):
        self.path = os.path.join(run_dir, METRICS_FILE)
        self._managers = [
            _AtomicCSVReleaseManager(self.path, key_fieldname='round'),
            tff.program.TensorBoardReleaseManager(os.path.join(run_dir, TENSORBOARD_DIR)),
            tff.program.LoggingReleaseManager(),
        ]

    def release(self, row: dict[str, Any]) -> None:
        values = {k: v for k, v in row.items() if k != 'round'}

        async def release_all():
            await asyncio.gather(*[m.release(values, key=row['round']) for m in self._managers])

        runtime.run_coroutine(release_all)


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
    if 'staleness_mean' in row:  # An asynchronous server update.
        parts.append(f'buffer {row["aggregated"]} staleness mean {row["staleness_mean"]:.2f} '
                     f'max {row["staleness_max"]} lost {row["lost"]}')
    elif 'selected' in row and row['aggregated'] != row['selected']:
        parts.append(f'clients {row["aggregated"]}/{row["selected"]} (dropped {row["dropped"]}, '
                     f'stragglers {row["stragglers"]}, partial {row["partial"]}, late {row["late"]})')
    if 'test_accuracy' in row:
        parts.append(f'test acc {row["test_accuracy"]:.4f}')
    if 'fed_eval_accuracy' in row:
        parts.append(f'fed eval acc {row["fed_eval_accuracy"]:.4f}')
    for key, label in (('personal_acc_mean', 'personal'), ('finetuned_acc_mean', 'finetuned')):
        if key in row:  # Beside the global model's per-client mean, as the reader compares them.
            parts.append(f'client acc global {row["client_acc_mean"]:.4f} {label} {row[key]:.4f}')
            break
    if row.get('secagg_aborted'):  # Which step lost too many clients (or holders), against t.
        step = protocol.STEPS[int(row['secagg_abort_step']) - 1]
        client, left = int(row.get('secagg_abort_client', 0)), int(row['secagg_abort_left'])
        who = (f'{left} of {int(row["selected"])} clients left' if not client else
               f'the neighbourhood of selected client #{client} has {left} share holders left')
        parts.append(f'secagg ABORTED at {step}: {who}, threshold '
                     f'{int(row["secagg_threshold"])}; model unchanged')
    if row.get('secagg_exposed_sums'):  # SecAgg+ cut apart by dropouts: partial sums leak.
        parts.append(f'secagg: the server learns {int(row["secagg_exposed_sums"])} partial '
                     f'sum(s), the smallest of {int(row["secagg_smallest_exposed_group"])} '
                     'clients')
    if 'epsilon' in row:
        parts.append(f'eps {row["epsilon"]:.3g}')
    if 'uplink_bytes_total' in row:
        parts.append(f'up {row["uplink_bytes_total"] / 1e6:.3g} MB')
    if 'worker_bytes_sent' in row:
        parts.append(f'to workers {row["worker_bytes_sent"] / 1e6:.3g} MB')
    if 'sim_time' in row:
        parts.append(f'sim {row["sim_time"]:.0f}s')
    parts.append(f'{row["round_seconds"]:.2f}s eta {eta:.0f}s')
    return ' | '.join(parts)
