"""Client work shared by our algorithms: local training that returns a model delta.

Written with our own `tff.tensorflow.computation` (not `build_model_delta_client_work`) so
algorithms can change the local objective and loop (FedProx's proximal term, stragglers' local
epochs, DP-SGD) in one place. Each client's data is one element, its round
(`fl_tff.data.client_rounds`), and its local steps run in one `tf.while_loop`.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Callable, Optional

import tensorflow as tf
import tensorflow_federated as tff

from fl_tff import round_composer
from fl_tff import weighting as weighting_lib
from fl_tff.data import client_rounds
from fl_tff.models.model_fn import ModelFn, model_types
from fl_tff.privacy import dpsgd

# (model, batch, trainable variables) -> (gradients, BatchOutput); see `mean_loss_gradients`.
GradientFn = Callable[[Any, Any, tuple], tuple[list, Any]]


def mean_loss_gradients(model, batch, trainable) -> tuple[list, Any]:
    """Gradients of the batch's mean loss (plain SGD)."""
    with tf.GradientTape() as tape:
        output = model.forward_pass(client_rounds.model_inputs(batch), training=True)
    return tape.gradient(output.loss, trainable), output


def gradient_fn(dp_sgd: Optional[dpsgd.DpSgd]) -> GradientFn:
    """The `GradientFn` of a client's local steps: example-level DP-SGD's with `dp_sgd`, else
    the plain mean-loss gradient."""
    return mean_loss_gradients if dp_sgd is None else dpsgd.build_dp_sgd_gradient_fn(dp_sgd)


def _zero_if_non_finite(delta):
    """(delta, 0) if every value is finite, else (zeros, 1): a diverged client contributes nothing."""
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in tf.nest.flatten(delta)])
    zeroed = tf.nest.map_structure(lambda t: tf.where(finite, t, tf.zeros_like(t)), delta)
    return zeroed, tf.cast(tf.logical_not(finite), tf.int32)


def load_weights(model, initial_weights):
    """Assigns `initial_weights` to `model`; returns its ModelWeights and flat trainable variables."""
    weights = tff.learning.models.ModelWeights.from_model(model)
    tf.nest.map_structure(lambda v, t: v.assign(t), weights, initial_weights)
    return weights, tuple(tf.nest.flatten(weights.trainable))


def attacked_update(update, element):
    """What the client sends: `update_scale * update + update_noise * N(0, I)` (the round's
    fields, see `fl_tff.attacks`; an honest client's round has 1 and 0, and sends `update`).
    The noise is keyed by [the client's noise seed, -1] (DP-SGD's steps use [seed, i >= 0])."""
    scale = element[client_rounds.UPDATE_SCALE_KEY]
    noise = element[client_rounds.UPDATE_NOISE_KEY]
    seed = tf.stack([element[client_rounds.NOISE_SEED_KEY], tf.constant(-1, tf.int64)])
    flat = tf.nest.flatten(update)
    seeds = [seed + tf.constant([0, -i], tf.int64) for i in range(len(flat))]
    sent = [tf.cond(noise > 0,
                    lambda t=t, s=s: scale * t + noise * tf.random.stateless_normal(
                        tf.shape(t), s, dtype=t.dtype),
                    lambda t=t: scale * t) for t, s in zip(flat, seeds)]
    return tf.nest.pack_sequence_as(update, sent)


def client_result(model, update, weight, element):
    """(ClientResult, metrics) for the client's round `element`: a non-finite update is zeroed,
    gets weight 0 and no metrics; a malicious client then replaces it (`attacked_update`)."""
    update, non_finite = _zero_if_non_finite(update)
    if non_finite > 0:
        model.reset_metrics()
    return (tff.learning.templates.ClientResult(
        update=attacked_update(update, element),
        update_weight=tf.where(non_finite > 0, 0.0, weight)),
            model.report_local_unfinalized_metrics())


