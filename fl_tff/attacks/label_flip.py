"""Label flipping (Fang et al. 2020, "Local Model Poisoning Attacks to Byzantine-Robust Federated
Learning", §5.1; Tolpegin et al. 2020): a malicious client trains honestly on its examples with
every label l replaced by C - 1 - l."""

from __future__ import annotations

import tensorflow as tf

from fl_tff import options
from fl_tff.attacks import base


def build_label_flip(*, num_classes: int, attack_fraction: float) -> base.Attack:
    """The label-flipping attack.

    Args:
      num_classes: C, the dataset's classes.
      attack_fraction: The malicious fraction of the population.

    Returns:
      The attack.
    """
    def poison(examples, seed):
        del seed
        flipped = dict(examples)
        flipped['y'] = tf.cast(num_classes - 1, examples['y'].dtype) - examples['y']
        return type(examples)(flipped)
    return base.Attack('label_flip', attack_fraction, poison=poison)


OPTION = options.Option(
    'label_flip', 'malicious clients train on labels l -> C-1-l (data poisoning)',
    params=(base.ATTACK_FRACTION,), build=build_label_flip, requires=base.NEEDS_CLASSIFICATION)
