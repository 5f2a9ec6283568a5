"""Generated client data: deterministic per client id, distinct across clients."""

import numpy as np

from fl_tff.data.generated import generated_client_data


def _examples(client_data, cid):
    return next(iter(client_data.create_tf_dataset_for_client(cid).batch(1000)))


def test_same_id_same_examples_and_different_ids_differ():
    data = generated_client_data(10_000, 50, features=8, num_classes=3, seed=1)
    assert len(data.client_ids) == 10_000 and data.client_ids[7] == '0007'
    a, again, other = (_examples(data, cid) for cid in ('0007', '0007', '0008'))
    np.testing.assert_array_equal(a['x'], again['x'])
    assert a['x'].shape == (50, 8) and not np.array_equal(a['x'], other['x'])
    assert set(np.unique(a['y'])) <= {0, 1, 2}
    assert not np.array_equal(a['x'], _examples(generated_client_data(10_000, 50, features=8,
                                                                      seed=2), '0007')['x'])


def test_examples_of_a_given_shape_hold_the_same_values_as_flat_ones():
    """An image shape (the EMNIST CNN's) reshapes the same stateless draw: same id, same
    values."""
    images = _examples(generated_client_data(20, 5, features=(4, 4, 1), seed=3), '07')
    flat = _examples(generated_client_data(20, 5, features=16, seed=3), '07')
    assert images['x'].shape == (5, 4, 4, 1)
    np.testing.assert_array_equal(np.reshape(images['x'], (5, 16)), flat['x'])
    np.testing.assert_array_equal(images['y'], flat['y'])
