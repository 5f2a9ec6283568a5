"""The benchmark's FLOP count against TF's profiler: equal on the workloads' feed-forward models,
and on LSTMs whose loop is unrolled (the profiler counts a loop's body once, which is why the
count is by hand)."""

import pytest
import tensorflow as tf

from benchmarks import flops, workload


def _profiled_forward_flops(model: tf.keras.Model, spec: tf.TensorSpec) -> int:
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options['output'] = 'none'
    return tf.compat.v1.profiler.profile(graph=graph, options=options).total_float_ops


def _stacked_lstm(unroll: bool, steps: int = 12, units: int = 16, vocab: int = 30):
    """The shape of `char_lstm` (embedding, two LSTMs, logits per position), small."""
    return tf.keras.Sequential([
        tf.keras.layers.InputLayer(input_shape=(steps,), dtype=tf.int32),
        tf.keras.layers.Embedding(vocab, 8),
        tf.keras.layers.RNN(tf.keras.layers.LSTMCell(units), return_sequences=True, unroll=unroll),
        tf.keras.layers.RNN(tf.keras.layers.LSTMCell(units), return_sequences=True, unroll=unroll),
        tf.keras.layers.Dense(vocab)])


@pytest.mark.parametrize('name,tolerance', [('2nn', 0.0), ('emnist_cnn', 0.002)])
def test_feed_forward_workloads_count_what_the_profiler_counts(name, tolerance):
    spec = workload.WORKLOADS[name]
    model = spec.keras_fn()
    profiled = _profiled_forward_flops(model, tf.TensorSpec([1, *spec.input_shape], tf.float32))
    assert flops.forward_flops_per_example(model) == pytest.approx(profiled, rel=tolerance)
    assert flops.training_flops_per_example(model) == 3 * flops.forward_flops_per_example(model)


def test_an_unrolled_lstm_counts_what_the_profiler_counts_and_a_loop_is_undercounted_by_it():
    spec = tf.TensorSpec([1, 12], tf.int32)
    unrolled, looped = _stacked_lstm(unroll=True), _stacked_lstm(unroll=False)
    assert flops.forward_flops_per_example(unrolled) == _profiled_forward_flops(unrolled, spec)
    assert flops.forward_flops_per_example(looped) == flops.forward_flops_per_example(unrolled)
    assert _profiled_forward_flops(looped, spec) < flops.forward_flops_per_example(looped) / 4


def test_every_workload_has_a_count_and_an_unknown_layer_is_refused():
    for spec in workload.WORKLOADS.values():
        assert flops.training_flops_per_example(spec.keras_fn()) > 0
    odd = tf.keras.Sequential([tf.keras.layers.InputLayer(input_shape=(4,)),
                               tf.keras.layers.LayerNormalization()])
    with pytest.raises(ValueError, match='no FLOP count for layer'):
        flops.forward_flops_per_example(odd)
