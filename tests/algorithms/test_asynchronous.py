"""FedBuff and FedAsync: against synchronous FedAvg and the papers' updates written plainly."""

import collections
import dataclasses

import numpy as np
import pytest
import tensorflow_federated as tff

from fl_tff import simulation
from fl_tff.algorithms import build_fedavg
from fl_tff.algorithms.fedasync import build_fedasync
from fl_tff.algorithms.fedbuff import build_fedbuff
from fl_tff.simulation import devices, worker_data
from tests.helpers import PlainSgd, max_abs_diff, to_batches

SGD = tff.learning.optimizers.build_sgdm
LR = 0.05


def _clock(select, sizes, seconds_per_example=0.01, sigma=0.0, seed=0):
    profiles = devices.draw_profiles(devices.DeviceSettings(seconds_per_example=seconds_per_example,
                                                            speed_sigma=sigma), select.client_ids, seed)
    return devices.TaskClock(profiles, sizes, download_bytes=1000, upload_bytes=1000)


def _run(process, select, rounds):
    composed = worker_data.compose(process, select.dataset_computation())
    state, history = simulation.run_training(composed, select, rounds=rounds)
    return process.get_model_weights(state), history


def test_fedbuff_with_whole_cohort_buffers_equals_synchronous_fedavg(tff_runtime, setup):
    model_fn, select = setup  # 4 clients a round.
    # Identical devices and workloads: every client of a draw finishes at the same time.
    clock = _clock(select, {c: 10 for c in select.client_ids})
    async_select = simulation.AsyncSelector(select, clock, concurrency=4, buffer_size=4)
    fedbuff = build_fedbuff(model_fn, concurrency=4, buffer_size=4,
                            staleness_weighting='constant', client_optimizer=SGD(LR),
                            server_optimizer=SGD(1.0))
    fedavg = build_fedavg(model_fn, client_optimizer=SGD(LR), server_optimizer=SGD(1.0))
    buff_w, buff_rows = _run(fedbuff, async_select, 3)
    avg_w, _ = _run(fedavg, select, 3)
    for r in range(1, 4):
        assert async_select.plan(r).participants == select.plan(r).participants
        assert async_select.plan(r).staleness == [0] * 4
    initial = fedavg.get_model_weights(fedavg.initialize())
    assert max_abs_diff(avg_w.trainable, initial.trainable) > 1e-2  # It trained.
    assert max_abs_diff(buff_w.trainable, avg_w.trainable) <= 1e-6
    assert [row['staleness_max'] for row in buff_rows] == [0, 0, 0]


def _train_plainly(sgd, start, client_round):
    """The client's local SGD written plainly: (trained weights, examples processed)."""
    sgd.load(start)
    examples = 0
    for batch in to_batches(client_round):
        sgd.step(batch['x'], batch['y'])
        examples += int(batch['y'].shape[0])
    return sgd.weights(), examples


def _plain_updates(keras_fn, select, async_select, initial, rounds, server_update):
    """Server updates from each buffered client's own start version (the papers' algorithms)."""
    versions = {0: [np.asarray(t) for t in initial]}
    sgd = PlainSgd(keras_fn, LR)
    for n in range(1, rounds + 1):
        plan = async_select.plan(n)
        trained = [_train_plainly(sgd, versions[v], select.client_round(task))
                   for v, task in zip(plan.start_versions, async_select.client_inputs(plan))]
        versions[n] = server_update(versions[n - 1], plan, [versions[v] for v in plan.start_versions],
                                    trained)
    return versions[rounds]


def test_fedbuff_equals_its_paper_update_with_stale_clients(tff_runtime, setup, keras_fn,
                                                            skewed_digits, tmp_path):
    model_fn, select = setup
    # Real client sizes and spread-out devices: buffers hold stale updates.
    clock = _clock(select, skewed_digits.train_sizes, sigma=1.0, seed=2)
    async_select = simulation.AsyncSelector(select, clock, concurrency=4, buffer_size=2)
    assert max(s for n in range(1, 6) for s in async_select.plan(n).staleness) >= 1
    process = build_fedbuff(model_fn, concurrency=4, buffer_size=2, client_optimizer=SGD(LR),
                            server_optimizer=SGD(1.0))
    weights, _ = _run(process, async_select, 5)
    # Start weights read from files inside the worker (as the driver runs it): identical.
    from_files, _ = _run(process.reading_values_from(str(tmp_path / 'starts')), async_select, 5)
    for a, b in zip(weights.trainable, from_files.trainable):
        np.testing.assert_array_equal(a, b)
    assert list((tmp_path / 'starts').iterdir()) == []

    def fedbuff(x, plan, starts, trained):
        # x - sum_i w_i s(tau_i) (start_i - trained_i) / sum_i w_i, s = 1/sqrt(1 + tau).
        w = np.array([e for _, e in trained], float)
        s = np.array([(1.0 + t) ** -0.5 for t in plan.staleness])
        return [xx - sum(wi * si * (st[i] - tr[i]) for wi, si, st, (tr, _) in
                         zip(w, s, starts, trained)) / w.sum() for i, xx in enumerate(x)]

    initial = process.get_model_weights(process.initialize()).trainable
    expected = _plain_updates(keras_fn, select, async_select, initial, 5, fedbuff)
    assert max_abs_diff(weights.trainable, expected) <= 1e-5


