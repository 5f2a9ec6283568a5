"""What every attack shares: the `Attack` a selected option builds, its shared parameters and
the seeded malicious population.

A run with an attack marks a seeded `--attack_fraction` of the training population malicious
(`choose_malicious`, fixed for the whole run). Every time a malicious client is selected it
attacks, in two places a real client controls:

* its data (`Attack.poison`), applied to its stacked examples where its round is built
  (`fl_tff.simulation.worker_data`), before shuffling;
* its update: it sends `update_scale * update + update_noise * N(0, I)` instead of its model
  delta (the round's `update_scale` / `update_noise` fields, `fl_tff.data.client_rounds`,
  applied by `fl_tff.algorithms.client_work.client_result`), before any client-side encoding
  (compression, secure aggregation's quantization, DP clipping) of the algorithm's upload.

Honest clients' rounds carry scale 1 and noise 0.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf

from fl_tff import options

# (a malicious client's stacked examples, a [2] int64 seed) -> its poisoned examples.
Poison = Callable[[collections.OrderedDict, tf.Tensor], collections.OrderedDict]

ATTACK_FRACTION = options.Param(
    'attack_fraction', 0.2, 'Fraction of the training population that is malicious (a seeded '
    'choice, fixed for the run; each selected malicious client attacks).', minimum=0.0,
    maximum=1.0, min_open=True)
ATTACK_SCALE = options.Param(
    'attack_scale', 10.0, 'Strength of an update attack: sign_flip sends -s x its update, scale '
    's x, gaussian N(0, s^2) noise, backdoor boosts its update s x.', minimum=0.0, min_open=True)

# What each kind of attack needs from the other selected options.
NEEDS_UPDATE_ATTACKS = {options.UPDATE_ATTACKS: 'replaces client updates, so it needs client work '
                                                'that lets a client send another update'}
NEEDS_CLASSIFICATION = {options.CLASSIFICATION: 'changes class labels'}


@dataclasses.dataclass(frozen=True)
class Attack:
    """What a malicious client does.

    Attributes:
      name: The attack's option name.
      fraction: The malicious fraction of the population.
      update_scale: A malicious client sends `update_scale` x its update ...
      update_noise: ... plus N(0, update_noise^2) noise per coordinate.
      poison: What it does to its examples (None: nothing).
      trigger: For a backdoor, inputs -> the same inputs with the trigger (numpy, batched), and
        `target` the class the trigger should map to.
      target: The backdoor's target class.
    """

    name: str
    fraction: float
    update_scale: float = 1.0
    update_noise: float = 0.0
    poison: Optional[Poison] = None
    trigger: Optional[Callable[[np.ndarray], np.ndarray]] = None
    target: int = 0

    def round_fields(self, malicious) -> tuple[tf.Tensor, tf.Tensor]:
        """(update_scale, update_noise) of a client's round; `malicious` a scalar tensor."""
        malicious = tf.cast(malicious, tf.bool)
        return (tf.where(malicious, tf.constant(self.update_scale, tf.float32), 1.0),
                tf.where(malicious, tf.constant(self.update_noise, tf.float32), 0.0))

    def poison_examples(self, examples: tf.data.Dataset, malicious, seed) -> tf.data.Dataset:
        """A client's stacked examples (one element), poisoned if it is `malicious`."""
        if self.poison is None:
            return examples
        malicious = tf.cast(malicious, tf.bool)
        seed = tf.stack([tf.cast(seed, tf.int64), tf.constant(0xBAD, tf.int64)])
        return examples.map(lambda e: tf.cond(malicious, lambda: self.poison(e, seed),
                                              lambda: e))


def choose_malicious(client_ids: Sequence[str], fraction: float, seed: int) -> frozenset[str]:
    """The malicious clients: round(fraction x population) of `client_ids`, a seeded choice
    (at least one)."""
    count = max(1, int(round(fraction * len(client_ids))))
    chosen = np.random.default_rng([seed, 0xBAD]).choice(len(client_ids), size=count,
                                                         replace=False)
    return frozenset(client_ids[i] for i in chosen)
