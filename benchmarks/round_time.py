r"""Round-time benchmark of a workload (`--workload`: the 2NN of issue 7, the EMNIST CNN, the Stack
Overflow LSTM, the Shakespeare char-LSTM; `benchmarks.workload`), measured in ONE run,
interleaved round by round, against a plain-TensorFlow lower bound:

  (a) fl_tff FedAvg on TFF's runtime as the driver runs it: the driver sends client tasks, the
      worker reads each client's examples from the run's client files and trains its round in
      one graph loop;
  (s) the same process, its clients' rounds built in the driver and shipped (the old data path);
  (b) TFF's `build_weighted_fed_avg` on datasets of batches shipped from the driver;
  (c) plain TensorFlow: the same SGD steps without federation (the client's steps in one
      compiled loop, clients split over the cores by threads), twice: XLA-compiled and on TF's
      own kernels; the faster of the two is the bound.

Prints the first round (trace) separately, the steady-state median seconds per round, the
ratios to (c), the GFLOP/s each variant reaches (the round's training operations,
`benchmarks.flops`, over its median; beside the machine's matmul peak in the first line), the
weight difference between (a) and (s) (the same rounds), and peak RSS.

With `--features`: DP-FedAvg (fixed clip), secure FedAvg (structural, and with the SecAgg
protocol's masked uploads), 8-bit compression and SCAFFOLD (and SCAFFOLD with its client
states inside TFF's request and response, the transport before `fl_tff.runtime.worker_values`), each
built by the library from its options and composed as the driver composes it, against (a) and
(c). With `--memory`: each of (a), (b), (c) alone in its own process (RSS is per process). With
`--workers`: FedAvg on one local worker against two (TFF's mergeable context, as `--workers`
runs it) and the bytes sent to each worker per round against the model's size.

  .venv/bin/python -m benchmarks.round_time --clients=10 --rounds=6
  .venv/bin/python -m benchmarks.round_time --workload=emnist_cnn --clients=50 --rounds=3
  .venv/bin/python -m benchmarks.round_time --features --clients=50 --rounds=3
  .venv/bin/python -m benchmarks.round_time --memory --clients=50
  .venv/bin/python -m benchmarks.round_time --workers --clients=50 --rounds=3
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
# TensorFlow must be imported at module level: imported first inside absl's `app.run`, tf.keras
# builds graph-mode (not Keras) tensors and Sequential models fail to build eagerly.
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from benchmarks.workload import WORKLOADS, peak_rss_mib
from benchmarks import flops, workload
from fl_tff import rounds as rounds_lib
from fl_tff import runtime, simulation
from fl_tff.algorithms import build_fedavg
from fl_tff.algorithms.scaffold import build_scaffold
from fl_tff.config import ExperimentConfig
from fl_tff.experiment import build_model_aggregator

_WORKLOAD = flags.DEFINE_enum('workload', '2nn', list(WORKLOADS), 'The model and data shapes '
                              '(benchmarks.workload).')
_CLIENTS = flags.DEFINE_integer('clients', 10, 'Clients per round (K).')
_ROUNDS = flags.DEFINE_integer('rounds', 6, 'Steady rounds measured per variant (after one trace round).')
_EXAMPLES = flags.DEFINE_integer('examples', 0, 'Examples per client (0: the workload\'s).')
_MEMORY = flags.DEFINE_bool('memory', False, 'Instead: peak RSS of each variant alone, one '
                            'process per variant (RSS is per process), and the ratios to plain TF.')
VARIANT_KEYS = ('tff', 'shipped', 'builder', 'plain_xla', 'plain_kernels')
_ONLY = flags.DEFINE_enum('only', '', ('', *VARIANT_KEYS), 'Run only this variant (internal).')
_PLAIN_THREADS = flags.DEFINE_integer(
    'plain_intra_op_threads', -1, 'TensorFlow threads per op in this process, where the plain-TF '
    'bound runs (-1: the workload\'s, Workload.plain_intra_op_threads; 0: TF\'s default, one per '
    'core; 1: as the TFF worker runs each client\'s ops).', lower_bound=-1)
_PLAIN = flags.DEFINE_enum('plain', 'fastest', ['fastest', 'both'], 'The plain-TF bound: the '
                           'workload\'s faster build (Workload.plain_xla, measured with both), or '
                           'both XLA and TF\'s kernels (the faster is the bound).')
_FEATURES = flags.DEFINE_bool('features', False, 'Instead: DP-FedAvg, secure FedAvg, 8-bit '
                              'compression and SCAFFOLD on TFF\'s runtime against FedAvg there '
                              'and plain TF.')
_WORKERS = flags.DEFINE_bool('workers', False, 'Instead: FedAvg on one local worker against two '
                             '(the mergeable context of --workers), and the bytes sent to workers.')
_PIN_WORKERS = flags.DEFINE_bool('pin_workers', True, 'With --workers: each worker on a core of '
                                 'its own (two machines\' worth of cores, one core each), and the '
                                 'parallel efficiency printed.')
# The library's settings for each --features variant (options as the driver would select them).
FEATURE_SETTINGS = {
    'DP-FedAvg (fixed clip)': dict(dp='fixed', noise_multiplier=1.0, clip=1.0,
                                   client_weighting='uniform'),
    'secure FedAvg': dict(secure_agg=True, client_weighting='examples_processed'),
    'secure FedAvg, SecAgg protocol': dict(secure_agg=True, secagg=True,
                                           client_weighting='examples_processed'),
    '8-bit compression': dict(compression='quantize', compression_bits=8,
                              client_weighting='examples_processed'),
}
PLAIN_XLA = 'plain TF (XLA, threads)'
PLAIN_KERNELS = 'plain TF (TF kernels, threads)'
OURS = 'fl_tff FedAvg, TFF runtime'
FLAGS = flags.FLAGS


def _memory() -> None:
    """Each variant alone in its own process, `--rounds` steady rounds after the first: peak RSS
    of Python and of the TFF worker."""
    rows = {}
    plain_key = 'plain_xla' if WORKLOADS[_WORKLOAD.value].plain_xla else 'plain_kernels'
    for key in ('tff', 'builder', plain_key):
        out = subprocess.run([sys.executable, '-m', 'benchmarks.round_time', f'--only={key}',
                              f'--workload={_WORKLOAD.value}', f'--clients={_CLIENTS.value}',
                              f'--examples={_EXAMPLES.value}', f'--rounds={_ROUNDS.value}'],
                             capture_output=True, text=True, check=False)
        line = [l for l in out.stdout.splitlines() if l.startswith('MEMORY ')]
        if not line:
            sys.exit(f'{key} failed:\n{out.stderr[-2000:]}')
        rows[key] = tuple(float(v) for v in line[0].split()[1:])
    plain = sum(rows[plain_key])
    print(f'K = {_CLIENTS.value}: peak RSS of each variant alone (MiB; python + TFF worker)')
    for key, (python, worker) in rows.items():
        print(f'{key:10} {python:7.0f} + {worker:6.0f} = {python + worker:7.0f}   '
              f'x{(python + worker) / plain:.2f} of plain TF')


def _rounds(process, inputs, select=None):
    """A round function over `inputs(round_num)` (client tasks, rounds or datasets), each round
    the process's `run_round` (`fl_tff.rounds`); with `select`, the plan and the participants'
    client states (kept here by slot) come from the selector's plan."""
    rounds = rounds_lib.as_rounds(process)
    state, stored, done = [rounds.initialize()], {}, [0]
    slots = rounds.needs.client_states

    def round_fn():
        done[0] += 1
        plan = select.plan(done[0]) if select is not None else None
        ids = [cid for cid, _ in plan.participants] if plan is not None else []
        out = rounds.run_round(state[0], inputs(done[0]), rounds_lib.RoundInputs(
            done[0], plan, ids, {slot: [stored.get((slot, i), initial) for i in ids]
                                 for slot, initial in slots.items()}))
        state[0] = out.state
        for slot, states in out.client_states.items():
            stored.update({(slot, i): s for i, s in zip(ids, states)})
    round_fn.weights = lambda: rounds.get_model_weights(state[0]).trainable
    return round_fn


