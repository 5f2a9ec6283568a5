"""Sweep a grid of settings over seeds:

    python -m experiments.sweep --grid="client_learning_rate=0.02,0.05;client_epochs=1,2" \
        --seeds=3 --sweep_name=lr_epochs [any experiments.train flag as the base]

Runs sequentially; writes OUTPUT_DIR/SWEEP_NAME/summary.{md,csv} (mean ± std over seeds) and
sweep.png. Every combination is validated before the first run starts.
"""

from absl import app
from absl import flags

from experiments import cli, flag_parsing
from experiments import train  # Defines the experiment flags this driver shares.
from fl_tff.workflow import sweep

_GRID = flags.DEFINE_string('grid', None, 'NAME=V1,V2[;NAME=V1,V2...] over experiment settings.')
_SEEDS = flags.DEFINE_integer('seeds', 3, 'Seeds per grid point (seed, seed+1, ...).')
_NAME = flags.DEFINE_string('sweep_name', 'sweep', 'Subdirectory of --output_dir for this sweep.')
flags.mark_flag_as_required('grid')


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')

    def run() -> int:
        grid = sweep.parse_grid(_GRID.value)
        out = sweep.run_sweep(train.config_from_flags(), grid, _SEEDS.value, _NAME.value)
        for row in out['rows']:
            print(row)
        print(f"wrote {out['dir']}/summary.md, summary.csv and sweep.png")
        return 0

    return cli.run_main(run)


if __name__ == '__main__':
    app.run(main, flags_parser=flag_parsing.parse_flags)
