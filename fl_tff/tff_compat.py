"""Every use of TFF's internals, and of other private APIs, in one module.

TFF 0.87 exports neither what these give nor a public way to get it; each entry says what it is
for. The rest of fl_tff imports them from here, never from `tensorflow_federated.python.*` or
an underscore name, so a TFF upgrade that moves one breaks here, by name: importing this module
checks the TFF version it was written for, and `tests/test_tff_compat.py` touches every symbol.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any, Callable, NamedTuple, Optional

import tensorflow_federated as tff
# The mergeable execution context's orchestration (`remote_rounds`: merging on the driver).
from tensorflow_federated.python.core.backends.native import mergeable_comp_compiler
from tensorflow_federated.python.core.impl.execution_contexts import (
    mergeable_comp_execution_context as _mergeable)
# Serializing a computation (`remote_rounds`: the key of a worker's computation cache).
from tensorflow_federated.python.core.impl.executors import value_serialization as _serialization
from tensorflow_federated.python.core.impl.types import type_analysis as _type_analysis
from tensorflow_federated.python.core.impl.types import type_conversions as _type_conversions
# Writing a SavedModel of a program state (`checkpoints`: atomic saves).
from tensorflow_federated.python.program import file_utils as _file_utils

TFF_VERSION = (0, 87)  # The version these were written against: major, minor.


def _check_version(version: str) -> None:
    found = tuple(int(p) for p in version.split('.')[:2])
    if found != TFF_VERSION:
        raise ImportError(
            f'fl_tff uses internals of TFF {".".join(map(str, TFF_VERSION))}.x '
            f'(fl_tff/tff_compat.py), found TFF {version}: install the pinned version '
            '(requirements/tff.txt) or port tff_compat.py')


_check_version(tff.__version__)

# --- The mergeable context (`fl_tff.runtime.remote_rounds`) ---------------------------------------

MergeableCompForm = _mergeable.MergeableCompForm
MergeableCompExecutionContext = _mergeable.MergeableCompExecutionContext
MergeableCompExecutionContextValue = _mergeable.MergeableCompExecutionContextValue
compile_to_mergeable_comp_form = mergeable_comp_compiler.compile_to_mergeable_comp_form
# Runs `up_to_merge` over a pool of contexts, merging partial results as they arrive.
run_in_async_context_pool = _mergeable._run_in_async_context_pool  # pylint: disable=protected-access
# Runs `after_merge` of one partition with the merged aggregate.
compute_after_merged = _mergeable._compute_after_merged  # pylint: disable=protected-access
# Puts per-partition results back together as the computation's result.
repackage_partitioned_values = _mergeable._repackage_partitioned_values  # pylint: disable=protected-access


class MergeableContextParts(NamedTuple):
    """What a `MergeableCompExecutionContext` keeps in private attributes, which a subclass
    that runs rounds its own way needs."""

    compiler_pipeline: Any
    async_runner: Any
    contexts: Any
    num_subrounds: int


def mergeable_context_parts(context: Any) -> MergeableContextParts:
    """The private parts of a `MergeableCompExecutionContext` (TFF 0.87's attribute names)."""
    return MergeableContextParts(
        context._compiler_pipeline, context._async_runner,  # pylint: disable=protected-access
        context._async_execution_contexts, context._num_subrounds)  # pylint: disable=protected-access


def serialize_value(value: Any, type_spec: Any) -> Any:
    """The `executor_pb2.Value` of `value` (a computation: its serialized form)."""
    proto, _ = _serialization.serialize_value(value, type_spec)
    return proto


async def off_the_loop(coroutine: Any, pool: Optional[concurrent.futures.Executor] = None) -> Any:
    """Runs `coroutine` to completion in a thread of `pool` (default: the running loop's default
    pool, at most min(32, cores + 4) threads), on an event loop of its own: for TFF's
    `RemoteExecutor` methods, which make blocking gRPC calls inside the event loop (TFF's own
    TODO, b/134543154) and so kept the mergeable context's sub-rounds on different workers from
    running at the same time."""
    return await asyncio.get_running_loop().run_in_executor(pool, asyncio.run, coroutine)


class RemoteExecutorOffTheLoop(tff.framework.RemoteExecutor):
    """TFF's `RemoteExecutor` whose private `_compute` (where a worker's result is awaited) runs
    through `self.off_the_loop`; subclasses send their public calls through it too."""

    async def off_the_loop(self, coroutine: Any) -> Any:
        """Runs `coroutine` off the event loop (`off_the_loop` in the loop's default pool)."""
        return await off_the_loop(coroutine)

    async def _compute(self, value_ref, type_spec):
        return await self.off_the_loop(super()._compute(value_ref, type_spec))


contains_only = _type_analysis.contains_only
type_to_py_container = _type_conversions.type_to_py_container

# --- Program state files (`fl_tff.runs.checkpoints`) ---------------------------------------------

write_saved_model = _file_utils.write_saved_model


def program_state_path(manager: tff.program.FileProgramStateManager, version: int) -> str:
    """Where `manager` keeps the program state of `version`."""
    return manager._get_path_for_version(version)  # pylint: disable=protected-access


async def remove_old_program_state(manager: tff.program.FileProgramStateManager) -> None:
    """What `manager.save` does after writing: removes versions beyond those it keeps."""
    await manager._remove_old_program_state()  # pylint: disable=protected-access


def program_state_root(manager: tff.program.FileProgramStateManager) -> str:
    """The directory `manager` keeps program states in."""
    return manager._root_dir  # pylint: disable=protected-access


# --- Distributed DP (`fl_tff.privacy.distributed`) ------------------------------------------


def distributed_dp_sum_factory() -> type:
    """TFF's `DistributedDpSumFactory`, exported only inside `tff.learning.ddp_secure_aggregator`
    (Skellam noise, adaptive clip, zeroing); fl_tff needs its fixed-clip discrete Gaussian form."""
    from tensorflow_federated.python.aggregators.distributed_dp import DistributedDpSumFactory
    return DistributedDpSumFactory


class DistributedDpScaling(NamedTuple):
    """The helpers `DistributedDpSumFactory.create` computes its scale and norm bound with."""

    clip_prob_to_num_stddevs: Callable[[float], float]
    heuristic_scale_factor: Callable[..., Any]
    max_scale_factor: float
    inflated_l2_norm_bound: Callable[..., Any]


def distributed_dp_scaling() -> DistributedDpScaling:
    """TFF's private helpers of distributed DP, so that the ledger charges what the factory does
    rather than a re-derivation."""
    from tensorflow_federated.python.aggregators import discretization, distributed_dp
    return DistributedDpScaling(
        distributed_dp._clip_prob_to_num_stddevs,  # pylint: disable=protected-access
        distributed_dp._heuristic_scale_factor,  # pylint: disable=protected-access
        distributed_dp.MAX_SCALE_FACTOR, discretization.inflated_l2_norm_bound)


def allow_deep_protos() -> None:
    """Lifts the 100-level nesting limit of Python's upb protobuf (process-wide): the composed
    distributed-DP round nests deeper (TFF's own `ddp_secure_aggregator` fails the same way)."""
    from google.protobuf.internal import api_implementation
    if api_implementation.Type() == 'upb':
        from google._upb import _message  # pylint: disable=protected-access
        _message.SetAllowOversizeProtos(True)


# --- TFF's baseline preprocessing (`fl_tff.data.tff_datasets`) --------------------------------


def shakespeare_preprocessing() -> tuple[Any, Any]:
    """TFF's Shakespeare baseline: (`client_spec` module, `char_prediction_preprocessing`)."""
    from tensorflow_federated.python.simulation.baselines import client_spec
    from tensorflow_federated.python.simulation.baselines.shakespeare import (
        char_prediction_preprocessing)
    return client_spec, char_prediction_preprocessing


def stackoverflow_preprocessing() -> Any:
    """TFF's Stack Overflow next-word baseline's `word_prediction_preprocessing`."""
    from tensorflow_federated.python.simulation.baselines.stackoverflow import (
        word_prediction_preprocessing)
    return word_prediction_preprocessing


# --- asyncio (`fl_tff.runtime`) ----------------------------------------------------------------


def swap_running_loop(loop: Optional[asyncio.AbstractEventLoop]
                      ) -> Optional[asyncio.AbstractEventLoop]:
    """Makes `loop` the thread's running loop and returns the one before (asyncio's
    `_get_running_loop` / `_set_running_loop`, listed in `asyncio.events.__all__`): lets a
    synchronous caller inside a running loop run a coroutine on a private one."""
    outer = asyncio.events._get_running_loop()  # pylint: disable=protected-access
    asyncio.events._set_running_loop(loop)  # pylint: disable=protected-access
    return outer
