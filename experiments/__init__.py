"""absl-flag experiment drivers. They parse flags and call the fl_tff library; nothing else.

Importing this package (which every `python -m experiments.X` does before TensorFlow loads)
silences TensorFlow's C++ log lines below FATAL: at start-up TF prints ERROR-level lines about
cuDNN/cuFFT/cuBLAS factories on machines without a GPU, and graph optimizers print ERROR lines
that are not errors of the run. A failing run still reports its error (a Python exception the
driver prints as one line; FATAL lines still show). The price: C++ ERROR lines that do matter
(a gRPC failure, an allocation failure) are hidden too, while the Python error they cause is
shown. `--verbosity` / `-v` on the command line, or TF_CPP_MIN_LOG_LEVEL set by the user, keeps
TensorFlow's own level.
"""

import os
import sys


def _verbosity_requested(argv: list[str]) -> bool:
    return any(a == '-v' or a.startswith(('--verbosity', '-v=', '--v=')) for a in argv[1:])


if not _verbosity_requested(sys.argv):
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