def build_local_training_fn(model_fn: ModelFn, optimizer: tff.learning.optimizers.Optimizer,
                            weighting: weighting_lib.Weighting,
                            proximal_strength: float = 0.0,
                            gradient_fn: GradientFn = mean_loss_gradients):
    """A `tf.function` (initial_weights, dataset[, stored_optimizer_state]) -> (ClientResult,
    unfinalized metrics[, new optimizer state]).

    Local SGD over every step of the client's round (`dataset`, one element, see
    `fl_tff.data.client_rounds`). The update is `initial - trained` (a
    pseudo-gradient), weighted as `weighting` says (`fl_tff.weighting`). A positive
    `proximal_strength` mu adds FedProx's term (mu/2)||w - w_initial||^2 to the local objective,
    i.e. mu (w - w_initial) to every gradient. `gradient_fn` computes each step's gradient
    (e.g. DP-SGD's clipped, noised per-example gradients).

    The optimizer starts from fresh state, as TFF's builders do; given the client's
    `stored_optimizer_state` (its state after its last round, `--client_optimizer_state=keep`)
    it continues from it, with the hyperparameters of `optimizer` (the stored ones are
    replaced), and also returns the state after its steps (the stored one when they diverged).
    """
    model = model_fn()

    @tf.function
    def local_training(initial_weights, dataset, stored_optimizer_state=None):
        weights, trainable = load_weights(model, initial_weights)
        specs = tuple(tf.TensorSpec(v.shape, v.dtype) for v in trainable)
        step = local_sgd_step(model, optimizer, trainable, tf.nest.flatten(initial_weights.trainable),
                              proximal_strength, gradient_fn)
        element = client_rounds.read_round(dataset)
        fresh = optimizer.initialize(specs)
        start = (fresh if stored_optimizer_state is None else
                 optimizer.set_hparams(stored_optimizer_state, optimizer.get_hparams(fresh)))
        num_examples, final_state = client_rounds.run_local_steps(
            element, step, (tf.constant(0, tf.int64), start))
        result, metrics = finish_local_training(
            model, weights, initial_weights,
            weighting_lib.client_weight(weighting, element, num_examples), element)
        if stored_optimizer_state is None:
            return result, metrics
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(t))
                                for t in tf.nest.flatten(final_state) if t.dtype.is_floating])
        kept = tf.nest.map_structure(lambda new, old: tf.where(finite, new, old),
                                     final_state, start)
        return result, metrics, kept

    return local_training


def optimizer_state_type(optimizer: tff.learning.optimizers.Optimizer,
                         weights_type: tff.Type) -> tff.Type:
    """The TFF type of `optimizer`'s state for the trainable weights of `weights_type` (as a
    client's local training keeps it)."""
    specs = tuple(tf.TensorSpec(t.shape, t.dtype.type)
                  for t in tff.structure.flatten(weights_type.trainable))

    @tff.tensorflow.computation
    def initial_state():
        return optimizer.initialize(specs)

    return initial_state.type_signature.result


OPTIMIZER_STATE_SLOT = 'client_optimizer'  # Each client's optimizer state (its slot).


def keeping_optimizer_state(stages: round_composer.RoundStages, model_fn: ModelFn,
                            optimizer: tff.learning.optimizers.Optimizer,
                            weighting: weighting_lib.Weighting, proximal_strength: float = 0.0,
                            gradient_fn: GradientFn = mean_loss_gradients,
                            ) -> round_composer.RoundStages:
    """`stages` (a `round_composer.RoundStages` of local SGD, its client work
    `build_untrained_client_work`'s or a model-delta client work) whose train stage continues
    each client's optimizer from the state it left its last round
    in, kept in the client-state slot `OPTIMIZER_STATE_SLOT` (zeros before its first round:
    momentum and moments at zero, Adam's step at 0; hyperparameters always `optimizer`'s)."""
    types = model_types(model_fn)
    weights_type, metrics_aggregation_fn = types.weights_type, types.metrics_aggregation_fn()
    state_type = optimizer_state_type(optimizer, weights_type)
    data_type = client_round_type(types.input_spec)

    @tff.tensorflow.computation(weights_type, data_type, state_type)
    def client_update(initial_weights, dataset, stored_state):
        return build_local_training_fn(model_fn, optimizer, weighting, proximal_strength,
                                       gradient_fn)(initial_weights, dataset, stored_state)

    def train(r: round_composer.Round) -> round_composer.Stage:
        result, metrics, new_states = tff.federated_map(client_update, (
            r.distributed.result, r.client_data, r.values[OPTIMIZER_STATE_SLOT]))
        return round_composer.client_work_stage(r, result, metrics, metrics_aggregation_fn,
                                                client_states={OPTIMIZER_STATE_SLOT: new_states})

    if stages.train is not None:
        raise ValueError('the round already replaces its train stage')
    return dataclasses.replace(
        stages, client_values={**stages.client_values, OPTIMIZER_STATE_SLOT: state_type},
        slots=(*stages.slots, OPTIMIZER_STATE_SLOT), train=train)


