"""Server update: apply the aggregated client delta to the global model with a server optimizer."""

from __future__ import annotations

import collections

import tensorflow as tf
import tensorflow_federated as tff


def server_update_fn(server_optimizer: tff.learning.optimizers.Optimizer):
    """`(optimizer_state, weights, update) -> (optimizer_state, weights, non_finite)`: the
    server step shared by the TFF finalizer and the fast simulation path. A non-finite update
    is skipped (non_finite = 1)."""

    def server_update(optimizer_state, weights, update):
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in tf.nest.flatten(update)])

        def apply():
            return server_optimizer.next(optimizer_state, weights.trainable, update)

        def skip():
            return optimizer_state, weights.trainable

        new_state, new_trainable = tf.cond(finite, apply, skip)
        new_weights = tff.learning.models.ModelWeights(new_trainable, weights.non_trainable)
        return new_state, new_weights, tf.cast(tf.logical_not(finite), tf.int32)

    return server_update


def build_server_update_finalizer(
        server_optimizer: tff.learning.optimizers.Optimizer,
        weights_type: tff.Type) -> tff.learning.templates.FinalizerProcess:
    """A `FinalizerProcess` treating the aggregated delta as a pseudo-gradient.

    With SGD at learning rate 1 the new model is the (weighted) average of the client models;
    adaptive optimizers give FedAvgM / FedAdam / FedYogi (Reddi et al. 2021). Measurements:
    `update_non_finite` (1 when the update was skipped because it held NaN/Inf).
    """
    trainable_type = weights_type.trainable
    specs = tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype),
                                  tff.types.type_to_tf_tensor_specs(trainable_type))

    @tff.tensorflow.computation
    def init_optimizer_state():
        return server_optimizer.initialize(specs)

    @tff.federated_computation
    def init_fn():
        return tff.federated_eval(init_optimizer_state, tff.SERVER)

    state_type = init_fn.type_signature.result.member

    server_update = tff.tensorflow.computation(state_type, weights_type, trainable_type)(
        server_update_fn(server_optimizer))

    @tff.federated_computation(init_fn.type_signature.result,
                               tff.FederatedType(weights_type, tff.SERVER),
                               tff.FederatedType(trainable_type, tff.SERVER))
    def next_fn(state, weights, update):
        new_state, new_weights, non_finite = tff.federated_map(server_update, (state, weights, update))
        measurements = tff.federated_zip(collections.OrderedDict(update_non_finite=non_finite))
        return tff.templates.MeasuredProcessOutput(new_state, new_weights, measurements)

    return tff.learning.templates.FinalizerProcess(init_fn, next_fn)


def build_finalizer_with_server_variable(
        server_optimizer: tff.learning.optimizers.Optimizer,
        weights_type: tff.Type) -> tff.learning.templates.FinalizerProcess:
    """A finalizer whose state is (server optimizer state, a variable shaped like the trainable
    weights, zeros at first): SCAFFOLD's c, FedDyn's h. Its own `next` applies the model update
    as `build_server_update_finalizer` does and leaves the variable alone; it gives the composed
    process its types, and the algorithm's finalize stage moves the variable."""
    trainable_type = weights_type.trainable
    specs = tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype),
                                  tff.types.type_to_tf_tensor_specs(trainable_type))
    apply_update = server_update_fn(server_optimizer)

    @tff.tensorflow.computation
    def init_state():
        return (server_optimizer.initialize(specs),
                tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), specs))

    @tff.tensorflow.computation(init_state.type_signature.result, weights_type, trainable_type)
    def model_update(state, weights, update):
        opt_state, variable = state
        new_opt_state, new_weights, non_finite = apply_update(opt_state, weights, update)
        return (new_opt_state, variable), new_weights, non_finite

    @tff.federated_computation
    def init_fn():
        return tff.federated_eval(init_state, tff.SERVER)

    @tff.federated_computation(init_fn.type_signature.result,
                               tff.FederatedType(weights_type, tff.SERVER),
                               tff.FederatedType(trainable_type, tff.SERVER))
    def next_fn(state, weights, update):
        new_state, new_weights, non_finite = tff.federated_map(model_update, (state, weights, update))
        return tff.templates.MeasuredProcessOutput(
            new_state, new_weights,
            tff.federated_zip(collections.OrderedDict(update_non_finite=non_finite)))

    return tff.learning.templates.FinalizerProcess(init_fn, next_fn)
