"""A client's round as one element: its steps (across epochs or per epoch), its seeded shuffles,
and the local loop that walks the steps in order with [noise seed, step] per step."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from fl_tff.data import client_rounds
from tests.helpers import to_batches


def _examples(n):
    return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
        x=np.arange(n, dtype=np.float32)[:, None] * np.ones([1, 3], np.float32),
        y=np.arange(n, dtype=np.int32)))


def _steps(round_dataset):
    return [b['y'].numpy().tolist() for b in to_batches(round_dataset)]


def test_steps_run_across_epochs_reshuffled_each_epoch_and_seeded():
    def steps(seed):
        return _steps(client_rounds.make_round(_examples(10), epochs=3, batch_size=4, shuffle_seed=seed))

    batches = steps(5)
    assert [len(b) for b in batches] == [4] * 7 + [2]
    flat = sum(batches, [])
    for epoch in range(3):
        assert sorted(flat[10 * epoch:10 * epoch + 10]) == list(range(10))
    assert flat[:10] != flat[10:20]  # Reshuffled each epoch.
    assert steps(5) == batches and steps(6) != batches
    element = next(iter(client_rounds.make_round(_examples(10), epochs=3, batch_size=4,
                                                 shuffle_seed=5, noise_seed=77)))
    assert int(element['client_examples']) == 10 and int(element['noise_seed']) == 77


def test_steps_per_epoch_stop_at_epoch_boundaries_with_the_same_examples():
    across = client_rounds.make_round(_examples(10), epochs=3, batch_size=4, shuffle_seed=5)
    per_epoch = client_rounds.make_round(_examples(10), epochs=3, batch_size=4, shuffle_seed=5,
                                         batch_per_epoch=True)
    batches = _steps(per_epoch)
    assert [len(b) for b in batches] == [4, 4, 2] * 3
    assert sum(batches, []) == sum(_steps(across), [])
    for epoch in range(3):
        assert sorted(sum(batches[3 * epoch:3 * epoch + 3], [])) == list(range(10))


def test_in_a_graph_with_tensor_seeds_the_round_is_the_same_as_eagerly():
    """What a TFF dataset computation does in the worker: the same ops, the same steps."""
    eager = next(iter(client_rounds.make_round(_examples(9), epochs=2, batch_size=4,
                                               shuffle_seed=3, noise_seed=8)))

    @tf.function
    def in_graph(epochs, seed, noise_seed):
        return client_rounds.make_round(_examples(9), epochs=epochs, batch_size=4,
                                        shuffle_seed=seed, noise_seed=noise_seed).get_single_element()

    traced = in_graph(tf.constant(2), tf.constant(3, tf.int64), tf.constant(8, tf.int64))
    for key in eager:
        np.testing.assert_array_equal(eager[key].numpy(), traced[key].numpy())


def test_an_empty_client_is_one_element_with_no_steps():
    element = next(iter(client_rounds.make_round(_examples(0), epochs=2, batch_size=4,
                                                 shuffle_seed=1)))
    assert element['x'].shape == (0, 3) and element['step_sizes'].shape == (0,)


def test_local_steps_walk_the_slices_in_order_with_noise_seed_and_step():
    element = next(iter(client_rounds.make_round(_examples(11), epochs=2, batch_size=3,
                                                 shuffle_seed=2, noise_seed=41)))

    @tf.function
    def walk(element):
        def step(state, batch):
            weighted, seeds, sizes = state
            i = tf.cast(batch['noise_seed'][1], tf.float32)
            return (weighted + (i + 1.0) * tf.reduce_sum(tf.cast(batch['y'], tf.float32)),
                    seeds + batch['noise_seed'][0], sizes + tf.size(batch['y']))
        return client_rounds.run_local_steps(element, step, (0.0, tf.constant(0, tf.int64), 0))

    weighted, seeds, sizes = walk(element)
    batches = [b['y'].numpy() for b in to_batches(tf.data.Dataset.from_tensors(element))]
    assert float(weighted) == pytest.approx(sum((i + 1) * b.sum() for i, b in enumerate(batches)))
    assert int(seeds) == 41 * len(batches) and int(sizes) == 22


def test_from_batches_keeps_the_batches_as_steps():
    batched = _examples(10).batch(4)
    round_dataset = client_rounds.from_batches(batched, noise_seed=3)
    assert _steps(round_dataset) == [b['y'].tolist() for b in batched.as_numpy_iterator()]
    element = next(iter(round_dataset))
    assert int(element['client_examples']) == 10 and int(element['noise_seed']) == 3
