"""FedAsync (Xie et al. 2019, "Asynchronous Federated Optimization"), for comparison.

`--concurrency=C` clients train at once; every client's model is mixed in on arrival:

    x_t = (1 - alpha_t) x_{t-1} + alpha_t x_new,   alpha_t = alpha s(t - tau),

x_new being the client's trained model (started from x_tau), alpha `--async_mixing` and s the
staleness weighting (polynomial (1 + t - tau)^-0.5 by default, the paper's). In the paper's
indexing a model that missed no server update has t - tau = 1, so t - tau is our staleness + 1
(and a fresh model is mixed in with alpha / sqrt(2)). As an update to the current model: x_t = x_{t-1} - alpha_t (x_{t-1} - x_new), a buffer of one whose upload is
relative to the current model, with server SGD at rate 1.
"""

from __future__ import annotations

from typing import Optional

import tensorflow_federated as tff

from fl_tff import client_state, options
from fl_tff import weighting as weighting_lib
from fl_tff.algorithms import asynchronous
from fl_tff.algorithms import client_work as client_work_lib
from fl_tff.algorithms import fedavg
from fl_tff.models.model_fn import ModelFn
from fl_tff.privacy import dpsgd
from fl_tff.secagg import tff_round


def build_fedasync(model_fn: ModelFn, *, concurrency: int = 20, async_mixing: float = 0.6,
                   staleness_weighting: str = 'polynomial',
                   client_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
                   server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
                   weighting: weighting_lib.Weighting = tff.learning.ClientWeighting.NUM_EXAMPLES,
                   model_aggregator: Optional[tff.aggregators.AggregationFactory] = None,
                   dp_sgd: Optional[dpsgd.DpSgd] = None,
                   secagg: Optional[tff_round.SecAggSettings] = None,
                   ) -> client_state.StagedProcess:
    """Builds FedAsync's server update for one arriving client.

    Args:
      model_fn: Builds the model.
      concurrency: C (used by the schedule).
      async_mixing: alpha in (0, 1].
      staleness_weighting: `polynomial` or `constant`.
      client_optimizer: Local optimizer (default SGD at 0.1).
      server_optimizer: Must be plain SGD at 1.0 for the paper's mixing (default); another one
        is applied to the mixing step.
      weighting: Client weight (irrelevant with one client per update).
      model_aggregator: Aggregates the one upload (e.g. a secure sum).
      dp_sgd: Clients run example-level DP-SGD (`fl_tff.privacy.dpsgd`).
      secagg: Run the SecAgg protocol among each buffer's updates (`model_aggregator` is then
        a packed secure one).

    Returns:
      An `asynchronous.AsyncLearningProcess` with a buffer of one (with `secagg`, a
      `tff_round.SecAggLearningProcess`).

    Raises:
      ValueError: `async_mixing` not in (0, 1], or an unknown staleness weighting.
    """
    del concurrency
    if not 0 < async_mixing <= 1:
        raise ValueError(f'async_mixing must be in (0, 1], got {async_mixing}')
    asynchronous.staleness_factor(staleness_weighting, 0)  # Raises for an unknown weighting.

    def scale(staleness: int) -> float:  # The paper's t - tau is staleness + 1.
        return async_mixing * asynchronous.staleness_factor(staleness_weighting, staleness + 1)

    client_optimizer = client_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=0.1)
    server_optimizer = server_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=1.0)
    client_work = client_work_lib.build_model_delta_client_work(
        model_fn, client_optimizer, weighting, gradient_fn=client_work_lib.gradient_fn(dp_sgd))
    return asynchronous.compose_buffered(
        model_fn, client_work, server_optimizer,
        model_aggregator or fedavg.default_aggregator(weighting), scale_fn=scale,
        relative_to_current=True, secagg=secagg)


OPTION = options.Option(
    'fedasync', 'FedAsync (Xie et al. 2019): C clients train at once on the simulated clock; '
    'each arriving model is mixed in with weight alpha s(staleness)', build=build_fedasync,
    params=(asynchronous.CONCURRENCY,
            options.Param('async_mixing', 0.6, 'FedAsync: mixing weight alpha of an arriving '
                          'model.', minimum=0.0, maximum=1.0, min_open=True),
            asynchronous.STALENESS_WEIGHTING),
    provides={options.LOCAL_EPOCHS, options.ASYNCHRONOUS,
              options.UPDATE_ATTACKS, options.DP_SGD_CLIENT, options.MASKED_UPLOADS}, excludes=asynchronous.EXCLUDES,
    check=asynchronous.check_asynchronous)
