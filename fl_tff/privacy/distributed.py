"""Distributed DP with secure aggregation: the distributed discrete Gaussian mechanism
(Kairouz, Liu & Steinke 2021, "The Distributed Discrete Gaussian Mechanism for Federated
Learning with Secure Aggregation"), through TFF's `DistributedDpSumFactory`.

Each client clips its update to L2 norm C, rotates it (randomized Hadamard), scales and
stochastically rounds it to integers, adds its share of discrete Gaussian noise (std
z·C/sqrt(K) before scaling), and the integers are summed modulo 2^bits with TFF's secure sum.
No party, the server included, sees an un-noised update or sum: the noise is in place before
the secure sum, so the server need not be trusted with the noise.

Rounding inflates the sensitivity from C to TFF's probabilistic bound C', and a sum of
discrete Gaussians is not exactly Gaussian; `accounting_noise_multiplier` turns both into the
Gaussian multiplier with the same zCDP guarantee, which the privacy ledger charges.
The discrete noise is drawn by TF Privacy without a seed: distributed-DP runs do not repeat
bit for bit.
"""

from __future__ import annotations

import math

import numpy as np

from fl_tff import options
from fl_tff.aggregators import chain as aggregator_chain
from fl_tff.privacy import dp_options

# TFF's DistributedDpSumFactory settings we use (fixed clip, discrete Gaussian, Hadamard).
MECHANISM, ROTATION = 'distributed_dgauss', 'hd'
MIN_BITS, MAX_BITS = 1, 22
MODCLIP_PROB = 1e-4
NORM_LEEWAY = 1e-5  # TFF's leeway added to the inflated norm bound.


def build_distributed_dp_mean(*, noise_multiplier: float, clients_per_round: int, clip: float,
                              bits: int):
    """The unweighted mean of clipped updates under distributed DP: TFF's
    `DistributedDpSumFactory` (fixed clip, discrete Gaussian noise, modular secure sum of
    `bits`) over a securely summed client count. Raises ValueError for impossible settings."""
    import tensorflow_federated as tff
    from fl_tff import tff_compat

    tff_compat.allow_deep_protos()
    ddp_sum = tff_compat.distributed_dp_sum_factory()(
        noise_multiplier=noise_multiplier, expected_clients_per_round=clients_per_round,
        bits=bits, l2_clip=clip, modclip_prob=MODCLIP_PROB, mechanism=MECHANISM,
        rotation_type=ROTATION, auto_l2_clip=False)
    return tff.aggregators.UnweightedMeanFactory(
        value_sum_factory=ddp_sum,
        count_sum_factory=tff.aggregators.SecureSumFactory(upper_bound_threshold=1,
                                                           lower_bound_threshold=0))


def check_settings(*, noise_multiplier: float, clients_per_round: int, clip: float,
                   bits: int) -> None:
    """Raises ValueError (TFF's own message) when TFF's factory refuses these settings."""
    build_distributed_dp_mean(noise_multiplier=noise_multiplier,
                              clients_per_round=clients_per_round, clip=clip, bits=bits)


def _scale_and_inflated_norm(noise_multiplier: float, clients_per_round: int, clip: float,
                             bits: int, dim: int) -> tuple[float, float]:
    """TFF's scale factor and inflated L2 bound, computed as `DistributedDpSumFactory.create`
    does (its helpers are private, so we call them rather than re-derive them)."""
    from fl_tff import tff_compat
    tff_dp = tff_compat.distributed_dp_scaling()

    padded = 2 ** math.ceil(math.log2(max(1, dim)))
    local_stddev = noise_multiplier * clip / math.sqrt(clients_per_round)
    k_stddevs = tff_dp.clip_prob_to_num_stddevs(MODCLIP_PROB)
    scale = float(tff_dp.heuristic_scale_factor(
        local_stddev, clip, bits, clients_per_round, padded, k_stddevs).numpy())
    scale = min(scale, tff_dp.max_scale_factor)
    inflated = float(tff_dp.inflated_l2_norm_bound(
        l2_norm_bound=clip, gamma=1.0 / scale, beta=0.0, dim=padded).numpy())
    return scale, inflated + NORM_LEEWAY


