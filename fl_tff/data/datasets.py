"""The dataset registry (`--dataset`): data shipped inside installed packages, and TFF's datasets
read from `--data_dir` (`--download` fetches them, `fl_tff.data.download`). Every loader returns
an `fl_tff.data.arrays.ArrayDataset`."""

from __future__ import annotations

import sys
from typing import Callable

from fl_tff import options
from fl_tff.data import download, synthetic, tff_datasets
from fl_tff.data.arrays import ArrayDataset, load_digits


def _synthetic(**kwargs) -> ArrayDataset:
    return synthetic.synthetic(kwargs['synthetic_alpha'], kwargs['synthetic_beta'],
                               num_devices=kwargs['num_clients'], seed=kwargs['seed'])


def _synthetic_iid(**kwargs) -> ArrayDataset:
    return synthetic.synthetic(0.0, 0.0, num_devices=kwargs['num_clients'], seed=kwargs['seed'],
                               iid=True)


def _tff(name: str) -> Callable[..., ArrayDataset]:
    def load(**kwargs) -> ArrayDataset:
        return tff_datasets.load_tff_dataset(name, kwargs['data_dir'], kwargs['num_clients'],
                                             kwargs['seed'])
    return load


def _check_tff_dataset(name: str):
    def check(config, selection) -> None:
        del selection
        if config.download and download.missing_files(name, config.data_dir):
            if not config.data_dir:
                raise options.OptionError('data_dir', f'--download needs --data_dir: the directory '
                                          f'{name}\'s files go to')
            return  # Fetched by `prepare`, after the server is found reachable by `preflight`.
        try:
            tff_datasets.check_available(name, config.data_dir)
        except tff_datasets.MissingDatasetFileError as e:
            raise options.OptionError('data_dir', str(e)) from e
    return check


def _reachable(name: str):
    def preflight(config) -> None:
        missing = download.missing_files(name, config.data_dir) if config.download else ()
        if missing:
            try:
                download.archive_sizes(name, missing, config.dataset_url)
            except download.DownloadUnavailableError as e:
                raise options.OptionError('download', str(e)) from e
    return preflight


def _fetch(name: str):
    def prepare(config) -> None:
        if config.download:
            try:
                download.fetch(name, config.data_dir, config.dataset_url,
                               show_progress=sys.stderr.isatty())
            except (download.DownloadUnavailableError, download.DownloadError) as e:
                raise options.OptionError('download', str(e)) from e
    return prepare


_DATA_DIR = options.Param('data_dir', '', 'Directory holding TFF dataset files (emnist_all.sqlite, '
                          'cifar100.sqlite, shakespeare.sqlite, stackoverflow.sqlite + '
                          'stackoverflow.word_count); see --download.')
_DOWNLOAD = options.Param('download', False, 'Fetch the dataset\'s missing files into --data_dir '
                          'before the run (from --dataset_url: sized first, resumable, verified, '
                          'atomic; also `python -m experiments.fetch_data`).',
                          result_neutral=True)
_DATASET_URL = options.Param('dataset_url', download.DEFAULT_URL, 'Where --download fetches '
                             'TFF\'s dataset archives (TFF\'s public bucket).',
                             result_neutral=True)
_SYNTHETIC = (options.Param('synthetic_alpha', 1.0, 'Synthetic(alpha, beta): how much local models '
                            'differ.', minimum=0.0),
              options.Param('synthetic_beta', 1.0, 'Synthetic(alpha, beta): how much local inputs '
                            'differ.', minimum=0.0))
_NATURAL_PARTITION = {options.NATURAL_PARTITION: 'is federated by its authors'}


def _tff_option(name: str, help: str, *provides: str, **kwargs) -> options.Option:
    return options.Option(name, help, params=(_DATA_DIR, _DOWNLOAD, _DATASET_URL),
                          build=_tff(name), provides={*provides, options.NATURAL_CLIENTS},
                          check=_check_tff_dataset(name), preflight=_reachable(name),
                          prepare=_fetch(name), **kwargs)


# Loaders take keyword arguments: seed, num_clients, synthetic_alpha, synthetic_beta, data_dir
# (each uses what it needs). All read offline; TFF's SQLite datasets from --data_dir
# (fl_tff.data.tff_datasets), of which --num_clients clients are sampled; `--download` fetches
# their files first (fl_tff.data.download).
DATASETS = options.Registry('dataset', 'Dataset (read offline; --download fetches TFF\'s).', [
    options.Option('digits', 'scikit-learn\'s 8x8 digits (1,797 images, 10 classes)',
                   build=lambda **_: load_digits(),
                   provides={options.CLASSIFICATION, options.IMAGES}),
    options.Option('synthetic', 'Synthetic(alpha, beta) of the FedProx paper, one client per device',
                   params=_SYNTHETIC, build=_synthetic,
                   provides={options.CLASSIFICATION, options.NATURAL_CLIENTS}),
    options.Option('synthetic_iid', 'the FedProx paper\'s IID synthetic data', build=_synthetic_iid,
                   provides={options.CLASSIFICATION, options.NATURAL_CLIENTS}),
    _tff_option('emnist', 'federated EMNIST digits (writers as clients)', options.CLASSIFICATION,
                options.IMAGES),
    _tff_option('emnist62', 'federated EMNIST, 62 classes', options.CLASSIFICATION, options.IMAGES),
    _tff_option('cifar100', 'federated CIFAR-100', options.CLASSIFICATION, options.IMAGES),
    _tff_option('shakespeare', 'Shakespeare next-character prediction (speakers as clients)',
                options.CHAR_SEQUENCES, options.PADDED_TOKENS, requires=_NATURAL_PARTITION),
    _tff_option('stackoverflow_nwp', 'Stack Overflow next-word prediction (users as clients)',
                options.WORD_SEQUENCES, options.PADDED_TOKENS, requires=_NATURAL_PARTITION),
], default='digits')


def load_dataset(name: str, **kwargs) -> ArrayDataset:
    """Loads the dataset registered as `name` (kwargs: seed, num_clients, synthetic_alpha/beta,
    data_dir)."""
    defaults = dict(seed=0, num_clients=30, synthetic_alpha=1.0, synthetic_beta=1.0, data_dir='')
    return DATASETS.get(name).build(**{**defaults, **kwargs})
