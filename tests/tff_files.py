"""Tiny files in the format of TFF's SQLite datasets (`tff.simulation.datasets`), written by
tests: the real datasets cannot be downloaded here."""

import sqlite3

import numpy as np
import tensorflow as tf


def example(features: dict) -> bytes:
    """A serialized `tf.train.Example` of `features` (bytes, floats or integers)."""
    def feature(v):
        if isinstance(v, bytes):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))
        v = np.asarray(v)
        if v.dtype.kind == 'f':
            return tf.train.Feature(float_list=tf.train.FloatList(value=v.ravel()))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=v.ravel()))
    return tf.train.Example(features=tf.train.Features(
        feature={k: feature(v) for k, v in features.items()})).SerializeToString()


def write_sqlite(path, splits: dict[str, dict[str, list[bytes]]]) -> None:
    """A database in TFF's SqlClientData format."""
    con = sqlite3.connect(path)
    con.execute('CREATE TABLE examples (split_name TEXT NOT NULL, client_id TEXT NOT NULL, '
                'serialized_example_proto BLOB NOT NULL)')
    con.execute('CREATE TABLE client_metadata (client_id TEXT NOT NULL, split_name TEXT NOT NULL, '
                'num_examples INTEGER NOT NULL)')
    for split, clients in splits.items():
        for cid, protos in clients.items():
            con.executemany('INSERT INTO examples VALUES (?, ?, ?)', [(split, cid, p) for p in protos])
            con.execute('INSERT INTO client_metadata VALUES (?, ?, ?)', (cid, split, len(protos)))
    con.commit()
    con.close()


def write_shakespeare(directory, clients: int = 4, lines: int = 6) -> None:
    """`shakespeare.sqlite` whose clients' lines repeat a short pattern (learnable next
    characters)."""
    plays = lambda n, m: {f'PLAY_{i}': [example({'snippets': ('to be or not ' * 9).encode()})
                                        for _ in range(m)] for i in range(n)}
    write_sqlite(f'{directory}/shakespeare.sqlite', {'train': plays(clients, lines),
                                                     'test': plays(clients, 1)})


SO_SENTENCE = b'how to sort a list in python'


def _emnist_split(rng, n_clients, n_examples, classes):
    return {f'f{i:04d}_00': [example({'pixels': rng.random(784).astype(np.float32),
                                      'label': [int(rng.integers(classes))]})
                             for _ in range(n_examples + i)] for i in range(n_clients)}


def write_every_dataset(d) -> None:
    """Tiny files of every TFF dataset fl_tff reads, in directory `d`: EMNIST (5 digit writers,
    4 writers of 62 classes), CIFAR-100 (3 clients), Shakespeare (4 speakers), Stack Overflow
    (3 users) and its word counts."""
    rng = np.random.default_rng(0)
    write_sqlite(f'{d}/emnist_all.sqlite', {
        'digits_only_train': _emnist_split(rng, 5, 12, 10),
        'digits_only_test': _emnist_split(rng, 5, 3, 10),
        'all_train': _emnist_split(rng, 4, 10, 62), 'all_test': _emnist_split(rng, 4, 2, 62)})
    cifar = lambda n, m: {f'c{i}': [example({'image': rng.integers(0, 256, 32 * 32 * 3),
                                             'label': [int(rng.integers(100))],
                                             'coarse_label': [int(rng.integers(20))]})
                                    for _ in range(m)] for i in range(n)}
    write_sqlite(f'{d}/cifar100.sqlite', {'train': cifar(3, 6), 'test': cifar(3, 2)})
    write_shakespeare(d)
    so = lambda n, m: {f'{i:08d}': [example({
        'tokens': SO_SENTENCE, 'creation_date': b'2010-01-01', 'score': [1], 'tags': b'python',
        'title': b'a title', 'type': b'question'}) for _ in range(m)] for i in range(n)}
    write_sqlite(f'{d}/stackoverflow.sqlite', {'train': so(3, 4), 'heldout': so(1, 1),
                                               'test': so(3, 2)})
    with open(f'{d}/stackoverflow.word_count', 'w') as f:
        f.write('the 90\nhow 80\nto 70\npython 60\n')
