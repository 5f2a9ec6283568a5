"""TFF's standard federated datasets, read offline from their files in `--data_dir`.

`tff.simulation.datasets.<name>.load_data(cache_dir=DIR)` reads `DIR/<file>` without network
access when the file is there, and tries to download it when it is not. fl_tff never lets it
download during a run: a missing file is one clear error that names the file and where it goes,
and `--download` (`fl_tff.data.download`) fetches it first, checked and atomically.

The SQLite format (tables `examples(split_name, client_id, serialized_example_proto)` and
`client_metadata(client_id, split_name, num_examples)`) is also what the tests build tiny
copies of. A seeded sample of clients is materialized in memory, keeping TFF's own per-client
train/test split. Text datasets are tokenized with TFF's baseline preprocessing
(`tff.simulation.baselines.{shakespeare,stackoverflow}`), so token ids match TFF's baselines.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import sqlite3
import urllib.parse
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from fl_tff.data.arrays import ArrayDataset

# Sentences longer than this are truncated (TFF's Stack Overflow baseline default).
STACKOVERFLOW_SEQUENCE_LENGTH = 20
STACKOVERFLOW_VOCAB_SIZE = 10_000
STACKOVERFLOW_WORD_COUNTS = 'stackoverflow.word_count'
_CONVERT_BATCH = 4096


@dataclasses.dataclass(frozen=True)
class Converter:
    """How a client's raw `tf.data.Dataset` becomes arrays, and what the labels mean.

    `to_batches` maps the raw dataset to batches of `(x, y)`. `masked_labels` (padding) are
    excluded from the loss and accuracy; `accuracy_masked_labels` are also excluded from the
    accuracy (e.g. out-of-vocabulary and end-of-sentence tokens).
    """

    num_classes: int
    to_batches: Callable[[tf.data.Dataset], tf.data.Dataset]
    masked_labels: tuple[int, ...] = ()
    accuracy_masked_labels: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True)
class TffDatasetSpec:
    """Where a TFF dataset's files live, how to load them and how to convert clients."""

    file: str
    module: str
    load_kwargs: dict
    converter: Callable[[str], Converter]  # data_dir -> Converter
    extra_files: tuple[str, ...] = ()
    # Per split of the SQLite file: (clients, examples), as TFF's `load_data` documents them;
    # a downloaded file is verified against these (`sqlite_problem`).
    published: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)


def _emnist(data_dir: str) -> Converter:
    return Converter(62, lambda ds: ds.batch(_CONVERT_BATCH).map(
        lambda b: (b['pixels'][..., tf.newaxis], b['label'])))


def _emnist_digits(data_dir: str) -> Converter:
    return dataclasses.replace(_emnist(data_dir), num_classes=10)


def _cifar100(data_dir: str) -> Converter:
    return Converter(100, lambda ds: ds.batch(_CONVERT_BATCH).map(
        lambda b: (tf.cast(b['image'], tf.float32) / 255.0, b['label'])))


def _shakespeare(data_dir: str) -> Converter:
    """Next-character prediction: sequences of 80 character ids (McMahan et al. 2017)."""
    from fl_tff import tff_compat
    client_spec, prep = tff_compat.shakespeare_preprocessing()
    pad, _, _, _ = prep.get_special_tokens()
    preprocess = prep.create_preprocess_fn(
        client_spec.ClientSpec(num_epochs=1, batch_size=_CONVERT_BATCH, shuffle_buffer_size=1))
    # Vocabulary plus pad, out-of-vocabulary, beginning and end of snippet.
    return Converter(len(prep.CHAR_VOCAB) + 4, preprocess, masked_labels=(pad,))


def read_word_counts(data_dir: str, vocab_size: int) -> list[str]:
    """The `vocab_size` most frequent words of `DIR/stackoverflow.word_count` ("word count" lines).

    Read directly: `load_word_counts` checks the sha256 of the archive it caches, so any copy
    but the original one (tiny test files included) would make it download.
    """
    words = []
    with open(os.path.join(data_dir, STACKOVERFLOW_WORD_COUNTS)) as f:
        for line in f:
            if line.strip():
                words.append(line.split()[0])
            if len(words) == vocab_size:
                break
    return words


