"""User-level DP without sampling: DP-FTRL's tree aggregation (Kairouz et al. 2021, "Practical
and Private (Deep) Learning without Sampling or Shuffling").

Each client's update is clipped to L2 norm C and the clipped updates are summed; the server
releases the sum plus tree-aggregated Gaussian noise (std z·C per tree node), as the residual
between consecutive noised prefix sums, divided by K. Summed over rounds, the releases are the
prefix sums with O(log t) noise nodes each, which an FTRL server step (`ftrlm`, or `sgd`) uses.
The tree restarts every `--tree_restart` rounds (default one epoch of the population).

The guarantee needs no sampling or shuffling: only that each client contributes at most once
per tree (`--client_sampling=epochs` gives that; the ledger checks it round by round). The
ledger charges dp_accounting's `SingleEpochTreeAggregationDpEvent`, under its "replace with a
special record" neighbouring relation:
- per epoch of the population, one tree (the epoch's longest), while every client has taken part
  at most once per epoch: the epoch's trees then run on disjoint sets of clients, so one
  client's data enters one of them, and the others are independent of it or post-processing of
  its release (parallel composition, McSherry 2009, "Privacy Integrated Queries" §2.4); with
  trees shorter than an epoch this is tighter than charging every tree;
- per tree otherwise (a client seen twice in one epoch, in different trees, or no epoch length
  given): each tree is its own release, composed.

The aggregator is TFF's `DifferentiallyPrivateFactory` over TF Privacy's `TreeResidualSumQuery`
(what `DifferentiallyPrivateFactory.tree_aggregation` builds), wrapped in TF Privacy's
`RestartQuery` for the restarts, which TFF's shortcut does not offer.
"""

from __future__ import annotations

import math
from typing import Optional

import dp_accounting
import tensorflow as tf
import tensorflow_federated as tff
import tensorflow_privacy as tfp
from tensorflow_privacy.privacy.dp_query import restart_query

from fl_tff import options
from fl_tff.aggregators import chain as aggregator_chain
from fl_tff.rounds import restart_period
from fl_tff.communication import secure
from fl_tff.privacy import dp_options, ledger as ledger_lib, packed_dp
from fl_tff.privacy.accounting import check_delta


class TreeAggregationFactory(tff.aggregators.UnweightedAggregationFactory):
    """DP-FTRL's aggregator: clipped sum + tree-aggregated noise, restarted every
    `restart_period` rounds, divided by `clients_per_round` (see the module docstring). The
    query is built for the value type `create` receives."""

    def __init__(self, *, noise_multiplier: float, clients_per_round: int, clip: float,
                 restart_period: int, seed: int,
                 record_sum_factory: Optional[tff.aggregators.UnweightedAggregationFactory] = None):
        if noise_multiplier < 0 or not clip > 0 or restart_period < 1:
            raise ValueError(f'need noise_multiplier >= 0, clip > 0 and restart_period >= 1; got '
                             f'{noise_multiplier}, {clip}, {restart_period}')
        self._z, self._k, self._clip = noise_multiplier, clients_per_round, clip
        self._period, self._seed, self._record_sum = restart_period, seed, record_sum_factory

    def _factory(self, value_type) -> tff.aggregators.UnweightedAggregationFactory:
        specs = tf.nest.map_structure(lambda s: tf.TensorSpec(s.shape, s.dtype),
                                      tff.types.type_to_tf_tensor_specs(value_type))
        tree = tfp.TreeResidualSumQuery.build_l2_gaussian_query(
            self._clip, self._z, specs, noise_seed=self._seed)
        query = tfp.NormalizedQuery(
            tfp.RestartQuery(tree, restart_query.PeriodicRoundRestartIndicator(self._period)),
            denominator=float(self._k))
        return packed_dp.dp_sum_factory(query, self._record_sum)

    def packed(self, value_type) -> secure.PackedAggregation:
        """Its client and server halves over a packed secure sum (for SecAgg).

        Raises:
          TypeError: Its records are not summed as packed vectors.
        """
        factory = self._factory(value_type)
        if not isinstance(factory, secure.PackedAggregator):
            raise TypeError('DP-FTRL sums its records in the clear; SecAgg needs a packed '
                            'secure sum')
        return factory.packed(value_type)

    def create(self, value_type) -> tff.templates.AggregationProcess:
        return self._factory(value_type).create(value_type)


