"""Train a federated model: `python -m experiments.train --algorithm=fedavg --rounds=30 ...`.

Every flag is a field of `fl_tff.config.ExperimentConfig`; `--helpfull` documents them.
Bad values exit with status 2 and one message naming the flag, before anything is traced;
a diverged run exits 3, Ctrl-C exits 130 (see `experiments.cli`).
"""

import dataclasses

from absl import app
from absl import flags

from experiments import cli, flag_parsing
from fl_tff import config as config_lib
from fl_tff import experiment

_DEFINE = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
           str: flags.DEFINE_string}


def define_flags(config_cls=config_lib.ExperimentConfig, flag_values=flags.FLAGS) -> None:
    """Defines one absl flag per config field, with the field's default and help text (both
    derived from the option declarations, see `fl_tff.options`)."""
    for field in dataclasses.fields(config_cls):
        _DEFINE[type(field.default)](field.name, field.default, field.metadata[config_lib.HELP],
                                     flag_values=flag_values)


def config_from_flags(config_cls=config_lib.ExperimentConfig, flag_values=flags.FLAGS):
    """The config of the flags given, the others at the defaults the selected options declare
    (`fl_tff.config.with_option_defaults`), else at their own."""
    return config_lib.with_option_defaults(config_cls, {
        f.name: flag_values[f.name].value for f in dataclasses.fields(config_cls)
        if flag_values[f.name].present})


define_flags()


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')

    def train() -> int:
        experiment.run_experiment(config_from_flags().validate())
        return 0

    return cli.run_main(train)


if __name__ == '__main__':
    app.run(main, flags_parser=flag_parsing.parse_flags)