def local_sgd_step(model, optimizer: tff.learning.optimizers.Optimizer, trainable: tuple,
                   initial_trainable: list, proximal_strength: float = 0.0,
                   gradient_fn: GradientFn = mean_loss_gradients):
    """The local step `(num_examples, optimizer_state), batch -> (num_examples, optimizer_state)`:
    one optimizer step on
    `gradient_fn`'s gradient, plus FedProx's mu (w - w_initial) when `proximal_strength` > 0."""

    def step(state, batch):
        num_examples, opt_state = state
        grads, output = gradient_fn(model, batch, trainable)
        if proximal_strength:
            grads = [g + proximal_strength * (v - w0)
                     for g, v, w0 in zip(grads, trainable, initial_trainable)]
        opt_state, updated = optimizer.next(opt_state, trainable, tuple(grads))
        for v, u in zip(trainable, updated):
            v.assign(u)
        return num_examples + tf.cast(output.num_examples, tf.int64), opt_state

    return step


def finish_local_training(model, weights, initial_weights, weight, element):
    """(ClientResult, metrics) after local training on the round `element`: the delta
    initial - trained, with `weight` (see `fl_tff.weighting.client_weight`)."""
    delta = tf.nest.map_structure(tf.subtract, initial_weights.trainable, weights.trainable)
    return client_result(model, delta, weight, element)


def full_batch_gradient(model, element, trainable) -> tuple[tf.Tensor, list]:
    """(examples, the mean loss gradient over all of them) at the model's current weights, one
    pass over the round `element`'s steps: sum_b n_b g_b / sum_b n_b (FedSGD's update,
    MIME-lite's g_i; zeros for a round without examples). Updates the model's metrics."""

    def step(state, batch):
        num_examples, grad_sums = state
        grads, output = mean_loss_gradients(model, batch, trainable)
        n = tf.cast(output.num_examples, tf.float32)
        return (num_examples + tf.cast(output.num_examples, tf.int64),
                tuple(s + n * g for s, g in zip(grad_sums, grads)))

    num_examples, grad_sums = client_rounds.run_local_steps(
        element, step, (tf.constant(0, tf.int64), tuple(tf.zeros_like(v) for v in trainable)))
    denominator = tf.maximum(tf.cast(num_examples, tf.float32), 1.0)
    return num_examples, [s / denominator for s in grad_sums]


def build_local_gradient_fn(model_fn: ModelFn, weighting: weighting_lib.Weighting):
    """A `tf.function` (weights, dataset) -> (ClientResult, metrics) for FedSGD.

    The update is the gradient of the mean loss over all the client's examples at the given
    weights (one pass over the round's steps, no local updates), weighted as `weighting` says.
    """
    model = model_fn()

    @tf.function
    def local_gradient(initial_weights, dataset):
        weights, trainable = load_weights(model, initial_weights)
        element = client_rounds.read_round(dataset)
        num_examples, mean = full_batch_gradient(model, element, trainable)
        gradient = tf.nest.pack_sequence_as(weights.trainable, mean)
        return client_result(model, gradient,
                              weighting_lib.client_weight(weighting, element, num_examples),
                              element)

    return local_gradient


