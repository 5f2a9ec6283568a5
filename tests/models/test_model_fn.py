"""Keras factories and model_fn builders."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from fl_tff import models

ELEMENT_SPEC = {'x': tf.TensorSpec([8, 8, 1], tf.float32), 'y': tf.TensorSpec([], tf.int32)}


@pytest.mark.parametrize('name', sorted(models.MODELS))
def test_model_fn_builds_a_variable_model_with_the_dataset_input_spec(name):
    model_fn, keras_fn = models.model_fn_for_dataset(name, ELEMENT_SPEC, 10, seed=0)
    with tf.Graph().as_default():
        model = model_fn()
    assert isinstance(model, tff.learning.models.VariableModel)
    assert model.input_spec['x'].shape.as_list() == [None, 8, 8, 1]
    logits = keras_fn()(np.zeros([3, 8, 8, 1], np.float32))
    assert logits.shape == (3, 10)


@pytest.mark.parametrize('name', sorted(models.MODELS))
def test_initial_weights_depend_only_on_the_seed(name):
    def weights(seed):
        _, keras_fn = models.model_fn_for_dataset(name, ELEMENT_SPEC, 10, seed=seed)
        return keras_fn().get_weights()

    a, b, c = weights(1), weights(1), weights(2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_2nn_width_is_configurable():
    h = 17
    model = models.mlp_2nn([8, 8, 1], 10, hidden_units=h)
    assert model.count_params() == 64 * h + h + h * h + h + h * 10 + 10


def test_unknown_model_lists_valid_choices():
    with pytest.raises(ValueError, match=r"unknown model 'resnet'; valid choices: \['2nn', 'cnn', 'logreg'\]"):
        models.keras_model_factory('resnet', [8, 8, 1], 10)
