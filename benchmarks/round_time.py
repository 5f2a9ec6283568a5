r"""Round-time benchmark (issue 7's "2NN" workload), measured in ONE run, interleaved:

  fl_tff FedAvg on the fast path (`--simulation=fast_xla` and `fast`),
  (a) fl_tff FedAvg on TFF's runtime, (b) TFF's `build_weighted_fed_avg` on the same data and
  context, (c) a plain-TensorFlow lower bound doing the same SGD steps without federation
      (XLA-compiled client loop, clients split over the cores).

Prints the first round (trace) separately, the steady-state median seconds per round, the
ratios to (c) and a/b, how far the final weights are apart, and the peak RSS of this process
(everything but TFF's runtime) and of the TFF worker.

With `--features`, instead: the features that only TFF's runtime runs (DP-FedAvg with a fixed
clip, secure FedAvg, 8-bit compression, SCAFFOLD), each built by the library from its options,
interleaved with fl_tff FedAvg on TFF's runtime and the plain-TF lower bound.

  .venv/bin/python -m benchmarks.round_time --clients=10 --rounds=6
  .venv/bin/python -m benchmarks.round_time --features --clients=50 --rounds=3
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import platform
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags
from absl import logging
# TensorFlow must be imported at module level: imported first inside absl's `app.run`, tf.keras
# builds graph-mode (not Keras) tensors and Sequential models fail to build eagerly.
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from benchmarks.workload import BATCH, HIDDEN, LR, peak_rss_mib
from benchmarks import workload
from fl_tff import runtime
from fl_tff.algorithms import build_fedavg
from fl_tff.algorithms.scaffold import build_scaffold
from fl_tff.config import ExperimentConfig
from fl_tff.experiment import build_model_aggregator
from fl_tff.simulation.fast import FastProcess
from fl_tff.simulation.selection import WholeClientData

_CLIENTS = flags.DEFINE_integer('clients', 10, 'Clients per round (K).')
_ROUNDS = flags.DEFINE_integer('rounds', 6, 'Steady rounds measured per variant (after one trace round).')
_EXAMPLES = flags.DEFINE_integer('examples', 600, 'Examples per client.')
_MEMORY = flags.DEFINE_bool('memory', False, 'Instead: peak RSS of each variant alone, one '
                            'process per variant (RSS is per process), and the ratios to plain TF.')
VARIANT_KEYS = ('fast_xla', 'fast', 'tff', 'builder', 'plain')
_ONLY = flags.DEFINE_enum('only', '', ('', *VARIANT_KEYS), 'Run only this variant (internal).')
_FEATURES = flags.DEFINE_bool('features', False, 'Instead: DP-FedAvg, secure FedAvg, 8-bit '
                              'compression and SCAFFOLD on TFF\'s runtime against FedAvg there '
                              'and plain TF.')
# The library's settings for each --features variant (options as the driver would select them).
FEATURE_SETTINGS = {
    'DP-FedAvg (fixed clip), TFF runtime': dict(dp='fixed', noise_multiplier=1.0, clip=1.0,
                                                client_weighting='uniform'),
    'secure FedAvg, TFF runtime': dict(secure_agg=True, client_weighting='examples_processed'),
    '8-bit compression, TFF runtime': dict(compression='quantize', compression_bits=8,
                                           client_weighting='examples_processed'),
}
FLAGS = flags.FLAGS


def _memory() -> None:
    """Each variant alone in its own process: peak RSS of Python and of the TFF worker."""
    rows = {}
    for key in VARIANT_KEYS:
        out = subprocess.run([sys.executable, '-m', 'benchmarks.round_time', f'--only={key}',
                              f'--clients={_CLIENTS.value}', '--rounds=3'],
                             capture_output=True, text=True, check=False)
        line = [l for l in out.stdout.splitlines() if l.startswith('MEMORY ')]
        if not line:
            sys.exit(f'{key} failed:\n{out.stderr[-2000:]}')
        rows[key] = tuple(float(v) for v in line[0].split()[1:])
    plain = sum(rows['plain'])
    print(f'K = {_CLIENTS.value}: peak RSS of each variant alone (MiB; python + TFF worker)')
    for key, (python, worker) in rows.items():
        print(f'{key:10} {python:7.0f} + {worker:6.0f} = {python + worker:7.0f}   '
              f'x{(python + worker) / plain:.2f} of plain TF')


def main(argv) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)  # TFF logs every model build at INFO.
    if _MEMORY.value:
        _memory()
        return
    k, n = _CLIENTS.value, _EXAMPLES.value
    rng = np.random.default_rng(0)
    xs = [rng.random((n, 784), np.float32) for _ in range(k)]
    ys = [rng.integers(0, 10, n).astype(np.int32) for _ in range(k)]
    datasets = [tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=y)).batch(BATCH)
                for x, y in zip(xs, ys)]

    model_fn = workload.model_fn
    sgd = lambda lr: tff.learning.optimizers.build_sgdm(lr)

    # The fast path takes each client's batches as one element (see ClientSelector's
    # whole_client_batches): the same batches, handed over by tf.data in one call.
    whole_datasets = [tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=y)).batch(n)
                      for x, y in zip(xs, ys)]

    def federated(process, client_data=datasets):
        state = [process.initialize()]

        def round_fn():
            state[0] = process.next(state[0], client_data).state
        round_fn.weights = lambda: process.get_model_weights(state[0]).trainable
        return round_fn

    def federated_with_client_state(process):
        """Rounds of a process with client state; the same K clients every round."""
        state, ids, stored = [process.initialize()], [str(i) for i in range(k)], {}

        def round_fn():
            out = process.next(state[0], datasets, client_ids=ids, round_num=len(stored) + 1,
                               client_states=[stored.get(i, process.initial_client_state())
                                              for i in ids])
            state[0] = out.state
            stored.update(zip(ids, out.client_states))
        return round_fn

    # (c) Plain TF: the same local SGD, no federation; XLA client loop, clients over the cores.
    shapes = [(784, HIDDEN), (HIDDEN,), (HIDDEN, HIDDEN), (HIDDEN,), (HIDDEN, 10), (10,)]
    initial = [rng.normal(0, 0.05, s).astype(np.float32) for s in shapes]
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    x_batches = [tf.constant(x.reshape(-1, BATCH, 784)) for x in xs]
    y_batches = [tf.constant(y.reshape(-1, BATCH)) for y in ys]

    @tf.function(jit_compile=True)
    def client_update(weights, xb, yb):
        def step(i, w):
            with tf.GradientTape() as tape:
                tape.watch(w)
                h = tf.nn.relu(xb[i] @ w[0] + w[1])
                h = tf.nn.relu(h @ w[2] + w[3])
                loss = loss_fn(yb[i], h @ w[4] + w[5])
            return i + 1, [a - LR * g for a, g in zip(w, tape.gradient(loss, w))]
        _, trained = tf.while_loop(lambda i, _: i < tf.shape(xb)[0], step, (0, list(weights)))
        return [t - w for t, w in zip(trained, weights)]

    pool = concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1)
    plain_weights = [tf.constant(w) for w in initial]

    def plain_round():
        nonlocal plain_weights
        deltas = list(pool.map(lambda c: client_update(plain_weights, x_batches[c], y_batches[c]),
                               range(k)))
        plain_weights = [w + sum(d[i] for d in deltas) / k for i, w in enumerate(plain_weights)]

    with runtime.local_runtime() as rt:
        fedavg = lambda: build_fedavg(model_fn, client_optimizer=sgd(LR), server_optimizer=sgd(1.0))

        def fast(jit_compile):
            return federated(FastProcess(fedavg(), model_fn, jit_compile=jit_compile),
                             [WholeClientData(d, BATCH) for d in whole_datasets])
        makers = {  # key: (name, factory); built lazily, so --only measures one variant alone.
            'fast_xla': ('fl_tff fast path, XLA', lambda: fast(True)),
            'fast': ('fl_tff fast path', lambda: fast(False)),
            'tff': ('fl_tff FedAvg, TFF runtime', lambda: federated(fedavg())),
            'builder': ("TFF build_weighted_fed_avg", lambda: federated(
                tff.learning.algorithms.build_weighted_fed_avg(
                    model_fn, client_optimizer_fn=sgd(LR), server_optimizer_fn=sgd(1.0)))),
            'plain': ('plain TF (XLA, threads)', lambda: plain_round),
        }
        if _FEATURES.value:
            makers = {'tff': makers['tff'], 'plain': makers['plain']}
            for name, settings in FEATURE_SETTINGS.items():
                config = ExperimentConfig(**settings).validate()
                makers[name] = (name, lambda config=config: federated(build_fedavg(
                    model_fn, client_optimizer=sgd(LR), server_optimizer=sgd(1.0),
                    weighting=config.option('client_weighting').build(padding_labels=()),
                    model_aggregator=build_model_aggregator(config, max_weight=float(n)))))
            makers['scaffold'] = ('SCAFFOLD, TFF runtime', lambda: federated_with_client_state(
                build_scaffold(model_fn, num_clients=k, client_optimizer=sgd(LR),
                               server_optimizer=sgd(1.0))))
        variants = {name: make() for key, (name, make) in makers.items()
                    if _ONLY.value in ('', key)}
        times = {name: [] for name in variants}
        for r in range(_ROUNDS.value + 1):  # Interleaved: round r of every variant, in turn.
            for name, round_fn in variants.items():
                t0 = time.perf_counter()
                round_fn()
                times[name].append(time.perf_counter() - t0)
        worker_rss = peak_rss_mib(rt.worker_pid)
        if _ONLY.value:
            print(f'MEMORY {peak_rss_mib():.0f} {worker_rss:.0f}')
            return
        if _FEATURES.value:
            _print_features(k, n, times, worker_rss)
            return
        names = list(variants)
        final = {name: variants[name].weights() for name in names[:4]}
        diff = lambda x, y: max(float(np.abs(a - b).max()) for a, b in zip(final[x], final[y]))

    print(f'K = {k} clients x {n} examples, batch {BATCH}, 1 epoch, MLP 784-{HIDDEN}-{HIDDEN}-10; '
          f'{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}')
    print(f'{"variant":30} {"first round s":>14} {"median s/round":>15}')
    medians = {}
    for name, t in times.items():
        medians[name] = statistics.median(t[1:])
        print(f'{name:30} {t[0]:14.3f} {medians[name]:15.3f}')
    xla, fast_s, a, b, c = medians.values()
    print(f'fast path / plain TF: XLA {xla / c:.2f}, no XLA {fast_s / c:.2f};   '
          f'a/c (fl_tff on TFF\'s runtime / plain TF) = {a / c:.2f};   a/b (fl_tff / TFF builder) = {a / b:.2f}')
    print(f'max |w| differences after {_ROUNDS.value + 1} rounds vs fl_tff on TFF\'s runtime: '
          f'fast path {diff(names[1], names[2]):.1e}, XLA {diff(names[0], names[2]):.1e} '
          f'(rounding), TFF builder {diff(names[3], names[2]):.1e}')
    print(f'peak RSS: python {peak_rss_mib():.0f} MiB, TFF worker {worker_rss:.0f} MiB')


def _print_features(k: int, n: int, times: dict, worker_rss: float) -> None:
    print(f'K = {k} clients x {n} examples, batch {BATCH}, 1 epoch, MLP 784-{HIDDEN}-{HIDDEN}-10; '
          f'{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}')
    print(f'{"variant":40} {"first round s":>14} {"median s/round":>15} {"/ plain TF":>11}')
    plain = statistics.median(times['plain TF (XLA, threads)'][1:])
    for name, t in times.items():
        median = statistics.median(t[1:])
        print(f'{name:40} {t[0]:14.3f} {median:15.3f} {median / plain:11.2f}')
    print(f'peak RSS: python {peak_rss_mib():.0f} MiB, TFF worker {worker_rss:.0f} MiB')


if __name__ == '__main__':
    app.run(main)
