r"""Scale benchmark: does the population size drive memory, and do 1,000 clients per round work?

Each case runs in its own process (peak RSS is per process), on the round-time workload
(MLP 784-200-200-10, 600 examples per client, batch 10, one epoch) with clients generated from
their id inside TFF's worker (`fl_tff.data.generated` in the selector's dataset computation),
through the library's selector, composition and training loop:

  population 100 vs 10,000 at 50 clients per round;
  1,000 clients per round from 10,000, the whole cohort at once and in 4 sequential sub-rounds
  (`--subrounds=4`, TFF's mergeable context on the one worker).

Prints seconds per round, peak RSS of the Python process and of the TFF worker, the worker's
RSS after each round (it must not grow), the RSS ratio population 10,000 / 100, and the
1,000-client cases against the retired fast path's recorded time.

  .venv/bin/python -m benchmarks.scale              # about 9 minutes
  .venv/bin/python -m benchmarks.scale --quick      # without the 1,000-client case
  .venv/bin/python -m benchmarks.scale --workload=emnist_cnn   # 1,000 EMNIST-CNN clients
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys

from absl import app
from absl import flags
from absl import logging
# TensorFlow is imported at module level: imported first inside absl's `app.run`, tf.keras
# builds graph tensors and Keras models fail to build eagerly.
import tensorflow_federated as tff

from benchmarks import workload
from fl_tff import runtime, simulation
from fl_tff.algorithms import build_fedavg
from fl_tff.data.generated import generated_client_data

_CHILD = flags.DEFINE_bool('child', False, 'Run one case and print its JSON (internal).')
_POPULATION = flags.DEFINE_integer('population', 100, 'Child: clients in the population.')
_CLIENTS = flags.DEFINE_integer('clients', 50, 'Child: clients per round.')
_ROUNDS = flags.DEFINE_integer('rounds', 4, 'Child: rounds (the first is reported as trace time).')
_CONCURRENCY = flags.DEFINE_integer('max_concurrent', -1, 'TFF worker_binary\'s '
                                   '--max_concurrent_computation_calls (-1: unlimited).')
_SUBROUNDS = flags.DEFINE_integer('subrounds', 1, 'Child: sequential sub-rounds per round on '
                                  'the one worker (`--subrounds` of the driver).')
_QUICK = flags.DEFINE_bool('quick', False, 'Skip the 1,000-clients-per-round case.')
_WORKLOAD = flags.DEFINE_enum('workload', '2nn', ['2nn', 'emnist_cnn'], 'The model and data '
                              'shapes (benchmarks.workload): the 2NN runs every case; the EMNIST '
                              'CNN (1.2M parameters) 1,000 clients per round in 8 and 16 sub-rounds.')

# (population, K, rounds, sub-rounds) per workload.
CASES = {'2nn': [(100, 50, 4, 1), (10_000, 50, 4, 1), (10_000, 1000, 3, 1), (10_000, 1000, 3, 4)],
         'emnist_cnn': [(10_000, 1000, 2, 8), (10_000, 1000, 2, 16)]}
FAST_PATH_1000 = 13.3  # s/round the retired fast path took at K = 1,000 (docs/benchmarks.md)


def _child() -> dict:
    spec = workload.WORKLOADS[_WORKLOAD.value]
    client_data = generated_client_data(_POPULATION.value, spec.examples,
                                        features=spec.input_shape, num_classes=spec.num_classes)
    select = simulation.ClientSelector(
        client_data, clients_per_round=_CLIENTS.value, epochs=1, batch_size=spec.batch,
        seed=0)
    sgd = tff.learning.optimizers.build_sgdm
    with runtime.runtime_for((), subrounds=_SUBROUNDS.value,
                             max_concurrent_computation_calls=_CONCURRENCY.value) as rt:
        process = simulation.compose(build_fedavg(spec.model_fn(),
                                                  client_optimizer=sgd(spec.learning_rate),
                                                  server_optimizer=sgd(1.0)),
                                     select.dataset_computation())
        # The worker's resident memory after each round: it must not grow round over round.
        after_round = lambda: lambda: {'worker_rss_mib': _current_rss_mib(rt.worker_pid)}
        _, history = simulation.run_training(process, select, rounds=_ROUNDS.value,
                                             measure_next=after_round)
        worker = workload.peak_rss_mib(rt.worker_pid)
    seconds = [row['round_seconds'] for row in history]
    return dict(first=seconds[0], median=statistics.median(seconds[1:]),
                python_mib=workload.peak_rss_mib(), worker_mib=worker,
                examples=history[-1]['train_examples'],
                worker_rss_by_round=[row['worker_rss_mib'] for row in history])


def _current_rss_mib(pid: int) -> float:
    with open(f'/proc/{pid}/status') as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith('VmRSS:'))


def main(argv) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)
    try:
        _main()
    finally:
        runtime.drop_stock_context()  # Else TFF's unused stock context prints a traceback at exit.


def _main() -> None:
    if _CHILD.value:
        print('RESULT ' + json.dumps(_child()), flush=True)
        return
    results = {}
    for population, clients, rounds, subrounds in CASES[_WORKLOAD.value]:
        if _QUICK.value and clients >= 1000:
            continue
        out = subprocess.run(
            [sys.executable, '-m', 'benchmarks.scale', '--child', f'--workload={_WORKLOAD.value}',
             f'--population={population}',
             f'--clients={clients}', f'--rounds={rounds}',
             f'--max_concurrent={_CONCURRENCY.value}', f'--subrounds={subrounds}'],
            capture_output=True, text=True, check=False)
        lines = [l for l in out.stdout.splitlines() if l.startswith('RESULT ')]
        if out.returncode or not lines:
            sys.exit(f'case N={population} K={clients} failed:\n{out.stderr[-3000:]}')
        results[(population, clients, subrounds)] = json.loads(lines[0][7:])
    spec = workload.WORKLOADS[_WORKLOAD.value]
    print(f'{spec.name} ({spec.source}), {spec.examples} examples per client, batch '
          f'{spec.batch}, clients generated from their id in the worker; '
          f'{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}')
    print(f'{"population":>10} {"K":>5} {"subrounds":>9} {"first s":>8} {"s/round":>8} '
          f'{"python MiB":>11} {"worker MiB":>11} {"total MiB":>10}')
    for (population, clients, subrounds), r in results.items():
        print(f'{population:10d} {clients:5d} {subrounds:9d} {r["first"]:8.2f} {r["median"]:8.2f} '
              f'{r["python_mib"]:11.0f} {r["worker_mib"]:11.0f} '
              f'{r["python_mib"] + r["worker_mib"]:10.0f}')
    if (100, 50, 1) in results and (10_000, 50, 1) in results:
        small, large = results[(100, 50, 1)], results[(10_000, 50, 1)]
        ratio = ((large['python_mib'] + large['worker_mib'])
                 / (small['python_mib'] + small['worker_mib']))
        print(f'peak RSS (python + worker) at population 10,000 / 100 = {ratio:.2f}')
    for (population, clients, subrounds), r in results.items():
        if clients >= 1000:
            total = (r['python_mib'] + r['worker_mib']) / 1024
            print(f'K = {clients} in {subrounds} sub-round(s): {total:.2f} GiB python + worker '
                  f'({"within" if total <= 3 else "over"} 3 GiB)')
        print(f'worker RSS after each round (MiB), N={population} K={clients} '
              f'subrounds={subrounds}: ' + ', '.join(f'{m:.0f}' for m in r['worker_rss_by_round']))
        if clients >= 1000 and spec.name == '2nn':
            print(f'  {r["median"] / FAST_PATH_1000:.2f}x the retired fast path\'s '
                  f'{FAST_PATH_1000} s/round at 1,000 clients per round')


if __name__ == '__main__':
    app.run(main)
