"""User-level DP aggregation (DP-FedAvg, McMahan et al. 2018, "Learning Differentially Private
Recurrent Language Models"): each client's update is clipped to L2 norm C, the clipped updates
are summed, Gaussian noise of std z·C is added at the server, and the sum is divided by the
expected number of clients per round.

Fixed clipping: TFF's `DifferentiallyPrivateFactory` over TF Privacy's `NormalizedQuery` of a
Gaussian sum query (seeded, see `queries`). Adaptive clipping (Andrew et al. 2021,
"Differentially Private Learning with Adaptive Clipping"): TFF's
`DifferentiallyPrivateFactory.gaussian_adaptive`, which moves C toward the target quantile of
update norms with a privatized count.
"""

from __future__ import annotations

from typing import Optional

import tensorflow_federated as tff
import tensorflow_privacy as tfp

from fl_tff.privacy.queries import SeededGaussianSumQuery

DP_MODES = ('none', 'fixed', 'adaptive', 'distributed', 'dpsgd')
# Clip and noise whole client updates (unweighted); 'distributed' is in `distributed.py`.
USER_LEVEL_MODES = ('fixed', 'adaptive', 'distributed')
# TFF's default std of the noise on the adaptive clipping's clipped count, per expected client.
CLIPPED_COUNT_STDDEV_PER_CLIENT = 0.05


def min_clients_for_adaptive_clipping(noise_multiplier: float) -> int:
    """The fewest clients per round for which TFF's adaptive clipping can reach `noise_multiplier`.

    TFF splits the noise budget between the update and the clipped count and needs
    2 · (0.05 · K) > z, i.e. K > 10 z.
    """
    return int(noise_multiplier / (2 * CLIPPED_COUNT_STDDEV_PER_CLIENT)) + 1


def build_dp_aggregator(mode: str, *, noise_multiplier: float, clients_per_round: int,
                        clip: float, seed: int = 0, target_unclipped_quantile: float = 0.5,
                        clip_learning_rate: float = 0.2,
                        record_sum_factory: Optional[tff.aggregators.UnweightedAggregationFactory] = None,
                        ) -> tff.aggregators.UnweightedAggregationFactory:
    """The user-level DP aggregator for `mode` ('fixed' or 'adaptive'); unweighted.

    `clients_per_round` is the expected number of clients, the sum's denominator. For
    'adaptive', `clip` is the initial clip norm, adapted by geometric updates of rate
    `clip_learning_rate` toward the `target_unclipped_quantile` of update norms.
    `record_sum_factory` sums the clipped updates (default: a plain sum; e.g. a secure sum).
    """
    if noise_multiplier < 0:
        raise ValueError(f'noise_multiplier must be >= 0, got {noise_multiplier}')
    if not clip > 0:
        raise ValueError(f'clip must be > 0, got {clip}')
    if mode == 'fixed':
        query = tfp.NormalizedQuery(
            SeededGaussianSumQuery(clip, clip * noise_multiplier, seed),
            denominator=float(clients_per_round))
        return tff.aggregators.DifferentiallyPrivateFactory(query, record_sum_factory)
    if record_sum_factory is not None:
        raise ValueError(f'{mode!r} DP aggregation takes no record_sum_factory')
    if mode == 'adaptive':
        needed = min_clients_for_adaptive_clipping(noise_multiplier)
        if noise_multiplier > 0 and clients_per_round < needed:
            raise ValueError(f'adaptive clipping with noise multiplier {noise_multiplier} needs at '
                             f'least {needed} clients per round, got {clients_per_round}')
        return tff.aggregators.DifferentiallyPrivateFactory.gaussian_adaptive(
            noise_multiplier, clients_per_round, initial_l2_norm_clip=clip,
            target_unclipped_quantile=target_unclipped_quantile, learning_rate=clip_learning_rate)
    raise ValueError(f'no user-level DP aggregator for {mode!r}; valid choices: '
                     f'{", ".join(USER_LEVEL_MODES)}')
