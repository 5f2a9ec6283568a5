"""Plot runs: `python -m experiments.plot RUN_DIR [RUN_DIR ...] [--output=plot.png]`.

Accuracy and loss against rounds (and against simulated time, uplink bytes or epsilon when the
runs report them); the legend names the settings that differ between the runs.
"""

import sys

from absl import app
from absl import flags

from experiments import flag_parsing
from fl_tff.workflow import run_plots

_OUTPUT = flags.DEFINE_string('output', 'plot.png', 'Where to write the PNG.')


def main(argv) -> int:
    if len(argv) < 2:
        raise app.UsageError('give at least one run directory')
    try:
        print(run_plots.plot_runs(argv[1:], _OUTPUT.value))
    except ValueError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    app.run(main, flags_parser=flag_parsing.parse_flags)
