"""ClientData construction and train/test sides."""

import dataclasses

import numpy as np
import tensorflow as tf

from fl_tff import data
from fl_tff.data import partition


def _as_arrays(dataset):
    items = list(dataset.as_numpy_iterator())
    return np.stack([i['x'] for i in items]), np.array([i['y'] for i in items])


def test_digits_loads_offline_with_expected_shapes(digits):
    assert digits.x.shape == (1797, 8, 8, 1) and digits.x.dtype == np.float32
    assert 0.0 <= digits.x.min() and digits.x.max() <= 1.0
    assert sorted(np.unique(digits.y)) == list(range(10))


def test_client_datasets_hold_exactly_their_partition(digits):
    parts = partition.dirichlet(digits.y, 8, seed=1, alpha=0.5)
    client_data = data.client_data_from_arrays(digits.x, digits.y, parts)
    assert len(client_data.client_ids) == 8
    for cid, idx in zip(client_data.client_ids, parts):
        x, y = _as_arrays(client_data.create_tf_dataset_for_client(cid))
        np.testing.assert_array_equal(x, digits.x[idx])
        np.testing.assert_array_equal(y, digits.y[idx])


def test_traced_dataset_fn_matches_eager_one(digits):
    parts = partition.iid(digits.y, 4, seed=0)
    client_data = data.client_data_from_arrays(digits.x, digits.y, parts)
    fn = tf.function(client_data.serializable_dataset_fn)
    traced = fn(tf.constant(client_data.client_ids[2]))
    np.testing.assert_array_equal(_as_arrays(traced)[1], digits.y[parts[2]])


def test_train_and_test_sides_are_disjoint_and_cover_each_client(digits):
    parts = partition.shards(digits.y, 10, seed=0, classes_per_client=2)
    fed = data.build_federated_data(digits, parts, test_fraction=0.25, seed=0)
    assert fed.train.client_ids == fed.test.client_ids
    total_test = 0
    for cid, idx in zip(fed.train.client_ids, parts):
        _, y_train = _as_arrays(fed.train.create_tf_dataset_for_client(cid))
        _, y_test = _as_arrays(fed.test.create_tf_dataset_for_client(cid))
        assert len(y_train) + len(y_test) == idx.size
        assert abs(len(y_test) - 0.25 * idx.size) <= 1
        # Both sides come from the client's own (2-class) distribution.
        assert set(y_test) <= set(digits.y[idx])
        total_test += len(y_test)
    assert fed.test_x.shape[0] == total_test == fed.summary['test_examples']
    assert fed.element_spec['x'].shape == (8, 8, 1)


def test_heldout_clients_are_whole_clients_never_trained_on():
    from fl_tff import experiment
    from fl_tff.config import ExperimentConfig
    base = ExperimentConfig(num_clients=20, heldout_clients=0)
    fed = experiment.load_federated_data(dataclasses.replace(base, heldout_clients=4))
    assert len(fed.train.client_ids) == 20 and len(fed.heldout.client_ids) == 4
    heldout_n = sum(len(list(fed.heldout.create_tf_dataset_for_client(c)))
                    for c in fed.heldout.client_ids)
    # Every digit is in exactly one place: a training client's train or test side, or a held-out client.
    assert fed.summary['num_examples'] + fed.summary['test_examples'] + heldout_n == 1797
    assert fed.summary['heldout_clients'] == 4
    again = experiment.load_federated_data(dataclasses.replace(base, heldout_clients=4))
    assert np.array_equal(fed.train_x, again.train_x)  # Seeded.
    assert experiment.load_federated_data(base).heldout is None
    # Their train and test sides (fine-tuning at evaluation) split exactly their examples.
    for cid in fed.heldout.client_ids:
        def ys(data):
            return sorted(int(e['y']) for e in data.create_tf_dataset_for_client(cid))
        train, test = ys(fed.heldout_train), ys(fed.heldout_test)
        assert train and sorted(train + test) == ys(fed.heldout)
