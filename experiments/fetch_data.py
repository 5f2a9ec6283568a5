"""Fetch a TFF dataset's files into a data directory, once, before any run:

  python -m experiments.fetch_data --dataset=emnist --data_dir=~/fl_data
  python -m experiments.train --dataset=emnist --data_dir=~/fl_data --model=cnn ...

The same as `--download` on `experiments.train` / `experiments.reproduce`: each archive's size is
announced first, a broken download resumes, the unpacked file is verified (SQLite schema and each
split's clients and examples as TFF documents them) and appears under its final name only then.
Without internet it stops at once with one line saying where to get the files (exit 2).
"""

from __future__ import annotations

import os
import sys

from absl import app
from absl import flags

from experiments import flag_parsing
from fl_tff.data import download
from fl_tff.data import tff_datasets

_DATASET = flags.DEFINE_enum('dataset', None, sorted(tff_datasets.TFF_DATASETS),
                             'The TFF dataset whose files to fetch.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Where the files go (the runs\' --data_dir).')
_URL = flags.DEFINE_string('dataset_url', download.DEFAULT_URL,
                           'Where the archives are (TFF\'s public bucket).')
_ATTEMPTS = flags.DEFINE_integer('attempts', 3, 'Downloads tried per file before giving up '
                                 '(a broken connection resumes; a corrupt file starts over).',
                                 lower_bound=1)
flags.mark_flags_as_required(['dataset', 'data_dir'])


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
    data_dir = os.path.expanduser(_DATA_DIR.value)
    try:
        written = download.fetch(_DATASET.value, data_dir, _URL.value, attempts=_ATTEMPTS.value,
                                 show_progress=sys.stderr.isatty())
    except (download.DownloadUnavailableError, download.DownloadError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    if not written:
        print(f'{_DATASET.value}: every file is already in {os.path.abspath(data_dir)}')
    return 0


if __name__ == '__main__':
    app.run(main, flags_parser=flag_parsing.parse_flags)
