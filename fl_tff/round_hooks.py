"""The ledgers charged before every round: communication (bytes) and, with DP, privacy (ε).

Both are pure functions of the rounds' client plans, so a resumed run rebuilds them by replaying
the plans of the rounds already done (nothing to checkpoint).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Optional, Protocol, runtime_checkable

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fl_tff import options, simulation
from fl_tff.aggregators import chain as aggregator_chain
from fl_tff.communication import ledger as communication
from fl_tff.config import ConfigError, ExperimentConfig
from fl_tff.models import model_fn as model_fn_lib
from fl_tff.privacy import ledger as privacy


def build_privacy_ledger(config: ExperimentConfig, select: simulation.ClientSelector,
                         client_sizes: dict[str, int],
                         model_size: int = 0) -> Optional[privacy.PrivacyLedger]:
    """The privacy ledger of the selected DP option (None without DP), for the sampling `select`
    does. `model_size` (trainable values) sets distributed DP's rounding, hence its noise."""
    hook = config.selection().only('privacy_ledger')
    return None if hook is None else hook(config, select, client_sizes, model_size)


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


@runtime_checkable
class SendsPartOfModel(Protocol):
    """A process whose client updates carry only some of the model's trainable tensors (e.g.
    FedPer's body, not its personal head)."""

    @property
    def uplink_positions(self) -> list[int]:
        """Positions (in the trainable tensors) of the tensors a client update carries."""


@runtime_checkable
class ChoosesUploaders(Protocol):
    """A process in whose round some participants may send no update (e.g.
    `fl_tff.secagg.tff_round.SecAggLearningProcess`: none when its protocol aborts before the
    masked inputs)."""

    def uploaders(self, plan: Any) -> list:
        """The participants of `plan` whose update is sent, decided from the plan alone."""


def build_communication_ledger(config: ExperimentConfig, weights,
                               process: Any = None) -> communication.CommunicationLedger:
    """Byte counts for `weights` (a ModelWeights) under the uplink encoding the selected options
    declare (float32 otherwise; a transport, SecAgg's masking, re-encodes it); each update carries the algorithm's
    `uplink_model_copies` model-sized tensors, or the tensors a `SendsPartOfModel` process
    names, plus its `side_uploads` (at the uplink encoding, or as float32 when that is a
    compression, which they skip) and its `plain_side_values` (float32); a `ChoosesUploaders`
    process says who sends one."""
    selection = config.selection()
    weighted = options.UNIFORM_WEIGHTS not in selection['client_weighting'].provides
    # A layer the aggregator chain leaves out (--secure_agg's sum under distributed DP, which
    # sums its shares securely itself) sends nothing of its own.
    unused = aggregator_chain.unused_levels(
        [option.aggregator_layer for _, option in selection.items() if option.aggregator_layer])
    hook = selection.only('uplink_encoding', among=lambda option: (
        option.aggregator_layer is None or option.aggregator_layer.level not in unused))
    encoding = communication.plain_encoding(weighted) if hook is None else hook(config, weighted)
    transport = selection.only('uplink_transport')
    if transport is not None:
        encoding = transport(config, encoding)
    sizes = [int(np.size(t)) for t in tf.nest.flatten(weights.trainable)]
    if isinstance(process, SendsPartOfModel):
        sizes = [sizes[i] for i in process.uplink_positions]
    algorithm = selection['algorithm']
    side_sizes = sizes * algorithm.side_uploads
    compressed = selection.has(options.COMPRESSED_UPLINK)
    if not compressed:  # Each side upload is a vector of its own encoding (and side values).
        encoding = encoding.with_side_uploads(algorithm.side_uploads)
    return communication.CommunicationLedger(
        sizes * algorithm.uplink_model_copies + ([] if compressed else side_sizes),
        int(sum(np.size(t) for t in tf.nest.flatten(weights))), encoding,
        uploaders=process.uploaders if isinstance(process, ChoosesUploaders) else None,
        plain_sizes=(side_sizes if compressed else []) + (
            [algorithm.plain_side_values] if algorithm.plain_side_values else []))


def task_bytes(config: ExperimentConfig, model_fn) -> tuple[int, int]:
    """(download, upload) bytes of one client task for the simulated clock: the byte ledger's
    sizes for the whole model (an update carrying part of it, e.g. FedPer's, is charged as the
    whole: the clock is built before the process)."""
    weights_type = model_fn_lib.model_types(model_fn).weights_type
    trainable = [np.zeros(t.shape, np.float32) for t in weights_type.trainable]
    non_trainable = [np.zeros(t.shape, np.float32) for t in weights_type.non_trainable]
    ledger = build_communication_ledger(
        config, tff.learning.models.ModelWeights(trainable, non_trainable))
    return ledger.downlink_client_bytes, ledger.uplink_client_bytes


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
        protocol_rounds = [r for r in history if 'secagg_aborted' in r]
        if protocol_rounds:  # The SecAgg protocol's own messages and compute, beside the uplink.
            def total(column):
                return sum(r[column] * r['selected'] for r in protocol_rounds)
            out['communication']['secagg'] = {
                'rounds_aborted': sum(int(r['secagg_aborted']) for r in protocol_rounds),
                'protocol_bytes_sent_total': total('secagg_client_sent_bytes'),
                'protocol_bytes_received_total': total('secagg_client_received_bytes'),
                'client_seconds_total': total('secagg_client_seconds'),
                'server_seconds_total': sum(r['secagg_server_seconds'] for r in protocol_rounds)}
        if self.privacy is not None:
            out['privacy'] = self.privacy.summary()
        if self.stopped:
            out['stopped'] = self.stopped[0]
        return out
