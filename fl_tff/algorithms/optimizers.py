"""Server (and client) optimizers by name, built with `tff.learning.optimizers`.

Adaptive server optimizers treat the averaged client update as a pseudo-gradient
(Reddi et al. 2021, "Adaptive Federated Optimization"): sgdm gives FedAvgM, adam FedAdam,
yogi FedYogi, adagrad FedAdagrad. `epsilon` is the paper's adaptivity tau.
"""

from __future__ import annotations

import tensorflow_federated as tff

SERVER_OPTIMIZERS = ('sgd', 'sgdm', 'adam', 'yogi', 'adagrad')


def build_optimizer(name: str, learning_rate: float, *, momentum: float = 0.9,
                    beta1: float = 0.9, beta2: float = 0.99,
                    epsilon: float = 1e-3) -> tff.learning.optimizers.Optimizer:
    """The optimizer called `name`; only the hyperparameters it uses are read."""
    if name == 'sgd':
        return tff.learning.optimizers.build_sgdm(learning_rate)
    if name == 'sgdm':
        return tff.learning.optimizers.build_sgdm(learning_rate, momentum=momentum)
    if name == 'adam':
        return tff.learning.optimizers.build_adam(learning_rate, beta_1=beta1, beta_2=beta2,
                                                  epsilon=epsilon)
    if name == 'yogi':
        return tff.learning.optimizers.build_yogi(learning_rate, beta_1=beta1, beta_2=beta2,
                                                  epsilon=epsilon)
    if name == 'adagrad':
        return tff.learning.optimizers.build_adagrad(learning_rate, epsilon=epsilon)
    raise ValueError(f'unknown optimizer {name!r}; valid choices: {", ".join(SERVER_OPTIMIZERS)}')
