"""The privacy ledger: ε spent so far, charged round by round from the clients actually
selected, with a budget that stops training before the round that would exceed it.

User level (DP-FedAvg): one sampled Gaussian mechanism per round over the client population,
Poisson or fixed-size sampling as actually done. User level without sampling (asynchronous
training, where clients arrive as the clock has them): each server update is one Gaussian
mechanism for each client in it, composed per client over its participations. Example level (DP-SGD on clients): each client
is charged its own local steps, every step a Poisson-sampled Gaussian with rate
batch size / client size (the standard DP-SGD analysis); its ε covers its own examples.
"""

from __future__ import annotations

import collections
import functools
import math
from typing import Mapping, Optional

import dp_accounting
import numpy as np

from fl_tff.privacy.accounting import SampledGaussian, Sampling, check_delta
from fl_tff.rounds import RoundPlan


class BudgetExhausted(RuntimeError):
    """The next round would spend more than the target ε."""


class PrivacyLedger:
    """ε spent so far at `delta` (RDP, and PLD where the event allows), charged per round."""

    level = 'user'

    def __init__(self, mechanism: SampledGaussian, delta: float, target_epsilon: float = 0.0,
                 trust: str = 'the server is trusted to add the noise'):
        check_delta(delta)
        self.trust = trust
        if target_epsilon < 0:
            raise ValueError(f'target epsilon must be >= 0 (0 = none), got {target_epsilon}')
        self.mechanism, self.delta, self.target_epsilon = mechanism, delta, target_epsilon
        self.rounds = 0

    def epsilon(self, rounds: int, accountant: str = 'rdp') -> float:
        """ε after `rounds` rounds."""
        return _epsilon(self.mechanism, rounds, self.delta, accountant)

    def charge(self, plan: RoundPlan, *, enforce: bool = True, pld: bool = False) -> dict[str, float]:
        """Records round `plan.round_num`; returns its ε columns. Raises BudgetExhausted first
        (recording nothing) when `enforce` and the round would exceed the target."""
        epsilon = self.epsilon(self.rounds + 1)
        self._enforce(enforce, epsilon, plan.round_num)
        self.rounds += 1
        row = {'epsilon': epsilon}
        if pld:
            row.update(self.pld_columns())
        return row

    def pld_columns(self) -> dict[str, float]:
        """`epsilon_pld` spent so far, where the PLD accountant handles the event."""
        if not self.mechanism.supports_pld:
            return {}
        return {'epsilon_pld': self.epsilon(self.rounds, 'pld')}

    def _enforce(self, enforce: bool, epsilon: float, round_num: int) -> None:
        if enforce and self.target_epsilon and epsilon > self.target_epsilon:
            raise BudgetExhausted(
                f'stopped before round {round_num}: it would raise {self.level}-level epsilon to '
                f'{epsilon:.4g} > --target_epsilon={self.target_epsilon:g} (delta={self.delta:g}); '
                f'{self.spent():.4g} spent in {round_num - 1} rounds')

    def spent(self) -> float:
        """ε spent so far (RDP)."""
        return self.epsilon(self.rounds)

    def statement(self) -> str:
        """The guarantee in words."""
        m = self.mechanism
        sampling = (f'Poisson sampling of clients with rate q = {m.q:.4g}' if m.sampling is Sampling.POISSON
                    else f'fixed-size sampling of {m.cohort} of {m.population} clients without '
                         'replacement each round')
        relation = 'adding or removing' if m.sampling is Sampling.POISSON else 'replacing'
        return (f'user-level ({self.mechanism.noise_multiplier:g} noise multiplier): '
                f'({self.spent():.4g}, {self.delta:g})-DP for all of any one client\'s data '
                f'({relation} one client) after {self.rounds} rounds, RDP accounting, assuming '
                f'{sampling} as simulated; {self.trust}')

    def summary(self) -> dict:
        """Figures for summary.json."""
        return {'level': self.level, 'epsilon': self.spent(), 'delta': self.delta,
                'noise_multiplier': self.mechanism.noise_multiplier, 'rounds': self.rounds,
                'sampling': self.mechanism.sampling, 'statement': self.statement(),
                **self.pld_columns()}


