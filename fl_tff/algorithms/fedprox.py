"""FedProx (Li et al. 2020, "Federated Optimization in Heterogeneous Networks").

FedAvg whose clients minimise local loss + (mu/2)||w - w_global||^2. With mu = 0 it is exactly
our FedAvg. Straggler handling (partial local work) lives in client selection
(`fl_tff.simulation.heterogeneity`), not here.
"""

from __future__ import annotations

import tensorflow_federated as tff

from fl_tff import options
from fl_tff.algorithms.fedavg import LOCAL_SGD_CAPABILITIES, build_local_sgd_algorithm
from fl_tff.models.model_fn import ModelFn


def build_fedprox(model_fn: ModelFn, *, mu: float, **kwargs) -> tff.learning.templates.LearningProcess:
    """Builds FedProx with proximal strength `mu` (>= 0); other arguments as `build_fedavg`."""
    if mu < 0:
        raise ValueError(f'FedProx mu must be >= 0, got {mu}')
    return build_local_sgd_algorithm(model_fn, proximal_strength=float(mu), **kwargs)


OPTION = options.Option(
    'fedprox', 'FedProx (Li et al. 2020): FedAvg with the proximal term (mu/2)||w - w_global||^2',
    params=(options.Param('mu', 0.0, 'FedProx proximal strength mu.', minimum=0.0),),
    build=build_fedprox, provides=LOCAL_SGD_CAPABILITIES)
