"""Keras model factories. Every factory takes an explicit seed for its initializers.

Seeds are per initializer, never global (a global TF seed inside a traced `model_fn` makes the
random ops of every client and round repeat).
"""

from __future__ import annotations

from typing import Callable, Sequence

import tensorflow as tf

from fl_tff import options

ModelFactory = Callable[..., tf.keras.Model]


def _init(seed: int, offset: int) -> tf.keras.initializers.Initializer:
    return tf.keras.initializers.GlorotUniform(seed=seed * 1000 + offset)


def logistic_regression(input_shape: Sequence[int], num_classes: int, seed: int = 0) -> tf.keras.Model:
    """Multinomial logistic regression: flatten, one dense layer to logits."""
    return tf.keras.Sequential([
        tf.keras.layers.InputLayer(input_shape=tuple(input_shape)),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(num_classes, kernel_initializer=_init(seed, 0)),
    ], name='logistic_regression')


def mlp_2nn(input_shape: Sequence[int], num_classes: int, seed: int = 0,
            hidden_units: int = 200) -> tf.keras.Model:
    """The "2NN" of McMahan et al. 2017 (Communication-Efficient Learning of Deep Networks
    from Decentralized Data): two ReLU hidden layers of `hidden_units` (200 in the paper)."""
    return tf.keras.Sequential([
        tf.keras.layers.InputLayer(input_shape=tuple(input_shape)),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(hidden_units, activation='relu', kernel_initializer=_init(seed, 0)),
        tf.keras.layers.Dense(hidden_units, activation='relu', kernel_initializer=_init(seed, 1)),
        tf.keras.layers.Dense(num_classes, kernel_initializer=_init(seed, 2)),
    ], name='mlp_2nn')


def small_cnn(input_shape: Sequence[int], num_classes: int, seed: int = 0,
              filters: int = 32) -> tf.keras.Model:
    """A small CNN: two 3x3 conv layers (`filters`, 2·`filters`), max-pool, dense 128, logits.

    Sized for 8x8 digits as well as 28x28 images (padding 'same', one pooling step).
    """
    return tf.keras.Sequential([
        tf.keras.layers.InputLayer(input_shape=tuple(input_shape)),
        tf.keras.layers.Conv2D(filters, 3, padding='same', activation='relu',
                               kernel_initializer=_init(seed, 0)),
        tf.keras.layers.Conv2D(2 * filters, 3, padding='same', activation='relu',
                               kernel_initializer=_init(seed, 1)),
        tf.keras.layers.MaxPool2D(2),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(128, activation='relu', kernel_initializer=_init(seed, 2)),
        tf.keras.layers.Dense(num_classes, kernel_initializer=_init(seed, 3)),
    ], name='small_cnn')


def emnist_cnn(input_shape: Sequence[int], num_classes: int, seed: int = 0) -> tf.keras.Model:
    """The EMNIST CNN of Reddi et al. 2021 (Adaptive Federated Optimization), TFF's
    `create_conv_dropout_model`: two 3x3 convolutions of 32 and 64 filters ('valid'), 2x2
    max-pool, dropout 0.25, dense 128, dropout 0.5, logits (1,206,590 parameters on 28x28x1
    inputs and 62 classes). Dropout is seeded like the initializers."""
    return tf.keras.Sequential([
        tf.keras.layers.InputLayer(input_shape=tuple(input_shape)),
        tf.keras.layers.Conv2D(32, 3, activation='relu', kernel_initializer=_init(seed, 0)),
        tf.keras.layers.Conv2D(64, 3, activation='relu', kernel_initializer=_init(seed, 1)),
        tf.keras.layers.MaxPool2D(2),
        tf.keras.layers.Dropout(0.25, seed=seed * 1000 + 2),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(128, activation='relu', kernel_initializer=_init(seed, 3)),
        tf.keras.layers.Dropout(0.5, seed=seed * 1000 + 4),
        tf.keras.layers.Dense(num_classes, kernel_initializer=_init(seed, 5)),
    ], name='emnist_cnn')


def _embedding(vocab_size: int, dim: int, seed: int, offset: int) -> tf.keras.layers.Embedding:
    return tf.keras.layers.Embedding(
        vocab_size, dim, mask_zero=True,  # Token 0 is padding.
        embeddings_initializer=tf.keras.initializers.RandomUniform(-0.05, 0.05, seed=seed * 1000 + offset))