def _stackoverflow_nwp(data_dir: str) -> Converter:
    """Next-word prediction over the 10,000 most frequent words (Reddi et al. 2021)."""
    from fl_tff import tff_compat
    prep = tff_compat.stackoverflow_preprocessing()
    vocab = read_word_counts(data_dir, STACKOVERFLOW_VOCAB_SIZE)
    to_ids = prep.build_to_ids_fn(vocab, STACKOVERFLOW_SEQUENCE_LENGTH)
    special = prep.get_special_tokens(len(vocab))
    return Converter(
        len(vocab) + 4,
        lambda ds: prep.batch_and_split(ds.map(to_ids), STACKOVERFLOW_SEQUENCE_LENGTH,
                                        _CONVERT_BATCH),
        masked_labels=(special.padding,),
        accuracy_masked_labels=(*special.out_of_vocab, special.end_of_sentence))


# The split sizes are those the docstrings of TFF's loaders state (TFF 0.87).
_EMNIST_SPLITS = {'all_train': (3400, 671_585), 'all_test': (3400, 77_483),
                  'digits_only_train': (3383, 341_873), 'digits_only_test': (3383, 40_832)}

TFF_DATASETS: dict[str, TffDatasetSpec] = {
    'emnist': TffDatasetSpec('emnist_all.sqlite', 'emnist', {'only_digits': True}, _emnist_digits,
                             published=_EMNIST_SPLITS),
    'emnist62': TffDatasetSpec('emnist_all.sqlite', 'emnist', {'only_digits': False}, _emnist,
                               published=_EMNIST_SPLITS),
    'cifar100': TffDatasetSpec('cifar100.sqlite', 'cifar100', {}, _cifar100,
                               published={'train': (500, 50_000), 'test': (100, 10_000)}),
    'shakespeare': TffDatasetSpec('shakespeare.sqlite', 'shakespeare', {}, _shakespeare,
                                  published={'train': (715, 16_068), 'test': (715, 2_356)}),
    'stackoverflow_nwp': TffDatasetSpec(
        'stackoverflow.sqlite', 'stackoverflow', {}, _stackoverflow_nwp,
        extra_files=(STACKOVERFLOW_WORD_COUNTS,),
        published={'train': (342_477, 135_818_730), 'heldout': (38_758, 16_491_230),
                   'test': (204_088, 16_586_035)}),
}


class MissingDatasetFileError(FileNotFoundError):
    """A file the dataset needs is not in the data directory."""


class TooManyClientsError(ValueError):
    """More clients were requested than the dataset has."""


def expected_file(name: str, data_dir: str) -> str:
    """The path `name`'s SQLite file must have."""
    return os.path.join(data_dir or '.', TFF_DATASETS[name].file)


# The tables of TFF's client-data SQLite files.
SQLITE_TABLES = ('examples', 'client_metadata')


def check_available(name: str, data_dir: str) -> None:
    """Raises MissingDatasetFileError naming the first expected file that is absent, or the
    SQLite file when it is not a database with TFF's tables (empty, truncated, another file)."""
    spec = TFF_DATASETS[name]
    for file in (spec.file, *spec.extra_files):
        path = os.path.join(data_dir, file) if data_dir else ''
        if not path or not os.path.isfile(path):
            where = os.path.abspath(path) if data_dir else f'<data_dir>/{file}'
            origin = (f'the file tff.simulation.datasets.{spec.module}.load_data caches, decompressed'
                      if file == spec.file else
                      'the word-count file of tff.simulation.datasets.stackoverflow.load_word_counts, '
                      'extracted from its archive')
            raise MissingDatasetFileError(
                f'{name} needs {where}: put {file} ({origin}) in the directory given by '
                '--data_dir, or add --download to fetch it')
    path = os.path.join(data_dir, spec.file)
    problem = sqlite_problem(path)
    if problem:
        raise MissingDatasetFileError(
            f'{name}: {os.path.abspath(path)} {problem}; expected TFF\'s client-data SQLite file '
            f'(tables {", ".join(SQLITE_TABLES)}) as tff.simulation.datasets.{spec.module}.load_data '
            'caches it')


