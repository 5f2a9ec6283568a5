"""Per-client values the worker reads from files instead of receiving them inside TFF's request.

Some rounds take a model-sized value per client besides its data: a client's state (SCAFFOLD's
control variate, error feedback's residual, a personal model) or its SecAgg mask. Handed to TFF,
every one of them is serialized into the request to the worker, which costs the driver several
copies of each on this machine's memory bandwidth (at K = 50 with the 2NN, about 0.5 s of a 3 s
SCAFFOLD round). Instead the driver writes each client's value to one raw file for the round
(`round_files`), and a TFF computation in front of the round's `next` reads it inside the worker
(`read_from_paths`). The worker must see the directory at the same path: the run's client-files
directory is such a place. Results are identical; what comes back from the round is unchanged.

Written here rather than with `tf.io.serialize_tensor` protos: raw bytes need no parsing, and one
file holds a whole structure.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

# decode_raw's dtypes: what a value file can hold.
RAW_DTYPES = (np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64,
              np.uint8, np.uint16, np.complex64, np.complex128, np.bool_)


@runtime_checkable
class ReadsValuesFromFiles(Protocol):
    """A process whose per-client values can travel as files (see the module docstring)."""

    def reading_values_from(self, directory: str) -> Any:
        """The same process whose workers read the per-client values from files that its
        `next` writes in `directory` for each round."""


def write(path: str, tensors: Sequence[Any]) -> str:
    """Writes `tensors` (one client's value, flattened) as their little-endian bytes, one after
    another; returns `path`."""
    with open(path, 'wb') as f:
        for tensor in tensors:
            tensor = np.asarray(tensor)
            f.write(np.ascontiguousarray(tensor, tensor.dtype.newbyteorder('<')).data)
    return path


@contextlib.contextmanager
def round_files(directory: str, values: Sequence[Sequence[Any]]) -> Iterator[list[str]]:
    """Writes each client's value (flattened) to its own file in a fresh directory inside
    `directory` and yields the paths; the files are removed when the block ends."""
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix='round_', dir=directory) as round_dir:
        yield [write(os.path.join(round_dir, f'{i}.bin'), v) for i, v in enumerate(values)]


def build_reader(value_type: tff.Type) -> tff.Computation:
    """A `tff.tensorflow.computation` path -> the value of `value_type` that `write` wrote there.

    Raises:
      TypeError: A tensor of `value_type` whose dtype cannot be read back from raw bytes.
    """
    tensors = tff.structure.flatten(value_type)
    for t in tensors:
        if t.dtype.type not in RAW_DTYPES:
            raise TypeError(f'dtype {t.dtype} cannot be read from a file; supported: '
                            f'{", ".join(np.dtype(d).name for d in RAW_DTYPES)}')
    sizes = [int(np.prod(t.shape, dtype=np.int64)) * np.dtype(t.dtype.type).itemsize
             for t in tensors]
    offsets = np.cumsum([0, *sizes[:-1]]).tolist()

    @tff.tensorflow.computation(np.str_)
    def read(path):
        content = tf.io.read_file(path)
        flat = [tf.reshape(tf.io.decode_raw(tf.strings.substr(content, offset, size),
                                            tf.as_dtype(t.dtype.type), little_endian=True),
                           t.shape)
                for t, offset, size in zip(tensors, offsets, sizes)]
        if isinstance(value_type, tff.TensorType):
            return flat[0]
        return tff.structure.pack_sequence_as(value_type, flat)

    return read


def read_from_paths(next_fn: tff.Computation, position: int) -> tff.Computation:
    """`next_fn` whose CLIENTS-placed parameter at `position` arrives as paths (str @CLIENTS)
    of files `write` wrote, read inside the worker by `build_reader`.

    Raises:
      TypeError: The parameter is not CLIENTS-placed, or holds a dtype raw bytes cannot carry.
      ValueError: `next_fn` does not take 3 or 4 parameters.
    """
    params = list(next_fn.type_signature.parameter)
    placed = params[position]
    if not (isinstance(placed, tff.FederatedType) and placed.placement is tff.CLIENTS):
        raise TypeError(f'parameter {position} of next is {placed}, not CLIENTS-placed')
    read = build_reader(placed.member)
    params[position] = tff.FederatedType(np.str_, tff.CLIENTS)

    def with_values(args):
        args = list(args)
        args[position] = tff.federated_map(read, args[position])
        return next_fn(*args)

    if len(params) == 3:
        @tff.federated_computation(*params)
        def composed(a, b, c):
            return with_values((a, b, c))
    elif len(params) == 4:
        @tff.federated_computation(*params)
        def composed(a, b, c, d):
            return with_values((a, b, c, d))
    else:
        raise ValueError(f'next takes {len(params)} parameters; 3 or 4 are supported')
    return composed