class ExampleLevelLedger(PrivacyLedger):
    """Per-client ε of DP-SGD: client k with n_k examples and batch size B is charged
    `epochs · ceil(n_k / B)` steps of a Poisson-sampled Gaussian with rate min(1, B / n_k)
    each time it trains. Reports the largest ε over clients (the guarantee for any example)
    and the median over the clients that trained."""

    level = 'example'

    def __init__(self, noise_multiplier: float, batch_size: int, client_sizes: Mapping[str, int],
                 delta: float, target_epsilon: float = 0.0):
        super().__init__(SampledGaussian(noise_multiplier, 'poisson', q=1.0), delta, target_epsilon)
        self.batch_size, self.client_sizes = batch_size, dict(client_sizes)
        self.steps: dict[str, int] = {}

    def _client_mechanism(self, cid: str) -> SampledGaussian:
        return SampledGaussian(self.mechanism.noise_multiplier, 'poisson',
                               q=min(1.0, self.batch_size / self.client_sizes[cid]))

    def client_epsilon(self, cid: str, steps: Optional[int] = None, accountant: str = 'rdp') -> float:
        """ε of client `cid` after `steps` local steps (default: its steps so far)."""
        steps = self.steps.get(cid, 0) if steps is None else steps
        return _epsilon(self._client_mechanism(cid), steps, self.delta, accountant)

    def charge(self, plan: RoundPlan, *, enforce: bool = True, pld: bool = False) -> dict[str, float]:
        new_steps = dict(self.steps)
        for cid, epochs in plan.participants:
            new_steps[cid] = new_steps.get(cid, 0) + epochs * math.ceil(
                self.client_sizes[cid] / self.batch_size)
        epsilons = {cid: self.client_epsilon(cid, n) for cid, n in new_steps.items()}
        worst = max(epsilons.values(), default=0.0)
        self._enforce(enforce, worst, plan.round_num)
        self.steps, self.rounds = new_steps, self.rounds + 1
        row = {'epsilon': worst, 'epsilon_median': float(np.median(list(epsilons.values())))
               if epsilons else 0.0}
        if pld:
            row.update(self.pld_columns())
        return row

    def pld_columns(self) -> dict[str, float]:
        """`epsilon_pld` of the client with the largest RDP epsilon so far."""
        if not self.steps:
            return {}
        return {'epsilon_pld': self.client_epsilon(max(self.steps, key=self.client_epsilon),
                                                   accountant='pld')}

    def spent(self) -> float:
        return max((self.client_epsilon(cid) for cid in self.steps), default=0.0)

    def statement(self) -> str:
        return (f'example-level (DP-SGD on clients, noise multiplier '
                f'{self.mechanism.noise_multiplier:g}): each client\'s model updates are '
                f'({self.spent():.4g}, {self.delta:g})-DP for any one of its examples (adding or '
                f'removing one example; the largest epsilon over {len(self.steps)} clients), RDP '
                'accounting assuming Poisson sampling of each batch with rate B / n (fl_tff '
                'shuffles and batches, as TF Privacy\'s Keras optimizers do); no guarantee for a '
                'client\'s data as a whole')

    def summary(self) -> dict:
        out = super().summary()
        if self.steps:
            out['epsilon_per_client'] = {cid: self.client_epsilon(cid) for cid in sorted(self.steps)}
        return out


