"""MIME-lite built from stages on our pipeline (worker-built rounds, our selection) against
TFF's `build_weighted_mime_lite` fed the same batches built here: plainly, with uniform
weights, with both uploads clipped (TFF's clipping factories on the delta and on the
full-batch gradients) and with a compressed delta (the same compression factory given to TFF's
builder as its model aggregator)."""

import dataclasses

import numpy as np
import tensorflow_federated as tff

from fl_tff import experiment
from fl_tff.aggregators import chain as aggregator_chain
from fl_tff.algorithms.mimelite import build_mime_lite
from fl_tff.config import ExperimentConfig
from fl_tff.simulation import worker_data
from tests.helpers import max_abs_diff, to_batches

SGD = tff.learning.optimizers.build_sgdm
LR = 0.05
# The `setup` fixture's run as a config: 4 clients a round, SGD at LR, server SGD at 1.
CONFIG = ExperimentConfig(algorithm='mimelite', mime_momentum=0.9, client_learning_rate=LR,
                          server_learning_rate=1.0, clients_per_round=4)


def _reference(model_fn, weighting=tff.learning.ClientWeighting.NUM_EXAMPLES, **aggregators):
    return tff.learning.algorithms.build_weighted_mime_lite(
        model_fn, base_optimizer=SGD(LR, momentum=0.9), server_optimizer=SGD(1.0),
        client_weighting=weighting, **aggregators)


def _three_rounds(ours, reference, select):
    """(ours' trained weights, the reference's, ours' state) after three rounds of `select`."""
    state, ref_state = ours.initialize(), reference.initialize()
    for r in range(1, 4):
        tasks = select(r)
        state = ours.next(state, tasks).state
        ref_state = reference.next(
            ref_state, [to_batches(select.client_round(t)) for t in tasks]).state
    return (ours.get_model_weights(state).trainable,
            reference.get_model_weights(ref_state).trainable, state)


def test_three_rounds_on_worker_built_batches_equal_tffs_builder(tff_runtime, setup):
    model_fn, select = setup
    ours = worker_data.compose(build_mime_lite(model_fn, mime_momentum=0.9, client_optimizer=SGD(LR)),
                               select.dataset_computation())
    reference = _reference(model_fn)
    initial = reference.get_model_weights(reference.initialize()).trainable
    trained, expected, state = _three_rounds(ours, reference, select)
    assert max_abs_diff(trained, initial) > 1e-2
    assert max_abs_diff(trained, expected) <= 1e-5
    # The server's momentum state moved (MIME-lite, not FedAvg): the finalizer keeps it.
    assert max(float(np.abs(np.asarray(t)).max()) for t in
               tff.structure.flatten(state.finalizer[1])) > 0


def test_uniform_weights_and_both_uploads_clipped_equal_tffs_builder_with_clipping_factories(
        tff_runtime, setup):
    """User-level DP without noise through the driver's chain clips each client's delta and its
    full-batch gradient to C and averages each over the cohort: TFF's builder with TFF's own
    clipping factory as the model aggregator and as the full-gradient aggregator does the same.
    Clipping the delta alone gives another model, so the gradients were clipped too."""
    model_fn, select = setup
    clip = 0.05
    config = dataclasses.replace(CONFIG, client_weighting='uniform', dp='fixed',
                                 noise_multiplier=0.0, clip=clip)
    ours = worker_data.compose(experiment.build_process(config, model_fn),
                               select.dataset_computation())
    clipped = lambda: tff.aggregators.clipping_factory(clip, tff.aggregators.MeanFactory())
    uniform = tff.learning.ClientWeighting.UNIFORM
    trained, expected, _ = _three_rounds(ours, _reference(
        model_fn, uniform, model_aggregator=clipped(), full_gradient_aggregator=clipped()), select)
    assert max_abs_diff(trained, expected) <= 1e-5
    trained_plain, expected_plain, _ = _three_rounds(
        worker_data.compose(build_mime_lite(model_fn, client_optimizer=SGD(LR),
                                            weighting=uniform), select.dataset_computation()),
        _reference(model_fn, uniform, model_aggregator=clipped()), select)
    assert max_abs_diff(trained_plain, expected) > 1e-3  # Unclipped: another model.
    assert max_abs_diff(expected_plain, expected) > 1e-3  # The delta alone clipped: another.


def test_a_top_k_delta_equals_tffs_builder_with_the_same_aggregator(tff_runtime, setup):
    """--compression compresses the model delta (the gradient goes uncompressed through the
    side aggregator): TFF's builder given the run's top-k aggregator as its model aggregator,
    the gradients averaged plainly, trains the same model, and another than without top-k."""
    model_fn, select = setup
    config = dataclasses.replace(CONFIG, compression='topk', compression_k=0.2)
    ours = worker_data.compose(experiment.build_process(config, model_fn, max_weight=1000.0),
                               select.dataset_computation())
    trained, expected, _ = _three_rounds(ours, _reference(
        model_fn, model_aggregator=aggregator_chain.as_weighted(
            experiment.build_model_aggregator(config, 1000.0))), select)
    assert max_abs_diff(trained, expected) <= 1e-5
    uncompressed = _reference(model_fn)
    state = uncompressed.initialize()
    for r in range(1, 4):
        state = uncompressed.next(state, [to_batches(select.client_round(t))
                                          for t in select(r)]).state
    assert max_abs_diff(trained, uncompressed.get_model_weights(state).trainable) > 1e-4


def test_a_client_whose_gradient_is_not_finite_sends_zeros_with_weight_zero(skewed_digits):
    """A NaN gradient would survive weight 0 in the mean (0 x NaN) and, under a secure sum,
    be quantized into a finite wrong value that moved the server's momentum."""
    import tensorflow as tf
    from fl_tff import models
    from fl_tff.algorithms.mimelite import _mime_client_fn
    from fl_tff.data import client_rounds
    model_fn, keras_fn = models.model_fn_for_dataset('logreg', skewed_digits.element_spec, 10,
                                                      seed=1)
    client = _mime_client_fn(model_fn, SGD(LR), tff.learning.ClientWeighting.NUM_EXAMPLES, 0.9)
    weights = tff.learning.models.ModelWeights.from_model(keras_fn())
    momentum = [tf.zeros_like(w) for w in weights.trainable]
    x = np.full((8, *skewed_digits.element_spec['x'].shape), np.inf, np.float32)
    batches = tf.data.Dataset.from_tensor_slices(
        {'x': x, 'y': np.zeros(8, np.int32)}).batch(4)
    result, _, gradient = client(weights, momentum, client_rounds.from_batches(batches))
    assert float(result.update_weight) == 0.0
    assert all(not np.any(np.asarray(g)) for g in tf.nest.flatten(gradient))
    finite = tf.data.Dataset.from_tensor_slices(
        {'x': np.ones_like(x), 'y': np.zeros(8, np.int32)}).batch(4)
    result, _, gradient = client(weights, momentum, client_rounds.from_batches(finite))
    assert float(result.update_weight) == 8.0
    assert any(np.any(np.asarray(g)) for g in tf.nest.flatten(gradient))
