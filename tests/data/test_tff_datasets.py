"""TFF's SQLite datasets load offline from tiny files in the same format; a missing file is one
clear error naming it."""

import sqlite3

import numpy as np
import pytest
import tensorflow as tf

from fl_tff import experiment
from fl_tff.config import ConfigError, ExperimentConfig
from fl_tff.data import tff_datasets

RNG = np.random.default_rng(0)


def _example(features: dict) -> bytes:
    def feature(v):
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


def _emnist_split(n_clients, n_examples, classes):
    return {f'f{i:04d}_00': [_example({'pixels': RNG.random(784).astype(np.float32),
                                       'label': [int(RNG.integers(classes))]})
                             for _ in range(n_examples + i)] for i in range(n_clients)}


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp('tff_data')
    write_sqlite(d / 'emnist_all.sqlite', {
        'digits_only_train': _emnist_split(5, 12, 10), 'digits_only_test': _emnist_split(5, 3, 10),
        'all_train': _emnist_split(4, 10, 62), 'all_test': _emnist_split(4, 2, 62)})
    cifar = lambda n, m: {f'c{i}': [_example({'image': RNG.integers(0, 256, 32 * 32 * 3),
                                              'label': [int(RNG.integers(100))],
                                              'coarse_label': [int(RNG.integers(20))]})
                                    for _ in range(m)] for i in range(n)}
    write_sqlite(d / 'cifar100.sqlite', {'train': cifar(3, 6), 'test': cifar(3, 2)})
    return str(d)


@pytest.mark.parametrize('name,clients,shape,classes,train_sizes,test_sizes', [
    ('emnist', 3, (28, 28, 1), 10, None, 3),
    ('emnist62', 4, (28, 28, 1), 62, [10, 11, 12, 13], 2),
    ('cifar100', 2, (32, 32, 3), 100, [6, 6], 2),
])
def test_loads_offline_with_tffs_own_train_test_split(data_dir, name, clients, shape, classes,
                                                      train_sizes, test_sizes):
    ds = tff_datasets.load_tff_dataset(name, data_dir, clients, seed=0)
    assert ds.x.shape[1:] == shape and ds.num_classes == classes
    assert len(ds.natural_partition) == len(ds.natural_test_partition) == clients
    if train_sizes:
        assert [p.size for p in ds.natural_partition] == train_sizes
    assert all(p.size >= test_sizes for p in ds.natural_test_partition)
    assert 0.0 <= ds.x.min() and ds.x.max() <= 1.0
    again = tff_datasets.load_tff_dataset(name, data_dir, clients, seed=0)
    assert np.array_equal(ds.x, again.x)


def test_missing_file_is_one_error_naming_the_file_and_flag(tmp_path):
    with pytest.raises(ConfigError, match=r'--data_dir: emnist needs .*emnist_all.sqlite: put '
                                          r'emnist_all.sqlite .* in the directory given by --data_dir'):
        ExperimentConfig(dataset='emnist', data_dir=str(tmp_path)).validate()
    with pytest.raises(ConfigError, match=r'--data_dir: cifar100 needs <data_dir>/cifar100.sqlite'):
        ExperimentConfig(dataset='cifar100').validate()


def test_too_many_clients_names_the_flag(data_dir, tmp_path):
    config = ExperimentConfig(dataset='emnist', data_dir=data_dir, num_clients=9, clients_per_round=2,
                              output_dir=str(tmp_path))
    with pytest.raises(ConfigError, match='--num_clients: emnist has 5 clients'):
        experiment.run_experiment(config, log=lambda _: None)


def test_trains_end_to_end_on_a_tiny_emnist_file(tff_runtime, data_dir, tmp_path):
    config = ExperimentConfig(dataset='emnist', data_dir=data_dir, num_clients=5, clients_per_round=2,
                              model='cnn', rounds=2, eval_every=1, output_dir=str(tmp_path),
                              client_batch_size=4)
    result = experiment.run_experiment(config, log=lambda _: None)
    assert len(result.history) == 2 and 'test_accuracy' in result.history[-1]
    assert result.history[-1]['fed_eval_clients'] == 5