class ParticipationLedger(PrivacyLedger):
    """User-level ε when clients are not sampled in rounds (FedBuff, FedAsync): each server
    update clips every update in it to C and adds N(0, (zC)^2) to their sum. For a client with m
    updates in one server update (a fast client can finish twice while a buffer fills) that is a
    Gaussian mechanism of sensitivity mC, i.e. of multiplier z / m (add or remove one client).
    A client's ε composes one such mechanism per server update it took part in (dp_accounting,
    RDP; PLD too); the reported ε is the largest over clients: that of the client with the
    largest sum of m^2 (Gaussians compose into one of multiplier z / sqrt(sum m^2)). No
    amplification by sampling is claimed: arrival on the clock is not random sampling. Assumed:
    who takes part when does not depend on any client's data (it comes from the simulated
    devices' clock)."""

    def __init__(self, noise_multiplier: float, delta: float, target_epsilon: float = 0.0,
                 trust: str = 'the server is trusted to add the noise'):
        super().__init__(SampledGaussian(noise_multiplier, 'poisson', q=1.0), delta,
                         target_epsilon, trust)
        # Client -> (updates per server update m -> server updates with m of its updates).
        self.participations: dict[str, dict[int, int]] = {}

    def charge(self, plan: RoundPlan, *, enforce: bool = True, pld: bool = False) -> dict[str, float]:
        counts = {cid: dict(m) for cid, m in self.participations.items()}
        for cid, m in collections.Counter(cid for cid, _ in plan.participants).items():
            counts.setdefault(cid, {})
            counts[cid][m] = counts[cid].get(m, 0) + 1
        epsilon = self._epsilon(_busiest(counts))
        self._enforce(enforce, epsilon, plan.round_num)
        self.participations, self.rounds = counts, self.rounds + 1
        row = {'epsilon': epsilon, 'max_participations': float(self._most())}
        if pld:
            row.update(self.pld_columns())
        return row

    def _epsilon(self, multiplicities: tuple[tuple[int, int], ...], accountant: str = 'rdp') -> float:
        return _composed_gaussians_epsilon(self.mechanism.noise_multiplier, multiplicities,
                                           self.delta, accountant)

    def _most(self) -> int:
        """Updates of the client with the most, over all server updates."""
        return max((sum(m * n for m, n in c.items()) for c in self.participations.values()),
                   default=0)

    def pld_columns(self) -> dict[str, float]:
        return {'epsilon_pld': self._epsilon(_busiest(self.participations), 'pld')}

    def spent(self) -> float:
        return self._epsilon(_busiest(self.participations))

    def statement(self) -> str:
        return (f'user-level ({self.mechanism.noise_multiplier:g} noise multiplier): '
                f'({self.spent():.4g}, {self.delta:g})-DP for all of any one client\'s data '
                f'(adding or removing one client) after {self.rounds} server updates, one Gaussian '
                f'mechanism per server update a client took part in (of sensitivity m C for m of '
                f'its updates in it; at most {self._most()} updates from any client), RDP '
                'accounting; no sampling assumed (asynchronous arrival), and who takes part when '
                f'is assumed independent of the data; {self.trust}')

    def summary(self) -> dict:
        out = super().summary()
        out['sampling'] = 'none (asynchronous participation)'
        out['max_participations'] = self._most()
        return out


def _busiest(counts: Mapping[str, Mapping[int, int]]) -> tuple[tuple[int, int], ...]:
    """The (m, server updates) of the client whose mechanisms compose to the largest ε: the
    largest sum of m^2 over its server updates."""
    if not counts:
        return ()
    worst = max(counts.values(), key=lambda c: sum(m * m * n for m, n in c.items()))
    return tuple(sorted(worst.items()))


@functools.lru_cache(maxsize=4096)
def _composed_gaussians_epsilon(noise_multiplier: float, multiplicities: tuple[tuple[int, int], ...],
                                delta: float, accountant: str) -> float:
    """ε of Gaussian mechanisms of multiplier z / m, `n` of each (m, n), composed."""
    if not multiplicities:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    event = dp_accounting.ComposedDpEvent([
        dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(noise_multiplier / m), n)
        for m, n in multiplicities])
    kind = SampledGaussian(noise_multiplier, 'poisson', q=1.0).accountant(accountant)
    return float(kind.compose(event).get_epsilon(delta))


@functools.lru_cache(maxsize=4096)
def _epsilon(mechanism: SampledGaussian, count: int, delta: float, accountant: str) -> float:
    return mechanism.epsilon(count, delta, accountant)
