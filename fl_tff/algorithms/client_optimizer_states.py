"""What clients do with their optimizer's state between rounds (`--client_optimizer_state`).

`reset` (the default) starts every round from fresh state, as TFF's builders do: momentum and
Adam's moments at zero. `keep` carries each client's state (momentum; Adam's moments and step
count) from the end of its last round to the start of its next, as a client-state slot that the
simulation stores, checkpoints and resumes like any other (`client_work.keeping_optimizer_state`);
the hyperparameters are always the current flags'. Clients that sit out rounds resume where they
stopped: with sampling, a client's momentum is as old as its last participation. Needs a
stateful client optimizer (plain SGD has nothing to keep) and an algorithm whose clients run
the shared local-SGD loop (`KEEPS_CLIENT_OPTIMIZER_STATE`: FedAvg, FedProx).
"""

from __future__ import annotations

from fl_tff import options

CLIENT_OPTIMIZER_STATES = options.Registry(
    'client_optimizer_state', 'What each client does with its optimizer state between its '
    'rounds.', [
        options.Option('reset', 'fresh state every round, as TFF\'s builders (momentum and '
                       'moments at zero)'),
        options.Option(
            'keep', 'each client continues from the optimizer state (momentum, Adam\'s moments '
            'and step) it ended its last round with: a client-state slot, checkpointed',
            provides={options.CLIENT_STATE},
            requires={options.STATEFUL_CLIENT_OPTIMIZER: 'plain SGD keeps no state between '
                                                         'steps, so there is nothing to keep',
                      options.KEEPS_CLIENT_OPTIMIZER_STATE: 'needs an algorithm whose clients '
                                                            'run the shared local-SGD loop'},
            client_extras=lambda config, masked_labels: {'keep_client_optimizer_state': True}),
    ], default='reset')
