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
