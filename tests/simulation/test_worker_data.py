"""Client data built in the worker from client tasks gives every algorithm and feature the same
round as data built in the driver and shipped; the composed `next` takes no client data."""

import dataclasses

import numpy as np
import pytest
import tensorflow_federated as tff

from fl_tff import client_state, experiment, options, simulation, weighting
from fl_tff.config import ExperimentConfig
from fl_tff.data import client_files
from fl_tff.data.generated import generated_client_data
from fl_tff.simulation import worker_data
from tests.helpers import max_abs_diff, plan_rounds

BASE = ExperimentConfig(dataset='digits', model='logreg', num_clients=8, clients_per_round=4,
                        client_epochs=2, client_batch_size=16, rounds=2, seed=3)

CASES = {
    'fedavg': {},
    'fedprox, partial stragglers': dict(algorithm='fedprox', mu=0.1, straggler_fraction=0.5),
    'fedsgd': dict(algorithm='fedsgd'),
    'scaffold': dict(algorithm='scaffold', client_weighting='uniform'),
    'dp-sgd': dict(dp='dpsgd', noise_multiplier=1.0, clip=1.0),
    'dp fixed': dict(dp='fixed', noise_multiplier=0.5, clip=1.0, client_weighting='uniform'),
    'secure': dict(secure_agg=True),
    '8-bit': dict(compression='quantize', compression_bits=8),
    'error feedback': dict(compression='topk', compression_k=0.1, error_feedback=True),
    'backdoor attack': dict(attack='backdoor', attack_fraction=0.5, attack_scale=2.0),
    'gaussian attack, median': dict(attack='gaussian', attack_fraction=0.5, attack_scale=0.1,
                                    aggregator='median'),
}


def _rounds(process, select, inputs, rounds=2):
    """`rounds` rounds; `inputs(plan)` gives what `next` takes for the plan's participants."""
    state, stored = process.initialize(), {}
    for r in range(1, rounds + 1):
        plan = select.plan(r)
        if isinstance(process, client_state.ProcessWithClientState):
            ids = [cid for cid, _ in plan.participants]
            out = process.next(state, inputs(plan), client_ids=ids, round_num=r,
                               client_states=[stored.get(c, process.initial_client_state())
                                              for c in ids])
            stored.update(zip(ids, out.client_states))
        else:
            out = process.next(state, inputs(plan))
        state = out.state
    return process.get_model_weights(state).trainable, stored


@pytest.mark.parametrize('case', list(CASES))
def test_rounds_built_in_the_worker_equal_rounds_shipped_from_the_driver(tff_runtime, tmp_path, case):
    config = dataclasses.replace(BASE, **CASES[case]).validate()
    fed = experiment.load_federated_data(config)
    model_fn, _ = experiment.build_model(config, fed)
    select = simulation.build_training_selection_fn(
        fed.train, clients_per_round=config.clients_per_round, epochs=config.local_epochs(),
        batch_size=config.client_batch_size, seed=config.seed, heterogeneity=config.heterogeneity(),
        client_sizes=fed.train_sizes,
        steps_per_epoch=config.selection().has(options.STEPS_PER_EPOCH),
        attack=experiment.build_attack(config, fed))
    max_weight = weighting.max_weight(config.option('client_weighting').build(padding_labels=()),
                                      max(fed.train_sizes.values()), config.local_epochs())
    shipped = experiment.build_process(config, model_fn, max_weight=max_weight)
    files = client_files.write_client_files(fed.train, str(tmp_path / 'train'))
    in_worker = experiment.build_process(config, model_fn, max_weight=max_weight,
                                         dataset_computation=select.dataset_computation(files))
    a, states_a = _rounds(shipped, select, lambda plan: plan_rounds(select, plan))
    b, states_b = _rounds(in_worker, select, select.client_inputs)
    initial = shipped.get_model_weights(shipped.initialize()).trainable
    assert max_abs_diff(a, initial) > 1e-4  # It trained.
    assert max_abs_diff(a, b) <= 1e-5
    for cid in states_a:
        assert max_abs_diff(states_a[cid], states_b[cid]) <= 1e-5


def _sequence_types(type_spec):
    found = []

    def walk(t):
        if isinstance(t, tff.SequenceType):
            found.append(t)
        elif isinstance(t, tff.FederatedType):
            walk(t.member)
        elif isinstance(t, tff.StructType):
            for _, member in tff.structure.iter_elements(t):
                walk(member)
    walk(type_spec)
    return found


def test_the_composed_next_takes_tasks_and_no_client_data(federated_tracing, skewed_digits):
    model_fn = experiment.build_model(BASE, skewed_digits)[0]
    select = simulation.build_training_selection_fn(skewed_digits.train, clients_per_round=2,
                                                    epochs=1, batch_size=8, seed=0)
    plain = experiment.build_process(BASE, model_fn)
    composed = simulation.compose(plain, select.dataset_computation())
    assert _sequence_types(plain.next.type_signature.parameter)  # The oracle can fail.
    assert not _sequence_types(composed.next.type_signature.parameter)
    clients = composed.next.type_signature.parameter[1]
    assert clients.placement == tff.CLIENTS
    assert clients.member == tff.types.to_type(worker_data.TASK_SPEC)


def test_generated_clients_are_built_from_the_id_in_the_dataset_computation(tff_runtime):
    data = generated_client_data(50, 12, features=5, seed=4)
    select = simulation.build_training_selection_fn(data, clients_per_round=3, epochs=2,
                                                    batch_size=5, seed=1)
    tasks = select(1)

    @tff.federated_computation(tff.FederatedType(select.dataset_computation().type_signature.parameter,
                                                 tff.CLIENTS))
    def first_elements(tasks):
        @tff.tensorflow.computation(select.dataset_computation().type_signature.result)
        def element(dataset):
            return dataset.get_single_element()
        return tff.federated_map(element, tff.federated_map(select.dataset_computation(), tasks))

    built = first_elements(tasks)
    for task, element in zip(tasks, built):
        here = next(iter(select.client_round(task)))
        for key in here:
            np.testing.assert_array_equal(np.asarray(element[key]), here[key].numpy())
