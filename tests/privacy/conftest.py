"""Fixtures for the DP training tests: a small 2NN on skewed digits, 4 clients a round."""

import pytest

from fl_tff import models


@pytest.fixture(scope='module')
def model_fn(skewed_digits):
    return models.model_fn_for_dataset('2nn', skewed_digits.element_spec, 10, seed=4,
                                       hidden_units=32)[0]
