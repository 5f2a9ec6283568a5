"""FedBuff (Nguyen et al. 2022, "Federated Learning with Buffered Asynchronous Aggregation").

`--concurrency=C` clients train at once, each from the global model current when it started;
the server applies an update as soon as `--buffer_size=K` client updates are in its buffer:

    x <- ServerOpt(x, sum_i w_i s(tau_i) Delta_i / sum_i w_i),

Delta_i being client i's local change (start - trained), tau_i its staleness (server updates
since it started), s the staleness weighting (1/sqrt(1 + tau) by default, as the paper) and w_i
the client weight of `--client_weighting` (uniform gives the paper's (1/K) sum_i s(tau_i)
Delta_i: the staleness factor shrinks the update, it is not renormalized away).
"""

from __future__ import annotations

import functools
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


def build_fedbuff(model_fn: ModelFn, *, concurrency: int = 20, buffer_size: int = 10,
                  staleness_weighting: str = 'polynomial',
                  client_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
                  server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
                  weighting: weighting_lib.Weighting = tff.learning.ClientWeighting.NUM_EXAMPLES,
                  model_aggregator: Optional[tff.aggregators.AggregationFactory] = None,
                  dp_sgd: Optional[dpsgd.DpSgd] = None,
                  secagg: Optional[tff_round.SecAggSettings] = None,
                  ) -> client_state.StagedProcess:
    """Builds FedBuff's server update for one buffer (the clock that fills it is the
    simulation's, `fl_tff.simulation.async_schedule`).

    Args:
      model_fn: Builds the model.
      concurrency: C (used by the schedule; checked against `buffer_size` here).
      buffer_size: K, updates per server update (used by the schedule).
      staleness_weighting: `polynomial` (1/sqrt(1 + tau)) or `constant` (1).
      client_optimizer: Local optimizer (default SGD at 0.1).
      server_optimizer: Applied to the aggregated update (default SGD at 1.0).
      weighting: Client weights of the mean.
      model_aggregator: Aggregates the scaled updates (default: the mean of `weighting`).
      dp_sgd: Clients run example-level DP-SGD (`fl_tff.privacy.dpsgd`).
      secagg: Run the SecAgg protocol among each buffer's updates (`model_aggregator` is then
        a packed secure one).

    Returns:
      An `asynchronous.AsyncLearningProcess` (with `secagg`, a `tff_round.SecAggLearningProcess`).

    Raises:
      ValueError: `buffer_size` not in [1, concurrency], or an unknown staleness weighting.
    """
    if not 1 <= buffer_size <= concurrency:
        raise ValueError(f'buffer_size must be in [1, concurrency = {concurrency}], got {buffer_size}')
    scale = functools.partial(asynchronous.staleness_factor, staleness_weighting)
    scale(0)  # Raises for an unknown weighting.
    client_optimizer = client_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=0.1)
    server_optimizer = server_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=1.0)
    client_work = client_work_lib.build_model_delta_client_work(
        model_fn, client_optimizer, weighting, gradient_fn=client_work_lib.gradient_fn(dp_sgd))
    return asynchronous.compose_buffered(
        model_fn, client_work, server_optimizer,
        model_aggregator or fedavg.default_aggregator(weighting), scale_fn=scale, secagg=secagg)


def _check(config, selection) -> None:
    asynchronous.check_asynchronous(config, selection)
    if config.buffer_size > config.concurrency:
        raise options.OptionError('buffer_size', f'{config.buffer_size} updates cannot fill the '
                                  f'buffer with --concurrency={config.concurrency} clients '
                                  'training; choose a value in [1, concurrency]')


OPTION = options.Option(
    'fedbuff', 'FedBuff (Nguyen et al. 2022): C clients train at once on the simulated clock; '
    'the server applies K buffered, staleness-weighted updates', build=build_fedbuff,
    params=(asynchronous.CONCURRENCY,
            options.Param('buffer_size', 10, 'FedBuff: client updates per server update (K).',
                          minimum=1),
            asynchronous.STALENESS_WEIGHTING),
    provides={options.LOCAL_EPOCHS, options.ASYNCHRONOUS,
              options.UPDATE_ATTACKS, options.DP_SGD_CLIENT, options.MASKED_UPLOADS}, excludes=asynchronous.EXCLUDES,
    check=_check)
