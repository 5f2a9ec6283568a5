"""Fixtures shared by the algorithm tests."""

import pytest

from fl_tff import models, simulation


@pytest.fixture(scope='module')
def setup(skewed_digits):
    """(model_fn, selection fn): a small 2NN and 4 clients a round, 2 epochs, batch 8."""
    model_fn, _ = models.model_fn_for_dataset('2nn', skewed_digits.element_spec, 10, seed=4,
                                              hidden_units=32)
    select = simulation.build_training_selection_fn(
        skewed_digits.train, clients_per_round=4, epochs=2, batch_size=8, seed=11)
    return model_fn, select


@pytest.fixture(scope='module')
def keras_fn(skewed_digits):
    """The Keras factory behind `setup`'s model_fn (same architecture and seed)."""
    return models.model_fn_for_dataset('2nn', skewed_digits.element_spec, 10, seed=4,
                                       hidden_units=32)[1]