def _interleave(variants: dict, rounds: int) -> dict:
    """Round r of every variant in turn; the seconds of each round of each variant."""
    times = {name: [] for name in variants}
    for _ in range(rounds + 1):
        for name, round_fn in variants.items():
            t0 = time.perf_counter()
            round_fn()
            times[name].append(time.perf_counter() - t0)
    return times


_MATMUL_PEAK = """
import time, tensorflow as tf
a = tf.random.stateless_uniform((2000, 2000), (1, 2))
b = tf.random.stateless_uniform((2000, 2000), (3, 4))
best = float('inf')
for _ in range(5):
    t0 = time.perf_counter()
    _ = (a @ b).numpy()
    best = min(best, time.perf_counter() - t0)
print(2 * 2000 ** 3 / best / 1e9)
"""


def _matmul_peak_gflops() -> float:
    """The machine's measured peak: GFLOP/s of a 2000 x 2000 float32 matmul on TF's kernels
    with TF's default threads (every core), the best of five, in a process of its own (this
    one may run one thread per op, see --plain_intra_op_threads)."""
    out = subprocess.run([sys.executable, '-c', _MATMUL_PEAK], capture_output=True, text=True,
                         check=False, env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3'})
    lines = out.stdout.split()
    return float(lines[-1]) if out.returncode == 0 and lines else float('nan')


def _header(spec: workload.Workload, k: int, n: int) -> str:
    parameters = sum(int(np.prod(w.shape)) for w in spec.keras_fn().trainable_weights)
    return (f'{spec.name} ({spec.source}; --model={spec.model}, {parameters:,} parameters, '
            f'generated data): K = {k} clients x {n} examples, batch {spec.batch}, 1 epoch; '
            f'{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; '
            f'2000x2000 float32 matmul peak here: {_matmul_peak_gflops():.0f} GFLOP/s')


def _round_flops(spec: workload.Workload, k: int, n: int) -> int:
    """Operations of one round's training (K clients x n examples, one epoch;
    `benchmarks.flops`: the server's averaging is left out)."""
    return k * n * flops.training_flops_per_example(spec.keras_fn())


def _print_times(times: dict, round_flops: int) -> None:
    """Each variant's first and median round, its ratio to the faster plain-TF variant, and the
    GFLOP/s its median round reaches (`round_flops` / its median)."""
    print(f'{"variant":40} {"first round s":>14} {"median s/round":>15} {"/ plain TF":>11} '
          f'{"GFLOP/s":>8}')
    plain = min(statistics.median(times[name][1:]) for name in (PLAIN_XLA, PLAIN_KERNELS)
                if name in times)
    for name, t in times.items():
        median = statistics.median(t[1:])
        print(f'{name:40} {t[0]:14.3f} {median:15.3f} {median / plain:11.2f} '
              f'{round_flops / median / 1e9:8.1f}')


def _workers_benchmark(data: workload.ClientsData, model_fn, k: int, n: int) -> None:
    """FedAvg on one local worker against two, through `--workers`' mergeable context; with
    --pin_workers each worker runs on one core of its own, and the parallel efficiency (one
    worker's round time over twice two workers') is printed."""
    cores = sorted(os.sched_getaffinity(0))
    workers = [runtime.WorkerProcess(cpus={cores[i]} if _PIN_WORKERS.value else None).start()
               for i in range(2)]
    try:
        contexts = {  # As --workers runs them: merges on a worker of the driver's own.
            'one worker': runtime.RemoteRuntime([workers[0].address], merge_on_driver=True).start(),
            'two workers': runtime.RemoteRuntime([w.address for w in workers],
                                                 merge_on_driver=True).start()}
        process = simulation.compose(build_fedavg(model_fn, client_optimizer=_sgd(data.spec.learning_rate),
                                                  server_optimizer=_sgd(1.0)),
                                     data.dataset_computation)
        states = {name: None for name in contexts}
        times = {name: [] for name in contexts}
        sent = {name: [] for name in contexts}
        for r in range(_ROUNDS.value + 1):
            for name, rt in contexts.items():
                rt.install()
                if states[name] is None:
                    states[name] = process.initialize()
                before = rt.bytes_sent()
                t0 = time.perf_counter()
                states[name] = process.next(states[name], data.select(r + 1)).state
                times[name].append(time.perf_counter() - t0)
                sent[name].append([b - a for a, b in zip(before, rt.bytes_sent())])
        model_bytes = sum(np.asarray(w).nbytes for w in tf.nest.flatten(
            process.get_model_weights(states['one worker'])))
        for rt in contexts.values():
            rt.stop()
    finally:
        for w in workers:
            w.stop()
    print(_header(data.spec, k, n))
    print(f'{"variant":14} {"first round s":>14} {"median s/round":>15} '
          f'{"bytes to each worker per round (median)":>42} {"/ model weights":>16}')
    for name in contexts:
        per_worker = [statistics.median(s[i] for s in sent[name][1:]) for i in range(len(sent[name][0]))]
        print(f'{name:14} {times[name][0]:14.3f} {statistics.median(times[name][1:]):15.3f} '
              f'{", ".join(f"{b / 1e6:.3f} MB" for b in per_worker):>42} '
              f'{max(per_worker) / model_bytes:16.3f}')
    one, two = (statistics.median(times[name][1:]) for name in ('one worker', 'two workers'))
    print(f'model weights: {model_bytes / 1e6:.3f} MB; two workers / one worker: {two / one:.2f}')
    if _PIN_WORKERS.value:
        print(f'workers pinned to cores {cores[0]} and {cores[1]}: parallel efficiency '
              f'{one / (2 * two):.2f} (one worker on one core / twice two workers on two)')


def _sgd(lr):
    return tff.learning.optimizers.build_sgdm(lr)


def _check_flags() -> None:
    """Bad flags: one line and exit 2, before TensorFlow or a worker starts."""
    cores = sorted(os.sched_getaffinity(0))
    if _WORKERS.value and _PIN_WORKERS.value and len(cores) < 2:
        print(f'error: --pin_workers puts each of two workers on a core of its own, and this '
              f'process may use only CPU {cores}; pass --nopin_workers', file=sys.stderr)
        sys.exit(2)


def main(argv) -> None:
    del argv
    _check_flags()
    logging.set_verbosity(logging.WARNING)  # TFF logs every model build at INFO.
    threads = (WORKLOADS[_WORKLOAD.value].plain_intra_op_threads
               if _PLAIN_THREADS.value < 0 else _PLAIN_THREADS.value)
    if threads:  # Before TensorFlow runs its first op in this process.
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    try:
        _main()
    finally:
        runtime.drop_stock_context()  # Else TFF's unused stock context prints a traceback at exit.


def _main() -> None:
    if _MEMORY.value:
        _memory()
        return
    spec = WORKLOADS[_WORKLOAD.value]
    k, n = _CLIENTS.value, _EXAMPLES.value or spec.examples
    lr = spec.learning_rate
    model_fn = spec.model_fn()
    with tempfile.TemporaryDirectory(prefix='fl_tff_bench_') as directory:
        data = workload.ClientsData(spec, k, n, directory)
        if _WORKERS.value:
            _workers_benchmark(data, model_fn, k, n)
            return
        with runtime.local_runtime() as rt:
            fedavg = lambda: build_fedavg(model_fn, client_optimizer=_sgd(lr),
                                          server_optimizer=_sgd(1.0))
            makers = {  # key: (name, factory); built lazily, so --only measures one variant alone.
                'tff': (OURS, lambda: _rounds(simulation.compose(fedavg(), data.dataset_computation),
                                              data.select)),
                'shipped': ('fl_tff FedAvg, rounds shipped', lambda: _rounds(
                    fedavg(), lambda r: [data.select.client_round(t) for t in data.select(r)])),
                'builder': ('TFF build_weighted_fed_avg, shipped', lambda: _rounds(
                    tff.learning.algorithms.build_weighted_fed_avg(
                        model_fn, client_optimizer_fn=_sgd(lr), server_optimizer_fn=_sgd(1.0)),
                    lambda r: data.batched)),
                'plain_xla': (PLAIN_XLA, lambda: workload.plain_round(data, xla=True)),
                'plain_kernels': (PLAIN_KERNELS, lambda: workload.plain_round(data, xla=False)),
            }
            if _PLAIN.value == 'fastest':
                del makers['plain_kernels' if spec.plain_xla else 'plain_xla']
            if _FEATURES.value:
                makers = {key: makers[key] for key in makers if key.startswith(('tff', 'plain'))}
                for name, settings in FEATURE_SETTINGS.items():
                    config = ExperimentConfig(**settings, clients_per_round=k,
                                              num_clients=k).validate()
                    extras = {}  # The SecAgg protocol's settings, as the driver adds them.
                    for _, option in config.selection().items():
                        if option.client_extras is not None:
                            extras.update(option.client_extras(config, ()))
                    makers[name] = (name, lambda config=config, extras=extras: _rounds(data.compose(
                        build_fedavg(model_fn, client_optimizer=_sgd(lr), server_optimizer=_sgd(1.0),
                                     weighting=config.option('client_weighting').build(padding_labels=()),
                                     model_aggregator=build_model_aggregator(config, max_weight=float(n)),
                                     **extras)), data.select, select=data.select if extras else None))
                scaffold = lambda: build_scaffold(model_fn, num_clients=k, client_optimizer=_sgd(lr),
                                                  server_optimizer=_sgd(1.0))
                makers['scaffold'] = ('SCAFFOLD', lambda: _rounds(
                    data.compose(scaffold()), data.select, select=data.select))
                # The control variates inside TFF's request and response (before worker_values).
                makers['scaffold_request'] = ('SCAFFOLD, states in the request', lambda: _rounds(
                    simulation.compose(scaffold(), data.dataset_computation), data.select,
                    select=data.select))
            variants = {name: make() for key, (name, make) in makers.items()
                        if _ONLY.value in ('', key)}
            times = _interleave(variants, _ROUNDS.value)
            worker_rss = peak_rss_mib(rt.worker_pid)
            if _ONLY.value:
                print(f'MEMORY {peak_rss_mib():.0f} {worker_rss:.0f}')
                return
            diff = None
            if not _FEATURES.value:
                a, s = variants[OURS].weights(), variants['fl_tff FedAvg, rounds shipped'].weights()
                diff = max(float(np.abs(x - y).max()) for x, y in zip(a, s))
    print(_header(spec, k, n))
    print(f'training: {_round_flops(spec, k, n) / 1e9:.2f} GFLOP per round '
          f'({flops.training_flops_per_example(spec.keras_fn()):,} per example, benchmarks.flops)')
    _print_times(times, _round_flops(spec, k, n))
    if diff is not None:
        dropout = any(isinstance(layer, tf.keras.layers.Dropout) for layer in spec.keras_fn().layers)
        print(f'max |w| difference after {_ROUNDS.value + 1} rounds, data built in the worker vs '
              f'shipped: {diff:.1e}' + (' (the model has dropout: the two computations may draw '
                                       'different masks)' if dropout else ''))
    print(f'peak RSS: python {peak_rss_mib():.0f} MiB, TFF worker {worker_rss:.0f} MiB')


if __name__ == '__main__':
    app.run(main)
