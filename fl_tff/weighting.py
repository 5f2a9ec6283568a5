"""`--client_weighting`: what a client's update weighs in the mean, stated explicitly.

- `examples`: n_k, the client's number of training examples, whatever work it did this round
  (FedAvg's and FedProx's papers weight by n_k, so a straggler with partial work keeps its full
  weight). A client's round carries n_k (`fl_tff.data.client_rounds`).
- `examples_processed`: the examples the client went through this round, n_k x the epochs it ran,
  which is what TFF's builders (`tff.learning.ClientWeighting.NUM_EXAMPLES`) weight by. Our
  processes match TFF's builders under this name.
- `uniform`: every update weighs 1 (`tff.learning.ClientWeighting.UNIFORM`).
- `tokens`: the non-padding label tokens the client processed this round (text tasks), as
  google-research/federated's sequence trainers weight.

Without stragglers or dropouts, `examples` and `examples_processed` differ by the constant factor E,
so the weighted mean is the same up to float rounding.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Union

import tensorflow as tf
import tensorflow_federated as tff

from fl_tff import options
from fl_tff.data import client_rounds


class Counts(enum.Enum):
    """What a client's weight counts (see the module docstring)."""

    EXAMPLES = 'examples'
    EXAMPLES_PROCESSED = 'examples_processed'
    UNIFORM = 'uniform'
    TOKENS = 'tokens'


@dataclasses.dataclass(frozen=True)
class ClientWeighting:
    """A client weighting: what it counts and, for `TOKENS`, which labels are padding."""

    counts: Counts
    padding_labels: tuple[int, ...] = ()

    @property
    def uniform(self) -> bool:
        """Every update weighs the same (the aggregator may be the unweighted mean)."""
        return self.counts == Counts.UNIFORM


Weighting = Union[ClientWeighting, tff.learning.ClientWeighting]


def resolve(weighting: Weighting) -> ClientWeighting:
    """Ours for TFF's enum: NUM_EXAMPLES is examples processed (as TFF's builders count it)."""
    if isinstance(weighting, ClientWeighting):
        return weighting
    if weighting == tff.learning.ClientWeighting.UNIFORM:
        return ClientWeighting(Counts.UNIFORM)
    if weighting == tff.learning.ClientWeighting.NUM_EXAMPLES:
        return ClientWeighting(Counts.EXAMPLES_PROCESSED)
    raise TypeError(f'not a client weighting: {weighting!r}')


def max_weight(weighting: Weighting, max_examples: int, epochs: int,
               labels_per_example: int = 1) -> float:
    """The largest weight a client can have (the secure weighted mean scales by it).

    Args:
      weighting: What the weight counts.
      max_examples: The largest client's n_k.
      epochs: Local epochs E (a client processes at most n_k x E examples).
      labels_per_example: Label positions of one example (a sequence's length): `tokens`
        counts at most every one of them as a non-padding token, n_k x E x this.
    """
    counts = resolve(weighting).counts
    return {Counts.EXAMPLES: float(max_examples),
            Counts.EXAMPLES_PROCESSED: float(max_examples * epochs),
            Counts.TOKENS: float(max_examples * epochs * labels_per_example),
            Counts.UNIFORM: 1.0}[counts]


def client_weight(weighting: Weighting, element: Any, examples_processed: tf.Tensor) -> tf.Tensor:
    """The float32 weight of a client's update, inside its `tf.function`.

    Args:
      weighting: What the weight counts.
      element: The client's round (`fl_tff.data.client_rounds`): n_k for `examples`, the labels
        of the round's stream for `tokens`.
      examples_processed: Examples the client's training went through.

    Returns:
      The weight (0 for a client with no data, except under `uniform`).
    """
    w = resolve(weighting)
    if w.counts == Counts.UNIFORM:
        return tf.constant(1.0, tf.float32)
    if w.counts == Counts.EXAMPLES_PROCESSED:
        return tf.cast(examples_processed, tf.float32)
    if w.counts == Counts.EXAMPLES:
        return tf.cast(element[client_rounds.CLIENT_EXAMPLES_KEY], tf.float32)
    padding = tf.constant(w.padding_labels or (-1,), tf.int64)
    labels = tf.reshape(tf.cast(element['y'], tf.int64), [-1, 1])
    real = tf.logical_not(tf.reduce_any(tf.equal(labels, padding[tf.newaxis, :]), axis=1))
    return tf.cast(tf.reduce_sum(tf.cast(real, tf.int64)), tf.float32)


CLIENT_WEIGHTINGS = options.Registry('client_weighting', 'Weight of each client update in the mean.', [
    options.Option('examples', 'n_k, the client\'s training examples, whatever work it did this '
                   'round (the FedAvg and FedProx papers\' weight)',
                   build=lambda padding_labels: ClientWeighting(Counts.EXAMPLES)),
    options.Option('examples_processed', 'examples the client processed this round (n_k x its '
                   'epochs: TFF\'s builders\' NUM_EXAMPLES)',
                   provides={options.TFF_WEIGHTING},
                   build=lambda padding_labels: ClientWeighting(Counts.EXAMPLES_PROCESSED)),
    options.Option('uniform', 'every client update weighs the same',
                   provides={options.UNIFORM_WEIGHTS, options.TFF_WEIGHTING},
                   build=lambda padding_labels: ClientWeighting(Counts.UNIFORM)),
    options.Option('tokens', 'non-padding label tokens the client processed this round (text '
                   'tasks, as google-research/federated\'s trainers)',
                   requires={options.PADDED_TOKENS: 'counts the non-padding tokens of sequence labels'},
                   build=lambda padding_labels: ClientWeighting(Counts.TOKENS,
                                                                tuple(padding_labels))),
], default='examples')


def to_tff_weighting(weighting: Weighting, algorithm: str) -> tff.learning.ClientWeighting:
    """The TFF `ClientWeighting` that weighs as `weighting` does, for TFF's own builders
    (uniform, or examples processed).

    Raises:
      ValueError: A weighting TFF's builders cannot express.
    """
    counts = resolve(weighting).counts
    if counts == Counts.UNIFORM:
        return tff.learning.ClientWeighting.UNIFORM
    if counts == Counts.EXAMPLES_PROCESSED:
        return tff.learning.ClientWeighting.NUM_EXAMPLES
    raise ValueError(f'{algorithm} weighs clients as TFF\'s builders do (uniform or examples '
                     f'processed), not by {counts.value}')
