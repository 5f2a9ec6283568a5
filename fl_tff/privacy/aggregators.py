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

from fl_tff import options
from fl_tff.aggregators import chain as aggregator_chain
from fl_tff.privacy import dp_options, packed_dp
from fl_tff.privacy.queries import SeededGaussianSumQuery

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
        return packed_dp.dp_sum_factory(query, record_sum_factory)
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
    raise ValueError(f'no user-level DP aggregator for {mode!r}; valid choices: fixed, adaptive')


def _layer(mode: str) -> aggregator_chain.Layer:
    """The DP mode's reduction: clip, sum (through the chain's sum for 'fixed', e.g. a secure
    one, whose range is the clip), noise. Compression, if any, acts before the clip, so each
    record's norm stays within the clip the noise is calibrated to. Unweighted (see
    UNIFORM_WEIGHTS_NEEDED)."""
    def build(params, context, inner):
        return build_dp_aggregator(
            mode, noise_multiplier=params['noise_multiplier'],
            clients_per_round=context.cohort, clip=params['clip'],
            seed=context.seed, record_sum_factory=inner,
            **{name: params[name] for name in ('target_unclipped_quantile', 'clip_learning_rate')
               if name in params})
    return aggregator_chain.Layer(aggregator_chain.REDUCE, build, takes_sum=mode == 'fixed',
                                  value_bound=lambda params: params['clip'])


def _check_adaptive(config, selection) -> None:
    dp_options.check_budget_has_noise(config, selection)
    needed = min_clients_for_adaptive_clipping(config.noise_multiplier)
    cohort = config.aggregated_clients()
    if config.noise_multiplier > 0 and cohort < needed:
        # The setting that sets the cohort: K, a buffer's size, or none (one update at a time).
        flag = ('clients_per_round' if not selection.has(options.ASYNCHRONOUS) else
                'buffer_size' if 'buffer_size' in config.option_params('algorithm') else 'dp')
        where = (f'--{flag}' if flag != 'dp' else
                 f'--algorithm={config.algorithm} applies one update at a time')
        raise options.OptionError(
            flag, f'adaptive clipping at --noise_multiplier={config.noise_multiplier:g} needs at '
            f'least {needed} client updates per aggregation (TFF\'s clipped-count noise is 0.05 '
            f'per client and must exceed z/2), got {cohort} ({where}): raise it, lower the '
            'noise or use --dp=fixed')


def _ledger(config, select, client_sizes, model_size):
    del client_sizes, model_size
    return dp_options.user_level_ledger(config, select, config.noise_multiplier)


NO_DP = options.Option('none', 'no differential privacy')

FIXED = options.Option(
    'fixed', 'user-level DP-FedAvg (McMahan et al. 2018): clip each update to --clip, Gaussian '
    'noise z*C at the server', params=dp_options.COMMON,
    provides={options.USER_LEVEL_DP, options.FIXED_CLIP_RANGE},
    requires={**dp_options.UNIFORM_WEIGHTS_NEEDED, **dp_options.SAMPLING_NEEDED},
    excludes=dp_options.IS_THE_AGGREGATOR,
    aggregator_layer=_layer('fixed'), privacy_ledger=_ledger,
    check=dp_options.check_budget_has_noise)

ADAPTIVE = options.Option(
    'adaptive', 'fixed, with the clip norm moved toward --target_unclipped_quantile (Andrew et al. '
    '2021)', params=(*dp_options.COMMON,
                     options.Param('target_unclipped_quantile', 0.5, 'Adaptive clipping: fraction '
                                   'of client updates to leave unclipped.', minimum=0.0,
                                   maximum=1.0, min_open=True, max_open=True),
                     options.Param('clip_learning_rate', 0.2, 'Adaptive clipping: learning rate '
                                   'of the geometric clip-norm update.', minimum=0.0, min_open=True)),
    provides={options.USER_LEVEL_DP},
    requires={**dp_options.UNIFORM_WEIGHTS_NEEDED, **dp_options.SAMPLING_NEEDED},
    excludes={**dp_options.IS_THE_AGGREGATOR,
              options.SECURE_SUM: 'adaptive clipping has no fixed range to quantize to; with '
                                  '--secure_agg use --dp=fixed (its --clip is the range) or dpsgd'},
    aggregator_layer=_layer('adaptive'), privacy_ledger=_ledger, check=_check_adaptive)
