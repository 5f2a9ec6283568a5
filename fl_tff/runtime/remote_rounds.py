"""What remote workers receive per round: model state and client tasks, nothing else.

TFF's mergeable execution context (`--workers`) sends each worker, every round, the serialized
computations it runs, and runs the merge of partial aggregates and the server update
(`merge`, `after_merge`) on whichever worker finished last, which then also receives the
partial aggregates, the server state again and the merged aggregate. On the round-time
workload one worker received 3.4x the model's weights per round. Two pieces bring that to
the weights plus the clients' tasks:

* `CachingRemoteExecutor`: TFF's `RemoteExecutor` that creates each distinct computation on
  its worker once and reuses the worker's value afterwards (values live on a worker until
  disposed; TFF's executor factory keeps one executor per cardinality across rounds).
* `MergingContext`: TFF's `MergeableCompExecutionContext` whose `merge` and `after_merge` run
  on a context of the driver's own (a local worker), so remote workers run `up_to_merge` only.

Written here because TFF 0.87 has neither: its context takes no separate merge context, and
its remote executor has no cache. `MergingContext` reuses TFF's own orchestration helpers of
`mergeable_comp_execution_context` (round splitting, the pool that merges partial results as
they arrive, repackaging).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import hashlib
from collections.abc import Sequence
from typing import Any, Optional

import tensorflow_federated as tff

from fl_tff import tff_compat

# Distinct computations kept on a worker (a run uses a handful: the round's parts, evaluation).
_CACHED_COMPUTATIONS = 32
# Worker calls in flight at once, over every remote executor of the process (threads start
# as calls need them and are reused): beyond the loop's default pool, min(32, cores + 4), which
# queued the sub-rounds of more workers than that.
_MAX_THREADS = 64


@functools.cache
def _pool() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(max_workers=_MAX_THREADS,
                                                 thread_name_prefix='fl_tff_remote')


class CachingRemoteExecutor(tff_compat.RemoteExecutorOffTheLoop):
    """A `RemoteExecutor` that sends each distinct computation to its worker once per executor
    (keyed by the SHA-256 of its serialized form) and reuses the worker's value afterwards. The
    cache empties when the executor is reset (new cardinalities, an error, `close`).

    Its calls to the worker run off the event loop (`tff_compat.off_the_loop`) in a thread pool
    of the remote executors' own, so that the sub-rounds of several workers run at the same
    time however many workers there are: TFF's executor blocks the loop in each gRPC call, and
    two workers took as long as one.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # One upload per computation: concurrent requests for it await the same task.
        self._computations: collections.OrderedDict[bytes, asyncio.Future] = (
            collections.OrderedDict())

    async def off_the_loop(self, coroutine):
        return await tff_compat.off_the_loop(coroutine, _pool())

    async def create_value(self, value, type_spec=None):
        if not isinstance(type_spec, tff.FunctionType):
            return await self.off_the_loop(super().create_value(value, type_spec))
        proto = tff_compat.serialize_value(value, type_spec)
        key = hashlib.sha256(proto.SerializeToString(deterministic=True)).digest()
        upload = self._computations.get(key)
        if upload is not None and not upload.done() and (
                upload.get_loop() is not asyncio.get_running_loop()):
            upload = None  # In flight on another event loop: not awaitable here.
        if upload is None:
            # Cached before it is awaited: a reset meanwhile (`set_cardinalities`, `close`)
            # clears it, so an old executor's value never lands in the new cache.
            upload = asyncio.ensure_future(self.off_the_loop(super().create_value(value, type_spec)))
            self._computations[key] = upload
            if len(self._computations) > _CACHED_COMPUTATIONS:
                self._computations.popitem(last=False)  # Dropped: disposed on the worker.
        else:
            self._computations.move_to_end(key)
        try:
            return await asyncio.shield(upload)
        except BaseException:
            if (self._computations.get(key) is upload and upload.done() and
                    (upload.cancelled() or upload.exception() is not None)):
                del self._computations[key]  # A failed upload is retried by the next request.
            raise

    async def create_call(self, comp, arg=None):
        return await self.off_the_loop(super().create_call(comp, arg))

    async def create_struct(self, elements):
        return await self.off_the_loop(super().create_struct(elements))

    async def create_selection(self, source, index):
        return await self.off_the_loop(super().create_selection(source, index))

    def set_cardinalities(self, cardinalities) -> None:
        self._computations.clear()  # Values of the old executor are gone with it.
        super().set_cardinalities(cardinalities)

    def close(self) -> None:
        self._computations.clear()
        super().close()


async def _invoke(comp: tff_compat.MergeableCompForm, arg: Optional[Any],
                  workers: Sequence[tff.framework.AsyncContext],
                  merger: tff.framework.AsyncContext) -> Any:
    """`up_to_merge` on the workers (one sub-round each, more in turn), `merge` of each partial
    result as it arrives and `after_merge` on `merger`."""
    arg_list = arg.value() if arg is not None else [None] * len(workers)

    def up_to_merge(part, context):
        return asyncio.create_task(context.invoke(comp.up_to_merge, part))

    async def merge(merged, partial, context):
        del context  # The worker is free again; merging happens on `merger`.
        if merged is None:
            return partial
        return await merger.invoke(comp.merge, tff.structure.Struct.unnamed(merged, partial))

    merged, _ = await tff_compat.run_in_async_context_pool(
        up_to_merge, arg_list, workers, None, merge)

    def all_equal(type_spec):
        return not isinstance(type_spec, tff.FederatedType) or type_spec.all_equal

    result_type = comp.after_merge.type_signature.result
    if tff_compat.contains_only(result_type, all_equal):  # One server result: run it once.
        return await tff_compat.compute_after_merged(comp, arg_list[0], merged, merger)
    results = [await tff_compat.compute_after_merged(comp, part, merged, merger)
               for part in arg_list]
    return tff_compat.repackage_partitioned_values(results, result_type_spec=result_type)


class MergingContext(tff_compat.MergeableCompExecutionContext):
    """TFF's mergeable context, with `merge` and `after_merge` on `merger` instead of on a
    worker.

    Args:
      workers: One asynchronous context per worker (they run `up_to_merge`).
      merger: The context that merges partial results and finishes the round.
      num_subrounds: Sub-rounds per round (default: one per worker).
    """

    def __init__(self, workers: Sequence[tff.framework.AsyncContext],
                 merger: tff.framework.AsyncContext, num_subrounds: Optional[int] = None):
        super().__init__(workers,
                         compiler_fn=tff_compat.compile_to_mergeable_comp_form,
                         num_subrounds=num_subrounds)
        self._merger = merger

    def invoke(self, comp, arg=None):
        parts = tff_compat.mergeable_context_parts(self)
        comp = parts.compiler_pipeline.compile(comp)
        if arg is not None:
            arg = tff_compat.MergeableCompExecutionContextValue(
                arg, comp.up_to_merge.type_signature.parameter, parts.num_subrounds)
        result = parts.async_runner.run_coro_and_return_result(
            _invoke(comp, arg, parts.contexts, self._merger))
        return tff_compat.type_to_py_container(result, comp.after_merge.type_signature.result)

