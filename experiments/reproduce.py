"""Reproduce a published result: `python -m experiments.reproduce --study=fedprox_stragglers`.

Writes docs/reproductions/<study>.png and <study>.md (runs under docs/reproductions/runs,
which git ignores). Studies: see fl_tff.reproductions.STUDIES.
"""

from absl import app
from absl import flags

from experiments import cli, flag_parsing
from fl_tff import reproductions

_STUDY = flags.DEFINE_enum('study', None, sorted(reproductions.STUDIES), 'Which reproduction to run.')
_OUTPUT_DIR = flags.DEFINE_string('output_dir', 'docs/reproductions', 'Where the PNG and table go.')
_ROUNDS = flags.DEFINE_integer('rounds', None, 'Override the number of rounds (quick look).', lower_bound=1)
flags.mark_flag_as_required('study')


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')

    def run() -> int:
        out = reproductions.run_study(_STUDY.value, _OUTPUT_DIR.value, rounds=_ROUNDS.value)
        for row in out['rows']:
            print(row)
        print(f"wrote {out['png']} and {out['markdown']}")
        return 0

    return cli.run_main(run)


if __name__ == '__main__':
    app.run(main, flags_parser=flag_parsing.parse_flags)
