"""Reproduce a published result: `python -m experiments.reproduce --study=fedprox_stragglers`.

Writes docs/reproductions/<study>.png and <study>.md (runs under docs/reproductions/runs,
which git ignores). Studies: see fl_tff.studies.STUDIES.

On the dataset of the paper, with the paper's settings (each study declares them):
`--study=S --dataset=emnist --data_dir=DIR [--download]` writes <study>_<dataset>.png and .md.
"""

from absl import app
from absl import flags

from experiments import cli, flag_parsing
from fl_tff import studies
from fl_tff.config import ConfigError
from fl_tff.data import tff_datasets

_STUDY = flags.DEFINE_enum('study', None, sorted(studies.STUDIES), 'Which reproduction to run.')
_OUTPUT_DIR = flags.DEFINE_string('output_dir', 'docs/reproductions', 'Where the PNG and table go.')
_ROUNDS = flags.DEFINE_integer('rounds', None, 'Override the number of rounds (quick look).', lower_bound=1)
_DATASET = flags.DEFINE_enum('dataset', None, sorted(tff_datasets.TFF_DATASETS),
                             'Rerun the study on this TFF dataset with its paper\'s settings '
                             '(each study lists the datasets it has them for).')
_DATA_DIR = flags.DEFINE_string('data_dir', '', 'With --dataset: the directory of its files.')
_DOWNLOAD = flags.DEFINE_bool('download', False, 'With --dataset: fetch its missing files into '
                              '--data_dir first (see experiments.fetch_data).')
_DATASET_URL = flags.DEFINE_string('dataset_url', None, 'With --download: where the archives '
                                   'are (default: TFF\'s public bucket).')
flags.mark_flag_as_required('study')


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')

    def run() -> int:
        real = None
        if _DATASET.value is not None:
            try:
                studies.paper_setting(_STUDY.value, _DATASET.value)
            except ValueError as e:
                raise ConfigError('dataset', str(e)) from e
            real = studies.RealData(_DATASET.value, _DATA_DIR.value, _DOWNLOAD.value,
                                          _DATASET_URL.value)
        elif _DATA_DIR.value or _DOWNLOAD.value or _DATASET_URL.value:
            raise ConfigError('dataset', '--data_dir, --download and --dataset_url need '
                              f'--dataset; valid choices for --study={_STUDY.value}: '
                              + ', '.join(sorted(studies.STUDIES[_STUDY.value].paper_settings)))
        out = studies.run_study(_STUDY.value, _OUTPUT_DIR.value, rounds=_ROUNDS.value,
                                      real=real)
        for row in out['rows']:
            print(row)
        print(f"wrote {out['png']} and {out['markdown']}")
        return 0

    return cli.run_main(run)


if __name__ == '__main__':
    app.run(main, flags_parser=flag_parsing.parse_flags)
