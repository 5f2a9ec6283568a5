"""Client files: written once, read back as the same clients, examples, order and dtypes; a
write that fails leaves nothing behind."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from fl_tff.data import client_files


def _arrays(client_data, cid):
    return {k: v.numpy() for k, v in next(iter(
        client_data.create_tf_dataset_for_client(cid).batch(100_000))).items()}


def test_files_hold_the_same_examples_in_the_same_order(tmp_path, skewed_digits):
    written = client_files.write_client_files(skewed_digits.train, str(tmp_path / 'train'))
    assert written.client_ids == skewed_digits.train.client_ids
    assert written.element_type_structure == skewed_digits.train.element_type_structure
    for cid in skewed_digits.train.client_ids:
        ours, original = _arrays(written, cid), _arrays(skewed_digits.train, cid)
        for key in original:
            assert ours[key].dtype == original[key].dtype
            np.testing.assert_array_equal(ours[key], original[key])
    # The traced reader (what the worker runs) reads the same file.
    traced = tf.function(written.serializable_dataset_fn)(tf.constant(written.client_ids[1]))
    np.testing.assert_array_equal(next(iter(traced.batch(100_000)))['y'].numpy(),
                                  _arrays(skewed_digits.train, written.client_ids[1])['y'])
    assert sorted(os.listdir(tmp_path)) == ['train']  # No partial directory left.


def test_an_unsafe_client_id_is_refused_and_nothing_is_left(tmp_path):
    data = tff.simulation.datasets.TestClientData({'a/b': {'x': np.zeros([2, 3], np.float32)}})
    with pytest.raises(ValueError, match="client id 'a/b' is not a safe file name"):
        client_files.write_client_files(data, str(tmp_path / 'out'))
    assert os.listdir(tmp_path) == []


def test_a_client_without_examples_reads_back_empty(tmp_path):
    data = tff.simulation.datasets.TestClientData({
        'full': {'x': np.arange(6, dtype=np.float32).reshape(3, 2), 'y': np.array([1, 2, 3])},
        'empty': {'x': np.zeros([0, 2], np.float32), 'y': np.zeros([0], np.int64)}})
    written = client_files.write_client_files(data, str(tmp_path / 'out'))
    assert list(written.create_tf_dataset_for_client('empty')) == []
    np.testing.assert_array_equal(_arrays(written, 'full')['x'], np.arange(6).reshape(3, 2))
