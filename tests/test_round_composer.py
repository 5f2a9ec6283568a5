"""The one round composer: with no stage replaced it is TFF's composition; declared values and
slots reach the stages by name and come back in order; bad declarations are refused."""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from fl_tff import models, round_composer, simulation
from fl_tff.algorithms import client_work as client_work_lib
from fl_tff.algorithms import fedavg
from tests.helpers import client_rounds as rounds_of, max_abs_diff


@pytest.fixture(scope='module')
def parts(skewed_digits):
    model_fn, _ = models.model_fn_for_dataset('logreg', skewed_digits.element_spec, 10, seed=2)
    work = client_work_lib.build_model_delta_client_work(
        model_fn, tff.learning.optimizers.build_sgdm(0.1), tff.learning.ClientWeighting.NUM_EXAMPLES)
    select = simulation.build_training_selection_fn(
        skewed_digits.train, clients_per_round=3, epochs=1, batch_size=8, seed=5)
    learning_parts = round_composer.LearningParts(*fedavg.learning_parts(
        model_fn, work, tff.learning.optimizers.build_sgdm(1.0), fedavg.default_aggregator(
            tff.learning.ClientWeighting.NUM_EXAMPLES)))
    return learning_parts, select


def test_with_no_stage_replaced_the_round_is_tffs_composition(tff_runtime, parts):
    learning_parts, select = parts
    reference = tff.learning.templates.compose_learning_process(
        *(getattr(learning_parts, f) for f in ('initial_model_weights_fn', 'distributor',
                                               'client_work', 'aggregator', 'finalizer')))
    composed, next_fn = round_composer.compose(round_composer.RoundStages(learning_parts))
    assert next_fn.type_signature == reference.next.type_signature
    state = ref_state = reference.initialize()
    for r in (1, 2):
        data = rounds_of(select, r)
        out, ref = next_fn(state, data), reference.next(ref_state, data)
        state, ref_state = out.state, ref.state
        assert out.metrics == ref.metrics
    ours, theirs = composed.get_model_weights(state), reference.get_model_weights(ref_state)
    initial = reference.get_model_weights(reference.initialize())
    assert max_abs_diff(theirs.trainable, initial.trainable) > 1e-3  # It trained.
    assert max_abs_diff(ours.trainable, theirs.trainable) == 0.0


def test_values_reach_the_stages_by_name_and_slots_come_back_in_order(tff_runtime, parts):
    """A stage that scales each upload by a client value and returns two slots: the round's
    result is FedAvg's with scaled updates (checked against the plain weighted mean of the
    scaled deltas), and the new slot states are what the stage computed."""
    learning_parts, select = parts
    update_type = learning_parts.client_work.next.type_signature.result.result.member.update

    @tff.tensorflow.computation(update_type, np.float32)
    def scaled(update, scale):
        return tf.nest.map_structure(lambda u: u * scale, update)

    @tff.tensorflow.computation(np.float32, np.float32)
    def count(previous, scale):
        return previous + 1.0, scale * 2.0

    def upload(r):
        sent = tff.federated_map(scaled, (r.work.result.update, r.values['scale']))
        counted, doubled = tff.federated_map(count, (r.values['visits'], r.values['scale']))
        return round_composer.Stage((sent, r.work.result.update_weight), (),
                                    client_states={'doubled': doubled, 'visits': counted})

    f32 = tff.TensorType(np.float32)
    composed, next_fn = round_composer.compose(round_composer.RoundStages(
        learning_parts, client_values={'visits': f32, 'scale': f32, 'doubled': f32},
        slots=('visits', 'doubled'), upload=upload))
    state = composed.initialize()
    data = rounds_of(select, 1)
    scales = [0.0, 1.0, 3.0]
    values = [collections.OrderedDict(visits=v, scale=s, doubled=0.0)
              for v, s in zip([1.0, 5.0, 7.0], scales)]
    new_state, metrics, new_slots = next_fn(state, data, values)
    visits = [float(c['visits']) for c in new_slots]
    doubled = [float(c['doubled']) for c in new_slots]
    assert visits == [2.0, 6.0, 8.0] and doubled == [0.0, 2.0, 6.0]
    assert list(new_slots[0]) == ['visits', 'doubled']  # In the order of `slots`.
    assert set(metrics) == {'distributor', 'client_work', 'aggregator', 'finalizer'}
    # Oracle: each client's delta from TFF's own composition of one client at a time.
    initial = composed.get_model_weights(state)
    reference = tff.learning.templates.compose_learning_process(
        *(getattr(learning_parts, f) for f in ('initial_model_weights_fn', 'distributor',
                                               'client_work', 'aggregator', 'finalizer')))
    deltas, weights = [], []
    for client, scale in zip(data, scales):
        after = reference.get_model_weights(reference.next(state, [client]).state)
        deltas.append([scale * (a - b) for a, b in zip(initial.trainable, after.trainable)])
        weights.append(reference.next(state, [client]).metrics['client_work']['train'][
            'num_examples'])
    expected = [w0 - sum(w * d[i] for w, d in zip(weights, deltas)) / sum(weights)
                for i, w0 in enumerate(initial.trainable)]
    got = composed.get_model_weights(new_state).trainable
    assert max_abs_diff(got, expected) < 1e-5


class _Unused:
    """Parts are never touched when the declaration is refused."""


@pytest.mark.parametrize('declaration,message', [
    (dict(client_values={'a': tff.TensorType(np.float32)}, slots=('b',)),
     r"slots \['b'\] are not among the client values \['a'\]"),
    (dict(client_values={'state': tff.TensorType(np.float32)}),
     'value names must be distinct and not state, client_data or client_values'),
    (dict(client_values={'x': tff.TensorType(np.float32)},
          server_values={'x': tff.TensorType(np.float32)}),
     'value names must be distinct'),
])
def test_bad_declarations_are_refused_before_anything_is_traced(declaration, message):
    with pytest.raises(ValueError, match=message):
        round_composer.compose(round_composer.RoundStages(_Unused(), **declaration))
