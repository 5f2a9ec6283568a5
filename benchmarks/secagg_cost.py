r"""Cost of the SecAgg protocol (`fl_tff.secagg.protocol`) per round against the number of
clients n, for the full graph (every pair masks) and SecAgg+'s neighbourhoods
(k = 2 ceil(log2 n) neighbours), on an update of `--size` values of `--bits` bits:

* client compute seconds (per client, mean over clients: key generation, Shamir sharing,
  encryption, pairwise masks, unmasking responses);
* server compute seconds (summing, Shamir reconstruction, removing masks);
* bytes each client sends and receives for the protocol's own messages (keys, encrypted shares,
  unmasking), next to its masked input (the same size as a plain quantized upload).

One client drops after sharing keys (its pairwise masks must be recovered). Everything runs in
this process, one client after another; the printed ratios compare with the masked upload
itself, measured in the same run.

  .venv/bin/python -m benchmarks.secagg_cost --clients=10,50,200 --size=100000
"""

from __future__ import annotations

import math
import os
import platform

from absl import app
from absl import flags

import numpy as np

_CLIENTS = flags.DEFINE_list('clients', ['10', '50', '200'], 'Cohort sizes n.')
_SIZE = flags.DEFINE_integer('size', 100_000, 'Values per update (the 2NN: about 100k).')
_BITS = flags.DEFINE_integer('bits', 32, 'Bits per value (the sum is mod 2^bits).',
                             lower_bound=1, upper_bound=62)
_PLOT = flags.DEFINE_string('plot', 'docs/secagg_cost.png', 'Where the plot goes ("" for none).')


def neighbourhood(n: int) -> int:
    """SecAgg+'s k: 2 ceil(log2 n), at most n - 1."""
    return min(n - 1, 2 * math.ceil(math.log2(n)))


def measure(n: int, size: int, bits: int, k):
    from fl_tff.secagg import protocol
    rng = np.random.default_rng(n)
    values = {u: rng.integers(0, 2 ** bits, size=size, dtype=np.uint64) for u in range(1, n + 1)}
    degree = n - 1 if k is None else k
    threshold = degree // 2 + 1
    result = protocol.run(values, bits=bits, threshold=threshold, neighbours_k=k,
                          dropouts=protocol.Dropouts({'masked_input': frozenset({n})}),
                          graph_seed=0)
    assert result.aborted == '', result.aborted
    expected = np.zeros(size, np.uint64)
    for u in result.contributors:
        expected = (expected + values[u]) & np.uint64(2 ** bits - 1)
    assert np.array_equal(result.total, expected)
    ledger = result.ledger
    clients = [u for u in values if u != n]
    upload = size * ((bits + 7) // 8)

    def mean_bytes(table):
        return np.mean([sum(v for s, v in table.get(u, {}).items() if s != 'masked_input')
                        for u in clients])
    return dict(n=n, k=degree, t=threshold, client_s=ledger.client_seconds / n,
                server_s=ledger.server_seconds, sent=mean_bytes(ledger.sent),
                received=mean_bytes(ledger.received), upload=upload)


def main(argv):
    del argv
    rows = []
    for n in (int(c) for c in _CLIENTS.value):
        for label, k in (('full graph', None), ('SecAgg+', neighbourhood(n))):
            row = dict(graph=label, **measure(n, _SIZE.value, _BITS.value, k))
            rows.append(row)
            print(f"n={row['n']:4d} {label:10s} k={row['k']:3d} t={row['t']:3d}  client "
                  f"{row['client_s']:.3f} s  server {row['server_s']:.2f} s  protocol bytes "
                  f"sent {row['sent'] / 1e3:.1f} kB received {row['received'] / 1e3:.1f} kB  "
                  f"(masked upload {row['upload'] / 1e3:.0f} kB; protocol/upload "
                  f"{(row['sent'] + row['received']) / row['upload']:.3f})", flush=True)
    print(f'machine: {platform.machine()}, {os.cpu_count()} cores, '
          f'Python {platform.python_version()}')
    if _PLOT.value:
        from fl_tff import plotting
        plotting.plot_curves(
            {label: [r for r in rows if r['graph'] == label] for label in ('full graph', 'SecAgg+')},
            ('client_s', 'server_s', 'sent'), _PLOT.value,
            title=f'SecAgg per round: client s, server s, protocol bytes sent per client '
                  f'({_SIZE.value:,} values of {_BITS.value} bits)',
            log_scale=('n', 'client_s', 'server_s', 'sent'), x_axes=(('n', 'clients n'),))

if __name__ == '__main__':
    app.run(main)
