r"""Privacy calculator: epsilon for a DP configuration, or the noise a target epsilon needs.

  python -m experiments.privacy_calculator --q=0.01 --noise_multiplier=1.1 --rounds=6000 --delta=1e-5
  python -m experiments.privacy_calculator --population=1000 --cohort=50 --sampling=uniform \
      --target_epsilon=3 --rounds=500 --delta=1e-4
  python -m experiments.privacy_calculator --dp=tree --population=1000 --cohort=50 \
      --tree_restart=5 --noise_multiplier=1 --rounds=100 --delta=1e-5
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags

from experiments import flag_parsing
from fl_tff.privacy import calculator

flags.DEFINE_enum('dp', calculator.Mechanism.FIXED.value,
                  [mechanism.value for mechanism in calculator.Mechanism],
                  'fixed: a sampled Gaussian mechanism per round (--dp=fixed, distributed, dpsgd); '
                  'tree: DP-FTRL\'s tree aggregation (--dp=tree), each client at most once per '
                  'epoch of --population // --cohort rounds, as the run\'s ledger charges it.')
flags.DEFINE_integer('tree_restart', 0, 'With --dp=tree: rounds per tree (0: one epoch).')
flags.DEFINE_float('q', 0.0, 'Sampling rate (Poisson): the chance a client (or example) joins a round.')
flags.DEFINE_integer('population', 0, 'Number of clients N (instead of --q; needed for uniform).')
flags.DEFINE_integer('cohort', 0, 'Clients per round m (expected, for Poisson).')
flags.DEFINE_enum('sampling', 'poisson', ['poisson', 'uniform'],
                  'poisson (independent, rate q) or uniform (exactly m of N without replacement).')
flags.DEFINE_float('noise_multiplier', 1.0, 'Noise multiplier z (ignored with --target_epsilon).')
flags.DEFINE_integer('rounds', 100, 'Number of rounds (or DP-SGD steps).')
flags.DEFINE_float('delta', 1e-5, 'delta, in (0, 1).')
flags.DEFINE_float('target_epsilon', 0.0, 'If > 0, solve for the noise multiplier reaching this epsilon.')
FLAGS = flags.FLAGS


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
    try:
        if calculator.Mechanism(FLAGS.dp) is calculator.Mechanism.TREE:
            if FLAGS['sampling'].present or FLAGS.q:
                raise calculator.CalculatorError('--sampling and --q: --dp=tree assumes no '
                                                 'sampling (each client once per epoch)')
            result = calculator.calculate_tree(
                noise_multiplier=FLAGS.noise_multiplier, rounds=FLAGS.rounds, delta=FLAGS.delta,
                population=FLAGS.population, cohort=FLAGS.cohort,
                tree_restart=FLAGS.tree_restart, target_epsilon=FLAGS.target_epsilon)
        else:
            if FLAGS.tree_restart:
                raise calculator.CalculatorError('--tree_restart: a setting of --dp=tree')
            result = calculator.calculate(
                noise_multiplier=FLAGS.noise_multiplier, rounds=FLAGS.rounds, delta=FLAGS.delta,
                sampling=FLAGS.sampling, q=FLAGS.q, population=FLAGS.population,
                cohort=FLAGS.cohort, target_epsilon=FLAGS.target_epsilon)
    except calculator.CalculatorError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(calculator.format_result(result, solved_for_noise=FLAGS.target_epsilon > 0))
    return 0


if __name__ == '__main__':
    app.run(main, flags_parser=flag_parsing.parse_flags)
