"""One round for every process (`fl_tff.rounds`): the loop hands a process what its `needs`
declare, keeps each client-state slot's states, and checkpoints several slots together."""

import numpy as np
import pytest

from fl_tff import client_state, rounds
from fl_tff.runs import checkpoints
from fl_tff.simulation import RoundPlan, run_training


class TwoSlots:
    """A process whose clients keep a counter in each of two slots: 'a' counts a client's rounds,
    'b' sums the round numbers it took part in. Its server state counts rounds."""

    needs = rounds.RoundNeeds(client_states={'a': [np.zeros(1, np.int64)],
                                             'b': [np.zeros(2, np.float32)]}, plan=True)

    def __init__(self):
        self.seen = []

    def initialize(self):
        return 0

    def get_model_weights(self, state):
        return state

    def run_round(self, state, client_data, inputs):
        self.seen.append(inputs)
        assert len(client_data) == len(inputs.client_ids) and inputs.plan is not None
        return rounds.RoundOutput(
            state + 1, {'client_work': {'train': {'num_examples': 1, 'loss': 0.5,
                                                  'accuracy': 1.0}}},
            {'a': [[s[0] + 1] for s in inputs.client_states['a']],
             'b': [[s[0] + inputs.round_num] for s in inputs.client_states['b']]},
            columns={'my_column': float(inputs.round_num)})


class Plans:
    """A planned selection: clients c0-c2 in round 1, c1-c3 in round 2, ..."""

    def plan(self, round_num):
        selected = tuple(f'c{i}' for i in range(round_num - 1, round_num + 2))
        return RoundPlan(round_num, selected, tuple((c, 1) for c in selected))

    def client_inputs(self, plan):
        return [cid for cid, _ in plan.participants]


def test_the_loop_keeps_each_slots_states_and_hands_back_what_a_process_declares(tmp_path):
    process = TwoSlots()
    stores = {slot: client_state.ClientStateStore(initial)
              for slot, initial in TwoSlots.needs.client_states.items()}
    state, history = run_training(process, Plans(), rounds=3, client_states=stores)
    assert state == 3 and [row['my_column'] for row in history] == [1.0, 2.0, 3.0]
    # c2 took part in rounds 1, 2 and 3: three rounds, 1 + 2 + 3 in both of its 'b' values.
    assert int(stores['a'].get('c2')[0][0]) == 3
    np.testing.assert_array_equal(stores['b'].get('c2')[0], [6.0, 6.0])
    assert int(stores['a'].get('c0')[0][0]) == 1 and int(stores['a'].get('c4')[0][0]) == 1
    assert [i.client_ids for i in process.seen] == [['c0', 'c1', 'c2'], ['c1', 'c2', 'c3'],
                                                    ['c2', 'c3', 'c4']]
    # Two slots are checkpointed together, and restored into fresh stores.
    saved = checkpoints.stores_of(stores)
    path = str(tmp_path / 'states.zip')
    saved.save_client_states(path)
    fresh = {slot: client_state.ClientStateStore(initial)
             for slot, initial in TwoSlots.needs.client_states.items()}
    checkpoints.stores_of(fresh).load_client_states(path)
    for slot in fresh:
        assert dict(fresh[slot].items()).keys() == dict(stores[slot].items()).keys()
        for cid, values in stores[slot].items():
            np.testing.assert_array_equal(fresh[slot].get(cid)[0], values[0])
    assert checkpoints.stores_of({'a': stores['a']}) is stores['a']  # One slot: its own file.
    assert checkpoints.stores_of({}) is None
    for store in (*stores.values(), *fresh.values()):
        store.close()


def test_a_round_that_returns_too_few_states_is_an_error():
    class Forgetful(TwoSlots):
        def run_round(self, state, client_data, inputs):
            out = super().run_round(state, client_data, inputs)
            return rounds.RoundOutput(out.state, out.metrics,
                                      {'a': out.client_states['a'][:1], 'b': out.client_states['b']})

    with pytest.raises(ValueError, match="round 1: slot 'a': 1 new states for 3 participants"):
        run_training(Forgetful(), Plans(), rounds=1)


def test_a_plain_selection_cannot_feed_a_process_that_needs_plans():
    with pytest.raises(TypeError, match='needs it: select clients with a PlannedSelection'):
        run_training(TwoSlots(), lambda round_num: ['x'], rounds=1)
