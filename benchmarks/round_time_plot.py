r"""Seconds per round against K for every variant of `round_time`, as a PNG, per workload.

Runs `python -m benchmarks.round_time --workload=W --clients=K` once per K (for the 2NN with
`--features`, the feature variants), each in its own process (each run interleaves its variants
and the plain-TF lower bound, so a K's ratios come from one run), then plots s/round against K
per variant and prints the table as Markdown. The measurements are saved beside the PNG (.json);
`--replot` draws the PNG again from them.

  .venv/bin/python -m benchmarks.round_time_plot --ks=10,25,50,100 --rounds=3 \
      --out=docs/round_time_vs_k.png
  .venv/bin/python -m benchmarks.round_time_plot --workload=emnist_cnn --ks=10,25,50 \
      --rounds=2 --out=docs/round_time_vs_k_emnist_cnn.png
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from absl import app
from absl import flags

import matplotlib

from benchmarks.workload import WORKLOADS
from fl_tff import files

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

_KS = flags.DEFINE_list('ks', ['10', '25', '50', '100'], 'Clients per round to measure.')
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Steady rounds per variant and K.')
_OUT = flags.DEFINE_string('out', 'docs/round_time_vs_k.png', 'Where the PNG goes.')
_REPLOT = flags.DEFINE_bool('replot', False, 'Plot the measurements saved beside --out (its '
                             '.json) instead of measuring.')
_WORKLOAD = flags.DEFINE_enum('workload', '2nn', list(WORKLOADS), 'round_time\'s --workload; '
                              'the 2NN runs its --features variants.')

# A variant's row: name, first round, median, ratio to the bound, GFLOP/s (since 2026-12-08).
_ROW = re.compile(r'^(?P<name>.+?)\s+(?P<first>\d+\.\d+)\s+(?P<median>\d+\.\d+)\s+'
                  r'(?P<ratio>\d+\.\d+)(\s+(?P<gflops>\d+\.\d+))?$')


def _measure(k: int) -> dict[str, tuple[float, float]]:
    """{variant: (median s/round, ratio to plain TF)} for one K."""
    features = ['--features'] if _WORKLOAD.value == '2nn' else []
    out = subprocess.run([sys.executable, '-m', 'benchmarks.round_time', *features,
                          f'--workload={_WORKLOAD.value}', f'--clients={k}',
                          f'--rounds={_ROUNDS.value}'],
                         capture_output=True, text=True, check=False)
    rows = {}
    for line in out.stdout.splitlines():
        match = _ROW.match(line.strip())
        if match:
            rows[match['name']] = (float(match['median']), float(match['ratio']))
    if out.returncode or not rows:
        sys.exit(f'round_time --clients={k} failed:\n{out.stderr[-3000:]}')
    return rows


def _plot(results: dict[int, dict[str, tuple[float, float]]], out: str) -> None:
    """s/round against K per variant, to `out` (written atomically)."""
    ks = sorted(results)
    variants = list(results[ks[0]])
    fig, ax = plt.subplots(figsize=(6.5, 4.4))
    for name in variants:
        ax.plot(ks, [results[k][name][0] for k in ks], marker='o',
                linestyle='--' if name.startswith('plain') else '-', label=name)
    ax.set_xlabel('clients per round K')
    ax.set_ylabel('seconds per round (median)')
    spec = WORKLOADS[_WORKLOAD.value]
    ax.set_title('Round time on TFF\'s runtime against the plain-TF lower bound\n'
                 f'{spec.name}: {spec.source}\n'
                 f'{spec.examples} examples/client, B={spec.batch}, E=1; {os.cpu_count()} cores',
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(out) or '.', exist_ok=True)
    partial = out + '.partial.png'
    fig.savefig(partial, dpi=120)
    os.replace(partial, out)


def main(argv) -> None:
    del argv
    data_path = os.path.splitext(_OUT.value)[0] + '.json'
    if _REPLOT.value:  # The measurements a previous run saved beside its PNG.
        with open(data_path) as f:
            results = {int(k): {name: tuple(v) for name, v in rows.items()}
                       for k, rows in json.load(f).items()}
    else:
        results = {int(k): _measure(int(k)) for k in _KS.value}
        files.write_json(data_path, results)
    _plot(results, _OUT.value)
    ks = sorted(results)
    print('| variant | ' + ' | '.join(f'K = {k} s (/ plain)' for k in ks) + ' |')
    print('|---|' + '---|' * len(ks))
    for name in results[ks[0]]:
        print(f'| {name} | ' + ' | '.join(
            f'{results[k][name][0]:.3f} ({results[k][name][1]:.2f})' for k in ks) + ' |')
    print(f'wrote {_OUT.value}')


if __name__ == '__main__':
    app.run(main)