def sqlite_problem(path: str, published: Optional[dict[str, tuple[int, int]]] = None) -> str:
    """Why `path` is not a readable TFF client-data SQLite file ('' when it is).

    Args:
      path: The file.
      published: When given, each split's (clients, examples) the file must hold, counted in its
        `client_metadata` table (a downloaded file is checked against TFF's documented sizes;
        copies made by hand and tests' tiny files are not).
    """
    try:
        uri = f'file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro'
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as connection:
            tables = {row[0] for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            pages = connection.execute('PRAGMA page_count').fetchone()[0]
            page_size = connection.execute('PRAGMA page_size').fetchone()[0]
            sizes = ({row[0]: (row[1], row[2]) for row in connection.execute(
                'SELECT split_name, COUNT(DISTINCT client_id), SUM(num_examples) '
                'FROM client_metadata GROUP BY split_name')}
                if published and 'client_metadata' in tables else {})
    except sqlite3.Error as e:
        return f'is not a readable SQLite database ({e})'
    if os.path.getsize(path) < pages * page_size:
        return (f'is truncated ({os.path.getsize(path)} bytes; its header says '
                f'{pages * page_size})')
    missing = [t for t in SQLITE_TABLES if t not in tables]
    if missing:
        return f'has no table {", ".join(missing)}' + (' (the file is empty)' if not tables and
                                                      os.path.getsize(path) == 0 else '')
    for split, (clients, examples) in (published or {}).items():
        found = sizes.get(split)
        if found is None:
            return f'has no split {split!r} in its client_metadata table'
        if found != (clients, examples):
            return (f'has {found[0]} clients and {found[1]} examples in split {split!r}; TFF '
                    f'publishes {clients} clients and {examples} examples')
    return ''


def load_tff_dataset(name: str, data_dir: str, num_clients: int, seed: int) -> ArrayDataset:
    """A seeded sample of `num_clients` clients of TFF dataset `name`, in memory.

    Returns an ArrayDataset whose `natural_partition` / `natural_test_partition` are each
    client's train / test examples as TFF splits them (Stack Overflow: its `train` and `test`
    splits; its `heldout` split is not used). Its arrays are read-only: the last sample loaded
    is kept for the process (runs of one setting load its clients once; one sample of the full
    EMNIST-62 is about 2 GB, so only one is kept), until its files change.
    """
    check_available(name, data_dir)
    spec = TFF_DATASETS[name]
    files = tuple(os.path.join(data_dir, f) for f in (spec.file, *spec.extra_files))
    stamps = tuple((os.path.abspath(f), os.stat(f).st_mtime_ns, os.stat(f).st_size)
                   for f in files)
    return _load_sample(name, data_dir, num_clients, seed, stamps)


@functools.lru_cache(maxsize=1)
def _load_sample(name: str, data_dir: str, num_clients: int, seed: int,
                 stamps: tuple) -> ArrayDataset:
    """`load_tff_dataset`'s work; `stamps` (the files' paths, times and sizes) key the cache."""
    del stamps
    import tensorflow_federated as tff
    spec = TFF_DATASETS[name]
    converter = spec.converter(data_dir)
    module = getattr(tff.simulation.datasets, spec.module)
    splits = module.load_data(cache_dir=data_dir, **spec.load_kwargs)
    train, test = splits[0], splits[-1]
    ids = sorted(train.client_ids)
    if num_clients > len(ids):
        raise TooManyClientsError(f'{name} has {len(ids)} clients; {num_clients} requested is too many')
    chosen = sorted(np.random.default_rng(seed).choice(ids, size=num_clients, replace=False))
    test_ids = set(test.client_ids)
    xs, ys, train_parts, test_parts, start = [], [], [], [], 0
    for side, parts in ((train, train_parts), (test, test_parts)):
        for cid in chosen:
            if side is test and cid not in test_ids:
                x, y = xs[0][:0], ys[0][:0]
            else:
                x, y = _materialize(converter.to_batches(side.create_tf_dataset_for_client(cid)))
            xs.append(x)
            ys.append(y)
            parts.append(np.arange(start, start + len(y)))
            start += len(y)
    x, y = np.concatenate(xs), np.concatenate(ys)
    for array in (x, y, *train_parts, *test_parts):
        array.setflags(write=False)  # Shared by every caller of the cache.
    return ArrayDataset(name, x, y, converter.num_classes,
                        natural_partition=train_parts, natural_test_partition=test_parts,
                        masked_labels=converter.masked_labels,
                        accuracy_masked_labels=converter.accuracy_masked_labels)


def _materialize(batches: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """All `(x, y)` batches as two arrays: float32 features, or int32 token ids, and int32 labels."""
    x_spec, y_spec = batches.element_spec
    xs, ys = [], []
    for x, y in batches.as_numpy_iterator():
        xs.append(x)
        ys.append(y)
    x_dtype = np.float32 if x_spec.dtype.is_floating else np.int32
    if not xs:
        return (np.zeros([0, *x_spec.shape[1:]], x_dtype), np.zeros([0, *y_spec.shape[1:]], np.int32))
    return np.concatenate(xs).astype(x_dtype), np.concatenate(ys).astype(np.int32)
