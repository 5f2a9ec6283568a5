"""The SecAgg protocol (`fl_tff.secagg.protocol`) inside a TFF learning round (`--secagg`).

Where the protocol lives: in our composition of the round, not in the execution context's
lowering of TFF's secure-sum intrinsics. The masks are per-round secrets that come out of key
agreement among the round's cohort, and what the server subtracts depends on who dropped at
which step; a TFF computation is a pure function of its arguments, so a lowering of
`federated_secure_sum_bitwidth` has nowhere to receive them from. Our composition declares them
as arguments of `next`: each client's mask CLIENTS-placed, the server's correction SERVER-placed.

A round (`SecAggLearningProcess.next_for_plan`):
1. The driver plays the protocol's steps 0 and 1 for the round's selected clients (X25519 key
   advertisement, Shamir shares of each client's secrets encrypted to its neighbours), with the
   dropouts of `protocol_dropouts`.
2. Inside TFF's `next`: each client trains (the algorithm's client work), packs its update and
   weight into one vector of B-bit integers (`fl_tff.communication.secure.Packing`, the same as
   the structural secure mean) and uploads that vector plus its SecAgg mask modulo 2^M; the
   server sums the masked uploads (`tff.federated_sum`, the only aggregation of client values in
   the round), subtracts the correction and decodes the mean.
3. Step 3 (unmasking): the clients whose masked input arrived hand the server their shares; the
   server reconstructs the self-mask seeds of those clients and the mask keys of clients that
   dropped after sharing, and expands the masks left in the sum: the correction.
   The driver runs it before calling `next`: dropouts are drawn before the round, and the
   correction depends only on who dropped where, not on any update, so the order of the messages
   changes nothing the server learns.

Each client's mask reaches its worker as a file the worker reads (`reading_values_from` of
`fl_tff.composed_process`, `fl_tff.runtime.worker_values`; the simulation plays every client, so the
masks are in the driver's memory anyway), not inside TFF's request: at K = 50 that request
carried 40 MB of masks.

When fewer than t clients (or shares) survive a step, the round is aborted: `next` is not
called, the model is unchanged, and the metrics say at which step and why.

M = the bits of (largest cohort) x (2^B - 1), so the sum of the packed vectors never wraps
around: the unmasked sum is the exact integer sum, and FedAvg with `--secagg` equals FedAvg with
the structural secure sum exactly.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fl_tff import client_state, options, round_composer, rounds
from fl_tff.communication import ledger, secure
from fl_tff.rounds import RoundPlan
from fl_tff.secagg import protocol, shamir


@dataclasses.dataclass(frozen=True)
class SecAggSettings:
    """How the round runs the protocol.

    Attributes:
      threshold_fraction: t = floor(fraction x h) + 1 (a majority at 0.5), where h is the number
        of holders of each client's shares: the n selected clients, or with SecAgg+ a client's
        neighbours and itself.
      neighbours: SecAgg+'s neighbourhood size k (0: every pair).
      max_cohort: The most clients a round can select (sets the modulus).
      seed: Seeds the dropout steps and SecAgg+'s graph, per round.
    """

    threshold_fraction: float = 0.5
    neighbours: int = 0
    max_cohort: int = 100
    seed: int = 0

    def holders(self, cohort: int) -> int:
        """How many clients hold shares of each client's secrets (itself included)."""
        if not self.neighbours:
            return cohort
        return min(cohort, 2 * ((self.neighbours + 1) // 2) + 1)  # `protocol.neighbours`' ring.

    def threshold(self, cohort: int) -> int:
        """t, at least 2 (with t = 1 a share is the secret): a cohort of one client aborts."""
        holders = self.holders(cohort)
        return max(shamir.MIN_THRESHOLD,
                   min(holders, int(math.floor(self.threshold_fraction * holders)) + 1))


def modulus_bits(bits: int, max_cohort: int) -> int:
    """M: the sum of `max_cohort` packed vectors (each value < 2^bits) fits in [0, 2^M)."""
    return int(max_cohort * (2 ** bits - 1)).bit_length()


def protocol_dropouts(plan: 'RoundPlan', index: dict[str, int],
                      settings: SecAggSettings) -> protocol.Dropouts:
    """Who drops at which protocol step, from the round's plan: the one drop point each
    dropout drew (`RoundPlan.drop_points`), so a run with and without SecAgg loses the same
    clients.

    - A dropout before training left during the key exchange that precedes it: before
      advertising its keys or before sharing them (drawn uniformly, seeded by (seed, round)).
    - A dropout before its upload, and any other selected client that was not aggregated (a
      dropped straggler, late, gone offline), left before its masked input arrived.
    - A dropout after its upload is a contributor: its masked input arrived, and it does not
      answer the unmasking request.
    """
    rng = np.random.default_rng([settings.seed, plan.round_num, 0x5EC466])
    key_exchange = rng.integers(0, 2, size=len(plan.selected))
    arrived = {c for c, _ in plan.participants}
    by_step: dict[str, set[int]] = {step: set() for step in protocol.STEPS}
    for i, client in enumerate(plan.selected):
        point = plan.drop_point(client)
        if point == 'after_upload':
            by_step['unmasking'].add(index[client])
        elif client in arrived:
            continue
        elif point == 'before_training':
            by_step[protocol.STEPS[key_exchange[i]]].add(index[client])
        else:
            by_step['masked_input'].add(index[client])
    return protocol.Dropouts({k: frozenset(v) for k, v in by_step.items()})


def _positions(plan: 'RoundPlan') -> dict[str, int]:
    """The protocol's id of each selected client: its 1-based position in the selection."""
    return {client: i + 1 for i, client in enumerate(plan.selected)}


@dataclasses.dataclass(frozen=True)
class ProtocolRoundOutput:
    """A round's output: TFF's (state, metrics), or the unchanged state and None when the
    protocol aborted; plus the protocol's own metric columns."""

    state: Any
    metrics: Any
    columns: dict[str, float]
    abort_reason: str = ''
    client_states: Mapping[str, Sequence[Any]] = dataclasses.field(default_factory=dict)


class SecAggLearningProcess(client_state.StagedProcess):
    """A learning process whose round runs the SecAgg protocol around TFF's `next` (see the
    module docstring). It keeps the composed process's state, weights and hyperparameters, and
    the round's client-state slots if it has any (a personalized algorithm's personal part):
    participants whose masked input is not sent keep their states.

    Args:
      secagg: The round with the protocol (`with_secagg`).
      settings: The protocol's settings.
      input_values: The other per-participant values the round's stages take from the
        simulation's inputs (an asynchronous buffer's start weights and scales), if any.
    """

    PROVIDED = ('mask',)  # Each participant's mask, from the protocol's key agreement.

    def __init__(self, secagg: SecAggRound, settings: SecAggSettings,
                 input_values: Optional[rounds.InputValues] = None):
        self._input_values = input_values
        if input_values is not None:
            self.PROVIDED = (*type(self).PROVIDED, *input_values.names)
        super().__init__(secagg.stages)
        self.packing, self.bits, self.settings = secagg.packing, secagg.bits, settings
        self.masked_upload, self.mask_size = secagg.masked_upload, secagg.mask_size

    @property
    def needs(self) -> rounds.RoundNeeds:
        """The plan (its cohort runs the protocol; dropouts are the plan's), the round's
        client-state slots, and what its other input values need (start weights)."""
        extra = self._input_values.needs if self._input_values is not None else rounds.RoundNeeds()
        return dataclasses.replace(super().needs, plan=True,
                                   start_weights=extra.start_weights)

    def run_round(self, state: Any, client_data: list,
                  inputs: rounds.RoundInputs) -> rounds.RoundOutput:
        """`next_for_plan` for the round's cohort (a round's plan; an asynchronous buffer's
        updates); the protocol's columns join the round's."""
        output = self.next_for_plan(
            state, client_data, inputs.plan.as_cohort(), client_states=inputs.client_states,
            provided={} if self._input_values is None else self._input_values.values(inputs))
        return rounds.RoundOutput(output.state, output.metrics, output.client_states,
                                  columns=output.columns)

    def next_for_plan(self, state: Any, client_data: list, plan: 'RoundPlan',
                      dropouts: Optional[protocol.Dropouts] = None,
                      client_states: Optional[Mapping[str, Sequence[Any]]] = None,
                      provided: Optional[Mapping[str, Sequence[Any]]] = None,
                      ) -> ProtocolRoundOutput:
        """One round for `plan`'s participants (`client_data` in `plan.participants` order).

        Args:
          state: The server state.
          client_data: The participants' data.
          plan: The round's plan: its selected clients run the protocol.
          dropouts: Who drops at which step, by 1-based position in `plan.selected` (default:
            `protocol_dropouts`); the clients whose masked input arrives must be the plan's
            participants.
          client_states: Slot -> the participants' states (same order), for a round with
            client-state slots.
          provided: Name -> the participants' other input values (same order).

        Returns:
          The output; when the protocol aborts, the unchanged state and metrics None (and no
          new client states).

        Raises:
          ValueError: Data that does not match the participants, more selected clients than the
            modulus allows, or dropouts that disagree with the plan.
        """
        if len(client_data) != len(plan.participants):
            raise ValueError(f'{len(client_data)} client datasets for {len(plan.participants)} '
                             'participants')
        if len(plan.selected) > self.settings.max_cohort:
            raise ValueError(f'{len(plan.selected)} selected clients, more than the '
                             f'{self.settings.max_cohort} the modulus 2^{self.bits} allows')
        index = _positions(plan)
        if dropouts is None:
            dropouts = protocol_dropouts(plan, index, self.settings)
        threshold = self.settings.threshold(len(plan.selected))
        session = protocol.Session(
            index.values(), bits=self.bits, threshold=threshold,
            neighbours_k=self.settings.neighbours or None, dropouts=dropouts,
            graph_seed=self._graph_seed(plan))
        participants = [index[c] for c, _ in plan.participants]
        size = self.mask_size
        try:
            session.share_keys()
            # Participants that gave up in step 1 (too few neighbours) send nothing more.
            if session.arrived() != set(participants) - session.gave_up:
                raise ValueError(f'the masked inputs of clients {sorted(session.arrived())} '
                                 f'would arrive, but the plan\'s participants are '
                                 f'{sorted(participants)}')
            kept = [i for i, u in enumerate(participants) if u not in session.gave_up]
            masks = session.masks(size, participants)
            correction = session.unmask(size)
        except protocol.ProtocolAborted as e:
            return ProtocolRoundOutput(state, None, _columns(session, threshold, e), str(e))
        states = dict(client_states or {})
        ids = [c for c, _ in plan.participants]
        new_state, metrics, new_states = self._run_stages(
            state, [client_data[i] for i in kept],
            slot_states={slot: [states[slot][i] for i in kept] for slot in self.slots},
            client_ids=[ids[i] for i in kept], round_num=plan.round_num,
            provided={'mask': [masks[participants[i]].astype(np.int32) for i in kept],
                      **{name: [values[i] for i in kept]
                         for name, values in (provided or {}).items()}},
            server_values=[correction.astype(np.int64)])
        # A participant whose masked input is not sent (it gave up in step 1) keeps its states.
        for slot, new in new_states.items():
            merged = list(states[slot])
            for i, state_i in zip(kept, new):
                merged[i] = state_i
            new_states[slot] = merged
        return ProtocolRoundOutput(new_state, metrics, _columns(session, threshold),
                                   client_states=new_states)

    def _graph_seed(self, plan: 'RoundPlan') -> int:
        """The seed of the round's SecAgg+ graph."""
        return int(np.random.default_rng([self.settings.seed, plan.round_num, 0x6EA])
                   .integers(2 ** 31))

    def uploaders(self, plan: 'RoundPlan') -> list:
        """The participants whose masked input is sent in `plan`'s round (with the dropouts of
        `protocol_dropouts`): none when the protocol aborts at step 0 or 1, and not those that
        gave up in step 1 for want of neighbours. Decided from the plan alone, as
        `next_for_plan` decides it (`protocol.key_sharing`), so a byte ledger can bill a round
        before it runs and replay it on resume."""
        plan = plan.as_cohort()
        index = _positions(plan)
        cohort = len(plan.selected)
        graph = protocol.neighbours(list(index.values()), self.settings.neighbours or None,
                                    self._graph_seed(plan))
        sharing = protocol.key_sharing(index.values(), graph, self.settings.threshold(cohort),
                                       protocol_dropouts(plan, index, self.settings))
        if sharing.aborted_at:
            return []
        return [client for client, _ in plan.participants if index[client] not in sharing.gave_up]


def _columns(session: protocol.Session, threshold: int,
             aborted: Optional[protocol.ProtocolAborted] = None) -> dict[str, float]:
    """The protocol's metric columns.

    - Abort: the 1-based step, the client whose neighbourhood (SecAgg+) or secret lacked share
      holders (its 1-based position in the selection; 0: the whole cohort fell below t) and how
      many clients (or holders) were left against the threshold.
    - The clients left after the last step reached and who dropped at each step (those that
      gave up in step 1 for want of neighbours included).
    - What the server learns in a completed round: the sums of the connected components of the
      graph among the clients whose masked input arrived (`protocol.components`):
      `secagg_exposed_sums` partial sums besides the total (0: only the total) and the size of
      the smallest group whose sum it learns (`secagg_smallest_exposed_group`, 0 when none).
    - The bytes of the protocol's own messages per selected client (keys, encrypted shares,
      unmasking requests and responses; the masked input is the uplink ledger's) and its
      compute seconds.
    """
    ledger, n = session.ledger, len(session.ids)
    alive, dropped = set(session.ids), {}
    for step in protocol.STEPS:
        after = session.survivors.get(step, alive)  # A step not reached: nobody dropped there.
        dropped[step], alive = len(alive - after), after
    exposed = [] if aborted is not None or len(session.components) < 2 else session.components
    columns = {'secagg_aborted': int(aborted is not None),
               'secagg_abort_step': protocol.STEPS.index(aborted.step) + 1 if aborted else 0,
               'secagg_abort_client': (aborted.client or 0) if aborted else 0,
               'secagg_abort_left': aborted.left if aborted else 0,
               'secagg_clients_left': len(alive),
               'secagg_threshold': threshold,
               'secagg_exposed_sums': max(0, len(exposed) - 1),
               'secagg_smallest_exposed_group': min((len(c) for c in exposed), default=0),
               'secagg_client_sent_bytes': sum(
                   size for sent in ledger.sent.values() for step, size in sent.items()
                   if step != 'masked_input') / n,
               'secagg_client_received_bytes': sum(
                   sum(r.values()) for r in ledger.received.values()) / n,
               'secagg_client_seconds': ledger.client_seconds / n,
               'secagg_server_seconds': ledger.server_seconds}
    for step in protocol.STEPS:
        columns[f'secagg_dropped_{step}'] = dropped[step]
    return columns


@dataclasses.dataclass(frozen=True)
class SecAggRound:
    """A round's stages with the SecAgg protocol as their aggregation (`with_secagg`).

    Attributes:
      stages: The round: its upload masks what the wrapped upload sends; its aggregate sums
        the masked vectors and unmasks the sum with the server's correction.
      packing: The clients' encoding of their update.
      bits: M, the modulus of masks and sums.
      masked_upload: The clients' step-2 computation, `(update, weight, mask) -> upload`, or
        `(update, weight, side, mask)` when the round also uploads a side value.
      mask_size: The length of each client's masked vector (the update's packed vector, then
        the side value's when there is one).
    """

    stages: round_composer.RoundStages
    packing: secure.Packing
    bits: int
    masked_upload: tff.Computation
    mask_size: int


def _packed(aggregator: Any, process: tff.templates.AggregationProcess, what: str,
            ) -> secure.PackedAggregation:
    """The packed halves of `aggregator` (the factory `process` was created from) for the
    values `process` aggregates; TypeError unless it sums packed vectors."""
    if not isinstance(aggregator, secure.PackedAggregator):
        raise TypeError(f'--secagg masks the packed vectors of a secure sum (--secure_agg); the '
                        f'{what} aggregator is a {type(aggregator).__name__}')
    return aggregator.packed(process.next.type_signature.parameter[1].member)


def _decoder(packed: secure.PackedAggregation, start: int, vector_type: tff.Type,
             own_state_type: Optional[tff.Type], low_bits: int) -> tff.Computation:
    """The server's last step for one packed part of the masked vectors, `[start, start +
    size)`: the exact integer sum (masked sum minus correction, mod 2^M), decoded as the
    aggregator decodes it; with its own state (DP's noise), which advances."""
    stop = start + packed.packing.size

    def part(masked_sum, correction):
        total = tf.bitwise.bitwise_and(masked_sum - correction, tf.constant(low_bits, tf.int64))
        return total[start:stop]

    if own_state_type is None:
        @tff.tensorflow.computation(vector_type, vector_type)
        def decode(masked_sum, correction):
            result, _, clipped = packed.decode(part(masked_sum, correction), None)
            return result, clipped
    else:
        @tff.tensorflow.computation(vector_type, vector_type, own_state_type)
        def decode(masked_sum, correction, own):
            return packed.decode(part(masked_sum, correction), own)
    return decode


def with_secagg(stages: round_composer.RoundStages, settings: SecAggSettings,
                model_aggregator: secure.PackedAggregator,
                side_aggregator: Optional[secure.PackedAggregator] = None) -> SecAggRound:
    """`stages` whose upload is masked and whose aggregation is the SecAgg protocol's: each
    client encodes what the round's upload stage sends (the model delta of FedAvg, the shared
    delta of a personalized algorithm; client-state slots stay on the client) as the model
    aggregator's packed vector (a secure mean's; DP's clipped record), and its side upload, if
    the round has one (SCAFFOLD's dc_i), as the side aggregator's, appended; it adds its mask
    (a client value) modulo 2^M. The server sums the masked vectors, subtracts its correction
    (a server value) and decodes each part as its aggregator does (a mean; DP's noised
    release, advancing its state).

    Args:
      stages: The round without the protocol; its aggregators were created from
        `model_aggregator` and `side_aggregator`.
      settings: The protocol's settings.
      model_aggregator: An aggregator whose clients send one packed vector
        (`secure.PackedAggregator`): its encoding is what the clients mask.
      side_aggregator: The same, for the round's side upload (`stages.side_aggregator`).

    Raises:
      TypeError: An aggregator that does not sum packed vectors.
      ValueError: A modulus beyond 31 bits, a round that replaces its aggregation, or a side
        upload without its aggregator.
    """
    if stages.aggregate is not None:
        raise ValueError('the round already replaces its aggregation; SecAgg cannot wrap it')
    if (stages.side_aggregator is None) != (side_aggregator is None):
        raise ValueError('a round with a side upload needs its side aggregator (and only then)')
    parameters = stages.parts.aggregator.next.type_signature.parameter
    value_type, weight_type = parameters[1].member, parameters[2].member
    packed = _packed(model_aggregator, stages.parts.aggregator, 'model')
    uploads = [(packed, stages.parts.aggregator)]
    if stages.side_aggregator is not None:
        uploads.append((_packed(side_aggregator, stages.side_aggregator, 'side'),
                        stages.side_aggregator))
    max_bits = max(p.packing.bits for p, _ in uploads)
    bits = modulus_bits(max_bits, settings.max_cohort)
    low_bits = (1 << bits) - 1
    if bits > 31:
        raise ValueError(f'{settings.max_cohort} clients x {max_bits}-bit values need a '
                         f'{bits}-bit modulus; masks are int32 (at most 31 bits)')
    mask_size = sum(p.packing.size for p, _ in uploads)
    mask_type = tff.TensorType(np.int32, [mask_size])  # Masks < 2^M <= 2^31: half the bytes.
    vector_type = tff.TensorType(np.int64, [mask_size])

    def masked(vectors, mask):
        vector = tf.concat([tf.cast(v, tf.int64) for v in vectors], 0)
        return tf.bitwise.bitwise_and(vector + tf.cast(mask, tf.int64),
                                      tf.constant(low_bits, tf.int64))

    if len(uploads) == 1:
        @tff.tensorflow.computation(value_type, weight_type, mask_type)
        def masked_upload(update, weight, mask):
            """The client's step-2 message: its packed vector plus its mask, mod 2^M."""
            return masked([packed.encode(update, weight)], mask)
    else:
        side_packed = uploads[1][0]

        side_weighted = stages.side_weighted

        @tff.tensorflow.computation(value_type, weight_type, side_packed.packing.value_type,
                                    mask_type)
        def masked_upload(update, weight, side, mask):
            """The client's step-2 message: its update's and its side value's packed vectors
            (the side value weighing 1, or the update's weight), plus its mask, mod 2^M."""
            side_weight = weight if side_weighted else tf.constant(1.0, tf.float32)
            return masked([packed.encode(update, weight), side_packed.encode(side, side_weight)],
                          mask)

    decoders, start = [], 0
    for part, process in uploads:
        state_type = process.initialize.type_signature.result.member
        decoders.append(_decoder(part, start, vector_type,
                                 None if part.initial_state is None else state_type[0],
                                 low_bits))
        start += part.packing.size

    previous = round_composer.stage_fn(stages, 'upload')

    def upload(r: round_composer.Round) -> round_composer.Stage:
        before = previous(r)
        value, weight = before.result
        sent = (value, weight) if len(uploads) == 1 else (value, weight, before.side)
        return dataclasses.replace(before, result=(tff.federated_map(
            masked_upload, (*sent, r.values['mask'])), None), side=None)

    def aggregate(r: round_composer.Round) -> round_composer.Stage:
        # The server sums masked vectors only; its correction unmasks the sum.
        masked_sum, _ = r.upload.result
        total = tff.federated_sum(masked_sum)
        states = ([r.state.aggregator] if len(uploads) == 1 else
                  [r.state.aggregator[0], r.state.aggregator[1]])
        results, new_states, clipped = [], [], None
        for (part, _), decode, state in zip(uploads, decoders, states):
            if part.initial_state is None:  # Its state (the vector sum's) passes unchanged.
                result, part_clipped = tff.federated_map(
                    decode, (total, r.values['correction']))
                new_state = state
            else:
                result, new_own, part_clipped = tff.federated_map(
                    decode, (total, r.values['correction'], state[0]))
                new_state = tff.federated_zip((new_own, state[1]))
            results.append(result)
            new_states.append(new_state)
            clipped = part_clipped if clipped is None else clipped
        measurements = tff.federated_zip(collections.OrderedDict(
            secure_clipped_fraction=clipped))
        if len(uploads) == 1:
            return round_composer.Stage(results[0], new_states[0], measurements)
        ones = tff.federated_value(np.float32(1.0), tff.CLIENTS)
        return round_composer.Stage(
            results[0], tff.federated_zip(tuple(new_states)), measurements,
            extra=round_composer.SideAggregate(results[1], tff.federated_sum(ones)))

    return SecAggRound(dataclasses.replace(
        stages, client_values={**stages.client_values, 'mask': mask_type},
        server_values={**stages.server_values, 'correction': vector_type},
        upload=upload, aggregate=aggregate), packed.packing, bits, masked_upload, mask_size)


# SecAgg+'s graph must stay connected among the clients whose masked input arrives: else the
# server learns the sum of each piece. The chance that a round cuts it may be at most 2^-40
# (statistical security sigma = 40, the level Bell et al. 2020 choose their concrete
# parameters for).
SECURITY_BITS = 40
AUTO_NEIGHBOURS = -1  # --secagg_neighbors=-1: the smallest k that keeps that promise.


def disconnection_bound(cohort: int, k: int, loss: float) -> float:
    """An upper bound on the chance that the ring graph of `protocol.neighbours` (each client
    joined to h = ceil(k / 2) on each side) falls apart among the clients whose masked input
    arrives, when each of the `cohort` clients is lost independently with probability `loss`.

    The survivors stay connected unless at least two gaps between ring-consecutive survivors
    hold h or more lost clients in a row. A gap starts after client i with probability
    p = (1 - loss) loss^h, and two gaps within h of each other cannot both start, so
    P(two or more) <= E[B (B - 1)] / 2 <= (cohort p)^2 / 2. Every pair (k = 0, or k >= n - 1)
    never falls apart.
    """
    if k <= 0 or k >= cohort - 1:
        return 0.0
    h = (k + 1) // 2
    return min(1.0, (cohort * (1.0 - loss) * loss ** h) ** 2 / 2)


def safe_neighbours(cohort: int, loss: float) -> int:
    """The smallest even k whose `disconnection_bound` is at most 2^-SECURITY_BITS; 0 (every
    pair) when no k below n - 1 achieves it."""
    for k in range(2, cohort - 1, 2):
        if disconnection_bound(cohort, k, loss) <= 2.0 ** -SECURITY_BITS:
            return k
    return 0


def expected_loss(config, selection: options.Selection) -> float:
    """The share of selected clients whose masked input does not arrive, from the settings:
    dropouts before their upload (2/3 of --dropout_rate), dropped stragglers and the clients
    over-selection leaves out (availability and deadlines are not foreseen: the per-round
    `secagg_exposed_sums` metric reports what happened)."""
    stragglers = config.straggler_fraction if selection.has(options.DROPS_CLIENTS) else 0.0
    kept = ((1 - 2 * config.dropout_rate / 3) * (1 - stragglers)
            / (1 + config.over_selection))
    return 1 - kept


def neighbourhood_size(config) -> int:
    """k for the round's graph: --secagg_neighbors, with -1 resolved by `safe_neighbours`."""
    if config.secagg_neighbors != AUTO_NEIGHBOURS:
        return config.secagg_neighbors
    selection = config.selection()
    return safe_neighbours(secure.max_cohort(config, selection), expected_loss(config, selection))


def _check(config, selection: options.Selection) -> None:
    """t >= 2 needs two clients a round; SecAgg+'s k keeps the graph connected (or the user
    allows it not to); with over-selection the server takes only the first K masked inputs, so
    t must not exceed K."""
    if config.aggregated_clients() < 2:
        asynchronous = selection.has(options.ASYNCHRONOUS)
        flag = ('clients_per_round' if not asynchronous else
                'buffer_size' if 'buffer_size' in config.option_params('algorithm') else 'algorithm')
        raise options.OptionError(flag, '--secagg needs at least 2 updates per aggregation (2 '
                                  'clients per round, or a buffer of 2): the sum of one client '
                                  'is its input')
    cohort = secure.max_cohort(config, selection)
    k = neighbourhood_size(config)
    if k > 0 and not config.secagg_allow_weak_graph:
        loss = expected_loss(config, selection)
        bound, safe = disconnection_bound(cohort, k, loss), safe_neighbours(cohort, loss)
        if bound > 2.0 ** -SECURITY_BITS:
            raise options.OptionError(
                'secagg_neighbors', f'k = {k} lets the clients lost each round ({loss:.0%} of '
                f'{cohort}) cut the graph apart with probability up to {bound:.1e} per round, '
                f'and the server then learns the sums of its pieces; use k >= {safe}'
                if safe else f'k = {k} lets the clients lost each round ({loss:.0%} of '
                f'{cohort}) cut the graph apart with probability up to {bound:.1e} per round, '
                'and the server then learns the sums of its pieces; no k below n - 1 keeps it '
                f'under 2^-{SECURITY_BITS} here: use 0 (every pair), or '
                '--secagg_allow_weak_graph to study the leak')
    if config.over_selection <= 0:
        return
    settings = SecAggSettings(config.secagg_threshold, k)
    threshold, holders = settings.threshold(cohort), settings.holders(cohort)
    if threshold > config.clients_per_round:
        raise options.OptionError(
            'secagg_threshold', f't = {threshold} of the {cohort} selected clients is more than '
            f'the {config.clients_per_round} whose masked inputs the server takes with '
            f'--over_selection, so every round would abort; use --secagg_threshold below '
            f'{config.clients_per_round / holders:.2f}')


def _uplink_transport(config, inner: ledger.UplinkEncoding) -> ledger.UplinkEncoding:
    """The masked upload of the secure sum's packed vector (`inner`): its values and its side
    values at M bits each, M the modulus' bits (TFF's secure-sum overhead bits are not sent:
    the protocol replaces that sum).

    Raises:
      ValueError: `inner` packs no side values (not a secure sum's vector).
    """
    if not inner.side_bits_per_vector or not inner.side_values:
        raise ValueError(f'SecAgg masks a secure sum\'s packed vector, not {inner.name} values')
    bits = modulus_bits(config.secure_bits, secure.max_cohort(config, config.selection()))
    return dataclasses.replace(inner, name=f'secagg {bits}-bit', bits_per_value=bits,
                               side_bits=inner.side_values * bits)


SECAGG = options.Registry(
    'secagg', 'Masks the secure sum of --secure_agg with the SecAgg protocol (Bonawitz et al. '
    '2017; SecAgg+ neighbourhoods of Bell et al. 2020): clients upload masked vectors, the '
    'server unmasks only their sum.', [
        options.Option('off', 'the secure sum is structural (TFF computes it as a plain sum)'),
        options.Option(
            'on', 'X25519 key agreement, t-of-n Shamir shares, masked uploads, dropout recovery',
            params=(options.Param('secagg_threshold', 0.5, 'Shares needed to reconstruct a '
                                  'client\'s secret: t = floor(f x h) + 1 (at least 2), h = the '
                                  'selected clients (with --secagg_neighbors=k: k neighbours + '
                                  'itself); f >= 0.5 keeps t > h / 2, the condition of Bonawitz '
                                  'et al. against an honest-but-curious server.',
                                  minimum=0.5, maximum=1.0, max_open=True),
                    options.Param('secagg_neighbors', 0, 'SecAgg+: each client masks with k '
                                  'neighbours on a random ring (0: with every other client; -1: '
                                  'the smallest k that keeps the graph connected among the '
                                  'clients whose masked input arrives, failing with probability '
                                  f'at most 2^-{SECURITY_BITS} per round at the round\'s expected '
                                  'losses). A smaller k is refused: dropouts could cut the graph '
                                  'and expose partial sums.', minimum=AUTO_NEIGHBOURS),
                    options.Param('secagg_allow_weak_graph', False, 'Run SecAgg+ with a k '
                                  'that dropouts may cut apart (to study the leak: the metrics '
                                  'secagg_exposed_sums and secagg_smallest_exposed_group say what '
                                  'the server learns each round).')),
            requires={options.SECURE_SUM: 'masks the packed vectors of the secure mean',
                      options.MASKED_UPLOADS: 'needs an algorithm whose round can add the '
                                              'clients\' masks to their uploads'},
            excludes={options.MODULAR_SECURE_SUM: 'its masks go on fl_tff\'s packed vectors, and '
                                                  'TFF\'s distributed DP sums its own rotated, '
                                                  'modular integer shares (masking those is not '
                                                  'built)'},
            check=_check,
            uplink_transport=_uplink_transport,
            client_extras=lambda config, masked_labels: {'secagg': SecAggSettings(
                threshold_fraction=config.secagg_threshold,
                neighbours=neighbourhood_size(config),
                max_cohort=secure.max_cohort(config, config.selection()), seed=config.seed)}),
    ], default=False, boolean=True)