def build_model_delta_client_work(
        model_fn: ModelFn, optimizer: tff.learning.optimizers.Optimizer,
        weighting: weighting_lib.Weighting = tff.learning.ClientWeighting.NUM_EXAMPLES,
        proximal_strength: float = 0.0,
        gradient_fn: GradientFn = mean_loss_gradients,
        data_spec: Optional[Any] = None,
) -> tff.learning.templates.ClientWorkProcess:
    """A stateless `ClientWorkProcess`: each client trains locally and returns its model delta.

    `data_spec` overrides the batch spec of client rounds (default: the model's input spec).
    """
    return build_client_work(model_fn, lambda: build_local_training_fn(
        model_fn, optimizer, weighting, proximal_strength, gradient_fn), data_spec)


def build_untrained_client_work(
        model_fn: ModelFn, data_spec: Optional[Any] = None,
) -> tff.learning.templates.ClientWorkProcess:
    """The client work in the parts of a round whose train stage is replaced (SCAFFOLD, FedNova,
    FedDyn, kept client-optimizer state): `build_model_delta_client_work`'s types (a zero model
    delta and weight per client, the model's metrics), so TFF's composition gives the server
    state, initialize and weights, without tracing a local training that never runs (the
    train stage runs its own). Its `next` trains nothing.
    """
    def make_client_fn():
        model = model_fn()

        def client_update(initial_weights, dataset):
            del dataset
            return (tff.learning.templates.ClientResult(
                update=tf.nest.map_structure(tf.zeros_like, initial_weights.trainable),
                update_weight=tf.constant(0.0)), model.report_local_unfinalized_metrics())
        return client_update

    return build_client_work(model_fn, make_client_fn, data_spec)


def build_gradient_client_work(
        model_fn: ModelFn,
        weighting: weighting_lib.Weighting = tff.learning.ClientWeighting.NUM_EXAMPLES,
) -> tff.learning.templates.ClientWorkProcess:
    """A stateless `ClientWorkProcess`: each client returns its full-data gradient (FedSGD)."""
    return build_client_work(model_fn, lambda: build_local_gradient_fn(model_fn, weighting))


def client_round_type(batch_spec: Any) -> tff.SequenceType:
    """The TFF type of a client's data: a sequence of its round (one element)."""
    return tff.SequenceType(tff.types.tensorflow_to_type(client_rounds.round_spec(batch_spec)))


def build_client_work(
        model_fn: ModelFn, make_client_fn, data_spec: Optional[Any] = None,
) -> tff.learning.templates.ClientWorkProcess:
    """Wraps a per-client `tf.function` (built by `make_client_fn` inside the client
    computation) as a stateless `ClientWorkProcess` over client rounds
    (`fl_tff.data.client_rounds`) of `data_spec` batches (default: the model's input spec).

    Measurements: `train` (the model's metrics summed over clients, then finalized).
    """
    types = model_types(model_fn)
    weights_type, metrics_aggregation_fn = types.weights_type, types.metrics_aggregation_fn()
    data_type = client_round_type(types.input_spec if data_spec is None else data_spec)

    @tff.tensorflow.computation(weights_type, data_type)
    def client_update(initial_weights, dataset):
        return make_client_fn()(initial_weights, dataset)

    @tff.federated_computation
    def init_fn():
        return tff.federated_value((), tff.SERVER)

    @tff.federated_computation(init_fn.type_signature.result,
                               tff.FederatedType(weights_type, tff.CLIENTS),
                               tff.FederatedType(data_type, tff.CLIENTS))
    def next_fn(state, weights, client_data):
        client_result, metrics = tff.federated_map(client_update, (weights, client_data))
        measurements = tff.federated_zip(
            collections.OrderedDict(train=metrics_aggregation_fn(metrics)))
        return tff.templates.MeasuredProcessOutput(state, client_result, measurements)

    return tff.learning.templates.ClientWorkProcess(init_fn, next_fn)
