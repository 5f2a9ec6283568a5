"""The cross-cutting wrappers of a round, applied in one order, and the process that runs it.

An algorithm declares its round as stages (`fl_tff.round_composer.RoundStages`); the options
that act on what clients upload wrap those stages rather than building rounds of their own:

1. error feedback (`fl_tff.communication.error_feedback.with_error_feedback`) compresses what
   the upload stage sends and keeps the rest in a client-state slot;
2. the SecAgg protocol (`fl_tff.secagg.tff_round.with_secagg`) masks what is then uploaded and
   unmasks the sum.

Error feedback comes first because SecAgg masks the vector a client finally sends. `build`
returns the process for the wrapped round: TFF's own `LearningProcess` when the round takes no
client or server values (its parts' composition when it replaces no stage either), so it runs
under `tff.simulation.run_training_process`; a `SecAggLearningProcess` with the protocol, else a
`StatefulLearningProcess`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import tensorflow_federated as tff

from fl_tff import client_state, round_composer
from fl_tff.communication import error_feedback as error_feedback_lib
from fl_tff.secagg import tff_round


@dataclasses.dataclass(frozen=True)
class Wrappers:
    """The wrappers a round takes (None: not selected).

    Attributes:
      error_feedback: Error-feedback compression of the upload.
      secagg: The SecAgg protocol's settings.
      model_aggregator: The round's model aggregator, whose packed vectors SecAgg masks (with
        `secagg`: a `secure.PackedAggregator`, e.g. a secure mean or DP over a secure sum).
      side_aggregator: The factory of the round's side aggregator (`RoundStages.side_aggregator`),
        whose packed vectors SecAgg masks with the update's.
    """

    error_feedback: Optional[error_feedback_lib.ErrorFeedback] = None
    secagg: Optional[tff_round.SecAggSettings] = None
    model_aggregator: Any = None
    side_aggregator: Any = None


def wrap(stages: round_composer.RoundStages, wrappers: Wrappers,
         ) -> tuple[round_composer.RoundStages, Optional[tff_round.SecAggRound]]:
    """`stages` with `wrappers` applied in order, and the SecAgg round when there is one (its
    stages are then the final ones)."""
    if wrappers.error_feedback is not None:
        stages = error_feedback_lib.with_error_feedback(stages, wrappers.error_feedback)
    if wrappers.secagg is None:
        return stages, None
    secagg_round = tff_round.with_secagg(stages, wrappers.secagg, wrappers.model_aggregator,
                                         wrappers.side_aggregator)
    return secagg_round.stages, secagg_round


def _plain(stages: round_composer.RoundStages) -> bool:
    """Whether the round is TFF's composition of its parts (no stage replaced, no values)."""
    return not (stages.client_values or stages.server_values or stages.side_aggregator or any(
        getattr(stages, name) is not None
        for name in ('distribute', 'train', 'upload', 'aggregate', 'finalize')))


def build(stages: round_composer.RoundStages, wrappers: Wrappers = Wrappers()) -> Any:
    """The process of `stages` wrapped by `wrappers` (see the module docstring)."""
    stages, secagg_round = wrap(stages, wrappers)
    if secagg_round is not None:
        return tff_round.SecAggLearningProcess(secagg_round, wrappers.secagg)
    if stages.slots:
        return client_state.StatefulLearningProcess(stages)
    if _plain(stages):
        parts = stages.parts
        return tff.learning.templates.compose_learning_process(
            parts.initial_model_weights_fn, parts.distributor, parts.client_work,
            parts.aggregator, parts.finalizer)
    if not (stages.client_values or stages.server_values):
        # Stages replaced, nothing per client kept or supplied: still TFF's `LearningProcess`
        # (`next(state, client_data)`), with the composition's initialize, weights and hparams.
        composed, next_fn = round_composer.compose(stages)
        return tff.learning.templates.LearningProcess(
            composed.initialize, next_fn, composed.get_model_weights,
            composed.set_model_weights, get_hparams_fn=composed.get_hparams,
            set_hparams_fn=composed.set_hparams)
    raise ValueError('a round whose client values are not client-state slots needs a process '
                     'of its own (e.g. an asynchronous one)')
