"""FedRep (Collins et al. 2021, "Exploiting Shared Representations for Personalized Federated
Learning"): a shared body (the representation) and a personal head per client.

Each round a client first trains its own head with the body frozen, then the body with its new
head frozen, and sends the body's delta only; the head is client state, never sent (see
`fl_tff.algorithms.fedper`, which trains both together). Of the round's `--client_epochs`
local epochs, the first `--head_epochs` train the head and the rest the body (the paper's
default is 10 head epochs and 1 body epoch: `--client_epochs=11 --head_epochs=10`). A step's
phase is decided by where it starts in the round's example stream; a straggler's partial work
trains the head first.
"""

from __future__ import annotations

from fl_tff import options
from fl_tff.algorithms import fedper, personalization
from fl_tff.models.model_fn import ModelFn


def build_fedrep(model_fn: ModelFn, *, personal_layers: int, head_epochs: int,
                 **kwargs) -> personalization.PersonalizedLearningProcess:
    """Builds FedRep (see the module docstring).

    Args:
      model_fn: Builds the model.
      personal_layers: How many of the model's last layers are the personal head.
      head_epochs: Local epochs of each round that train the head (>= 0).
      **kwargs: As `fl_tff.algorithms.build_fedavg`.

    Returns:
      A `personalization.PersonalizedLearningProcess` whose client state is the head.

    Raises:
      ValueError: `head_epochs` < 0 or `personal_layers` out of range for the model.
    """
    if head_epochs < 0:
        raise ValueError(f'head_epochs must be >= 0, got {head_epochs}')
    return fedper.build_personal_layers(model_fn, personal_layers=personal_layers,
                                        head_epochs=head_epochs, **kwargs)


def _check(config, selection) -> None:
    if config.head_epochs >= config.client_epochs:
        raise options.OptionError(
            'head_epochs', f'--head_epochs={config.head_epochs} leaves no epoch for the body: '
            f'FedRep trains the head for --head_epochs of the round\'s --client_epochs='
            f'{config.client_epochs} local epochs, then the body; choose --head_epochs < '
            '--client_epochs')


OPTION = options.Option(
    'fedrep', 'FedRep (Collins et al. 2021): each client trains its personal head (last '
    '--personal_layers layers) for --head_epochs, then the shared body; only the body is '
    'aggregated',
    params=(fedper.PERSONAL_LAYERS,
            options.Param('head_epochs', 1, 'FedRep: local epochs per round that train the head '
                          '(body frozen) before the rest train the body (head frozen).',
                          minimum=0)),
    build=build_fedrep, provides=fedper.PERSONALIZED_CAPABILITIES, check=_check,
    check_model=fedper.check_personal_layers)
