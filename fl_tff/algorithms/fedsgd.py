"""FedSGD, the baseline of McMahan et al. 2017: each selected client computes one gradient
over all its data at the global model; the server applies the averaged gradient with its
optimizer (learning rate = the server learning rate). There is no client optimizer.
"""

from __future__ import annotations

from typing import Optional

import tensorflow_federated as tff

from fl_tff import options
from fl_tff import weighting as weighting_lib
from fl_tff.algorithms import client_work as client_work_lib
from fl_tff.algorithms.fedavg import compose_algorithm, default_aggregator
from fl_tff.models.model_fn import ModelFn


def build_fedsgd(
        model_fn: ModelFn,
        *,
        server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
        weighting: weighting_lib.Weighting = tff.learning.ClientWeighting.NUM_EXAMPLES,
        model_aggregator: Optional[tff.aggregators.AggregationFactory] = None,
        client_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
        error_feedback=None,
        secagg=None,
) -> tff.learning.templates.LearningProcess:
    """Builds FedSGD. `client_optimizer` is accepted for a uniform signature and ignored;
    `error_feedback` sparsifies the gradients with client residuals and `secagg` masks their
    packed vectors (see `build_fedavg`)."""
    del client_optimizer  # FedSGD clients take no local steps.
    server_optimizer = server_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=0.1)
    return compose_algorithm(model_fn, client_work_lib.build_gradient_client_work(model_fn, weighting),
                             server_optimizer, model_aggregator or default_aggregator(weighting),
                             error_feedback, secagg)


OPTION = options.Option(
    'fedsgd', 'FedSGD (McMahan et al. 2017): one full-data gradient per client, the server '
    'optimizer steps on their mean', build=build_fedsgd,
    provides=frozenset({options.ERROR_FEEDBACK_CLIENT, options.UPDATE_ATTACKS,
                        options.MASKED_UPLOADS}),
    excludes={options.STATEFUL_CLIENT_OPTIMIZER: 'its clients compute one gradient and take no '
                                                 'local step, so a client optimizer would be '
                                                 'ignored'})