def test_fedasync_equals_its_paper_mixing(tff_runtime, setup, keras_fn, skewed_digits):
    model_fn, select = setup
    clock = _clock(select, skewed_digits.train_sizes, sigma=1.0, seed=2)
    async_select = simulation.AsyncSelector(select, clock, concurrency=3, buffer_size=1)
    process = build_fedasync(model_fn, concurrency=3, async_mixing=0.6,
                             client_optimizer=SGD(LR), server_optimizer=SGD(1.0))
    weights, _ = _run(process, async_select, 5)
    assert max(s for n in range(1, 6) for s in async_select.plan(n).staleness) >= 1

    def fedasync(x, plan, starts, trained):
        # x_t = (1 - alpha_t) x_{t-1} + alpha_t x_new, alpha_t = 0.6 (1 + t - tau)^-0.5, where
        # the paper's t - tau is 1 for a client that missed no update.
        t_minus_tau = plan.round_num - plan.start_versions[0]
        alpha = 0.6 * (1.0 + t_minus_tau) ** -0.5
        (new, _), = trained
        return [(1 - alpha) * xx + alpha * nn for xx, nn in zip(x, new)]

    initial = process.get_model_weights(process.initialize()).trainable
    expected = _plain_updates(keras_fn, select, async_select, initial, 5, fedasync)
    assert max_abs_diff(weights.trainable, expected) <= 1e-5


def test_fedbuff_refuses_a_buffer_larger_than_its_concurrency(setup):
    with pytest.raises(ValueError, match='buffer_size'):
        build_fedbuff(setup[0], concurrency=2, buffer_size=3)
    with pytest.raises(ValueError, match='staleness weighting'):
        build_fedbuff(setup[0], staleness_weighting='hinge')


def test_compression_composes_with_a_buffer_and_shortens_uploads_on_the_clock(tff_runtime, setup,
                                                                             skewed_digits):
    from fl_tff import round_hooks
    from fl_tff.aggregators import chain as aggregator_chain
    from fl_tff.communication import compression
    from fl_tff.config import ExperimentConfig
    model_fn, select = setup
    clock = _clock(select, skewed_digits.train_sizes, sigma=1.0, seed=2)
    async_select = simulation.AsyncSelector(select, clock, concurrency=4, buffer_size=2)
    kwargs = dict(concurrency=4, buffer_size=2, client_optimizer=SGD(LR),
                  server_optimizer=SGD(1.0))
    plain, _ = _run(build_fedbuff(model_fn, **kwargs), async_select, 3)
    compressed, _ = _run(build_fedbuff(model_fn, model_aggregator=aggregator_chain.mean_factory(
        False, compression.build_compressed_sum('quantize', bits=16, seed=1)), **kwargs),
        async_select, 3)
    difference = max_abs_diff(compressed.trainable, plain.trainable)
    assert 0 < difference <= 1e-3  # 16-bit stochastic quantization: lossy, slightly.
    config = ExperimentConfig(algorithm='fedbuff', model='2nn', hidden_units=32)
    _, upload = round_hooks.task_bytes(config, model_fn)
    _, upload_8bit = round_hooks.task_bytes(
        ExperimentConfig(algorithm='fedbuff', compression='quantize', compression_bits=8), model_fn)
    assert upload_8bit < upload / 3  # 8-bit values: about a quarter of float32 uploads.


def test_dp_fedbuff_clips_each_stale_update_and_averages_over_the_buffer(tff_runtime, setup,
                                                                         keras_fn, skewed_digits):
    """User-level DP-FedBuff (noise 0 here, so the clipping is seen exactly): each staleness-
    scaled update clipped to C, summed, divided by K; with noise, N(0, (zC/K)^2) on top."""
    from fl_tff.privacy.aggregators import build_dp_aggregator
    model_fn, select = setup
    clock = _clock(select, skewed_digits.train_sizes, sigma=1.0, seed=2)
    async_select = simulation.AsyncSelector(select, clock, concurrency=4, buffer_size=2)
    clip = 0.05

    def build(z):
        return build_fedbuff(model_fn, concurrency=4, buffer_size=2, client_optimizer=SGD(LR),
                             server_optimizer=SGD(1.0), weighting=tff.learning.ClientWeighting.UNIFORM,
                             model_aggregator=build_dp_aggregator(
                                 'fixed', noise_multiplier=z, clients_per_round=2, clip=clip,
                                 seed=4))

    process = build(0.0)
    weights, _ = _run(process, async_select, 4)
    norms = []

    def dp_fedbuff(x, plan, starts, trained):
        s = [(1.0 + t) ** -0.5 for t in plan.staleness]
        clipped = []
        for si, st, (tr, _) in zip(s, starts, trained):
            update = [si * (a - b) for a, b in zip(st, tr)]
            norm = np.sqrt(sum(np.sum(u ** 2) for u in update))
            norms.append(norm)
            clipped.append([u * min(1.0, clip / norm) for u in update])
        return [xx - sum(c[i] for c in clipped) / 2 for i, xx in enumerate(x)]

    initial = process.get_model_weights(process.initialize()).trainable
    expected = _plain_updates(keras_fn, select, async_select, initial, 4, dp_fedbuff)
    assert max(norms) > 2 * clip  # The clip binds.
    assert max_abs_diff(weights.trainable, expected) <= 1e-5
    # With noise z: one server update adds N(0, (z C / K)^2) to each coordinate.
    one = async_select.plan(1)
    noisy, _ = _run(build(2.0), async_select, 1)
    clean, _ = _run(process, async_select, 1)
    diff = np.concatenate([np.ravel(a - b) for a, b in zip(noisy.trainable, clean.trainable)])
    assert len(one.participants) == 2
    assert abs(np.std(diff) / (2.0 * clip / 2) - 1) < 0.1


