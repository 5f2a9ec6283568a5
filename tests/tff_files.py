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
