"""q-FFL by q-FedAvg (Li et al. 2020, "Fair Resource Allocation in Federated Learning",
Algorithm 2).

The objective min_w sum_k p_k F_k(w)^(q+1) / (q+1) weighs clients with a high loss more as q
grows (q = 0: FedAvg's objective). A selected client k runs local SGD from w to w_k and sends

    Delta_k = F_k(w)^q L (w - w_k),   h_k = q F_k(w)^(q-1) L^2 |w - w_k|^2 + L F_k(w)^q,

F_k(w) being its mean training loss at w and L = 1 / (its learning rate) the Lipschitz estimate
the paper uses; the server steps w <- w - sum_k Delta_k / sum_k h_k. Here a client uploads
Delta_k / h_k with weight h_k, so the weighted mean is exactly sum_k Delta_k / sum_k h_k: the
model aggregator must be a weighted mean (a weighting other than uniform), and the server
applies it with SGD at rate 1 (`--server_learning_rate=1`). At q = 0 every h_k = L and the round
is uniformly weighted FedAvg (tested).
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf
import tensorflow_federated as tff

from fl_tff import options
from fl_tff import weighting as weighting_lib
from fl_tff.algorithms import client_work as client_work_lib
from fl_tff.algorithms import fedavg, personalization
from fl_tff.data import client_rounds
from fl_tff.models.model_fn import ModelFn


def _qffl_client_fn(model_fn: ModelFn, optimizer: tff.learning.optimizers.Optimizer, q: float):
    """A `tf.function` (initial weights, round) -> (ClientResult(Delta_k / h_k, h_k), metrics)."""
    local_training = client_work_lib.build_local_training_fn(
        model_fn, optimizer, tff.learning.ClientWeighting.UNIFORM)
    model = model_fn()  # Evaluates F_k(w); trains nothing.

    @tf.function
    def client_update(initial_weights, dataset):
        _, trainable = client_work_lib.load_weights(model, initial_weights)
        specs = tuple(tf.TensorSpec(v.shape, v.dtype) for v in trainable)
        lipschitz = 1.0 / optimizer.initialize(specs)['learning_rate']

        def add_loss(state, batch):
            loss_sum, count = state
            output = model.forward_pass(client_rounds.model_inputs(batch), training=False)
            n = tf.cast(output.num_examples, tf.float32)
            return loss_sum + output.loss * n, count + n

        element = client_rounds.read_round(dataset)
        loss_sum, count = client_rounds.run_local_steps(
            element, add_loss, (tf.constant(0.0), tf.constant(0.0)))
        loss = loss_sum / tf.maximum(count, 1.0)  # F_k(w): every step's examples, at w.
        result, metrics = local_training(initial_weights, dataset)
        delta_w = [lipschitz * u for u in tf.nest.flatten(result.update)]  # L (w - w_k)
        loss_q = tf.pow(loss, q)
        h = lipschitz * loss_q
        if q:
            h += q * tf.pow(loss, q - 1.0) * tf.add_n([tf.reduce_sum(d * d) for d in delta_w])
        h = tf.where(result.update_weight > 0, h, 0.0)  # A diverged client sends nothing.
        update = [loss_q * d / tf.maximum(h, 1e-30) for d in delta_w]
        return (tff.learning.templates.ClientResult(
            update=tf.nest.pack_sequence_as(result.update, update), update_weight=h), metrics)

    return client_update


def build_qffl(model_fn: ModelFn, *, qffl_q: float = 1.0,
               client_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
               server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
               weighting: weighting_lib.Weighting = tff.learning.ClientWeighting.NUM_EXAMPLES,
               model_aggregator: Optional[tff.aggregators.AggregationFactory] = None,
               ) -> tff.learning.templates.LearningProcess:
    """Builds q-FedAvg.

    Args:
      model_fn: Builds the model.
      qffl_q: q >= 0 (0: uniformly weighted FedAvg).
      client_optimizer: Plain SGD (default 0.1); L = 1 / its learning rate.
      server_optimizer: SGD at 1.0 for the paper's step (default).
      weighting: Ignored for the weights, which are h_k; must make the default aggregator a
        weighted mean (anything but uniform).
      model_aggregator: A weighted mean (default: TFF's weighted mean).

    Returns:
      The learning process.

    Raises:
      ValueError: q < 0, or a client optimizer that is not plain SGD.
    """
    if qffl_q < 0:
        raise ValueError(f'qffl_q must be >= 0, got {qffl_q}')
    client_optimizer = client_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=0.1)
    server_optimizer = server_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=1.0)
    personalization.require_plain_sgd(client_optimizer, model_fn, 'q-FedAvg (L = 1 / lr)')
    del weighting  # The weights are the h_k.
    client_work = client_work_lib.build_client_work(
        model_fn, lambda: _qffl_client_fn(model_fn, client_optimizer, float(qffl_q)))
    return fedavg.compose_algorithm(
        model_fn, client_work, server_optimizer,
        model_aggregator or fedavg.default_aggregator(tff.learning.ClientWeighting.NUM_EXAMPLES))


OPTION = options.Option(
    'qffl', 'q-FFL by q-FedAvg (Li et al. 2020): clients with a higher loss weigh more as '
    '--qffl_q grows (0: FedAvg)', build=build_qffl,
    params=(options.Param('qffl_q', 1.0, 'q-FFL: fairness exponent q (0: FedAvg).', minimum=0.0),),
    provides={options.LOCAL_EPOCHS, options.UPDATE_ATTACKS},
    excludes={
        options.UNIFORM_WEIGHTS: 'q-FedAvg weighs each update by its h_k through the weighted '
                                 'mean; uniform weighting would drop them (use the default '
                                 '--client_weighting=examples: the h_k replace the weights)',
        options.REPLACES_MEAN: 'its step is sum Delta_k / sum h_k, a weighted mean',
        options.SECURE_SUM: 'its weights h_k are unbounded, so no secure-sum range fits them',
        options.STATEFUL_CLIENT_OPTIMIZER: 'q-FedAvg estimates the Lipschitz constant as '
                                           'L = 1 / lr of plain SGD (Li et al. 2020, Algorithm 2)',
        options.EXAMPLE_LEVEL_DP: 'a q-FedAvg client also sends its loss F_k(w) over all its '
                                  'examples (in h_k and the update\'s scale), computed without '
                                  'noise, so DP-SGD\'s guarantee would not cover what it sends',
    })
