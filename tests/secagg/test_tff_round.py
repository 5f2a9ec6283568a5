"""The SecAgg protocol inside TFF's round (`--secagg`): FedAvg with it equals FedAvg with the
structural secure sum exactly, with dropouts at every step up to n - t; beyond, the round aborts
and the model is unchanged; what the clients' TFF computation uploads is uniform modulo 2^M and
uncorrelated with their packed update; the compiled round aggregates only masked vectors."""

import dataclasses

import numpy as np
import pytest
from scipy import stats
from tensorflow_federated.python.core.impl.compiler import tree_analysis

from fl_tff import experiment, simulation
from fl_tff.config import ConfigError, ExperimentConfig
from fl_tff.secagg import protocol, tff_round
from fl_tff.rounds import RoundPlan
from tests.helpers import float_tensor_shapes, seed_secagg_randomness

BASE = ExperimentConfig(hidden_units=32, clients_per_round=8, client_epochs=1, seed=3,
                        secure_agg=True, secure_bits=12, client_weighting='uniform')
WEIGHT_SHAPES = {(64, 32), (32, 32), (32, 10), (32,), (10,)}
N = 8  # Selected clients; t = floor(0.5 x 8) + 1 = 5, so up to n - t = 3 dropouts recover.


def _build(config):
    fed = experiment.load_federated_data(config)
    model_fn, _ = experiment.build_model(config, fed)
    process = experiment.build_process(config, model_fn, max_weight=1000.0)
    select = simulation.build_training_selection_fn(
        fed.train, clients_per_round=config.clients_per_round, epochs=1,
        batch_size=config.client_batch_size, seed=config.seed)
    return process, select


@pytest.fixture(scope='module')
def processes(tff_runtime):
    """(structural, with the protocol, the selector) for uniform and weighted means."""
    out = {}
    for weighting in ('uniform', 'examples'):
        config = dataclasses.replace(BASE, client_weighting=weighting)
        structural, select = _build(config)
        masked, _ = _build(dataclasses.replace(config, secagg=True))
        out[weighting] = structural, masked, select
    return out


def _round(select, participants):
    """A plan whose N selected clients are round 1's, of which `participants` contribute, and
    their data."""
    plan = select.plan(1)
    assert len(plan.selected) == N
    chosen = [(c, e) for c, e in plan.participants if c in participants]
    plan = RoundPlan(1, plan.selected, tuple(chosen), dropped=N - len(chosen))
    return plan, [select.client_round(t) for t in select.client_inputs(plan)]


def _weights(process, state):
    return process.get_model_weights(state).trainable


def _dropouts(step, count):
    """`count` clients (positions in the selection) dropping at `step`; a client that drops
    before its masked input arrives is not a participant."""
    return protocol.Dropouts({step: frozenset(range(N - count + 1, N + 1))})


def _two_rounds_the_second_with_a_dropout(select):
    """(plan, data, dropouts) of rounds 1 and 2; in round 2 the last selected client drops
    before its masked input arrives."""
    for round_num, dropped in ((1, 0), (2, 1)):
        plan = select.plan(round_num)
        if dropped:
            chosen = tuple((c, e) for c, e in plan.participants if c != plan.selected[-1])
            plan = RoundPlan(round_num, plan.selected, chosen, dropped=1)
        yield (plan, [select.client_round(t) for t in select.client_inputs(plan)],
               _dropouts('masked_input', dropped))


@pytest.mark.parametrize('weighting', ['uniform', 'examples'])
@pytest.mark.parametrize('step,count', [(None, 0)] + [(step, count) for step in protocol.STEPS
                                                      for count in (1, 3)])  # 3 = n - t.