class TreeLedger(ledger_lib.PrivacyLedger):
    """ε of DP-FTRL, RDP under REPLACE_SPECIAL (see the module docstring): one
    `SingleEpochTreeAggregationDpEvent` per epoch of `rounds_per_epoch` rounds while each client
    takes part at most once per epoch, else one per tree of `rounds_per_tree` rounds (the last
    one partial), composed. Charging a round in which a client takes part a second time in the
    same tree raises `ParticipationError`.

    Args:
      noise_multiplier: z, the noise of each tree node in units of the clip.
      rounds_per_tree: Rounds between restarts of the tree.
      delta: δ.
      target_epsilon: The budget (0: none).
      rounds_per_epoch: Rounds per epoch of the population, a multiple of `rounds_per_tree`;
        0 charges every tree.
    """

    level = 'user'

    def __init__(self, noise_multiplier: float, rounds_per_tree: int, delta: float,
                 target_epsilon: float = 0.0, rounds_per_epoch: int = 0):
        check_delta(delta)
        if target_epsilon < 0:
            raise ValueError(f'target epsilon must be >= 0 (0 = none), got {target_epsilon}')
        if rounds_per_epoch % rounds_per_tree:
            raise ValueError(f'an epoch of {rounds_per_epoch} rounds is not made of trees of '
                             f'{rounds_per_tree} rounds')
        self.noise_multiplier, self.rounds_per_tree = noise_multiplier, rounds_per_tree
        self.delta, self.target_epsilon = delta, target_epsilon
        self.rounds_per_epoch = rounds_per_epoch
        self.trust = 'the server is trusted to add the noise'
        self.rounds = 0
        self._in_tree: set[str] = set()
        self._in_epoch: set[str] = set()
        # Whether every client so far took part at most once per epoch (see the module docstring).
        self.once_per_epoch = rounds_per_epoch > 0

    def _tree(self, steps: int, count: int = 1) -> list[dp_accounting.DpEvent]:
        event = dp_accounting.SingleEpochTreeAggregationDpEvent(self.noise_multiplier, steps)
        return [] if count < 1 else [event if count == 1 else
                                     dp_accounting.SelfComposedDpEvent(event, count)]

    def event(self, rounds: int, once_per_epoch: Optional[bool] = None) -> dp_accounting.DpEvent:
        """The dp_accounting event of `rounds` rounds (`once_per_epoch`: whether each client
        took part at most once per epoch; default: so far)."""
        if self.once_per_epoch if once_per_epoch is None else once_per_epoch:
            # One tree per epoch: the epoch's longest.
            full, rest = divmod(rounds, self.rounds_per_epoch)
            return dp_accounting.ComposedDpEvent(
                self._tree(self.rounds_per_tree, full)
                + (self._tree(min(self.rounds_per_tree, rest)) if rest else []))
        full, rest = divmod(rounds, self.rounds_per_tree)
        return dp_accounting.ComposedDpEvent(self._tree(self.rounds_per_tree, full)
                                             + (self._tree(rest) if rest else []))

    def epsilon(self, rounds: int, accountant: str = 'rdp',
                once_per_epoch: Optional[bool] = None) -> float:
        if accountant != 'rdp':
            raise ValueError('tree aggregation is accounted with RDP only')
        if rounds <= 0:
            return 0.0
        if self.noise_multiplier == 0:
            return math.inf
        rdp = dp_accounting.rdp.RdpAccountant(
            neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_SPECIAL)
        return float(rdp.compose(self.event(rounds, once_per_epoch)).get_epsilon(self.delta))

    def charge(self, plan, *, enforce: bool = True, pld: bool = False) -> dict[str, float]:
        del pld  # dp_accounting's PLD accountant has no tree-aggregation events.
        in_tree = set() if self.rounds % self.rounds_per_tree == 0 else set(self._in_tree)
        ids = [cid for cid, _ in plan.participants]
        again = sorted(set(ids) & in_tree)
        if again or len(set(ids)) != len(ids):
            raise ParticipationError(
                f'round {plan.round_num}: client(s) {again or ids} would take part twice in one '
                f'noise tree of {self.rounds_per_tree} rounds; --dp=tree needs each client at '
                'most once per tree (--client_sampling=epochs)')
        in_epoch = (set() if not self.rounds_per_epoch or self.rounds % self.rounds_per_epoch == 0
                    else self._in_epoch)
        once_per_epoch = self.once_per_epoch and not set(ids) & in_epoch
        epsilon = self.epsilon(self.rounds + 1, once_per_epoch=once_per_epoch)
        self._enforce(enforce, epsilon, plan.round_num)
        self.rounds += 1
        self._in_tree, self._in_epoch = in_tree | set(ids), in_epoch | set(ids)
        self.once_per_epoch = once_per_epoch
        return {'epsilon': epsilon}

    def pld_columns(self) -> dict[str, float]:
        return {}

    def statement(self) -> str:
        charged = (f'one tree per epoch of {self.rounds_per_epoch} rounds, as each client took '
                   'part at most once per epoch (parallel composition over the epoch\'s trees)'
                   if self.once_per_epoch else 'every tree composed')
        return (f'user-level ({self.noise_multiplier:g} noise multiplier, tree aggregation): '
                f'({self.spent():.4g}, {self.delta:g})-DP for all of any one client\'s data '
                f'(replacing it with a special record) after {self.rounds} rounds, RDP '
                f'accounting, with the tree restarted every {self.rounds_per_tree} rounds and '
                f'{charged}; it assumes no sampling or shuffling of clients, only that each '
                f'client took part at most once per tree (checked every round); {self.trust}')

    def summary(self) -> dict:
        return {'level': self.level, 'epsilon': self.spent(), 'delta': self.delta,
                'noise_multiplier': self.noise_multiplier, 'rounds': self.rounds,
                'mechanism': 'tree aggregation', 'rounds_per_tree': self.rounds_per_tree,
                'rounds_per_epoch': self.rounds_per_epoch,
                'charged': 'one tree per epoch' if self.once_per_epoch else 'every tree',
                'sampling': 'none assumed (at most once per tree)',
                'statement': self.statement()}


