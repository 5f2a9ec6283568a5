"""Server optimizers, built with `tff.learning.optimizers` and declared as options.

Adaptive server optimizers treat the averaged client update as a pseudo-gradient
(Reddi et al. 2021, "Adaptive Federated Optimization"): sgdm gives FedAvgM, adam FedAdam,
yogi FedYogi, adagrad FedAdagrad. `server_epsilon` is the paper's adaptivity tau.
Each option's builder is `(learning_rate, **its params, **its config_fields) ->
tff.learning.optimizers.Optimizer`. FTRL with momentum (`ftrl.py`) pairs with `--dp=tree`.
"""

from __future__ import annotations

import tensorflow_federated as tff

from fl_tff import options
from fl_tff.algorithms import ftrl

_MOMENTUM = options.Param('server_momentum', 0.9, 'Momentum of the server optimizer.',
                          minimum=0.0, maximum=1.0, max_open=True)
_BETA1 = options.Param('server_beta1', 0.9, 'First-moment decay of the server optimizer.',
                       minimum=0.0, maximum=1.0, max_open=True)
_BETA2 = options.Param('server_beta2', 0.99, 'Second-moment decay of the server optimizer.',
                       minimum=0.0, maximum=1.0, max_open=True)
_EPSILON = options.Param('server_epsilon', 1e-3, 'Adaptivity tau (epsilon) of the server optimizer.',
                         minimum=0.0, min_open=True)

SERVER_OPTIMIZERS = options.Registry('server_optimizer', 'Server optimizer on the averaged update.', [
    options.Option('sgd', 'SGD (at learning rate 1: plain averaging)',
                   build=lambda lr: tff.learning.optimizers.build_sgdm(lr),
                   provides={options.FTRL_STEPS}),
    options.Option('sgdm', 'SGD with momentum (FedAvgM)', params=(_MOMENTUM,),
                   build=lambda lr, server_momentum: tff.learning.optimizers.build_sgdm(
                       lr, momentum=server_momentum)),
    options.Option('adam', 'FedAdam (Reddi et al. 2021)', params=(_BETA1, _BETA2, _EPSILON),
                   build=lambda lr, server_beta1, server_beta2, server_epsilon:
                   tff.learning.optimizers.build_adam(lr, beta_1=server_beta1, beta_2=server_beta2,
                                                      epsilon=server_epsilon)),
    options.Option('yogi', 'FedYogi (Reddi et al. 2021)', params=(_BETA1, _BETA2, _EPSILON),
                   build=lambda lr, server_beta1, server_beta2, server_epsilon:
                   tff.learning.optimizers.build_yogi(lr, beta_1=server_beta1, beta_2=server_beta2,
                                                      epsilon=server_epsilon)),
    options.Option('adagrad', 'FedAdagrad (Reddi et al. 2021)', params=(_EPSILON,),
                   build=lambda lr, server_epsilon: tff.learning.optimizers.build_adagrad(
                       lr, epsilon=server_epsilon)),
    ftrl.OPTION,
], default='sgd')


def build_optimizer(name: str, learning_rate: float, *, momentum: float = 0.9,
                    beta1: float = 0.9, beta2: float = 0.99, epsilon: float = 1e-3,
                    **config_fields) -> tff.learning.optimizers.Optimizer:
    """The server optimizer called `name`; only the hyperparameters it uses are read
    (`config_fields`: the base settings it takes, e.g. ftrlm's num_clients)."""
    values = dict(server_momentum=momentum, server_beta1=beta1, server_beta2=beta2,
                  server_epsilon=epsilon)
    option = SERVER_OPTIMIZERS.get(name)
    return option.build(learning_rate, **{p.name: values[p.name] for p in option.params},
                        **{f: config_fields[f] for f in option.config_fields})
