"""Per-client values that travel between the driver and the worker as files, not inside TFF's
request and response.

Some rounds take a model-sized value per client besides its data: a client's state (SCAFFOLD's
control variate, error feedback's residual, a personal model) or its SecAgg mask; rounds with
client state also return each participant's new state. Handed to TFF, every one of them is
serialized into the request to the worker (or its response), which costs the driver several
copies of each on this machine's memory bandwidth (at K = 50 with the 2NN, about 0.5 s of a 3 s
SCAFFOLD round for the request, 0.3 s for the response).

Instead the driver writes each client's value to one raw file for the round (`round_files`), and
a TFF computation in front of the round's `next` reads it inside the worker (`read_from_paths`).
When the round returns a new value per client, a TFF computation after `next` writes each one
inside the worker beside the file it read (`build_writer`: the path plus `.out`) and the round
returns only those paths; the driver reads the values back (`read_written`) before the round's
files are removed. Either way the values are still arguments and results of the round: the
process's `next` takes and returns them, and the simulation owns, stores and checkpoints them.
The worker must see the directory at the same path: the run's client-files directory is such a
place. Results are identical.

Written here rather than with `tf.io.serialize_tensor` protos for the driver's files: raw bytes
need no parsing, and one file holds a whole structure. The worker's files are one
`serialize_tensor` of the value's bytes (TensorFlow has no op that writes raw bytes); the driver
takes the bytes out of that proto without copying them through TensorFlow.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any, Optional, Protocol, runtime_checkable

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow.core.framework import tensor_pb2

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


def _layout(value_type: tff.Type) -> tuple[list[tff.TensorType], list[int], list[int]]:
    """The flattened tensors of `value_type` and each one's byte size and offset in a file.

    Raises:
      TypeError: A tensor whose dtype raw bytes cannot carry.
    """
    tensors = tff.structure.flatten(value_type)
    for t in tensors:
        if t.dtype.type not in RAW_DTYPES:
            raise TypeError(f'dtype {t.dtype} cannot be read from a file; supported: '
                            f'{", ".join(np.dtype(d).name for d in RAW_DTYPES)}')
    sizes = [int(np.prod(t.shape, dtype=np.int64)) * np.dtype(t.dtype.type).itemsize
             for t in tensors]
    offsets = np.cumsum([0, *sizes[:-1]]).tolist()
    return tensors, sizes, offsets


def build_writer(value_type: tff.Type) -> tff.Computation:
    """A `tff.tensorflow.computation` (value of `value_type`, path) -> path + '.out', having
    written there the value's little-endian bytes (as `write` lays them out) inside one
    `tf.io.serialize_tensor` of a uint8 vector; `read_written` reads it.

    Raises:
      TypeError: A tensor of `value_type` whose dtype raw bytes cannot carry.
    """
    _layout(value_type)
    if not np.little_endian:  # tf.bitcast gives the host's byte order.
        raise TypeError('value files are little-endian; this host is not')

    @tff.tensorflow.computation(value_type, np.str_)
    def write_value(value, path):
        parts = []
        for tensor in tff.structure.flatten(value):
            if tensor.dtype == tf.bool:
                tensor = tf.cast(tensor, tf.uint8)
            parts.append(tf.reshape(tf.bitcast(tensor, tf.uint8), [-1]))
        out = tf.strings.join([path, '.out'])
        content = tf.concat(parts, 0) if parts else tf.zeros([0], tf.uint8)  # E.g. no personal layers.
        written = tf.io.write_file(out, tf.io.serialize_tensor(content))
        with tf.control_dependencies([written]):
            return tf.identity(out)

    return write_value


def read_written(path: str | bytes, value_type: tff.Type) -> list[np.ndarray]:
    """The value `build_writer`'s computation wrote at `path` (as TFF returns it: bytes),
    flattened (new arrays)."""
    tensors, sizes, offsets = _layout(value_type)
    path = os.fsdecode(path)
    with open(path, 'rb') as f:
        content = tensor_pb2.TensorProto.FromString(f.read()).tensor_content
    if len(content) != sum(sizes):
        raise ValueError(f'{path} holds {len(content)} bytes; a {value_type} takes {sum(sizes)}')
    out = []
    for t, size, offset in zip(tensors, sizes, offsets):
        dtype = np.dtype(t.dtype.type).newbyteorder('<')
        flat = np.frombuffer(content, dtype, count=size // dtype.itemsize, offset=offset)
        out.append(flat.astype(np.dtype(t.dtype.type)).reshape(t.shape))  # astype copies.
    return out


def build_reader(value_type: tff.Type) -> tff.Computation:
    """A `tff.tensorflow.computation` path -> the value of `value_type` that `write` wrote there.

    Raises:
      TypeError: A tensor of `value_type` whose dtype cannot be read back from raw bytes.
    """
    tensors, sizes, offsets = _layout(value_type)

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


def read_from_paths(next_fn: tff.Computation, position: int,
                    result_position: Optional[int] = None) -> tff.Computation:
    """`next_fn` whose CLIENTS-placed parameter at `position` arrives as paths (str @CLIENTS)
    of files `write` wrote, read inside the worker by `build_reader`; and, when
    `result_position` is given, whose CLIENTS-placed result there is written inside the worker
    by `build_writer`, beside each client's input file, and returned as those files' paths.

    Raises:
      TypeError: The parameter (or result) is not CLIENTS-placed, or holds a dtype raw bytes
        cannot carry.
      ValueError: `next_fn` does not take 3 or 4 parameters.
    """
    params = list(next_fn.type_signature.parameter)
    placed = params[position]
    if not (isinstance(placed, tff.FederatedType) and placed.placement is tff.CLIENTS):
        raise TypeError(f'parameter {position} of next is {placed}, not CLIENTS-placed')
    read = build_reader(placed.member)
    params[position] = tff.FederatedType(np.str_, tff.CLIENTS)
    write_value = None
    if result_position is not None:
        returned = next_fn.type_signature.result[result_position]
        if not (isinstance(returned, tff.FederatedType) and returned.placement is tff.CLIENTS):
            raise TypeError(f'result {result_position} of next is {returned}, not CLIENTS-placed')
        write_value = build_writer(returned.member)

    def with_values(args):
        args = list(args)
        paths = args[position]
        args[position] = tff.federated_map(read, paths)
        result = next_fn(*args)
        if write_value is None:
            return result
        result = list(result)
        result[result_position] = tff.federated_map(write_value, (result[result_position], paths))
        return tuple(result)

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