def accounting_noise_multiplier(noise_multiplier: float, clients_per_round: int, clip: float,
                                 bits: int, dim: int) -> float:
    """The Gaussian noise multiplier the privacy ledger charges for one round.

    With K clients each adding discrete Gaussian noise of scaled std sigma to updates of scaled
    sensitivity D (the inflated bound C', times the scale), Kairouz et al. 2021 (Thm. 1) show
    rho-zCDP with 2 rho = D^2 / (K sigma^2) + tau d / 2, tau = 10 sum_{k<K} exp(-2 pi^2 sigma^2
    k / (k+1)). A Gaussian mechanism with multiplier z' has 2 rho = 1 / z'^2, so we charge
    z' = (1 / z_eff^2 + tau d / 2)^(-1/2) with z_eff = sqrt(K) sigma / D = z C / C'.
    """
    if noise_multiplier == 0:
        return 0.0
    scale, inflated = _scale_and_inflated_norm(noise_multiplier, clients_per_round, clip, bits, dim)
    z_eff = noise_multiplier * clip / inflated
    sigma = noise_multiplier * clip / math.sqrt(clients_per_round) * scale
    k = np.arange(1, clients_per_round)
    tau = 10.0 * float(np.sum(np.exp(-2 * math.pi ** 2 * sigma ** 2 * k / (k + 1))))
    padded = 2 ** math.ceil(math.log2(max(1, dim)))
    return 1.0 / math.sqrt(1.0 / z_eff ** 2 + tau * padded / 2)


def _check(config, selection: options.Selection) -> None:
    """Every selected client must report: each adds 1/K of the noise."""
    dp_options.check_budget_has_noise(config, selection)
    if config.dropout_rate > 0 or (config.straggler_fraction > 0 and selection.has(options.DROPS_CLIENTS)):
        raise options.OptionError(
            'dropout_rate' if config.dropout_rate > 0 else 'straggler_policy',
            '--dp=distributed needs every selected client to report (each adds 1/K of the noise): '
            'set --dropout_rate=0 and, with stragglers, a policy that keeps their partial work')


def _preflight(config) -> None:
    """TFF's own checks of the settings (building its factory sets a process-wide protobuf
    option, so this runs in preflight, not in validation)."""
    try:
        check_settings(noise_multiplier=config.noise_multiplier,
                       clients_per_round=config.aggregated_clients(), clip=config.clip,
                       bits=config.secure_bits)
    except ValueError as e:
        raise options.OptionError('secure_bits', 'TFF\'s distributed DP refuses these settings '
                                  f'(--noise_multiplier, --clients_per_round, --clip, '
                                  f'--secure_bits): {e}') from e


def _ledger(config, select, client_sizes, model_size):
    del client_sizes
    if model_size <= 0:
        raise ValueError('distributed DP accounting needs the model size')
    cohort = config.aggregated_clients()
    z = accounting_noise_multiplier(config.noise_multiplier, cohort, config.clip,
                                    config.secure_bits, model_size)
    return dp_options.user_level_ledger(
        config, select, z,
        f'no party is trusted with the noise: each of the {cohort} clients adds '
        f'a discrete Gaussian share before the secure sum (effective multiplier {z:.4g} after '
        'rounding, Kairouz et al. 2021; the secure sum itself is simulated)')


def _encoding(config, weighted):
    del weighted
    from fl_tff.communication import ledger
    return ledger.distributed_dp_encoding(config.secure_bits)


OPTION = options.Option(
    'distributed', 'user-level distributed DP: clients clip to --clip, round to --secure_bits '
    'integers and add discrete Gaussian noise shares; the server never sees an un-noised sum',
    params=(*dp_options.COMMON,
            options.Param('secure_bits', 16, 'Bits per value of the secure sum.',
                          minimum=MIN_BITS, maximum=MAX_BITS)),
    provides={options.USER_LEVEL_DP, options.MODULAR_SECURE_SUM},
    requires={**dp_options.UNIFORM_WEIGHTS_NEEDED, **dp_options.SAMPLING_NEEDED,
              options.SECURE_SUM: 'adds the noise on clients and needs secure aggregation to sum it',
              options.FIXED_COHORT: 'splits the noise into K shares and needs exactly K clients a '
                                    'round'},
    excludes=dp_options.IS_THE_AGGREGATOR, check=_check, preflight=_preflight,
    # Its clients add noise shares to integers that it sums securely itself: it takes no sum.
    aggregator_layer=aggregator_chain.Layer(
        aggregator_chain.REDUCE, lambda params, context, inner: build_distributed_dp_mean(
            noise_multiplier=params['noise_multiplier'],
            clients_per_round=context.cohort, clip=params['clip'],
            bits=params['secure_bits']), takes_sum=False),
    uplink_encoding=_encoding, privacy_ledger=_ledger)
