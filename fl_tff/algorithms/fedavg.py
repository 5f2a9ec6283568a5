"""Federated Averaging (McMahan et al. 2017, "Communication-Efficient Learning of Deep
Networks from Decentralized Data"), as our own composition of TFF building blocks.

distributor (TFF broadcast) -> our client work (local SGD, model delta, weight)
-> aggregator (weighted or uniform mean) -> our finalizer (server optimizer)
= `tff.learning.templates.LearningProcess` (or, with error feedback, a
`client_state.StatefulLearningProcess` whose clients keep residuals).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow_federated as tff

from fl_tff import options, round_composer, round_wrappers
from fl_tff.aggregators import chain as aggregator_chain
from fl_tff import weighting as weighting_lib
from fl_tff.algorithms import client_work as client_work_lib
from fl_tff.algorithms import finalizer as finalizer_lib
from fl_tff.communication import error_feedback as error_feedback_lib
from fl_tff.models.model_fn import ModelFn, model_types
from fl_tff.privacy import dpsgd
from fl_tff.secagg import tff_round


def default_aggregator(weighting: weighting_lib.Weighting) -> tff.aggregators.AggregationFactory:
    """The weighted mean, or the unweighted mean for uniform weighting."""
    return aggregator_chain.mean_factory(weighting_lib.resolve(weighting).uniform)


def compose_algorithm(
        model_fn: ModelFn,
        client_work: tff.learning.templates.ClientWorkProcess,
        server_optimizer: tff.learning.optimizers.Optimizer,
        model_aggregator: tff.aggregators.AggregationFactory,
        error_feedback: Optional[error_feedback_lib.ErrorFeedback] = None,
        secagg: Optional[tff_round.SecAggSettings] = None,
) -> tff.learning.templates.LearningProcess:
    """Wires broadcast, `client_work`, an aggregator and our server finalizer into a process.

    With `error_feedback`, clients sparsify their updates with a residual kept across rounds,
    and the result is a `client_state.StatefulLearningProcess` (same server state; `next` also
    takes the clients' ids and states). With `secagg`, the round runs the SecAgg protocol over
    the packed vectors of `model_aggregator` (a secure mean), and the result is a
    `tff_round.SecAggLearningProcess` (same server state; it runs rounds for a plan).
    """
    parts = round_composer.LearningParts(
        *learning_parts(model_fn, client_work, server_optimizer, model_aggregator))
    return round_wrappers.build(round_composer.RoundStages(parts), round_wrappers.Wrappers(
        error_feedback, secagg, model_aggregator))


def learning_parts(
        model_fn: ModelFn,
        client_work: tff.learning.templates.ClientWorkProcess,
        server_optimizer: tff.learning.optimizers.Optimizer,
        model_aggregator: tff.aggregators.AggregationFactory,
        finalizer: Optional[tff.learning.templates.FinalizerProcess] = None,
) -> tuple:
    """The five parts `tff.learning.templates.compose_learning_process` takes: the initial
    weights, TFF's broadcast, `client_work`, `model_aggregator` over the trainable weights
    (an unweighted one wrapped to take and ignore the weights) and `finalizer` (default: our
    server-optimizer finalizer)."""
    weights_type = model_types(model_fn).weights_type

    @tff.tensorflow.computation
    def initial_model_weights_fn():
        return tff.learning.models.ModelWeights.from_model(model_fn())

    aggregator = aggregator_chain.as_weighted(model_aggregator).create(weights_type.trainable, tff.TensorType(np.float32))
    return (initial_model_weights_fn, tff.learning.templates.build_broadcast_process(weights_type),
            client_work, aggregator,
            finalizer or finalizer_lib.build_server_update_finalizer(server_optimizer, weights_type))


def build_local_sgd_algorithm(
        model_fn: ModelFn,
        *,
        proximal_strength: float = 0.0,
        client_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
        server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
        weighting: weighting_lib.Weighting = tff.learning.ClientWeighting.NUM_EXAMPLES,
        model_aggregator: Optional[tff.aggregators.AggregationFactory] = None,
        dp_sgd: Optional[dpsgd.DpSgd] = None,
        error_feedback: Optional[error_feedback_lib.ErrorFeedback] = None,
        secagg: Optional[tff_round.SecAggSettings] = None,
        keep_client_optimizer_state: bool = False,
) -> tff.learning.templates.LearningProcess:
    """Local (proximal) SGD on clients, a server optimizer on the aggregated delta: FedAvg at
    `proximal_strength` 0, FedProx above. Defaults: client SGD lr 0.1, server SGD lr 1.0.

    With `dp_sgd`, clients run sample-level DP-SGD, their noise keyed by each round's
    `noise_seed` (`fl_tff.data.client_rounds`); for DP-SGD's accounting, local steps should stop
    at epoch boundaries (`ClientSelector(..., steps_per_epoch=True)`). With
    `keep_client_optimizer_state`, each client's optimizer continues from the state it ended
    its previous round in (a client-state slot, `client_work.keeping_optimizer_state`) instead
    of starting afresh; the process then has client state.
    """
    client_optimizer = client_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=0.1)
    server_optimizer = server_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=1.0)
    gradient_fn = client_work_lib.gradient_fn(dp_sgd)
    # With kept optimizer state the train stage runs its own local training (below).
    client_work = (client_work_lib.build_untrained_client_work(model_fn)
                   if keep_client_optimizer_state else
                   client_work_lib.build_model_delta_client_work(
                       model_fn, client_optimizer, weighting, proximal_strength=proximal_strength,
                       gradient_fn=gradient_fn))
    model_aggregator = model_aggregator or default_aggregator(weighting)
    parts = round_composer.LearningParts(
        *learning_parts(model_fn, client_work, server_optimizer, model_aggregator))
    stages = round_composer.RoundStages(parts)
    if keep_client_optimizer_state:
        stages = client_work_lib.keeping_optimizer_state(
            stages, model_fn, client_optimizer, weighting, proximal_strength, gradient_fn)
    return round_wrappers.build(stages, round_wrappers.Wrappers(
        error_feedback, secagg, model_aggregator))


def build_fedavg(model_fn: ModelFn, **kwargs) -> tff.learning.templates.LearningProcess:
    """Builds FedAvg: client SGD (default lr 0.1), server SGD (default lr 1.0 = plain averaging).

    Keyword arguments: `client_optimizer`, `server_optimizer`, `weighting` (TFF's NUM_EXAMPLES,
    the default, weights each delta by the examples processed as TFF's builders do; UNIFORM
    weights all clients equally; `fl_tff.weighting.ClientWeighting` for n_k or tokens) and
    `model_aggregator` (overrides the mean, e.g. robust or DP aggregation), `dp_sgd`
    (sample-level DP-SGD on clients), `error_feedback` (sparsified uplink with client
    residuals; `model_aggregator` then averages the sparsified updates) and `secagg` (the
    SecAgg protocol masks the uploads of `model_aggregator`, a secure mean).
    """
    return build_local_sgd_algorithm(model_fn, **kwargs)


# Local SGD clients: DP-SGD, error feedback and kept optimizer states plug into them.
LOCAL_SGD_CAPABILITIES = frozenset({options.LOCAL_EPOCHS, options.DP_SGD_CLIENT,
                                    options.ERROR_FEEDBACK_CLIENT, options.UPDATE_ATTACKS,
                                    options.MASKED_UPLOADS, options.KEEPS_CLIENT_OPTIMIZER_STATE})

OPTION = options.Option(
    'fedavg', 'Federated Averaging (McMahan et al. 2017): local SGD, the server applies the '
    'averaged delta', build=build_fedavg, provides=LOCAL_SGD_CAPABILITIES)
