"""The benchmarks' workloads: the model shapes researchers run, on generated data of the real
shapes (the datasets cannot be downloaded on the benchmark machines, so the examples are random
values of the right shape and range: what a round costs does not depend on their content).

- `2nn` (issue 7's workload): the MLP 784-200-200-10 of McMahan et al. 2017, 600 examples per
  client, batch 10, client SGD at 0.1.
- `emnist_cnn`: the EMNIST-62 CNN of Reddi et al. 2021 (28x28x1 inputs, 1.2M parameters),
  batch 20, 200 examples per client (EMNIST-62's clients hold about 230 on average).
- `so_lstm`: the Stack Overflow next-word LSTM of Reddi et al. 2021 (`--model=word_lstm`: 10k
  words + 4 special tokens, embedding 96, LSTM 670; 4.05M parameters), sequences of 20, batch
  16, 128 sequences per client (8 steps).
- `shakespeare_lstm`: the char-LSTM of McMahan et al. 2017 (embedding 8, two LSTMs of 256, 90
  characters with TFF's special tokens), sequences of 80, batch 10, 100 sequences per client.

Plus a peak-RSS reader.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import os
import resource
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from fl_tff import models, simulation
from fl_tff.data import client_data_from_arrays, client_files
from fl_tff.runtime import worker_values

# The 2NN workload's constants (what `benchmarks.scale` and the --features variants use).
BATCH, LR, HIDDEN, EXAMPLES = 10, 0.1, 200, 600


@dataclasses.dataclass(frozen=True)
class Workload:
    """A benchmark workload: a registered model (`--model`) and the shape of its data.

    Attributes:
      name: `--workload`'s value.
      model: The fl_tff model (`fl_tff.models.keras_models.MODELS`) and its parameters.
      input_shape: One example's input shape.
      num_classes: Classes (or vocabulary size, for the next-token models).
      sequence: Labels are one per input position (next-token prediction), else one per example.
      batch, examples, learning_rate: Client batch size, examples per client, client SGD rate.
      source: Where the shapes come from.
      plain_xla: Whether the plain-TF bound is faster XLA-compiled than on TF's own kernels
        for this model (measured with `round_time --plain=both`; see docs/benchmarks.md).
      plain_intra_op_threads: TensorFlow's threads per op for the bound (0: TF's default, one
        per core): whichever gave the faster bound (docs/benchmarks.md).
    """

    name: str
    model: str
    model_params: dict
    input_shape: tuple[int, ...]
    num_classes: int
    sequence: bool
    batch: int
    examples: int
    learning_rate: float
    source: str
    plain_xla: bool
    plain_intra_op_threads: int

    @property
    def element_spec(self) -> collections.OrderedDict:
        """One example's spec, as `fl_tff.models.model_fn_for_dataset` takes it."""
        x_dtype = tf.int32 if self.sequence else tf.float32
        return collections.OrderedDict(
            x=tf.TensorSpec(self.input_shape, x_dtype),
            y=tf.TensorSpec(self.input_shape if self.sequence else (), tf.int32))

    def keras_fn(self) -> tf.keras.Model:
        """The model, seeded (seed 0)."""
        return models.keras_model_factory(self.model, self.input_shape, self.num_classes, seed=0,
                                          **self.model_params)()

    def model_fn(self) -> Any:
        """fl_tff's `model_fn` for the model (no padding: generated tokens are never 0)."""
        return models.model_fn_for_dataset(self.model, self.element_spec, self.num_classes,
                                           seed=0, **self.model_params)[0]

    def generate(self, clients: int, examples: int, seed: int = 0) -> tuple[list, list]:
        """`clients` clients of `examples` generated examples each: (inputs, labels) per
        client. Images: uniform in [0, 1); tokens: uniform over the vocabulary but padding
        (token 0); labels: uniform classes, or the inputs shifted by one position."""
        rng = np.random.default_rng(seed)
        xs, ys = [], []
        for _ in range(clients):
            if self.sequence:
                tokens = rng.integers(1, self.num_classes,
                                      (examples, self.input_shape[0] + 1)).astype(np.int32)
                xs.append(tokens[:, :-1])
                ys.append(tokens[:, 1:])
            else:
                xs.append(rng.random((examples, *self.input_shape), np.float32))
                ys.append(rng.integers(0, self.num_classes, examples).astype(np.int32))
        return xs, ys


WORKLOADS = {w.name: w for w in (
    Workload('2nn', '2nn', {'hidden_units': HIDDEN}, (784,), 10, False, BATCH, EXAMPLES, LR,
             'McMahan et al. 2017, the 2NN', plain_xla=True,
             plain_intra_op_threads=0),
    Workload('emnist_cnn', 'emnist_cnn', {}, (28, 28, 1), 62, False, 20, 200, 0.1,
             'Reddi et al. 2021, EMNIST-62 CNN', plain_xla=False,
             plain_intra_op_threads=1),
    Workload('so_lstm', 'word_lstm', {}, (20,), 10_004, True, 16, 128, 0.3,
             'Reddi et al. 2021, Stack Overflow next-word LSTM', plain_xla=False,
             plain_intra_op_threads=1),
    Workload('shakespeare_lstm', 'char_lstm', {}, (80,), 90, True, 10, 100, 1.0,
             'McMahan et al. 2017, Shakespeare char-LSTM', plain_xla=False,
             plain_intra_op_threads=1),
)}