def test_fedbuff_with_dp_sgd_equals_fedavg_with_the_same_dp_sgd(tff_runtime, setup):
    """Whole-cohort buffers with no staleness are FedAvg's rounds; with example-level DP-SGD
    (clipping and seeded noise) in both, the models agree."""
    from fl_tff.privacy.dpsgd import DpSgd
    model_fn, select = setup
    clock = _clock(select, {c: 10 for c in select.client_ids})
    async_select = simulation.AsyncSelector(select, clock, concurrency=4, buffer_size=4)
    dp_sgd = DpSgd(clip=0.3, noise_multiplier=0.8)
    fedbuff = build_fedbuff(model_fn, concurrency=4, buffer_size=4, staleness_weighting='constant',
                            client_optimizer=SGD(LR), server_optimizer=SGD(1.0), dp_sgd=dp_sgd)
    fedavg = build_fedavg(model_fn, client_optimizer=SGD(LR), server_optimizer=SGD(1.0),
                          dp_sgd=dp_sgd)
    without, _ = _run(build_fedbuff(model_fn, concurrency=4, buffer_size=4,
                                    staleness_weighting='constant', client_optimizer=SGD(LR),
                                    server_optimizer=SGD(1.0)), async_select, 2)
    buff_w, _ = _run(fedbuff, async_select, 2)
    avg_w, _ = _run(fedavg, select, 2)
    assert max_abs_diff(buff_w.trainable, without.trainable) > 1e-3  # DP-SGD acted.
    assert max_abs_diff(buff_w.trainable, avg_w.trainable) <= 1e-6


def test_a_dp_fedbuff_run_reports_epsilon_per_server_update_and_stops_at_the_budget(tff_runtime,
                                                                                    tmp_path):
    """`--algorithm=fedbuff --dp=fixed`: each server update charges one Gaussian per client in
    its buffer; ε (dp_accounting, the busiest client's participations) is in every row, and the
    run stops before the update that would exceed `--target_epsilon`."""
    import dp_accounting
    from fl_tff import experiment
    from fl_tff.config import ExperimentConfig

    def epsilon(sensitivities):
        # One Gaussian of noise 3C per server update, of sensitivity mC for m of its updates.
        accountant = dp_accounting.rdp.RdpAccountant()
        for m in sensitivities:
            accountant.compose(dp_accounting.GaussianDpEvent(3.0 / m))
        return accountant.get_epsilon(1e-5)

    config = ExperimentConfig(
        dataset='digits', model='logreg', num_clients=6, clients_per_round=2, rounds=12,
        eval_every=12, algorithm='fedbuff', concurrency=3, buffer_size=2, dp='fixed',
        client_weighting='uniform', noise_multiplier=3.0, clip=0.5, delta=1e-5,
        output_dir=str(tmp_path))
    # The schedule the run follows, built from the same settings (the clock, not the data).
    fed_data = experiment.load_federated_data(config)
    model_fn, _ = experiment.build_model(config, fed_data)
    select = experiment.build_selector(config, fed_data, model_fn, config.local_epochs())

    def worst(rounds):
        sensitivities = {}
        for n in range(1, rounds + 1):
            for cid, m in collections.Counter(c for c, _ in select.plan(n).participants).items():
                sensitivities.setdefault(cid, []).append(m)
        return max(epsilon(s) for s in sensitivities.values())

    # A fast client finishes twice while a buffer fills: that update's sensitivity is 2C.
    assert any(max(collections.Counter(c for c, _ in select.plan(n).participants).values()) > 1
               for n in range(1, 5))
    budget = next(worst(n) for n in range(4, 12) if worst(n + 1) > worst(n)) + 1e-9
    config = dataclasses.replace(config, target_epsilon=budget).validate()
    result = experiment.run_experiment(config, log=lambda line: None)
    rows = [row for row in result.history if 'epsilon' in row]
    for row in rows:
        assert row['epsilon'] == pytest.approx(worst(row['round']), rel=1e-9)
    last = rows[-1]['round']
    assert worst(last) <= budget < worst(last + 1)  # Stopped before exceeding.
    assert last < config.rounds and result.summary['privacy']['epsilon'] <= config.target_epsilon
    assert 'no sampling assumed' in result.summary['privacy']['statement']