def test_fedavg_with_the_protocol_equals_the_structural_secure_sum_exactly(
        processes, weighting, step, count):
    structural, masked, select = processes[weighting]
    plan = select.plan(1)
    dropouts = _dropouts(step, count) if step else protocol.Dropouts()
    early = set() if step in (None, 'unmasking') else set(plan.selected[N - count:])
    plan, data = _round(select, set(plan.selected) - early)
    state = masked.initialize()
    out = masked.next_for_plan(state, data, plan, dropouts=dropouts)
    assert out.columns['secagg_aborted'] == 0
    assert out.columns[f'secagg_dropped_{step}' if step else 'secagg_dropped_unmasking'] == count
    expected = structural.next(structural.initialize(), data)
    for got, want, before in zip(_weights(masked, out.state), _weights(structural, expected.state),
                                 _weights(masked, state)):
        np.testing.assert_array_equal(got, want)
        assert not np.array_equal(got, before)  # The round did train.


def test_masks_read_from_files_in_the_worker_give_the_same_model(processes, tmp_path):
    """As the driver runs it: each client's mask travels as a file its worker reads."""
    _, masked, select = processes['examples']
    from_files = masked.reading_values_from(str(tmp_path / 'masks'))
    assert from_files.next_computation.type_signature.parameter[2].member.dtype.type is np.str_
    plan = select.plan(1)
    plan, data = _round(select, set(plan.selected) - {plan.selected[-1]})
    dropouts = _dropouts('share_keys', 1)
    shipped = masked.next_for_plan(masked.initialize(), data, plan, dropouts=dropouts)
    read = from_files.next_for_plan(masked.initialize(), data, plan, dropouts=dropouts)
    for got, want in zip(_weights(masked, read.state), _weights(masked, shipped.state)):
        np.testing.assert_array_equal(got, want)
    assert list((tmp_path / 'masks').iterdir()) == []


@pytest.mark.parametrize('algorithm,slot,extra', [
    ('fedper', 'personal', {'personal_layers': 1}), ('feddyn', 'dyn_gradient', {}),
    ('scaffold', 'control_variate', dict(dp='fixed', noise_multiplier=1.0, clip=0.5))])
def test_stateful_algorithms_with_the_protocol_equal_the_structural_secure_sum(
        tff_runtime, algorithm, slot, extra):
    """SecAgg with client state: the protocol masks what is uploaded (FedPer's shared delta,
    FedDyn's delta, SCAFFOLD's delta and dc_i, here each clipped and noised by user-level DP)
    and leaves the slots on the clients, so the run equals the one with the structural secure
    sum bit for bit over two rounds (the second with a dropout before its masked input),
    client states included; no aggregation in the compiled round but the masked vectors' sum
    carries a tensor of a weight's shape (FedPer's head, SCAFFOLD's dc_i included)."""
    config = dataclasses.replace(BASE, algorithm=algorithm, **extra)
    structural, select = _build(config)
    masked, _ = _build(dataclasses.replace(config, secagg=True))
    assert masked.slots == (slot,) and masked.needs.plan
    tree = masked.next_computation.to_building_block()
    for call in tree_analysis.find_unsecure_aggregation_in_tree(tree):
        assert not set(float_tensor_shapes(call.argument.type_signature)) & WEIGHT_SHAPES
    state, reference = masked.initialize(), structural.initialize()
    heads, reference_heads = {}, {}
    initial_head = masked.needs.client_states[slot]
    for round_num, dropped in ((1, 0), (2, 1)):
        plan = select.plan(round_num)
        if dropped:  # The last selected client drops before its masked input arrives.
            chosen = tuple((c, e) for c, e in plan.participants if c != plan.selected[-1])
            plan = RoundPlan(round_num, plan.selected, chosen, dropped=1)
        data = [select.client_round(t) for t in select.client_inputs(plan)]
        ids = [c for c, _ in plan.participants]
        out = masked.next_for_plan(
            state, data, plan, dropouts=_dropouts('masked_input', dropped),
            client_states={slot: [heads.get(c, initial_head) for c in ids]})
        assert out.columns['secagg_aborted'] == 0
        expected = structural.next(
            reference, data, client_ids=ids, round_num=round_num,
            client_states=[reference_heads.get(c, initial_head) for c in ids])
        state, reference = out.state, expected.state
        heads.update(zip(ids, out.client_states[slot]))
        reference_heads.update(zip(ids, expected.client_states))
        for got, want in zip(_weights(masked, state), _weights(structural, reference)):
            np.testing.assert_array_equal(got, want)
    assert heads.keys() == reference_heads.keys()
    for client, head in heads.items():
        for got, want in zip(head, reference_heads[client]):
            np.testing.assert_array_equal(got, want)
        assert max(np.abs(g - i).max() for g, i in zip(head, initial_head)) > 1e-4  # Trained.


