"""Privacy accounting with dp_accounting: the DP event that matches the sampling actually done.

- Poisson sampling (each of N clients joins a round independently with probability q):
  `PoissonSampledDpEvent(q, GaussianDpEvent(z))`, add-or-remove-one neighbours, RDP or PLD.
- Fixed-size sampling without replacement (m of N each round, TFF's uniform sampler):
  `SampledWithoutReplacementDpEvent(N, m, GaussianDpEvent(z / 2))`, replace-one neighbours, RDP
  only (dp_accounting 0.4.3's PLD accountant does not support it). The z / 2: replacing one
  record moves a sum of records clipped to norm C by up to 2C, and dp_accounting's
  without-replacement analysis takes the noise relative to that sensitivity.

T rounds (or steps) compose as `SelfComposedDpEvent(event, T)`.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math

import dp_accounting
from dp_accounting.pld import privacy_loss_distribution as pld_lib


class Sampling(str, enum.Enum):
    """How clients are drawn each round, as the accounting sees it (a str, so the
    `--client_sampling` values 'poisson' and 'uniform' stand for these as they are)."""

    POISSON = 'poisson'  # Each client joins independently with probability q.
    UNIFORM = 'uniform'  # Exactly m of N, without replacement.

    def __str__(self) -> str:  # Printed and written as the flag value.
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


SAMPLINGS = tuple(s.value for s in Sampling)
ACCOUNTANTS = ('rdp', 'pld')
# PLD grids tried in turn (dp_accounting's default first): see SampledGaussian.epsilon.
PLD_DISCRETIZATIONS = (1e-4, 1e-3, 1e-2)


@dataclasses.dataclass(frozen=True)
class SampledGaussian:
    """One application of the Gaussian mechanism (noise multiplier z) to a sampled cohort.

    `poisson`: each record is included with probability `q` (the expected cohort over the
    population). `uniform`: exactly `cohort` of `population` records, without replacement.
    """

    noise_multiplier: float
    sampling: str
    q: float = 0.0
    population: int = 0
    cohort: int = 0

    @classmethod
    def from_cohort(cls, noise_multiplier: float, sampling: str, population: int,
                    cohort: int) -> 'SampledGaussian':
        """The mechanism of sampling `cohort` of `population` clients (expected, for Poisson)."""
        return cls(noise_multiplier, sampling, q=cohort / population, population=population,
                   cohort=cohort)

    def __post_init__(self):
        if self.sampling not in SAMPLINGS:
            raise ValueError(f'unknown sampling {self.sampling!r}; valid choices: {", ".join(SAMPLINGS)}')
        object.__setattr__(self, 'sampling', Sampling(self.sampling))
        if self.noise_multiplier < 0:
            raise ValueError(f'noise multiplier must be >= 0, got {self.noise_multiplier}')
        if self.sampling is Sampling.POISSON and not 0.0 < self.q <= 1.0:
            raise ValueError(f'sampling rate q must be in (0, 1], got {self.q}')
        if self.sampling is Sampling.UNIFORM and not 0 < self.cohort <= self.population:
            raise ValueError(f'cohort must be in [1, population={self.population}], got {self.cohort}')

    def event(self, count: int) -> dp_accounting.DpEvent:
        """The dp_accounting event of `count` independent applications."""
        gaussian = dp_accounting.GaussianDpEvent(self.noise_multiplier)
        if self.sampling is Sampling.POISSON:
            one = dp_accounting.PoissonSampledDpEvent(self.q, gaussian)
        else:  # Replace-one sensitivity of a clipped sum is 2C: noise std / (2C) = z / 2.
            one = dp_accounting.SampledWithoutReplacementDpEvent(
                self.population, self.cohort, dp_accounting.GaussianDpEvent(self.noise_multiplier / 2))
        return dp_accounting.SelfComposedDpEvent(one, count)

    def accountant(self, kind: str = 'rdp',
                   pld_discretization: float = PLD_DISCRETIZATIONS[0]) -> dp_accounting.PrivacyAccountant:
        """A fresh accountant of `kind` with the neighbouring relation this sampling needs (PLD:
        on a grid of privacy losses `pld_discretization` apart)."""
        relation = (dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE if self.sampling is Sampling.POISSON
                    else dp_accounting.NeighboringRelation.REPLACE_ONE)
        if kind == 'rdp':
            return dp_accounting.rdp.RdpAccountant(neighboring_relation=relation)
        if kind == 'pld':
            if not self.supports_pld:
                raise ValueError('the PLD accountant supports Poisson sampling only; use rdp')
            return dp_accounting.pld.PLDAccountant(
                neighboring_relation=relation, value_discretization_interval=pld_discretization)
        raise ValueError(f'unknown accountant {kind!r}; valid choices: {", ".join(ACCOUNTANTS)}')

    @property
    def supports_pld(self) -> bool:
        """Whether dp_accounting's PLD accountant handles this event."""
        return self.sampling is Sampling.POISSON

    def epsilon(self, count: int, delta: float, accountant: str = 'rdp') -> float:
        """ε after `count` applications at `delta` (0 for none; inf without noise)."""
        check_delta(delta)
        if count <= 0:
            return 0.0
        if self.noise_multiplier == 0:
            return math.inf
        if accountant != 'pld':
            return float(self.accountant(accountant).compose(self.event(count)).get_epsilon(delta))
        if not self.supports_pld:
            raise ValueError('the PLD accountant supports Poisson sampling only; use rdp')
        # dp_accounting's PLD fails numerically ("deltas are not in non-increasing order") at
        # small noise multipliers; a coarser grid is still a pessimistic (upper) bound.
        *finer, coarsest = PLD_DISCRETIZATIONS
        for interval in finer:
            try:
                return self._pld_epsilon(count, delta, interval)
            except ValueError:
                continue
        return self._pld_epsilon(count, delta, coarsest)

    def _pld_epsilon(self, count: int, delta: float, interval: float) -> float:
        """What `self.accountant('pld', interval).compose(self.event(count)).get_epsilon(delta)`
        gives (the same dp_accounting calls in the same order), with the one-round PLD built
        once: dp_accounting builds it point by point in Python (2-3 s at the default grid) on
        every compose, and a run asks for ε after every round."""
        one = _poisson_gaussian_pld(self.noise_multiplier, self.q, interval)
        composed = pld_lib.identity(value_discretization_interval=interval).compose(
            one.self_compose(count))
        return float(composed.get_epsilon_for_delta(delta))


