"""`experiments.train`, killed with SIGKILL at a deterministic point (for crash/resume tests).

FL_TFF_CRASH_AT=checkpoint:N kills the process while the checkpoint of round N is being
written: its files are written under a temporary name, not yet renamed into place.
"""

import os
import signal

from absl import app

from experiments import train
from fl_tff import files

_WHAT, _, _ROUND = os.environ['FL_TFF_CRASH_AT'].partition(':')
assert _WHAT == 'checkpoint', _WHAT
_replace_directory = files.replace_directory


def _crash_while_writing(tmp, path):
    if os.path.basename(path) == f'program_state_{_ROUND}':
        assert os.listdir(tmp)  # The checkpoint's files exist, under the temporary name.
        os.kill(os.getpid(), signal.SIGKILL)
    _replace_directory(tmp, path)


files.replace_directory = _crash_while_writing

if __name__ == '__main__':
    app.run(train.main)
