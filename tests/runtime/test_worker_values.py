"""Per-client values read from files inside the worker, and written there by it: every dtype
and shape, refused types."""

import numpy as np
import pytest
import tensorflow_federated as tff

from fl_tff.runtime import worker_values


def test_a_value_file_reads_back_every_dtype_and_shape_and_strings_are_refused(
        tff_runtime, tmp_path):
    value_type = tff.StructType([
        ('weights', tff.TensorType(np.float32, [3, 2])), ('count', tff.TensorType(np.int64, [])),
        ('mask', tff.TensorType(np.bool_, [4])), ('empty', tff.TensorType(np.float32, [0])),
        ('wide', tff.TensorType(np.float64, [2]))])
    value = [np.arange(6, dtype=np.float32).reshape(3, 2), np.int64(-7),
             np.array([True, False, True, True]), np.zeros([0], np.float32),
             np.array([1e300, -2.5])]
    read = worker_values.build_reader(value_type)(
        worker_values.write(str(tmp_path / 'value.bin'), value))
    for name, expected in zip(('weights', 'count', 'mask', 'empty', 'wide'), value):
        np.testing.assert_array_equal(read[name], expected)
        assert np.asarray(read[name]).dtype == np.asarray(expected).dtype
    masks = np.array([0, 1, -2 ** 31, 2 ** 31 - 1], np.int32)  # A lone tensor: SecAgg's masks.
    np.testing.assert_array_equal(worker_values.build_reader(tff.TensorType(np.int32, [4]))(
        worker_values.write(str(tmp_path / 'mask.bin'), [masks])), masks)
    with pytest.raises(TypeError, match='cannot be read from a file'):
        worker_values.build_reader(tff.StructType([tff.TensorType(np.str_, [])]))


def test_a_value_the_worker_writes_reads_back_in_the_driver_for_every_dtype_and_shape(
        tff_runtime, tmp_path):
    value_type = tff.StructType([
        ('weights', tff.TensorType(np.float32, [3, 2])), ('count', tff.TensorType(np.int64, [])),
        ('mask', tff.TensorType(np.bool_, [4])), ('empty', tff.TensorType(np.float32, [0])),
        ('wide', tff.TensorType(np.float64, [2])), ('small', tff.TensorType(np.int8, [3]))])
    value = [np.arange(6, dtype=np.float32).reshape(3, 2) - 2.5, np.int64(-7),
             np.array([True, False, True, True]), np.zeros([0], np.float32),
             np.array([1e300, -2.5]), np.array([-128, 0, 127], np.int8)]
    path = str(tmp_path / 'value.bin')
    out = worker_values.build_writer(value_type)(value, path)
    assert out == (path + '.out').encode()
    read = worker_values.read_written(out, value_type)
    assert len(read) == len(value)
    for got, expected in zip(read, value):
        np.testing.assert_array_equal(got, expected)
        assert got.dtype == np.asarray(expected).dtype and got.shape == np.shape(expected)
        assert got.flags.writeable
    with pytest.raises(ValueError, match=r'holds 55 bytes; a <float32\[12\]> takes 48'):
        worker_values.read_written(out, tff.StructType([tff.TensorType(np.float32, [12])]))
    with pytest.raises(TypeError, match='cannot be read from a file'):
        worker_values.build_writer(tff.TensorType(np.str_, []))


def test_round_files_are_removed_after_the_round_and_only_clients_values_become_paths(
        federated_tracing, tmp_path):
    with worker_values.round_files(str(tmp_path / 'values'), [[np.ones(3, np.float32)]] * 2) as paths:
        assert [np.fromfile(p, np.float32).tolist() for p in paths] == [[1.0] * 3] * 2
    assert list((tmp_path / 'values').iterdir()) == []

    @tff.federated_computation(tff.FederatedType(np.float32, tff.SERVER),
                               tff.FederatedType(np.float32, tff.CLIENTS),
                               tff.FederatedType(np.float32, tff.SERVER))
    def next_fn(a, b, c):
        return a, tff.federated_sum(b), c
    with pytest.raises(TypeError, match='not CLIENTS-placed'):
        worker_values.read_from_paths(next_fn, 0)
    composed = worker_values.read_from_paths(next_fn, 1)
    assert composed.type_signature.parameter[1] == tff.FederatedType(np.str_, tff.CLIENTS)
    with pytest.raises(TypeError, match='result 1 of next is float32@SERVER, not CLIENTS'):
        worker_values.read_from_paths(next_fn, 1, result_position=1)

    @tff.federated_computation(tff.FederatedType(np.float32, tff.SERVER),
                               tff.FederatedType(np.float32, tff.CLIENTS),
                               tff.FederatedType(np.float32, tff.SERVER))
    def with_client_results(a, b, c):
        return a, tff.federated_map(tff.tensorflow.computation(lambda x: x + 1.0, np.float32), b), c
    both = worker_values.read_from_paths(with_client_results, 1, result_position=1)
    assert both.type_signature.result[1] == tff.FederatedType(np.str_, tff.CLIENTS)
