"""The ledgers charged before every round: communication (bytes) and, with DP, privacy (ε).

Both are pure functions of the rounds' client plans, so a resumed run rebuilds them by replaying
the plans of the rounds already done (nothing to checkpoint).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from fl_tff import simulation
from fl_tff.communication import compression, ledger as communication
from fl_tff.config import ConfigError, ExperimentConfig
from fl_tff.privacy import accounting, aggregators, distributed, ledger as privacy


def build_privacy_ledger(config: ExperimentConfig, select: simulation.ClientSelector,
                         client_sizes: dict[str, int],
                         model_size: int = 0) -> Optional[privacy.PrivacyLedger]:
    """The privacy ledger of `config.dp` (None without DP), for the sampling `select` does.
    `model_size` (trainable values) sets distributed DP's rounding, hence its effective noise."""
    if config.dp == 'none':
        return None
    if config.dp == 'dpsgd':
        return privacy.ExampleLevelLedger(config.noise_multiplier, config.client_batch_size,
                                          client_sizes, config.delta, config.target_epsilon)
    z, trust = config.noise_multiplier, 'the server is trusted to add the noise'
    if config.dp == 'distributed':
        if model_size <= 0:
            raise ValueError('distributed DP accounting needs the model size')
        z = distributed.accounting_noise_multiplier(config.noise_multiplier, config.clients_per_round,
                                                    config.clip, config.secure_bits, model_size)
        trust = (f'no party is trusted with the noise: each of the {config.clients_per_round} clients '
                 f'adds a discrete Gaussian share before the secure sum (effective multiplier '
                 f'{z:.4g} after rounding, Kairouz et al. 2021; the secure sum itself is simulated)')
    mechanism = accounting.SampledGaussian.from_cohort(z, select.sampling, select.population,
                                                       select.cohort)
    return privacy.PrivacyLedger(mechanism, config.delta, config.target_epsilon, trust)


def check_budget(ledger: Optional[privacy.PrivacyLedger],
                 select: simulation.ClientSelector) -> None:
    """Raises ConfigError when the first round alone would exceed `--target_epsilon`."""
    if ledger is None or not ledger.target_epsilon:
        return
    try:
        copy.deepcopy(ledger).charge(select.plan(1))
    except privacy.BudgetExhausted as e:
        raise ConfigError('target_epsilon', f'{e}: not even one round fits; raise the target or '
                          '--noise_multiplier') from e


def build_communication_ledger(config: ExperimentConfig,
                               weights) -> communication.CommunicationLedger:
    """Byte counts for `weights` (a ModelWeights) under the config's uplink encoding."""
    weighted = config.client_weighting == 'examples' and config.dp not in aggregators.USER_LEVEL_MODES
    if config.dp == 'distributed':
        encoding = communication.distributed_dp_encoding(config.secure_bits)
    elif config.secure_agg:
        encoding = communication.secure_encoding(config.secure_bits, weighted)
    else:
        encoding = compression.uplink_encoding(config.compression, weighted,
                                               bits=config.compression_bits, k=config.compression_k)
    return communication.CommunicationLedger(
        [int(np.size(t)) for t in tf.nest.flatten(weights.trainable)],
        int(sum(np.size(t) for t in tf.nest.flatten(weights))), encoding)


@dataclasses.dataclass
class Ledgers:
    """The run's ledgers and its `before_round` hook for `simulation.run_training`."""

    select: simulation.ClientSelector
    rounds: int
    communication: communication.CommunicationLedger
    privacy: Optional[privacy.PrivacyLedger] = None
    stopped: list[str] = dataclasses.field(default_factory=list)

    def replay(self, done: int) -> None:
        """Charges rounds 1..`done` (already run, e.g. before a resume)."""
        for r in range(1, done + 1):
            plan = self.select.plan(r)
            self.communication.charge(plan)
            if self.privacy is not None:
                self.privacy.charge(plan, enforce=False)

    def before_round(self, plan, evaluate: bool) -> dict[str, Any]:
        """Charges the round; ends training before a privacy budget would be exceeded (the
        last round that fits is evaluated)."""
        row: dict[str, Any] = {}
        if self.privacy is not None:
            try:
                row.update(self.privacy.charge(plan, pld=evaluate))
            except privacy.BudgetExhausted as e:
                self.stopped.append(str(e))
                raise simulation.StopTraining() from e
            if self.privacy.target_epsilon and plan.round_num < self.rounds:
                peek = copy.deepcopy(self.privacy)
                try:
                    peek.charge(self.select.plan(plan.round_num + 1))
                except privacy.BudgetExhausted as e:
                    self.stopped.append(str(e))
                    row[simulation.LAST_ROUND] = True
                    row.update(self.privacy.pld_columns())  # The last round is evaluated.
        row.update(self.communication.charge(plan))
        return row

    def summary(self, history: list[dict[str, Any]]) -> dict[str, Any]:
        """summary.json entries: communication totals (and bytes to reach the final accuracy),
        the privacy guarantee, why training stopped early."""
        out: dict[str, Any] = {'communication': self.communication.summary()}
        evaluated = [r for r in history if 'test_accuracy' in r and 'uplink_bytes_total' in r]
        if evaluated:
            final = evaluated[-1]['test_accuracy']
            first = next(r for r in evaluated if r['test_accuracy'] >= final)
            out['communication']['bytes_to_final_accuracy'] = {
                'round': first['round'], 'test_accuracy': first['test_accuracy'],
                'uplink_bytes': first['uplink_bytes_total'],
                'downlink_bytes': first['downlink_bytes_total']}
        if self.privacy is not None:
            out['privacy'] = self.privacy.summary()
        if self.stopped:
            out['stopped'] = self.stopped[0]
        return out
