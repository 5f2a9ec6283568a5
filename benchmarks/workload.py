"""The benchmarks' workload (issue 7's "2NN"): MLP 784-200-200-10, 600 examples per client,
batch 10, one local epoch, client SGD lr 0.1; plus a peak-RSS reader."""

from __future__ import annotations

import collections
import resource
from typing import Optional

import tensorflow as tf

from fl_tff.models import build_model_fn

BATCH, LR, HIDDEN, EXAMPLES = 10, 0.1, 200, 600


def keras_fn() -> tf.keras.Model:
    """The MLP, with seeded initializers."""
    init = lambda i: tf.keras.initializers.GlorotUniform(seed=i)
    return tf.keras.Sequential([
        tf.keras.layers.InputLayer(input_shape=(784,)),
        tf.keras.layers.Dense(HIDDEN, activation='relu', kernel_initializer=init(0)),
        tf.keras.layers.Dense(HIDDEN, activation='relu', kernel_initializer=init(1)),
        tf.keras.layers.Dense(10, kernel_initializer=init(2))])


SPEC = collections.OrderedDict(x=tf.TensorSpec([None, 784], tf.float32),
                               y=tf.TensorSpec([None], tf.int32))
model_fn = build_model_fn(keras_fn, SPEC)


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
