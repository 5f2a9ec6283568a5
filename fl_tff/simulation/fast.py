"""The fast simulation path (`--simulation=fast`): the same client and server computations as
the TFF process, run in this process without TFF's runtime.

TFF's local runtime ships every client's dataset to its worker each round (the data is inside
the serialized graph), costs about 1 ms per local step and keeps one core busy. Here tf.data
hands over each client's examples in one call, they are split into stacked batches and the
local steps run in one graph call (`client_work.local_sgd_step`, the very step TFF's client
work reduces over); clients are spread over a thread per core; the clients' deltas are averaged
(weighted by examples or uniformly, as `tff.aggregators.MeanFactory` / `UnweightedMeanFactory`
do) and the server applies `finalizer.server_update_fn`, the function inside our TFF finalizer.

Without `jit_compile` the float results equal the TFF path's (to ~1e-8). With it the loop is
XLA-compiled: faster, but XLA rounds differently, and in ReLU networks one pre-activation that
crosses zero differently changes a weight by about lr·x·g, so runs drift apart by ~1e-3 over
rounds while learning equally well.

`FastProcess` has the interface our training loop, checkpoints and evaluators use
(`initialize`, `next`, `get_model_weights`, `set_model_weights`) and the same state structure
as the TFF process it wraps, so checkpoints and evaluators are shared code. A run directory
records `--simulation`, which changes the floats (XLA), so switching paths starts a new run.
Only plain mean aggregation is supported: DP, secure aggregation, compression and robust
aggregators are TFF aggregators and need the TFF path.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import queue
from typing import Any, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fl_tff import options
from fl_tff import weighting as weighting_lib
from fl_tff.algorithms import client_work, fedavg, finalizer
from fl_tff.models.model_fn import ModelFn
from fl_tff.simulation.selection import WholeClientData



class _ClientTrainer:
    """One thread's model and compiled local training (its own variables, so threads can run
    clients at once)."""

    def __init__(self, model_fn: ModelFn, optimizer: tff.learning.optimizers.Optimizer,
                 weighting: weighting_lib.Weighting, proximal_strength: float,
                 jit_compile: bool):
        self.model = model = model_fn()
        weights = tff.learning.models.ModelWeights.from_model(model)
        trainable = tuple(tf.nest.flatten(weights.trainable))
        initial = [tf.Variable(tf.zeros_like(v), trainable=False) for v in trainable]
        specs = tuple(tf.TensorSpec(v.shape, v.dtype) for v in trainable)
        step = client_work.local_sgd_step(model, optimizer, trainable, initial, proximal_strength)

        def start(initial_weights):
            client_work.load_weights(model, initial_weights)
            for v, w in zip(initial, tf.nest.flatten(initial_weights.trainable)):
                v.assign(w)
            model.reset_metrics()
            return tf.constant(0, tf.int64), optimizer.initialize(specs)

        @tf.function(jit_compile=jit_compile)
        def run_stacked(initial_weights, stacked, num_steps):
            """Loads the weights, then `num_steps` steps over the leading axis of `stacked`
            (padded to a bucket size), in one graph (XLA-compiled with `jit_compile`)."""
            def body(i, state):
                return i + 1, step(state, tf.nest.map_structure(lambda t: t[i], stacked))
            _, state = tf.while_loop(lambda i, _: i < num_steps, body,
                                     (tf.constant(0), start(initial_weights)))
            return state

        @tf.function(reduce_retracing=True)  # Final partial batches differ in size.
        def run_rest(initial_weights, state, batches):
            """The remaining (partial) batches, then the client's result as TFF's client work
            makes it: (ClientResult, unfinalized metrics)."""
            if state is None:
                state = start(initial_weights)
            for batch in batches:
                state = step(state, batch)
            return client_work.finish_local_training(
                model, weights, initial_weights,
                weighting_lib.client_weight(weighting, None, state[0]))

        self._run_stacked, self._run_rest = run_stacked, run_rest

    def train(self, initial_weights: Any, dataset: tf.data.Dataset,
              whole_batch_size: Optional[int]) -> tuple[list, float, Any]:
        """(delta, weight, unfinalized metrics) of local training from `initial_weights`."""
        if whole_batch_size:
            (stacked, steps), rest = _split_whole(dataset, whole_batch_size)
        else:
            (stacked, steps), rest = _stack_batches(list(dataset.as_numpy_iterator()))
        state = None
        if steps:
            state = self._run_stacked(initial_weights, stacked, tf.constant(steps))
        result, metrics = self._run_rest(initial_weights, state, tuple(rest))
        return ([t.numpy() for t in tf.nest.flatten(result.update)], float(result.update_weight),
                tf.nest.map_structure(lambda t: t.numpy(), metrics))


def _bucket(n: int) -> int:
    """The padded step count for n steps (a power of two: few distinct XLA compiles)."""
    return 1 << max(0, (n - 1).bit_length())


def _pad_steps(stacked: Any, steps: int) -> Any:
    """`stacked` (steps on axis 0) zero-padded to `_bucket(steps)` steps."""
    padded = _bucket(steps)
    return tf.nest.map_structure(
        lambda t: np.concatenate([t, np.zeros((padded - steps, *t.shape[1:]), t.dtype)]), stacked)


def _split_whole(dataset: tf.data.Dataset, batch_size: int) -> tuple[tuple[Any, int], list]:
    """A whole-client dataset (one element, see `WholeClientData`)
    as ((its full batches stacked, their count), [the final partial batch, if any])."""
    if int(dataset.cardinality()) == 0:
        return (None, 0), []
    whole = tf.nest.map_structure(lambda t: t.numpy(), dataset.get_single_element())
    size = int(tf.nest.flatten(whole)[0].shape[0])
    steps, extra = divmod(size, batch_size)
    stacked = tf.nest.map_structure(
        lambda t: t[:steps * batch_size].reshape(steps, batch_size, *t.shape[1:]), whole)
    rest = [tf.nest.map_structure(lambda t: t[steps * batch_size:], whole)] if extra else []
    return (_pad_steps(stacked, steps) if steps else None, steps), rest


def _stack_batches(batches: list) -> tuple[tuple[Any, int], list]:
    """((the leading batches of the first batch's size stacked, their count), the rest)."""
    if not batches:
        return (None, 0), []
    size = int(tf.nest.flatten(batches[0])[0].shape[0])
    count = 0
    while count < len(batches) and int(tf.nest.flatten(batches[count])[0].shape[0]) == size:
        count += 1
    stacked = tf.nest.map_structure(lambda *ts: np.stack(ts), *batches[:count])
    return (_pad_steps(stacked, count), count), list(batches[count:])


class _MetricsFinalizer:
    """Applies a model's metric finalizers to summed unfinalized metrics.

    TFF's finalizers for Keras metrics build a new Keras metric (new variables) on every call,
    which eager code and `tf.function` retraces refuse; as inside TFF, they are traced once, in
    a graph of their own, and run in its session."""

    def __init__(self, finalizers):
        self._finalizers, self._session = finalizers, None

    def __call__(self, summed: dict) -> dict:
        if self._session is None:
            graph = tf.Graph()
            with graph.as_default():
                self._inputs = tf.nest.map_structure(
                    lambda a: tf.compat.v1.placeholder(tf.as_dtype(np.asarray(a).dtype),
                                                       np.shape(a)), summed)
                self._outputs = collections.OrderedDict(
                    (name, self._finalizers[name](self._inputs[name])) for name in summed)
                initialize = tf.compat.v1.global_variables_initializer()
            self._session = tf.compat.v1.Session(graph=graph)
            self._session.run(initialize)
        feed = dict(zip(tf.nest.flatten(self._inputs), tf.nest.flatten(summed)))
        return self._session.run(self._outputs, feed_dict=feed)

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


class FastProcess:
    """The rounds of a local-SGD learning process (FedAvg / FedProx with the plain mean) on a
    thread per core; see the module docstring.

    It replays `tff_process` exactly: the client optimizer, weighting, proximal strength and
    server optimizer come from the recipe the process's builder declared
    (`algorithms.fedavg.local_sgd_recipe`), and its `initialize` is used. A process without one
    (DP, secure, compressed or robust aggregation, DP-SGD, error feedback, FedSGD) is refused.
    Client data: batched `tf.data.Dataset`s, or `selection.WholeClientData` (all a client's
    examples in one element, split into its batch size here: tf.data hands over a client's data
    in one call instead of one per batch).

    Raises:
      ValueError: `tff_process` cannot be replayed; the message says why.
    """

    def __init__(self, tff_process: tff.learning.templates.LearningProcess, model_fn: ModelFn, *,
                 threads: Optional[int] = None, jit_compile: bool = False):
        try:
            recipe = fedavg.local_sgd_recipe(tff_process)
        except ValueError as e:
            raise ValueError(f'the fast path cannot replay this process exactly: {e}; run it on '
                             'TFF\'s runtime') from e
        self._uniform = recipe.unweighted_mean
        self._make_trainer = lambda: _ClientTrainer(
            model_fn, recipe.client_optimizer, recipe.weighting, recipe.proximal_strength,
            jit_compile)
        self._threads = threads or os.cpu_count() or 1
        self._trainers: Optional[queue.SimpleQueue] = None
        self._pool = concurrent.futures.ThreadPoolExecutor(self._threads)
        self._server_update = tf.function(finalizer.server_update_fn(recipe.server_optimizer))
        self._finalize_summed = None
        self.initialize = tff_process.initialize

    def _train(self, initial, data) -> tuple[list, float, Any]:
        """Trains one client on a free trainer (Keras models must be built on the main thread,
        so trainers are made there and handed to the pool's threads). Whole-client data is built
        here, so only clients in training hold their data."""
        trainer = self._trainers.get()
        try:
            if isinstance(data, WholeClientData):
                return trainer.train(initial, data.build(), data.batch_size)
            return trainer.train(initial, data, None)
        finally:
            self._trainers.put(trainer)

    def get_model_weights(self, state) -> tff.learning.models.ModelWeights:
        """The global model weights in `state`."""
        return state.global_model_weights

    def set_model_weights(self, state, weights: tff.learning.models.ModelWeights):
        """`state` with its global model weights replaced."""
        return tff.learning.templates.LearningAlgorithmState(
            weights, state.distributor, state.client_work, state.aggregator, state.finalizer)

    def next(self, state, client_data: list) -> tff.learning.templates.LearningProcessOutput:
        """One round over `client_data`: batched `tf.data.Dataset`s or `WholeClientData`."""
        if not client_data:
            raise ValueError('a round needs at least one client dataset')
        weights = state.global_model_weights
        initial = tff.learning.models.ModelWeights(
            tf.nest.map_structure(tf.constant, weights.trainable),
            tf.nest.map_structure(tf.constant, weights.non_trainable))
        if self._trainers is None:
            trainers = [self._make_trainer() for _ in range(self._threads)]
            self._finalize_summed = _MetricsFinalizer(trainers[0].model.metric_finalizers())
            self._trainers = queue.SimpleQueue()
            for trainer in trainers:
                self._trainers.put(trainer)
        # As TFF's MeanFactory: sum of weight x delta in float32, divided by the summed weight.
        # Accumulated in client order while later clients still train.
        sums = [np.zeros(np.shape(t), np.float32) for t in tf.nest.flatten(weights.trainable)]
        total, metrics = np.float32(0), []
        for delta, weight, client_metrics in self._pool.map(lambda ds: self._train(initial, ds),
                                                            client_data):
            if self._uniform:  # TFF's unweighted mean counts every client (a zeroed one too).
                weight = 1.0
            for acc, t in zip(sums, delta):
                acc += np.float32(weight) * t
            total += np.float32(weight)
            metrics.append(client_metrics)
        with np.errstate(divide='ignore', invalid='ignore'):  # 0/0 = NaN, as in TFF's mean:
            mean = [acc / total for acc in sums]  # the server update then skips the round.
        mean = [np.asarray(m, np.float32) for m in mean]
        update = tf.nest.pack_sequence_as(weights.trainable, [tf.constant(m) for m in mean])
        opt_state, new_weights, non_finite = self._server_update(state.finalizer, initial, update)
        numpy = lambda s: tf.nest.map_structure(lambda t: t.numpy(), s)
        new_state = tff.learning.templates.LearningAlgorithmState(
            tff.learning.models.ModelWeights(numpy(new_weights.trainable),
                                             numpy(new_weights.non_trainable)),
            state.distributor, state.client_work, state.aggregator, numpy(opt_state))
        metrics = collections.OrderedDict(
            distributor=(), aggregator=collections.OrderedDict(),
            client_work=collections.OrderedDict(train=self._finalize(metrics)),
            finalizer=collections.OrderedDict(update_non_finite=int(non_finite)))
        return tff.learning.templates.LearningProcessOutput(new_state, metrics)

    def _finalize(self, unfinalized: list) -> dict:
        """The clients' metrics summed, then finalized (TFF's `sum_then_finalize`)."""
        summed = tf.nest.map_structure(lambda *xs: np.sum(xs, axis=0), *unfinalized)
        return self._finalize_summed(summed)

    def close(self) -> None:
        """Stops the client threads and the metrics session."""
        self._pool.shutdown(wait=True)
        if self._finalize_summed is not None:
            self._finalize_summed.close()


_FAST = dict(provides={options.WHOLE_CLIENT_BATCHES, options.IN_PROCESS},
             pipeline_requires={options.FAST_PATH: 'needs TFF\'s runtime (the fast path runs local '
                                                   'SGD and the plain mean only): use '
                                                   '--simulation=tff'})

# Each builder is `(process, model_fn) -> the process that runs the rounds`.
SIMULATIONS = options.Registry('simulation', 'How rounds run.', [
    options.Option('tff', 'TFF\'s runtime; every feature', build=lambda process, model_fn: process),
    options.Option('fast', 'local SGD and the mean in this process on a thread per core, same '
                   'results as tff, several times faster',
                   build=lambda process, model_fn: FastProcess(process, model_fn), **_FAST),
    options.Option('fast_xla', 'fast with the local loop XLA-compiled: faster still, float '
                   'rounding differs', build=lambda process, model_fn: FastProcess(
                       process, model_fn, jit_compile=True), **_FAST),
], default='tff')
