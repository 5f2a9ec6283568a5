r"""Round-time benchmark (issue 7's "2NN" workload), measured in ONE run, interleaved:

  (a) fl_tff FedAvg, (b) TFF's `build_weighted_fed_avg` on the same data and context,
  (c) a plain-TensorFlow lower bound doing the same SGD steps without federation
      (XLA-compiled client loop, clients split over the cores).

Prints the first round (trace) separately, the steady-state median seconds per round, the
ratios a/c and a/b, and the peak RSS of this process and of the TFF worker.

  .venv/bin/python -m benchmarks.round_time --clients=10 --rounds=6
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import platform
import resource
import statistics
import time

from absl import app
from absl import flags
from absl import logging
# TensorFlow must be imported at module level: imported first inside absl's `app.run`, tf.keras
# builds graph-mode (not Keras) tensors and Sequential models fail to build eagerly.
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

_CLIENTS = flags.DEFINE_integer('clients', 10, 'Clients per round (K).')
_ROUNDS = flags.DEFINE_integer('rounds', 6, 'Steady rounds measured per variant (after one trace round).')
_EXAMPLES = flags.DEFINE_integer('examples', 600, 'Examples per client.')
FLAGS = flags.FLAGS

BATCH, LR, HIDDEN = 10, 0.1, 200


def _peak_rss_mib(pid: int | None = None) -> float:
    if pid is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    try:
        with open(f'/proc/{pid}/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float('nan')


def main(argv) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)  # TFF logs every model build at INFO.

    from fl_tff import runtime
    from fl_tff.algorithms import build_fedavg
    from fl_tff.models import build_model_fn
    from fl_tff.simulation.fast import FastProcess

    k, n = _CLIENTS.value, _EXAMPLES.value
    rng = np.random.default_rng(0)
    xs = [rng.random((n, 784), np.float32) for _ in range(k)]
    ys = [rng.integers(0, 10, n).astype(np.int32) for _ in range(k)]
    datasets = [tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=y)).batch(BATCH)
                for x, y in zip(xs, ys)]

    def keras_fn():
        init = lambda i: tf.keras.initializers.GlorotUniform(seed=i)
        return tf.keras.Sequential([
            tf.keras.layers.InputLayer(input_shape=(784,)),
            tf.keras.layers.Dense(HIDDEN, activation='relu', kernel_initializer=init(0)),
            tf.keras.layers.Dense(HIDDEN, activation='relu', kernel_initializer=init(1)),
            tf.keras.layers.Dense(10, kernel_initializer=init(2))])

    spec = collections.OrderedDict(x=tf.TensorSpec([None, 784], tf.float32),
                                   y=tf.TensorSpec([None], tf.int32))
    model_fn = build_model_fn(keras_fn, spec)
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
        fedavg = build_fedavg(model_fn, client_optimizer=sgd(LR), server_optimizer=sgd(1.0))
        fast = FastProcess(fedavg, model_fn, client_optimizer=sgd(LR), server_optimizer=sgd(1.0),
                           weighting=tff.learning.ClientWeighting.NUM_EXAMPLES,
                           whole_batch_size=BATCH)
        variants = {
            'fl_tff FedAvg, fast path': federated(fast, whole_datasets),
            'fl_tff FedAvg, TFF runtime': federated(fedavg),
            "TFF build_weighted_fed_avg": federated(tff.learning.algorithms.build_weighted_fed_avg(
                model_fn, client_optimizer_fn=sgd(LR), server_optimizer_fn=sgd(1.0))),
            'plain TF (XLA, threads)': plain_round,
        }
        times = {name: [] for name in variants}
        for r in range(_ROUNDS.value + 1):  # Interleaved: round r of every variant, in turn.
            for name, round_fn in variants.items():
                t0 = time.perf_counter()
                round_fn()
                times[name].append(time.perf_counter() - t0)
        worker_rss = _peak_rss_mib(rt.worker_pid)
        final = {name: variants[name].weights() for name in list(variants)[:3]}
        diff = lambda x, y: max(float(np.abs(a - b).max()) for a, b in zip(final[x], final[y]))
        names = list(variants)

    print(f'K = {k} clients x {n} examples, batch {BATCH}, 1 epoch, MLP 784-{HIDDEN}-{HIDDEN}-10; '
          f'{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}')
    print(f'{"variant":30} {"first round s":>14} {"median s/round":>15}')
    medians = {}
    for name, t in times.items():
        medians[name] = statistics.median(t[1:])
        print(f'{name:30} {t[0]:14.3f} {medians[name]:15.3f}')
    fast_s, a, b, c = medians.values()
    print(f'fast/c (fast path / plain TF lower bound) = {fast_s / c:.2f}   '
          f'a/c (fl_tff on TFF / plain TF) = {a / c:.2f}   a/b (fl_tff / TFF builder) = {a / b:.2f}')
    print(f'max |w| differences after {_ROUNDS.value + 1} rounds: fast vs TFF runtime '
          f'{diff(names[0], names[1]):.1e}, fl_tff vs TFF builder {diff(names[1], names[2]):.1e}')
    print(f'peak RSS: python {_peak_rss_mib():.0f} MiB, TFF worker {worker_rss:.0f} MiB')


if __name__ == '__main__':
    app.run(main)