def test_fedsgd_with_the_protocol_equals_the_structural_secure_sum(tff_runtime):
    """FedSGD's clients upload one gradient; the protocol masks its packed vector."""
    config = dataclasses.replace(BASE, algorithm='fedsgd')
    structural, select = _build(config)
    masked, _ = _build(dataclasses.replace(config, secagg=True))
    plan = select.plan(1)
    data = [select.client_round(t) for t in select.client_inputs(plan)]
    out = masked.next_for_plan(masked.initialize(), data, plan)
    assert out.columns['secagg_aborted'] == 0
    expected = structural.next(structural.initialize(), data).state
    for got, want, before in zip(_weights(masked, out.state), _weights(structural, expected),
                                 _weights(masked, masked.initialize())):
        np.testing.assert_array_equal(got, want)
        assert not np.array_equal(got, before)


@pytest.mark.parametrize('weighting', ['examples', 'uniform'])
def test_mime_lite_with_the_protocol_equals_the_structural_secure_sum(tff_runtime, weighting):
    """MIME-lite uploads its delta and its full-batch gradient (weighted as the delta): the
    protocol masks both packed vectors together, so two rounds (the second with a dropout
    before its masked input) equal the structural secure sum's bit for bit, the server's
    momentum included; the compiled round aggregates no weight-shaped float tensor."""
    config = dataclasses.replace(BASE, algorithm='mimelite', client_weighting=weighting)
    structural, select = _build(config)
    masked, _ = _build(dataclasses.replace(config, secagg=True))
    tree = masked.next_computation.to_building_block()
    for call in tree_analysis.find_unsecure_aggregation_in_tree(tree):
        assert not set(float_tensor_shapes(call.argument.type_signature)) & WEIGHT_SHAPES
    state, reference = masked.initialize(), structural.initialize()
    for plan, data, dropouts in _two_rounds_the_second_with_a_dropout(select):
        out = masked.next_for_plan(state, data, plan, dropouts=dropouts)
        assert out.columns['secagg_aborted'] == 0
        state, reference = out.state, structural.next(reference, data).state
        for got, want in zip(_weights(masked, state), _weights(structural, reference)):
            np.testing.assert_array_equal(got, want)
    momentum = [np.asarray(t) for t in state.finalizer[1]]
    for got, want in zip(momentum, reference.finalizer[1]):
        np.testing.assert_array_equal(got, want)
    assert max(np.abs(m).max() for m in momentum) > 0


@pytest.mark.parametrize('dp,extra', [('fixed', {}),
                                      ('tree', dict(client_sampling='epochs',
                                                    server_optimizer='ftrlm'))])
