"""MIME-lite (Karimireddy et al. 2021, "Breaking the centralized barrier for cross-device
federated learning"), through TFF's `build_weighted_mime_lite`.

Clients train with a base optimizer (SGD with momentum `--mime_momentum`) whose state is the
server's, frozen during the round, so every client follows the same momentum direction; the
server updates that state from the clients' full-batch gradients at the round's start model and
applies the averaged model delta with its own optimizer. TFF's builder takes datasets of
batches: the worker builds each client's round as for every algorithm and hands over its
steps' batches (`worker_data.as_batches`).
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf
import tensorflow_federated as tff

from fl_tff.aggregators import chain as aggregator_chain
from fl_tff import options
from fl_tff import weighting as weighting_lib
from fl_tff.algorithms import personalization
from fl_tff.models.model_fn import ModelFn


def build_mime_lite(model_fn: ModelFn, *, mime_momentum: float = 0.9,
                    client_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
                    server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
                    weighting: weighting_lib.Weighting = tff.learning.ClientWeighting.NUM_EXAMPLES,
                    model_aggregator: Optional[tff.aggregators.AggregationFactory] = None,
                    ) -> tff.learning.templates.LearningProcess:
    """Builds MIME-lite with TFF's builder.

    Args:
      model_fn: Builds the model.
      mime_momentum: The base optimizer's momentum (its learning rate is the client
        optimizer's).
      client_optimizer: Plain SGD (default 0.1) giving the base optimizer's learning rate.
      server_optimizer: Applied to the averaged model delta (default SGD at 1.0).
      weighting: Uniform or examples processed (what TFF's builder can do).
      model_aggregator: Aggregates the model deltas (weighted).

    Returns:
      TFF's learning process (clients take datasets of batches).

    Raises:
      ValueError: A client optimizer that is not plain SGD, momentum outside [0, 1), or a
        weighting TFF's builder cannot express.
    """
    if not 0 <= mime_momentum < 1:
        raise ValueError(f'mime_momentum must be in [0, 1), got {mime_momentum}')
    client_optimizer = client_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=0.1)
    server_optimizer = server_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=1.0)
    personalization.require_plain_sgd(client_optimizer, model_fn, 'MIME-lite (base SGD rate)')
    specs = tuple(tf.TensorSpec([], tf.float32) for _ in range(1))
    rate = float(client_optimizer.get_hparams(client_optimizer.initialize(specs))['learning_rate'])
    model_aggregator = aggregator_chain.as_weighted(model_aggregator)
    return tff.learning.algorithms.build_weighted_mime_lite(
        model_fn, base_optimizer=tff.learning.optimizers.build_sgdm(rate, momentum=mime_momentum),
        server_optimizer=server_optimizer,
        client_weighting=weighting_lib.to_tff_weighting(weighting, 'MIME-lite'),
        model_aggregator=model_aggregator)


OPTION = options.Option(
    'mimelite', 'MIME-lite (Karimireddy et al. 2021) through TFF\'s builder: client SGD with the '
    'server\'s frozen momentum state, refreshed from full-batch gradients',
    build=build_mime_lite,
    params=(options.Param('mime_momentum', 0.9, 'MIME-lite: momentum of the base optimizer.',
                          minimum=0.0, maximum=1.0, max_open=True),),
    provides={options.LOCAL_EPOCHS},
    requires={options.TFF_WEIGHTING: 'weighs clients as TFF\'s build_weighted_mime_lite does'},
    defaults={
        'client_weighting': options.Default(
            'examples_processed', 'TFF\'s builder weighs clients by examples processed'),
        'client_learning_rate': options.Default(
            0.005, 'the base optimizer applies the server\'s momentum 0.9 to every local step, '
            'so a step moves about 1 / (1 - 0.9) = 10 times the rate: 0.005 is the project\'s '
            '0.05 (on digits, at 0.05 test accuracy fell from 0.649 at round 10 to 0.125 at '
            'round 50; at 0.005 it rose to 0.908)')},
    excludes={
        options.SECURE_SUM: 'TFF\'s builder averages the full-batch gradients in the clear',
        options.USER_LEVEL_DP: 'the full-batch gradients reach the server unclipped and unnoised',
        options.COMPRESSED_UPLINK: 'the full-batch gradients are sent uncompressed',
        options.STATEFUL_CLIENT_OPTIMIZER: 'its local steps are plain SGD steps with the '
                                           'server\'s momentum (Karimireddy et al. 2021, '
                                           'Algorithm 1); the client optimizer is its base SGD',
    },
    uplink_model_copies=2)
