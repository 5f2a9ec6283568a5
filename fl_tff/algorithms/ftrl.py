"""FTRL with momentum as a server optimizer (DP-FTRLM, Kairouz et al. 2021, "Practical and
Private (Deep) Learning without Sampling or Shuffling", Algorithm 1 with momentum; the server
step of google-research/federated `dp_ftrl`).

It steps from the running sum of the aggregated updates, not from the last one:

    S_t = sum of the updates since the tree started,  m_t = rho m_{t-1} + S_t,
    w_t = w_start - lr m_t,

and restarts (w_start <- w, S <- 0, m <- 0) every `restart_period` steps, when `--dp=tree`
restarts its noise tree. With `--dp=tree` each update is a residual of tree-noised prefix sums,
so S_t carries the tree's O(log t) noise instead of t independent draws. At momentum 0 it is
plain SGD on the updates.

Written here: TFF's optimizers step from the current update only; FTRL needs the sum.
"""

from __future__ import annotations

import collections

import tensorflow as tf
import tensorflow_federated as tff

from fl_tff import options
from fl_tff.rounds import restart_period

_LEARNING_RATE, _MOMENTUM = 'learning_rate', 'momentum'


class FtrlmOptimizer(tff.learning.optimizers.Optimizer):
    """FTRL with momentum (see the module docstring); a `tff.learning.optimizers.Optimizer`."""

    def __init__(self, learning_rate: float, momentum: float, restart_period: int):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f'momentum must be in [0, 1), got {momentum}')
        if restart_period < 1:
            raise ValueError(f'restart_period must be >= 1, got {restart_period}')
        self._lr, self._momentum, self._period = learning_rate, momentum, restart_period

    def initialize(self, specs):
        zeros = tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), specs)
        return collections.OrderedDict([
            (_LEARNING_RATE, tf.constant(self._lr, tf.float32)),
            (_MOMENTUM, tf.constant(self._momentum, tf.float32)),
            ('step', tf.constant(0, tf.int64)), ('start', zeros), ('noised_sum', zeros),
            ('buffer', zeros)])

    def next(self, state, weights, gradients):
        restart = tf.equal(state['step'] % self._period, 0)  # A tree starts at this step.
        lr, rho = state[_LEARNING_RATE], state[_MOMENTUM]
        start = tf.nest.map_structure(lambda w, w0: tf.where(restart, w, w0), weights,
                                      state['start'])
        noised_sum = tf.nest.map_structure(
            lambda s, g: tf.where(restart, tf.zeros_like(s), s) + g, state['noised_sum'],
            gradients)
        buffer = tf.nest.map_structure(
            lambda m, s: rho * tf.where(restart, tf.zeros_like(m), m) + s, state['buffer'],
            noised_sum)
        new_weights = tf.nest.map_structure(lambda w0, m: w0 - lr * m, start, buffer)
        new_state = collections.OrderedDict(state, step=state['step'] + 1, start=start,
                                            noised_sum=noised_sum, buffer=buffer)
        return new_state, new_weights

    def get_hparams(self, state):
        return collections.OrderedDict((k, state[k]) for k in (_LEARNING_RATE, _MOMENTUM))

    def set_hparams(self, state, hparams):
        return collections.OrderedDict(state, **hparams)


def build_ftrlm(learning_rate: float, *, server_momentum: float, num_clients: int,
                clients_per_round: int, tree_restart: int) -> FtrlmOptimizer:
    """The FTRL-M server optimizer, restarting with `--dp=tree`'s trees.

    Args:
      learning_rate: lr.
      server_momentum: rho.
      num_clients: N, the population.
      clients_per_round: K.
      tree_restart: Rounds per tree (0: N // K).

    Returns:
      The optimizer.
    """
    return FtrlmOptimizer(learning_rate, server_momentum,
                          restart_period(num_clients, clients_per_round, tree_restart))


OPTION = options.Option(
    'ftrlm', 'FTRL with momentum (DP-FTRLM, Kairouz et al. 2021): steps from the sum of updates '
    'since the tree started; restarts with --dp=tree\'s trees (--tree_restart)',
    params=(options.Param('server_momentum', 0.9, 'Momentum of the server optimizer.',
                          minimum=0.0, maximum=1.0, max_open=True),),
    build=build_ftrlm, provides={options.FTRL_STEPS},
    config_fields=('num_clients', 'clients_per_round', 'tree_restart'))
