"""What the DP modes share: their parameters and the user-level privacy ledger."""

from __future__ import annotations

import math

from fl_tff import options
from fl_tff.privacy import accounting, ledger

NOISE_MULTIPLIER = options.Param('noise_multiplier', 1.0, 'DP noise multiplier z: noise std is '
                                 'z * --clip.', minimum=0.0)
CLIP = options.Param('clip', 1.0, 'DP clip norm C: of each client update (fixed; the initial value '
                     'for adaptive) or of each example gradient (dpsgd).', minimum=0.0, min_open=True)
DELTA = options.Param('delta', 1e-5, 'DP delta of the reported epsilon.', minimum=0.0, maximum=1.0,
                      min_open=True, max_open=True)
TARGET_EPSILON = options.Param('target_epsilon', 0.0, 'Privacy budget: stop before the round that '
                               'would exceed this epsilon (0 = none).', minimum=0.0)
COMMON = (NOISE_MULTIPLIER, CLIP, DELTA, TARGET_EPSILON)

# User-level modes clip and sum each client's update with equal weight.
UNIFORM_WEIGHTS_NEEDED = {options.UNIFORM_WEIGHTS: 'clips and sums each client\'s update with '
                                                   'equal weight'}
# Sampled-Gaussian accounting: its epsilon holds for clients sampled afresh each round.
SAMPLING_NEEDED = {options.SAMPLED_CLIENTS: 'accounts for clients sampled afresh each round '
                                            '(--dp=tree needs no sampling)'}
IS_THE_AGGREGATOR = {options.REPLACES_MEAN: 'its noise is calibrated to how much one client can '
                                            'move a sum of clipped updates (the clip norm); '
                                            'another aggregation rule moves by other amounts: use '
                                            'the mean'}


def check_budget_has_noise(config, selection) -> None:
    """A privacy budget cannot be met without noise."""
    del selection
    if config.target_epsilon and config.noise_multiplier == 0:
        raise options.OptionError('target_epsilon', 'cannot be met without noise: set '
                                  '--noise_multiplier > 0')


def releases_per_round(config) -> int:
    """Gaussian releases of each client's data a round: its update, plus each of the algorithm's
    `side_uploads` (e.g. SCAFFOLD's dc_i), each clipped and noised alike."""
    return 1 + config.selection()['algorithm'].side_uploads


def composed_noise_multiplier(noise_multiplier: float, releases: int) -> float:
    """The one Gaussian mechanism that `releases` Gaussian releases of the same sensitivity
    and noise compose to: Renyi divergences of Gaussians add (alpha Delta^2 / 2 sigma^2 each),
    so k releases at multiplier z cost what one at z / sqrt(k) costs."""
    return noise_multiplier / math.sqrt(releases)


def user_level_ledger(config, select, noise_multiplier: float,
                      trust: str = 'the server is trusted to add the noise') -> ledger.PrivacyLedger:
    """The ledger of a sampled Gaussian with `noise_multiplier` (composed over the round's
    releases, `releases_per_round`), sampled as `select` samples; for an asynchronous
    algorithm, one Gaussian per participation (no sampling assumed)."""
    noise_multiplier = composed_noise_multiplier(noise_multiplier, releases_per_round(config))
    if config.selection().has(options.ASYNCHRONOUS):
        return ledger.ParticipationLedger(noise_multiplier, config.delta, config.target_epsilon,
                                          trust)
    mechanism = accounting.SampledGaussian.from_cohort(noise_multiplier, select.sampling,
                                                       select.population, select.cohort)
    return ledger.PrivacyLedger(mechanism, config.delta, config.target_epsilon, trust)
