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

It also times the server's Shamir reconstruction alone, full graph, t = n // 2 + 1: every
survivor's self-mask seed and the dropped client's mask key from the shares of the n - 1 who
answer, with the Lagrange weights computed once per set of holders (`shamir.lagrange_weights`)
against interpolating each secret from scratch (t^2 operations and t inverses per secret, as
before), both in the same run.

  .venv/bin/python -m benchmarks.secagg_cost --clients=10,50,200 --size=100000
  .venv/bin/python -m benchmarks.secagg_cost --clients= --reconstruction=160,320 --plot=
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
_RECONSTRUCTION = flags.DEFINE_list('reconstruction', ['160', '320'],
                                    'Cohorts n whose Shamir reconstruction alone is timed.')


def _interpolate_each(shares: dict[int, int], threshold: int) -> bytes:
    """Per-secret Lagrange interpolation at 0, the server's cost before the weights were shared
    (the baseline of the reconstruction timing)."""
    from fl_tff.secagg import shamir
    points = sorted(shares.items())[:threshold]
    secret = 0
    for i, (xi, yi) in enumerate(points):
        numerator = denominator = 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                numerator = numerator * (-xj) % shamir.PRIME
                denominator = denominator * (xi - xj) % shamir.PRIME
        secret = (secret + yi * numerator * pow(denominator, -1, shamir.PRIME)) % shamir.PRIME
    return secret.to_bytes(shamir.SECRET_BYTES, 'big')


def reconstruction(n: int) -> dict:
    """Seconds to reconstruct a round's n secrets (n - 1 self-mask seeds and one mask key) from
    the shares of the n - 1 clients that answer, both ways."""
    import secrets
    import time
    from fl_tff.secagg import shamir
    holders, threshold = list(range(1, n + 1)), n // 2 + 1
    values = [secrets.token_bytes(shamir.SECRET_BYTES) for _ in holders]
    answered = [{x: y for x, y in shamir.split(v, threshold, holders).items() if x != n}
                for v in values]
    shamir.lagrange_weights.cache_clear()
    start = time.process_time()
    shared = [shamir.reconstruct(a, threshold) for a in answered]
    fast = time.process_time() - start
    start = time.process_time()
    each = [_interpolate_each(a, threshold) for a in answered]
    slow = time.process_time() - start
    assert shared == each == values
    return dict(n=n, t=threshold, seconds=fast, baseline_seconds=slow)


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
    for n in (int(c) for c in _RECONSTRUCTION.value):
        r = reconstruction(n)
        print(f"reconstruction n={r['n']:4d} t={r['t']:3d}: {r['seconds']:.3f} s with the "
              f"weights computed once, {r['baseline_seconds']:.2f} s interpolating each secret "
              f"(ratio {r['baseline_seconds'] / r['seconds']:.0f}x)", flush=True)
    print(f'machine: {platform.machine()}, {os.cpu_count()} cores, '
          f'Python {platform.python_version()}')
    if _PLOT.value and rows:
        from fl_tff.workflow import plotting
        plotting.plot_curves(
            {label: [r for r in rows if r['graph'] == label] for label in ('full graph', 'SecAgg+')},
            ('client_s', 'server_s', 'sent'), _PLOT.value,
            title=f'SecAgg per round: client s, server s, protocol bytes sent per client '
                  f'({_SIZE.value:,} values of {_BITS.value} bits)',
            log_scale=('n', 'client_s', 'server_s', 'sent'), x_axes=(('n', 'clients n'),))

if __name__ == '__main__':
    app.run(main)
