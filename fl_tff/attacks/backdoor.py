"""A pixel-trigger backdoor with boosting (Bagdasaryan et al. 2020, "How To Backdoor Federated
Learning"; Sun et al. 2019, "Can You Really Backdoor Federated Learning?"): a malicious client
stamps a trigger (the image's bottom-right 2x2 pixels set to 1, the brightest value of inputs
scaled to [0, 1]) on a `--backdoor_fraction` of its examples, relabels them
`--backdoor_target`, trains on them with its clean examples, and boosts its update s x
(`--attack_scale`) so it survives averaging. `BackdoorEvaluator` reports the success rate: the
share of test inputs of other classes that the triggered model classifies as the target.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fl_tff import options
from fl_tff.attacks import base
from fl_tff.models import model_fn as model_fn_lib

TRIGGER_SIZE = 2
TRIGGER_VALUE = 1.0

BACKDOOR_TARGET = options.Param('backdoor_target', 0, 'Class the backdoor trigger maps to.',
                                minimum=0)
BACKDOOR_FRACTION = options.Param('backdoor_fraction', 0.5, 'Fraction of a malicious client\'s '
                                  'examples it stamps with the trigger.', minimum=0.0,
                                  maximum=1.0, min_open=True)


def stamp(x):
    """`x` (images [..., height, width, channels]) with the trigger: the bottom-right
    TRIGGER_SIZE x TRIGGER_SIZE pixels of every channel set to TRIGGER_VALUE. NumPy or TF."""
    if isinstance(x, np.ndarray):
        out = x.copy()
        out[..., -TRIGGER_SIZE:, -TRIGGER_SIZE:, :] = TRIGGER_VALUE
        return out
    height, width = x.shape[-3], x.shape[-2]
    rows = tf.range(height)[:, None] >= height - TRIGGER_SIZE
    cols = tf.range(width)[None, :] >= width - TRIGGER_SIZE
    mask = tf.logical_and(rows, cols)[:, :, None]
    return tf.where(mask, tf.cast(TRIGGER_VALUE, x.dtype), x)


def build_backdoor(*, num_classes: int, attack_fraction: float, attack_scale: float,
                   backdoor_target: int, backdoor_fraction: float) -> base.Attack:
    """The backdoor attack (see the module docstring).

    Args:
      num_classes: The dataset's classes (the target must be one).
      attack_fraction: The malicious fraction of the population.
      attack_scale: The boost of a malicious client's update.
      backdoor_target: The target class.
      backdoor_fraction: Share of a malicious client's examples it stamps.

    Returns:
      The attack.

    Raises:
      options.OptionError: The target is not a class.
    """
    if backdoor_target >= num_classes:
        raise options.OptionError('backdoor_target', f'must be a class in [0, {num_classes - 1}], '
                                  f'got {backdoor_target}')

    def poison(examples, seed):
        n = tf.shape(examples['y'])[0]
        stamped = tf.random.stateless_uniform([n], seed) < backdoor_fraction
        out = dict(examples)
        out['x'] = tf.where(tf.reshape(stamped, [-1, 1, 1, 1]), stamp(examples['x']),
                            examples['x'])
        out['y'] = tf.where(stamped, tf.cast(backdoor_target, examples['y'].dtype), examples['y'])
        return type(examples)(out)

    return base.Attack('backdoor', attack_fraction, update_scale=attack_scale, poison=poison,
                       trigger=stamp, target=backdoor_target)


def _check_model(config, model_fn) -> None:
    """The trigger stamps images: the model's input must be [batch, height, width, channels]."""
    del config
    spec = model_fn_lib.model_types(model_fn).input_spec['x']
    if len(spec.shape) != 4 or spec.shape[1] < TRIGGER_SIZE or spec.shape[2] < TRIGGER_SIZE:
        raise options.OptionError('attack', f'backdoor stamps a {TRIGGER_SIZE}x{TRIGGER_SIZE} '
                                  f'trigger on images [batch, height, width, channels]; the '
                                  f'model\'s inputs are {spec.shape}')


class BackdoorEvaluator:
    """`weights -> {'backdoor_success': r}`: the share of test inputs whose label is not the
    target that the model, given the triggered input, classifies as the target."""

    def __init__(self, model_for: Callable[[tff.learning.models.ModelWeights], tf.keras.Model],
                 x: np.ndarray, y: np.ndarray, attack: base.Attack):
        """`model_for(weights)` gives a Keras model holding `weights` (the run's shared
        `fl_tff.evaluation.GlobalKerasModel`, so no model is built for this evaluator alone)."""
        keep = y != attack.target
        self._model_for, self._target = model_for, attack.target
        self._x = attack.trigger(x[keep])

    def __call__(self, weights: tff.learning.models.ModelWeights) -> dict[str, float]:
        model = self._model_for(weights)
        predicted = np.argmax(model(self._x, training=False), axis=-1)
        return {'backdoor_success': float(np.mean(predicted == self._target))}


OPTION = options.Option(
    'backdoor', 'malicious clients stamp a pixel trigger on part of their images, relabel them '
    '--backdoor_target and boost their update s x; reports backdoor_success',
    params=(base.ATTACK_FRACTION, base.ATTACK_SCALE, BACKDOOR_TARGET, BACKDOOR_FRACTION),
    build=build_backdoor, check_model=_check_model,
    requires={**base.NEEDS_UPDATE_ATTACKS, **base.NEEDS_CLASSIFICATION,
              options.IMAGES: 'stamps its trigger on images'})