def _poisson_gaussian_pld(noise_multiplier: float, q: float,
                          interval: float) -> pld_lib.PrivacyLossDistribution:
    """The PLD of one Poisson-sampled Gaussian, as dp_accounting's PLD accountant builds it,
    kept per (z, q, grid) for the process; a failure to build it (a ValueError on too fine a
    grid, after seconds of work) is kept too and raised again."""
    found = _pld_or_error(noise_multiplier, q, interval)
    if isinstance(found, tuple):
        raise ValueError(*found)
    return found


# The most recent few: an example-level ledger has one q per client size.
@functools.lru_cache(maxsize=16)
def _pld_or_error(noise_multiplier: float, q: float, interval: float):
    """The one-round PLD, or the args of the ValueError building it raised (cached alike)."""
    try:
        return pld_lib.from_gaussian_mechanism(
            standard_deviation=noise_multiplier, value_discretization_interval=interval,
            sampling_prob=q)
    except ValueError as e:
        return e.args


def check_delta(delta: float) -> None:
    """Raises ValueError unless 0 < delta < 1."""
    if not 0.0 < delta < 1.0:
        raise ValueError(f'delta must be in (0, 1), got {delta}')


def noise_for_epsilon(target_epsilon: float, delta: float, count: int, sampling: str, *,
                      q: float = 0.0, population: int = 0, cohort: int = 0,
                      accountant: str = 'rdp') -> float:
    """The smallest noise multiplier z with ε(z) <= `target_epsilon` after `count` applications
    (dp_accounting's `calibrate_dp_mechanism`)."""
    check_delta(delta)
    if not target_epsilon > 0:
        raise ValueError(f'target epsilon must be > 0, got {target_epsilon}')

    def mechanism(z: float) -> SampledGaussian:
        return SampledGaussian(z, sampling, q=q, population=population, cohort=cohort)

    reference = mechanism(1.0)
    return float(dp_accounting.calibrate_dp_mechanism(
        lambda: reference.accountant(accountant), lambda z: mechanism(z).event(count),
        target_epsilon, delta, dp_accounting.LowerEndpointAndGuess(1e-3, 1.0)))