def test_user_level_dp_with_the_protocol_equals_dp_over_the_structural_secure_sum(
        tff_runtime, dp, extra):
    """dp(secagg(secure_sum)): clients clip their update with the DP query and mask its packed
    vector; the server unmasks the sum and adds the query's seeded noise. Over two rounds (the
    second with a dropout before its masked input; the noise's state advancing) the model equals
    the one of DP over the structural secure sum bit for bit, and the noise acted."""
    config = dataclasses.replace(BASE, dp=dp, noise_multiplier=1.0, clip=0.5, **extra)
    structural, select = _build(config)
    masked, _ = _build(dataclasses.replace(config, secagg=True))
    noiseless, _ = _build(dataclasses.replace(config, noise_multiplier=0.0))
    state, reference, quiet = masked.initialize(), structural.initialize(), noiseless.initialize()
    for plan, data, dropouts in _two_rounds_the_second_with_a_dropout(select):
        out = masked.next_for_plan(state, data, plan, dropouts=dropouts)
        assert out.columns['secagg_aborted'] == 0
        state = out.state
        reference = structural.next(reference, data).state
        quiet = noiseless.next(quiet, data).state
        for got, want in zip(_weights(masked, state), _weights(structural, reference)):
            np.testing.assert_array_equal(got, want)
    assert max(np.abs(a - b).max() for a, b in zip(_weights(masked, state),
                                                   _weights(noiseless, quiet))) > 1e-3


