"""Keras factories and model_fn builders."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from fl_tff import models


SEQUENCE_MODELS = ('char_lstm', 'word_lstm')
from fl_tff.models.losses import MaskedSparseCategoricalCrossentropy
from tests.helpers import valid_choices

ELEMENT_SPEC = {'x': tf.TensorSpec([8, 8, 1], tf.float32), 'y': tf.TensorSpec([], tf.int32)}
SEQUENCE_SPEC = {'x': tf.TensorSpec([5], tf.int32), 'y': tf.TensorSpec([5], tf.int32)}


def _spec(name):
    return SEQUENCE_SPEC if name in SEQUENCE_MODELS else ELEMENT_SPEC


def _small(name):
    return {'hidden_units': 8} if name in SEQUENCE_MODELS else {}


@pytest.mark.parametrize('name', sorted(models.MODELS))
def test_model_fn_builds_a_variable_model_with_the_dataset_input_spec(name):
    spec = _spec(name)
    model_fn, keras_fn = models.model_fn_for_dataset(name, spec, 10, seed=0, **_small(name))
    with tf.Graph().as_default():
        model = model_fn()
    assert isinstance(model, tff.learning.models.VariableModel)
    assert model.input_spec['x'].shape.as_list() == [None, *spec['x'].shape]
    logits = keras_fn()(np.zeros([3, *spec['x'].shape], spec['x'].dtype.as_numpy_dtype))
    assert logits.shape == (3, *spec['y'].shape, 10)


@pytest.mark.parametrize('name', sorted(models.MODELS))
def test_initial_weights_depend_only_on_the_seed(name):
    def weights(seed):
        _, keras_fn = models.model_fn_for_dataset(name, _spec(name), 10, seed=seed, **_small(name))
        return keras_fn().get_weights()

    a, b, c = weights(1), weights(1), weights(2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_2nn_width_is_configurable():
    h = 17
    model = models.mlp_2nn([8, 8, 1], 10, hidden_units=h)
    assert model.count_params() == 64 * h + h + h * h + h + h * 10 + 10


def test_unknown_model_lists_valid_choices():
    with pytest.raises(ValueError, match=f"unknown model 'resnet'; valid choices: {valid_choices(models.MODELS)}$"):
        models.keras_model_factory('resnet', [8, 8, 1], 10)


def test_masked_loss_is_the_mean_over_unmasked_tokens():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, size=[4, 7]).astype(np.int32)
    labels[:, 5:] = 0  # Padding.
    logits = rng.normal(size=[4, 7, 6]).astype(np.float32)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    per_token = -np.take_along_axis(log_probs, labels[..., None], -1)[..., 0]
    expected = per_token[labels != 0].mean()
    assert float(MaskedSparseCategoricalCrossentropy((0,))(labels, logits)) == pytest.approx(expected, 1e-5)
    # Padding-only batch: 0, not NaN.
    assert float(MaskedSparseCategoricalCrossentropy((0,))(np.zeros_like(labels), logits)) == 0.0


def test_sequence_model_fn_reports_tffs_masked_accuracy():
    model_fn, _ = models.model_fn_for_dataset('char_lstm', SEQUENCE_SPEC, 10, hidden_units=4,
                                              masked_labels=(0,), accuracy_masked_labels=(9,))
    with tf.Graph().as_default():
        finalizers = model_fn().metric_finalizers()
    assert 'accuracy' in finalizers and 'sparse_categorical_accuracy' not in finalizers


def test_the_lstm_layer_computes_what_keras_lstm_computes_with_the_same_weights():
    """fl_tff's LSTM (`RNN(LSTMCell)`, which traces once) against Keras' `layers.LSTM` with the
    same weights, padding masked, in a graph as TFF traces it."""
    from fl_tff.models import keras_models
    model = keras_models.char_lstm([6], 12, seed=3, hidden_units=5)
    reference = tf.keras.Sequential([
        tf.keras.layers.InputLayer(input_shape=(6,), dtype=tf.int32),
        tf.keras.layers.Embedding(12, 8, mask_zero=True),
        tf.keras.layers.LSTM(5, return_sequences=True),
        tf.keras.layers.LSTM(5, return_sequences=True),
        tf.keras.layers.Dense(12)])
    reference.set_weights(model.get_weights())
    tokens = np.array([[3, 4, 5, 0, 0, 0], [1, 2, 3, 4, 5, 6], [7, 0, 0, 0, 0, 0]], np.int32)
    ours, theirs = tf.function(model)(tokens), tf.function(reference)(tokens)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-6)
    assert np.abs(theirs.numpy()).max() > 1e-3  # Not a vacuous zero.