model_fn = WORKLOADS['2nn'].model_fn()  # The 2NN's, for the benchmarks that run only it.


class ClientsData:
    """K clients of the workload's generated examples, in memory, in the run's client files,
    and as the selector and plain TF see them."""

    def __init__(self, spec: Workload, k: int, n: int, directory: str):
        self.spec = spec
        self.xs, self.ys = spec.generate(k, n)
        in_memory = client_data_from_arrays(
            np.concatenate(self.xs), np.concatenate(self.ys),
            [np.arange(i * n, (i + 1) * n) for i in range(k)])
        self.files = client_files.write_client_files(in_memory, os.path.join(directory, 'train'))
        # Every client every round (population K), as the driver selects them.
        self.select = simulation.ClientSelector(in_memory, clients_per_round=k, epochs=1,
                                                batch_size=spec.batch, seed=0)
        self.dataset_computation = self.select.dataset_computation(self.files)
        self.batched = [tf.data.Dataset.from_tensor_slices(
            collections.OrderedDict(x=x, y=y)).batch(spec.batch) for x, y in zip(self.xs, self.ys)]
        self._values_dir = os.path.join(directory, 'client_values')

    def compose(self, process):
        """`process` as the driver runs it: composed with the worker's dataset computation, and
        reading per-client values (client states, SecAgg masks) from files in the worker."""
        if isinstance(process, worker_values.ReadsValuesFromFiles):
            process = process.reading_values_from(self._values_dir)
        return simulation.compose(process, self.dataset_computation)


def plain_round(data: ClientsData, xla: bool, initial_weights: Optional[list] = None):
    """A round function of the plain-TF lower bound: the same local SGD without federation,
    each client's steps in one compiled loop (`xla`: XLA-compiled, else TF's own kernels),
    clients over the cores by threads, each thread with its own copy of the model; the mean
    delta applied at rate 1, from `initial_weights` (default: the seeded model's). Its
    `weights()` are the model's trainable weights."""
    spec, k = data.spec, len(data.xs)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    steps = [len(x) // spec.batch for x in data.xs]
    x_batches = [tf.constant(x[:s * spec.batch].reshape(s, spec.batch, *x.shape[1:]))
                 for x, s in zip(data.xs, steps)]
    y_batches = [tf.constant(y[:s * spec.batch].reshape(s, spec.batch, *y.shape[1:]))
                 for y, s in zip(data.ys, steps)]
    threads = os.cpu_count() or 1
    replicas = [spec.keras_fn() for _ in range(threads)]
    box = [[tf.constant(w) for w in (initial_weights or
                                     [v.numpy() for v in replicas[0].trainable_variables])]]

    def client_fn(model):
        @tf.function(jit_compile=xla)
        def client_update(weights, xb, yb):
            for v, w in zip(model.trainable_variables, weights):
                v.assign(w)

            def step(i):
                with tf.GradientTape() as tape:
                    loss = loss_fn(yb[i], model(xb[i], training=True))
                for v, g in zip(model.trainable_variables,
                                tape.gradient(loss, model.trainable_variables)):
                    if isinstance(g, tf.IndexedSlices):  # An embedding's rows: sparse update.
                        v.scatter_sub(tf.IndexedSlices(spec.learning_rate * g.values, g.indices,
                                                       g.dense_shape))
                    else:
                        v.assign_sub(spec.learning_rate * g)
                return (i + 1,)
            tf.while_loop(lambda i: i < tf.shape(xb)[0], step, (tf.constant(0),))
            return [v - w for v, w in zip(model.trainable_variables, weights)]
        return client_update

    updates = [client_fn(m) for m in replicas]
    free = list(range(threads))
    pool = concurrent.futures.ThreadPoolExecutor(threads)

    def one_client(c):
        slot = free.pop()  # list.pop/append are atomic: each thread takes a replica of its own.
        try:
            return updates[slot](box[0], x_batches[c], y_batches[c])
        finally:
            free.append(slot)

    def plain_round():
        deltas = list(pool.map(one_client, range(k)))
        box[0] = [w + sum(d[i] for d in deltas) / k for i, w in enumerate(box[0])]
    plain_round.weights = lambda: [w.numpy() for w in box[0]]
    return plain_round


def peak_rss_mib(pid: Optional[int] = None) -> float:
    """Peak resident memory (VmHWM) of `pid`, or of this process, in MiB."""
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
