"""Client state kept by the simulation: a memory-bounded store, and a pure `next`."""

import numpy as np
import pytest

from fl_tff import client_state, experiment, simulation
from fl_tff.config import ExperimentConfig
from tests.helpers import plan_rounds


def _state(value):
    return [np.full((2, 3), value, np.float32), np.array([value], np.float32)]


def test_the_store_spills_beyond_its_memory_bound_and_snapshots_everything(tmp_path):
    store = client_state.ClientStateStore(_state(0.0), max_in_memory=2)
    ids = [f'client {i}' for i in range(5)]
    store.update(ids, [_state(float(i + 1)) for i in range(5)])
    assert store.in_memory == 2 and len(store) == 5
    np.testing.assert_array_equal(store.get('client 0')[0], _state(1.0)[0])  # Read back.
    np.testing.assert_array_equal(store.get('never trained')[1], [0.0])      # The initial state.
    assert store.in_memory == 2
    path = str(tmp_path / 'states.npz')
    store.save_client_states(path)
    restored = client_state.ClientStateStore(_state(0.0), max_in_memory=3)
    restored.load_client_states(path)
    assert len(restored) == 5
    for i, cid in enumerate(ids):
        np.testing.assert_array_equal(restored.get(cid)[0], _state(float(i + 1))[0])
    restored.load_client_states(None)
    assert len(restored) == 0
    store.close()
    restored.close()


def test_a_process_with_client_state_has_a_pure_next_and_the_learning_process_interface(
        tff_runtime, tmp_path):
    config = ExperimentConfig(model='logreg', num_clients=8, clients_per_round=4,
                              client_epochs=1, compression='topk', compression_k=0.1,
                              error_feedback=True, client_weighting='examples_processed')
    fed = experiment.load_federated_data(config)
    model_fn, _ = experiment.build_model(config, fed)
    process = experiment.build_process(config, model_fn)
    assert isinstance(process, client_state.ProcessWithClientState)
    state = process.initialize()
    assert process.set_hparams(state, process.get_hparams(state)) is not None
    select = simulation.build_training_selection_fn(
        fed.train, clients_per_round=4, epochs=1, batch_size=10, seed=0)
    plan = select.plan(1)
    ids = [cid for cid, _ in plan.participants]
    states = [process.initial_client_state() for _ in ids]
    first = process.next(state, plan_rounds(select, plan), client_ids=ids, round_num=1,
                         client_states=states)
    again = process.next(state, plan_rounds(select, plan), client_ids=ids, round_num=1,
                         client_states=states)
    # States read from files in the worker (with the per-client seeds error feedback also takes).
    from_files = process.reading_values_from(str(tmp_path / 'states')).next(
        state, plan_rounds(select, plan), client_ids=ids, round_num=1, client_states=states)
    for a, b, c in zip(first.client_states, again.client_states, from_files.client_states):
        for x, y, z in zip(a, b, c):
            np.testing.assert_array_equal(x, y)
            np.testing.assert_array_equal(x, z)
    # Top-10% leaves most of each update behind: the residuals are the new client states.
    assert all(np.any(s[0]) for s in first.client_states)
    assert all(not np.any(s[0]) for s in states)  # The inputs were not modified.
    with pytest.raises(ValueError, match='one each per participant'):
        process.next(state, plan_rounds(select, plan), client_ids=ids, round_num=1,
                     client_states=states[:1])


def test_saving_and_loading_a_snapshot_keep_the_memory_bound_and_a_closed_store_refuses(tmp_path):
    store = client_state.ClientStateStore(_state(0.0), max_in_memory=1, spill_dir=str(tmp_path))
    store.update(['a', 'b', 'c'], [_state(1.0), _state(2.0), _state(3.0)])
    store.update(['a'], [_state(4.0)])  # A spilled client trains again: its old file goes.
    path = str(tmp_path / 'snapshot.npz')
    store.save_client_states(path)
    assert store.in_memory == 1
    other = client_state.ClientStateStore(_state(0.0), max_in_memory=1, spill_dir=str(tmp_path))
    other.load_client_states(path)
    assert other.in_memory == 1 and len(other) == 3
    assert [float(other.get(c)[1][0]) for c in 'abc'] == [4.0, 2.0, 3.0]
    store.close()
    with pytest.raises(RuntimeError, match='closed'):
        store.get('a')
    assert float(other.get('b')[1][0]) == 2.0  # Separate spill directories.
    other.close()


def test_run_training_refuses_to_resume_client_state_without_its_store():
    from fl_tff.simulation import run_training

    from fl_tff import rounds

    class Stateful:
        needs = rounds.RoundNeeds(client_states={'residual': _state(0.0)})

        def initialize(self):
            return object()

        def get_model_weights(self, state):
            raise AssertionError('not reached')

        def run_round(self, state, client_data, inputs):
            raise AssertionError('not reached')

    select = simulation.ClientSelector.__new__(simulation.ClientSelector)  # Only its type matters.
    with pytest.raises(ValueError, match='needs the store of its checkpoint'):
        run_training(Stateful(), select, rounds=3, start_round=2, initial_state=object())
    used = client_state.ClientStateStore(_state(0.0))
    used.update(['a'], [_state(1.0)])
    with pytest.raises(ValueError, match='needs an empty client-state store'):
        run_training(Stateful(), select, rounds=3, client_states={'residual': used})
    used.close()