def _lstm(units: int, seed: int, offset: int) -> tf.keras.layers.RNN:
    """An LSTM over the sequence: Keras' `LSTMCell` (the cell, weights and gate layout of
    `layers.LSTM`) in a plain `RNN`. `layers.LSTM` inside a graph, as TFF traces every model,
    also traces a cuDNN variant for grappler to choose from, at every trace, on machines with
    no GPU too."""
    return tf.keras.layers.RNN(tf.keras.layers.LSTMCell(
        units,
        kernel_initializer=tf.keras.initializers.HeNormal(seed=seed * 1000 + offset),
        recurrent_initializer=tf.keras.initializers.Orthogonal(seed=seed * 1000 + offset + 1)),
        return_sequences=True)


# TFF's baseline models (tff.simulation.baselines.*_models) take no seed, hence these copies.
def char_lstm(input_shape: Sequence[int], num_classes: int, seed: int = 0,
              hidden_units: int = 256) -> tf.keras.Model:
    """The next-character model of McMahan et al. 2017 (Communication-Efficient Learning of Deep
    Networks from Decentralized Data) as in TFF's Shakespeare baseline: an 8-dimensional
    character embedding, two stacked LSTMs of `hidden_units` (256), logits over the vocabulary."""
    return tf.keras.Sequential([
        tf.keras.layers.InputLayer(input_shape=tuple(input_shape), dtype=tf.int32),
        _embedding(num_classes, 8, seed, 0),
        _lstm(hidden_units, seed, 1),
        _lstm(hidden_units, seed, 3),
        tf.keras.layers.Dense(num_classes, kernel_initializer=_init(seed, 5)),
    ], name='char_lstm')


def word_lstm(input_shape: Sequence[int], num_classes: int, seed: int = 0,
              hidden_units: int = 670, embedding_dim: int = 96) -> tf.keras.Model:
    """The Stack Overflow next-word model of Reddi et al. 2021 (Adaptive Federated
    Optimization) as in TFF's baseline: a 96-dimensional word embedding, one LSTM of
    `hidden_units` (670), a projection to 96 dimensions, logits over the vocabulary."""
    return tf.keras.Sequential([
        tf.keras.layers.InputLayer(input_shape=tuple(input_shape), dtype=tf.int32),
        _embedding(num_classes, embedding_dim, seed, 0),
        _lstm(hidden_units, seed, 1),
        tf.keras.layers.Dense(embedding_dim, kernel_initializer=_init(seed, 3)),
        tf.keras.layers.Dense(num_classes, kernel_initializer=_init(seed, 4)),
    ], name='word_lstm')


_HIDDEN_UNITS = options.Param('hidden_units', 0, 'Width of the hidden layers; 0 = the paper\'s '
                              '(2nn 200, char_lstm 256, word_lstm 670).', minimum=0)
_CLASSIFIES = {options.CLASSIFICATION: 'classifies feature vectors'}

# Each builder is `(input_shape, num_classes, seed=0, **params) -> tf.keras.Model`.
MODELS = options.Registry('model', 'Model.', [
    options.Option('logreg', 'multinomial logistic regression', build=logistic_regression,
                   requires=_CLASSIFIES),
    options.Option('2nn', 'MLP with two hidden layers (McMahan et al. 2017)', build=mlp_2nn,
                   params=(_HIDDEN_UNITS,), requires=_CLASSIFIES),
    options.Option('cnn', 'a small CNN (image inputs)', build=small_cnn,
                   requires={**_CLASSIFIES, options.IMAGES: 'needs image inputs (height, width, '
                                                            'channels)'}),
    options.Option('emnist_cnn', 'the EMNIST CNN of Reddi et al. 2021 (conv 32, conv 64, '
                   'max-pool, dropout, dense 128; 1.2M parameters on EMNIST-62)',
                   build=emnist_cnn,
                   requires={**_CLASSIFIES, options.IMAGES: 'needs image inputs (height, width, '
                                                            'channels) of at least 6x6'}),
    options.Option('char_lstm', 'next-character LSTM (shakespeare)', build=char_lstm,
                   params=(_HIDDEN_UNITS,),
                   requires={options.CHAR_SEQUENCES: 'predicts the next character'}),
    options.Option('word_lstm', 'next-word LSTM (stackoverflow_nwp): the Stack Overflow LSTM of '
                   'Reddi et al. 2021 (4.05M parameters at a 10k vocabulary)', build=word_lstm,
                   params=(_HIDDEN_UNITS,),
                   requires={options.WORD_SEQUENCES: 'predicts the next word'}),
], default='2nn')
