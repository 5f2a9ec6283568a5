"""Our checkpoints and metric releases must not break TFF's own training loop, which needs the
thread's current event loop (`asyncio.run` would leave none)."""

import asyncio

from fl_tff import checkpoints


def test_checkpointing_leaves_the_current_event_loop_usable(tmp_path):
    checkpointer = checkpoints.Checkpointer(str(tmp_path), every=1)
    checkpointer.maybe_save({'w': [1.0, 2.0]}, 1)
    assert checkpointer.latest_round() == 1
    loop = asyncio.get_event_loop()  # Raises "There is no current event loop" after asyncio.run.
    assert not loop.is_closed()


def test_ctrl_c_during_a_checkpoint_or_metrics_write_is_delivered_after_the_write(tmp_path):
    """A KeyboardInterrupt inside the event loop would abandon the executor thread's write."""
    import asyncio
    import os
    import signal

    import pytest

    from fl_tff import runtime
    path = tmp_path / 'metrics.csv'

    async def write():
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C arrives while the write is under way.
        await asyncio.get_running_loop().run_in_executor(None, path.write_text, 'round\n1\n')

    with pytest.raises(KeyboardInterrupt):
        runtime.run_coroutine(write())
    assert path.read_text() == 'round\n1\n'
