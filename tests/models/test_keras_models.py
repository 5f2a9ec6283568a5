"""The registered Keras models have the papers' shapes: parameter counts worked out by hand from
each paper's layer list."""

import numpy as np
import pytest

from fl_tff.models import keras_models


def _parameters(model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def test_emnist_cnn_is_reddi_et_al_s_cnn_on_emnist_62():
    """conv 3x3x1x32 (+32), conv 3x3x32x64 (+64), 28 -> 26 -> 24 -> pooled 12x12x64 = 9216
    features, dense 9216x128 (+128), dense 128x62 (+62): 1,206,590."""
    by_hand = (3 * 3 * 1 * 32 + 32) + (3 * 3 * 32 * 64 + 64) + (12 * 12 * 64 * 128 + 128) + (128 * 62 + 62)
    assert by_hand == 1_206_590
    model = keras_models.MODELS.get('emnist_cnn').build((28, 28, 1), 62, seed=0)
    assert _parameters(model) == by_hand
    assert model(np.zeros((2, 28, 28, 1), np.float32)).shape == (2, 62)


def test_word_lstm_is_the_stack_overflow_lstm_at_a_10k_vocabulary():
    """10,000 words + pad, out-of-vocabulary, begin and end = 10,004 tokens; embedding 96, LSTM
    670 (4 gates over [input 96, state 670] + bias), dense 96, logits: 4,050,748."""
    vocab = 10_004
    by_hand = vocab * 96 + 4 * (670 * (96 + 670) + 670) + (670 * 96 + 96) + (96 * vocab + vocab)
    assert by_hand == 4_050_748
    model = keras_models.MODELS.get('word_lstm').build((20,), vocab, seed=0)
    assert _parameters(model) == by_hand


@pytest.mark.parametrize('name', ['emnist_cnn', 'cnn', '2nn', 'logreg'])
def test_image_models_are_seeded(name):
    a, b, c = (keras_models.MODELS.get(name).build((28, 28, 1), 10, seed=s) for s in (3, 3, 4))
    assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))
    assert not all(np.array_equal(x, y) for x, y in zip(a.get_weights(), c.get_weights()))