@pytest.mark.parametrize('step', ['share_keys', 'masked_input'])
def test_secagg_plus_neighbourhoods_give_the_same_model(processes, tff_runtime, step):
    """k = 4 neighbours on a ring: each client's secrets have 5 holders, t = 3. A client that
    drops after sharing leaves pairwise masks the server rebuilds over the sparse graph."""
    structural, _, select = processes['uniform']
    sparse, _ = _build(dataclasses.replace(BASE, secagg=True, secagg_neighbors=4))
    assert sparse.settings.threshold(N) == 3
    plan = select.plan(1)
    plan, data = _round(select, set(plan.selected) - {plan.selected[-1]})
    out = sparse.next_for_plan(sparse.initialize(), data, plan, dropouts=_dropouts(step, 1))
    assert out.columns['secagg_aborted'] == 0
    assert out.columns[f'secagg_dropped_{step}'] == 1
    expected = structural.next(structural.initialize(), data)
    for got, want in zip(_weights(sparse, out.state), _weights(structural, expected.state)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize('step', protocol.STEPS)
def test_more_than_n_minus_t_dropouts_abort_the_round_and_leave_the_model_unchanged(
        processes, step):
    _, masked, select = processes['uniform']
    plan = select.plan(1)
    count = N - masked.settings.threshold(N) + 1
    early = set() if step == 'unmasking' else set(plan.selected[N - count:])
    plan, data = _round(select, set(plan.selected) - early)
    state = masked.initialize()
    out = masked.next_for_plan(state, data, plan, dropouts=_dropouts(step, count))
    assert out.metrics is None and 'fewer than the threshold 5' in out.abort_reason
    assert out.columns['secagg_aborted'] == 1
    assert protocol.STEPS[out.columns['secagg_abort_step'] - 1] == step
    assert out.columns['secagg_clients_left'] == N - count == 4
    for got, before in zip(_weights(masked, out.state), _weights(masked, state)):
        np.testing.assert_array_equal(got, before)


def test_the_uploaders_billed_are_the_clients_whose_masked_input_the_round_sends(processes):
    """3 of 8 participate (t = 5): the round aborts at the step where the fifth of the others
    dropped. Before step 2 nobody sends a masked input; from step 2 on, the participants did.
    The others drop before training (a key-exchange step) in some rounds, before their upload
    in others."""
    _, masked, select = processes['uniform']
    first = select.plan(1)
    participants = first.participants[:3]
    plan, data = _round(select, {c for c, _ in participants})
    others = [c for c in first.selected if c not in {c for c, _ in participants}]
    steps = set()
    for round_num in range(1, 25):
        point = 'before_upload' if round_num % 3 == 0 else 'before_training'
        plan = RoundPlan(round_num, first.selected, participants, dropped=N - 3,
                         drop_points=tuple((c, point) for c in others))
        out = masked.next_for_plan(masked.initialize(), data, plan)
        step = out.columns['secagg_abort_step']
        steps.add(step)
        assert masked.uploaders(plan) == ([] if step <= 2 else [c for c, _ in participants])
    assert steps == {1, 2, 3}, steps
    full = RoundPlan(1, first.selected, first.participants, dropped=0)
    assert masked.uploaders(full) == [c for c, _ in first.participants]


def test_dropouts_that_disagree_with_the_plan_are_refused(processes):
    _, masked, select = processes['uniform']
    plan, data = _round(select, set(select.plan(1).selected))
    with pytest.raises(ValueError, match='participants are'):
        masked.next_for_plan(masked.initialize(), data, plan,
                             dropouts=_dropouts('masked_input', 1))


def test_what_the_clients_upload_is_uniform_and_uncorrelated_with_their_update(processes,
                                                                            monkeypatch):
    """The clients' TFF computation of step 2, fed the masks of real protocol runs: its uploads
    are uniform modulo 2^M (chi-square over 64 bins) and uncorrelated with the packed update,
    while with zero masks the same tests find the update."""
    seed_secagg_randomness(monkeypatch, 0)  # The same masks every run: no flaky p-value.
    _, masked, _ = processes['uniform']
    packing, bits = masked.packing, masked.bits
    size, rng = packing.size, np.random.default_rng(0)
    update_type = masked.masked_upload.type_signature.parameter[0]
    shapes = [t.shape for t in _flat_types(update_type)]
    uploads, plain, packed = [], [], []
    for run in range(6):  # 6 runs x 5 clients x ~1,500 values.
        session = protocol.Session(range(1, 6), bits=bits, threshold=3)
        session.share_keys()
        masks = session.masks(size)
        for u in range(1, 6):
            update = [(rng.normal(0, 0.05, s) * u).astype(np.float32) for s in shapes]
            uploads.append(np.asarray(masked.masked_upload(update, 1.0, masks[u].astype(np.int32))))
            plain.append(np.asarray(masked.masked_upload(update, 1.0, np.zeros(size, np.int32))))
    uploads, plain = np.concatenate(uploads), np.concatenate(plain)
    assert uploads.min() >= 0 and uploads.max() < 2 ** bits

    def uniform_p(samples):
        return stats.chisquare(np.bincount(samples >> (bits - 6), minlength=64)).pvalue
    assert uniform_p(uploads) > 1e-3
    assert abs(np.corrcoef(uploads.astype(float), plain.astype(float))[0, 1]) < 0.05
    assert uniform_p(plain) < 1e-12  # Unmasked, the packed updates are far from uniform.


def _flat_types(type_spec):
    import tensorflow_federated as tff
    return tff.structure.flatten(type_spec)


def test_the_compiled_round_aggregates_only_masked_vectors(processes):
    _, masked, _ = processes['uniform']
    tree = masked.next_computation.to_building_block()
    assert not tree_analysis.find_secure_aggregation_in_tree(tree)  # No structural sums left.
    vectors = 0
    for call in tree_analysis.find_unsecure_aggregation_in_tree(tree):
        argument = call.argument.type_signature
        leaked = set(float_tensor_shapes(argument)) & WEIGHT_SHAPES
        assert not leaked, f'{call.function.compact_representation()} carries updates {leaked}'
        vectors += f'int64[{masked.packing.size}]' in str(argument)
    assert vectors == 1  # The sum of the masked uploads.
    # The masks are an argument of the round, CLIENTS-placed; the correction SERVER-placed.
    import tensorflow_federated as tff
    size = masked.packing.size
    parameters = masked.next_computation.type_signature.parameter
    assert parameters[2] == tff.FederatedType(
        tff.StructType([('mask', tff.TensorType(np.int32, [size]))]), tff.CLIENTS)
    assert parameters[3] == tff.FederatedType(tff.TensorType(np.int64, [size]), tff.SERVER)


def test_the_protocol_dropouts_follow_the_plan():
    """One drop point per dropout, drawn with the plan (`RoundPlan.drop_points`): before
    training, a key-exchange step (0 or 1); before its upload, or not aggregated for another
    reason, step 2; after its upload, step 3 (a contributor that does not answer). Nobody else
    drops: `--dropout_rate` is not drawn a second time."""
    selected = tuple(f'c{i}' for i in range(200))
    points = tuple((c, ('before_training', 'before_upload', 'after_upload')[i % 3])
                   for i, c in enumerate(selected[:60]))
    gone = {c for c, p in points if p != 'after_upload'}
    late = set(selected[60:70])  # E.g. stragglers dropped by the policy.
    participants = tuple((c, 1) for c in selected if c not in gone | late)
    plan = RoundPlan(4, selected, participants, dropped=len(gone), drop_points=points)
    index = {c: i + 1 for i, c in enumerate(selected)}
    settings = tff_round.SecAggSettings(seed=1)
    dropouts = tff_round.protocol_dropouts(plan, index, settings)
    by_point = {p: {index[c] for c, q in points if q == p} for p in ('before_training',
                                                                   'before_upload', 'after_upload')}
    assert dropouts.by_step['advertise_keys'] | dropouts.by_step['share_keys'] == \
        by_point['before_training']
    assert dropouts.by_step['advertise_keys'] and dropouts.by_step['share_keys']  # Both drawn.
    assert dropouts.by_step['masked_input'] == by_point['before_upload'] | {index[c] for c in late}
    assert dropouts.by_step['unmasking'] == by_point['after_upload']
    assert tff_round.protocol_dropouts(plan, index, settings) == dropouts  # Seeded.
    calm = RoundPlan(4, selected, tuple((c, 1) for c in selected))
    assert not any(tff_round.protocol_dropouts(calm, index, settings).by_step.values())


def test_secagg_and_nosecagg_runs_drop_the_same_clients_and_train_the_same_model(tff_runtime,
                                                                                   tmp_path):
    """With --dropout_rate both runs lose the same updates (the plan draws each dropout's
    point once) and, no round aborting, the protocol's sum is the structural secure sum."""
    settings = dict(dropout_rate=0.2, rounds=3, eval_every=3, num_clients=20, seed=2)
    runs = {}
    for secagg in (False, True):
        config = dataclasses.replace(BASE, secagg=secagg, output_dir=str(tmp_path / str(secagg)),
                                     **settings)
        runs[secagg] = experiment.run_experiment(config, log=lambda _: None)
    plain, masked = runs[False].history, runs[True].history
    assert not any(row['secagg_aborted'] for row in masked)
    late = lambda row: row.get('dropped_after_upload', 0)
    for a, b in zip(plain, masked):
        assert (a['aggregated'], a['dropped'], late(a)) == (b['aggregated'], b['dropped'], late(b))
        assert b['secagg_dropped_unmasking'] == late(b)
    assert sum(row['dropped'] for row in plain) > 0 and sum(map(late, plain)) > 0
    for got, want in zip(runs[True].final_weights.trainable, runs[False].final_weights.trainable):
        np.testing.assert_array_equal(got, want)


def test_dp_fedbuff_with_secagg_equals_the_run_without_it_bit_for_bit(tff_runtime, tmp_path):
    """`--algorithm=fedbuff --secure_agg --secagg --dp=fixed`: each buffer of K updates is one
    SecAgg instance (its updates the parties), masking DP's clipped, packed records; the run
    reports ε per server update and SecAgg's columns, and its model equals the same run with
    `--nosecagg` bit for bit (dropouts lose the same clients: they never reach a buffer)."""
    settings = dict(algorithm='fedbuff', concurrency=6, buffer_size=4, dp='fixed',
                    noise_multiplier=0.5, clip=0.5, dropout_rate=0.2, num_clients=12,
                    clients_per_round=4, rounds=4, eval_every=4, seed=2)
    runs = {}
    for secagg in (False, True):
        config = dataclasses.replace(BASE, secagg=secagg, output_dir=str(tmp_path / str(secagg)),
                                     **settings).validate()
        runs[secagg] = experiment.run_experiment(config, log=lambda _: None)
    plain, masked = runs[False].history, runs[True].history
    assert len(masked) == 4 and all(row['secagg_aborted'] == 0 for row in masked)
    assert all(row['secagg_clients_left'] == row['aggregated'] == 4 for row in masked)
    for a, b in zip(plain, masked):
        assert a['epsilon'] == b['epsilon'] > 0
    assert masked[-1]['epsilon'] > masked[0]['epsilon']
    for got, want in zip(runs[True].final_weights.trainable, runs[False].final_weights.trainable):
        np.testing.assert_array_equal(got, want)
    assert sum(row['lost'] for row in plain) > 0  # Dropouts happened.


@pytest.mark.parametrize('overrides,message', [
    (dict(secure_agg=False), '--secure_agg: --secagg masks the packed vectors of the secure mean'),
    (dict(dp='distributed', noise_multiplier=1.0, clip=0.5),
     '--dp: --dp=distributed does not combine with --secagg: its masks go on fl_tff\'s packed'),
    (dict(algorithm='fedrecon'), '--algorithm: --secagg needs an algorithm whose round can add'),
    (dict(secagg_threshold=1.0), r'--secagg_threshold: must be in \[0.5, 1\)'),
    (dict(over_selection=1.0), '--secagg_threshold: t = 9 of the 16 selected clients is more '
                               'than the 8 whose masked inputs the server takes'),
])
def test_bad_secagg_settings_name_the_flag(overrides, message):
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(BASE, secagg=True, **overrides).validate()


def test_a_run_reports_aborted_rounds_and_keeps_their_model(tff_runtime, tmp_path):
    """t = n: any dropout aborts; an aborted round's model (so its evaluation) is the last
    round's, and the run goes on."""
    config = dataclasses.replace(BASE, secagg=True, secagg_threshold=0.99, dropout_rate=0.04,
                                 rounds=6, eval_every=1, output_dir=str(tmp_path))
    lines = []
    result = experiment.run_experiment(config, log=lines.append)
    rows = result.history
    aborted = [i for i, row in enumerate(rows) if row['secagg_aborted']]
    assert len(aborted) < len(rows) and any(i > 0 for i in aborted), aborted
    for i in aborted:
        assert np.isnan(rows[i]['train_loss'])
        if i > 0:  # Evaluated on the same model as the round before.
            assert rows[i]['test_accuracy'] == rows[i - 1]['test_accuracy']
        assert rows[i]['secagg_clients_left'] < rows[i]['secagg_threshold'] == N
    for i in set(range(len(rows))) - set(aborted):
        assert np.isfinite(rows[i]['train_loss'])
        if i > 0:
            assert rows[i]['test_accuracy'] != rows[i - 1]['test_accuracy']
    assert all(row['secagg_client_sent_bytes'] > 0 for row in rows)
    # A masked upload: the 2NN's 3466 values, the weight, the clipped fraction and the count
    # packed at M = 15 bits each (12-bit values summed by up to 8 clients).
    per_client = -(-15 * (64 * 32 + 32 + 32 * 32 + 32 + 32 * 10 + 10 + 3) // 8)
    for row in rows:  # A round aborted before step 2 sent no masked input.
        sent = 0 if 0 < row['secagg_abort_step'] <= 2 else row['clients']
        assert row['uplink_bytes_per_client'] == per_client == 6505
        assert row['uplink_bytes'] == sent * per_client
    assert {row['secagg_abort_step'] for row in rows} & {1, 2}
    assert sum('secagg ABORTED at' in line for line in lines) == len(aborted)
    ledger = result.summary['communication']['secagg']
    assert ledger['rounds_aborted'] == len(aborted)
    assert ledger['protocol_bytes_sent_total'] == pytest.approx(
        sum(r['secagg_client_sent_bytes'] * r['selected'] for r in rows))
    assert result.summary['communication']['uplink_encoding'] == 'secagg 15-bit'  # 8 x 4095.
