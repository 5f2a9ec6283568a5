"""Client optimizers (`--client_optimizer`), built with `tff.learning.optimizers` and declared as
options. Each client starts every round with fresh optimizer state (momentum and moments at
zero), as TFF's own builders do (`build_weighted_fed_avg(client_optimizer_fn=...)`), unless
`--client_optimizer_state=keep` carries it to the client's next round
(`fl_tff.algorithms.client_optimizer_states`).

Algorithms whose update rule is written for plain SGD steps (SCAFFOLD's control variates, q-FFL's
L = 1 / lr, FedNova's step normalization, Ditto's and MIME-lite's local steps, FedSGD's single
gradient) refuse the stateful ones by capability (`STATEFUL_CLIENT_OPTIMIZER`). Each option's
builder is `(learning_rate, **its params) -> tff.learning.optimizers.Optimizer`.
"""

from __future__ import annotations

import tensorflow_federated as tff

from fl_tff import options

_MOMENTUM = options.Param('client_momentum', 0.9, 'Momentum of the client optimizer (its '
                          'accumulator reset each round unless --client_optimizer_state=keep).', minimum=0.0, maximum=1.0, max_open=True)
_BETA1 = options.Param('client_beta1', 0.9, 'First-moment decay of the client optimizer.',
                       minimum=0.0, maximum=1.0, max_open=True)
_BETA2 = options.Param('client_beta2', 0.999, 'Second-moment decay of the client optimizer.',
                       minimum=0.0, maximum=1.0, max_open=True)
_EPSILON = options.Param('client_epsilon', 1e-7, 'Epsilon of the client optimizer.',
                         minimum=0.0, min_open=True)

CLIENT_OPTIMIZERS = options.Registry(
    'client_optimizer', 'Optimizer of the clients\' local steps, at --client_learning_rate; its '
    'state starts afresh each round (see --client_optimizer_state).', [
        options.Option('sgd', 'plain SGD',
                       build=lambda lr: tff.learning.optimizers.build_sgdm(lr)),
        options.Option('sgdm', 'SGD with momentum', params=(_MOMENTUM,),
                       provides={options.STATEFUL_CLIENT_OPTIMIZER},
                       build=lambda lr, client_momentum: tff.learning.optimizers.build_sgdm(
                           lr, momentum=client_momentum)),
        options.Option('adam', 'Adam (Kingma & Ba 2015)', params=(_BETA1, _BETA2, _EPSILON),
                       provides={options.STATEFUL_CLIENT_OPTIMIZER},
                       build=lambda lr, client_beta1, client_beta2, client_epsilon:
                       tff.learning.optimizers.build_adam(lr, beta_1=client_beta1,
                                                          beta_2=client_beta2,
                                                          epsilon=client_epsilon)),
    ], default='sgd')
