"""What every driver's `main` shares: one-line errors with their exit codes, quiet logging.

Exit codes: 0 done; 2 bad input: a flag, a data file, an output directory that cannot be
created or unreachable workers (reported before any data is loaded or run directory created), a
run directory in use or checkpoints that do not load (reported before training); 3 training
diverged (the last good checkpoint is kept); 130 interrupted by Ctrl-C (checkpoints are kept).
"""

from __future__ import annotations

import logging as std_logging
import sys
from typing import Callable

from absl import flags
from absl import logging

from fl_tff import runtime
from fl_tff.runs.checkpoints import CheckpointLoadError
from fl_tff.config import ConfigError
from fl_tff.runs.divergence import DivergenceError
from fl_tff.experiment import RunInterrupted
from fl_tff.runs.run_lock import RunDirInUseError

EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_INTERRUPTED = 2, 3, 130
# Errors that are the user's input or files, reported as one line with exit 2.
BAD_INPUT_ERRORS = (ConfigError, RunDirInUseError, CheckpointLoadError)


class _DropUnusedObjectWarnings(std_logging.Filter):
    """TF's `tf_should_use` logs a 12-line ERROR block ("Object was never used") when TFF's
    aggregators build TensorArrays they do not read; it is not an error of the run."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return 'Object was never used' not in record.getMessage()


def quiet_logging() -> None:
    """WARNING and above from absl (TFF logs every model build at INFO), without TF's spurious
    ERROR blocks; an explicit `--verbosity` keeps its level and every message."""
    if flags.FLAGS['verbosity'].present:
        return
    logging.set_verbosity(logging.WARNING)
    logger = std_logging.getLogger('tensorflow')
    if not any(isinstance(f, _DropUnusedObjectWarnings) for f in logger.filters):
        logger.addFilter(_DropUnusedObjectWarnings())


def run_main(body: Callable[[], int]) -> int:
    """Runs a driver's `body`, turning the library's errors into one line and an exit code.
    SIGTERM (`kill PID`) exits like Ctrl-C's paths do: finally blocks run, the worker stops."""
    runtime.install_sigterm_as_exit()
    quiet_logging()
    try:
        return body()
    except BAD_INPUT_ERRORS as e:
        print(f'error: {e}', file=sys.stderr)
        return EXIT_BAD_INPUT
    except DivergenceError as e:
        print(f'error: {e}', file=sys.stderr)
        return EXIT_DIVERGED
    except RunInterrupted as e:
        print(e, file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print('interrupted before training started; rerun the same command to start again',
              file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        runtime.drop_stock_context()
