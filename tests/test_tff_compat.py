"""The fence around TFF's internals: every symbol `fl_tff.tff_compat` offers exists in the
installed TFF with the shape fl_tff uses, the version check refuses another TFF, and no other
module reaches into `tensorflow_federated.python` or asyncio's and protobuf's private names."""

import inspect
import os
import re

import numpy as np
import pytest
import tensorflow_federated as tff

from fl_tff import tff_compat
from tests.helpers import REPO_ROOT


def test_the_version_check_refuses_another_tff_by_name():
    tff_compat._check_version('0.87.0')
    with pytest.raises(ImportError, match=r'internals of TFF 0\.87\.x .* found TFF 0\.88\.1'):
        tff_compat._check_version('0.88.1')


def test_every_symbol_exists_with_the_shape_fl_tff_uses():
    assert issubclass(tff_compat.MergeableCompExecutionContext, tff.framework.SyncContext)
    # RemoteExecutorOffTheLoop overrides a real RemoteExecutor's private _compute, run in
    # tests/runtime/test_remote_rounds.py::test_two_workers_compute_at_the_same_time.
    for fn, params in ((tff_compat.run_in_async_context_pool, 5),
                       (tff_compat.compute_after_merged, 4),
                       (tff.framework.RemoteExecutor._compute, 3),
                       (tff_compat.off_the_loop, 2)):
        assert inspect.iscoroutinefunction(fn) and len(inspect.signature(fn).parameters) == params
    assert 'result_type_spec' in inspect.signature(
        tff_compat.repackage_partitioned_values).parameters
    assert list(inspect.signature(tff_compat.MergeableCompExecutionContextValue).parameters) == [
        'value', 'type_spec', 'num_desired_subrounds']
    assert callable(tff_compat.compile_to_mergeable_comp_form)
    assert {'up_to_merge', 'merge', 'after_merge'} <= set(
        inspect.signature(tff_compat.MergeableCompForm).parameters)
    # The private attributes of the mergeable context, on a real one.
    context = tff_compat.MergeableCompExecutionContext(
        [], compiler_fn=tff_compat.compile_to_mergeable_comp_form, num_subrounds=3)
    parts = tff_compat.mergeable_context_parts(context)
    assert parts.num_subrounds == 3 and list(parts.contexts) == []
    assert hasattr(parts.compiler_pipeline, 'compile')
    assert hasattr(parts.async_runner, 'run_coro_and_return_result')
    # Values and types.
    proto = tff_compat.serialize_value(1.5, tff.TensorType(np.float32))
    assert proto.ByteSize() > 0
    assert tff_compat.contains_only(tff.TensorType(np.float32), lambda t: True)
    assert tff_compat.type_to_py_container(1.5, tff.TensorType(np.float32)) == 1.5


def test_program_state_internals(tmp_path):
    import asyncio
    manager = tff.program.FileProgramStateManager(str(tmp_path), keep_total=1)
    assert tff_compat.program_state_path(manager, 4) == str(tmp_path / 'program_state_4')
    assert tff_compat.program_state_root(manager) == str(tmp_path)
    assert inspect.iscoroutinefunction(tff_compat.write_saved_model)
    asyncio.run(tff_compat.remove_old_program_state(manager))


def test_distributed_dp_and_baseline_internals():
    factory = tff_compat.distributed_dp_sum_factory()
    assert issubclass(factory, tff.aggregators.UnweightedAggregationFactory)
    scaling = tff_compat.distributed_dp_scaling()
    assert scaling.clip_prob_to_num_stddevs(1e-4) > 3 and scaling.max_scale_factor > 1
    assert callable(scaling.heuristic_scale_factor) and callable(scaling.inflated_l2_norm_bound)
    tff_compat.allow_deep_protos()
    client_spec, chars = tff_compat.shakespeare_preprocessing()
    assert callable(chars.create_preprocess_fn) and hasattr(client_spec, 'ClientSpec')
    words = tff_compat.stackoverflow_preprocessing()
    assert callable(words.build_to_ids_fn) and callable(words.batch_and_split)


def test_swapping_the_running_loop_puts_the_outer_one_back():
    import asyncio

    async def inner():
        outer = asyncio.get_running_loop()
        assert tff_compat.swap_running_loop(None) is outer
        assert tff_compat.swap_running_loop(outer) is None
        return asyncio.get_running_loop() is outer

    assert asyncio.run(inner())


def test_no_other_module_uses_tff_internals_or_private_apis():
    pattern = re.compile(r'tensorflow_federated\.python|asyncio\.events\._|google\._upb')
    found = []
    for root in ('fl_tff', 'experiments', 'benchmarks'):
        for directory, _, names in os.walk(os.path.join(REPO_ROOT, root)):
            for name in names:
                path = os.path.join(directory, name)
                if name.endswith('.py') and not path.endswith(os.path.join('fl_tff', 'tff_compat.py')):
                    with open(path) as f:
                        found += [f'{os.path.relpath(path, REPO_ROOT)}:{i}' for i, line in
                                  enumerate(f, 1) if pattern.search(line)]
    assert found == []
