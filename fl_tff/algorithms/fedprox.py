"""FedProx (Li et al. 2020, "Federated Optimization in Heterogeneous Networks").

FedAvg whose clients minimise local loss + (mu/2)||w - w_global||^2. With mu = 0 it is exactly
our FedAvg. Straggler handling (partial local work) lives in client selection
(`fl_tff.simulation.heterogeneity`), not here.
"""

from __future__ import annotations

from typing import Optional

import tensorflow_federated as tff

from fl_tff.algorithms import client_work as client_work_lib
from fl_tff.algorithms.fedavg import compose_algorithm, default_aggregator
from fl_tff.models.model_fn import ModelFn


def build_fedprox(
        model_fn: ModelFn,
        *,
        mu: float,
        client_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
        server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
        weighting: tff.learning.ClientWeighting = tff.learning.ClientWeighting.NUM_EXAMPLES,
        model_aggregator: Optional[tff.aggregators.AggregationFactory] = None,
) -> tff.learning.templates.LearningProcess:
    """Builds FedProx with proximal strength `mu` (>= 0); other arguments as `build_fedavg`."""
    if mu < 0:
        raise ValueError(f'FedProx mu must be >= 0, got {mu}')
    client_optimizer = client_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=0.1)
    server_optimizer = server_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=1.0)
    client_work = client_work_lib.build_model_delta_client_work(
        model_fn, client_optimizer, weighting, proximal_strength=float(mu))
    return compose_algorithm(model_fn, client_work, server_optimizer,
                             model_aggregator or default_aggregator(weighting))