class ParticipationError(RuntimeError):
    """A client would take part twice in one noise tree."""


def _period(config) -> int:
    return restart_period(config.num_clients, config.clients_per_round, config.tree_restart)


def _aggregator(params, context, inner):
    """Clip, sum through the chain's sum (e.g. a secure one, whose range is the clip), tree
    noise; unweighted (UNIFORM_WEIGHTS_NEEDED)."""
    return TreeAggregationFactory(
        noise_multiplier=params['noise_multiplier'], clients_per_round=params['clients_per_round'],
        clip=params['clip'], restart_period=restart_period(
            params['num_clients'], params['clients_per_round'], params['tree_restart']),
        seed=context.seed, record_sum_factory=inner)


def rounds_per_epoch(num_clients: int, clients_per_round: int) -> int:
    """Rounds per epoch of the population (`--client_sampling=epochs`): N // K."""
    return max(1, num_clients // clients_per_round)


def _ledger(config, select, client_sizes, model_size):
    del select, client_sizes, model_size
    z = dp_options.composed_noise_multiplier(config.noise_multiplier,
                                             dp_options.releases_per_round(config))
    return TreeLedger(z, _period(config), config.delta,
                      config.target_epsilon,
                      rounds_per_epoch(config.num_clients, config.clients_per_round))


def _check(config, selection) -> None:
    dp_options.check_budget_has_noise(config, selection)
    epoch = rounds_per_epoch(config.num_clients, config.clients_per_round)
    if config.tree_restart and epoch % config.tree_restart:
        raise options.OptionError('tree_restart', f'must divide the epoch of {epoch} rounds '
                                  f'(--num_clients // --clients_per_round) so that no tree spans '
                                  f'two epochs, or be 0 (one tree per epoch); got '
                                  f'{config.tree_restart}')


OPTION = options.Option(
    'tree', 'user-level DP-FTRL (Kairouz et al. 2021): clip to --clip, tree-aggregated noise '
    'z*C restarted every --tree_restart rounds; no sampling assumed, each client at most once '
    'per tree', params=dp_options.COMMON,
    provides={options.USER_LEVEL_DP, options.FIXED_CLIP_RANGE},
    requires={**dp_options.UNIFORM_WEIGHTS_NEEDED,
              options.ONCE_PER_EPOCH: 'needs each client at most once per tree',
              options.FTRL_STEPS: 'releases residuals whose noise cancels only in their running '
                                  'sum, which an FTRL step uses'},
    excludes=dp_options.IS_THE_AGGREGATOR, privacy_ledger=_ledger,
    aggregator_layer=aggregator_chain.Layer(aggregator_chain.REDUCE, _aggregator,
                                            value_bound=lambda params: params['clip']),
    config_fields=('num_clients', 'clients_per_round', 'tree_restart'),
    check=_check)
