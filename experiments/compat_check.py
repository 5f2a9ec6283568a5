"""Run one round of a tiny config for every pair of options (and a seeded sample of triples) and
write which ones pass, fail or are refused, with the commit and date:

    python -m experiments.compat_check                      # every pair: about an hour
    python -m experiments.compat_check --kinds=algorithm,dp,secagg --triples=20
    python -m experiments.compat_check --dry_run            # validation only, no rounds

The table goes to `--output` (docs/compat_check.md), written atomically; exit 1 when any
combination fails. See `fl_tff.workflow.compatibility`.
"""

import datetime
import subprocess
import sys

from absl import app
from absl import flags

from experiments import cli, flag_parsing
from fl_tff import config, files
from fl_tff.workflow import compatibility

_KINDS = flags.DEFINE_list('kinds', list(compatibility.KINDS), 'Kinds of choice to combine; '
                           'valid: ' + ','.join(compatibility.KINDS) + '.')
_TRIPLES = flags.DEFINE_integer('triples', 0, 'Also run this many triples, a seeded sample.',
                                lower_bound=0)
_LIMIT = flags.DEFINE_integer('limit', 0, 'Run at most this many pairs, a seeded sample (0: '
                              'all).', lower_bound=0)
_SEED = flags.DEFINE_integer('seed', 0, 'Seeds the samples.')
_DRY_RUN = flags.DEFINE_bool('dry_run', False, 'Validate only: list each combination as '
                             'runnable or refused, run nothing.')
_OUTPUT = flags.DEFINE_string('output', 'docs/compat_check.md', 'Where to write the table.')


def _commit() -> str:
    try:
        return subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return 'unknown commit'


def main(argv) -> int:
    del argv
    unknown = sorted(set(_KINDS.value) - set(compatibility.KINDS))
    if unknown:
        print(f'error: --kinds: unknown {", ".join(unknown)}; valid choices: '
              f'{", ".join(compatibility.KINDS)}', file=sys.stderr)
        return cli.EXIT_BAD_INPUT

    def body() -> int:
        cls, registries = config.ExperimentConfig, config.REGISTRIES
        pairs = list(compatibility.combinations(registries, 2, _KINDS.value))
        if _LIMIT.value:
            pairs = compatibility.sample(pairs, _LIMIT.value, _SEED.value)
        triples = compatibility.runnable_sample(
            cls, list(compatibility.combinations(registries, 3, _KINDS.value)), _TRIPLES.value,
            _SEED.value)
        results = []
        for i, chosen in enumerate([*pairs, *triples], start=1):
            if _DRY_RUN.value:
                settings, refusal = compatibility.resolve(cls, chosen)
                result = compatibility.Result(
                    compatibility.flag_texts(chosen), (), 'refused' if settings is None else
                    'runnable', refusal)
            else:
                result = compatibility.run(cls, chosen)
            results.append(result)
            print(f'[{i}/{len(pairs) + len(triples)}] {" ".join(result.choices)}: '
                  f'{result.status} {result.detail}', flush=True)
        text = compatibility.markdown(results, _commit(),
                                      datetime.date.today().isoformat())
        with files.atomic_write(_OUTPUT.value) as f:
            f.write('# Combinations of options, run\n\nWritten by `python -m '
                    'experiments.compat_check` (one round of 4 clients, a 2NN of width 8 on '
                    'digits, per combination).\n\n' + text)
        print(f'wrote {_OUTPUT.value}')
        return 1 if any(r.status == 'fail' for r in results) else 0

    return cli.run_main(body)


if __name__ == '__main__':
    app.run(main, flags_parser=flag_parsing.parse_flags)
