"""The `compression_uplink` study: Digits, Dirichlet(0.5), 2NN: accuracy against uplink bytes."""

from __future__ import annotations

from typing import Any

from fl_tff.studies.base import PaperSetting, Rows, Study, last


COMPRESSION_TARGET = 0.9


def _compression_table(histories: dict[str, Rows]) -> list[dict[str, Any]]:
    baseline = list(histories.values())[0][-1]['uplink_bytes_total']
    out = []
    for label, rows in histories.items():
        target = next((r for r in rows if r.get('test_accuracy', 0.0) >= COMPRESSION_TARGET), None)
        out.append({
            'run': label,
            'uplink bytes per client': rows[-1]['uplink_bytes_per_client'],
            'uplink MB, all rounds': f"{rows[-1]['uplink_bytes_total'] / 1e6:.2f}",
            'x smaller': f"{baseline / rows[-1]['uplink_bytes_total']:.1f}",
            f'uplink MB to {COMPRESSION_TARGET:.0%} test accuracy':
                f"{target['uplink_bytes_total'] / 1e6:.2f} (round {target['round']})" if target
                else f'not within {len(rows)} rounds',
            'final test accuracy': f"{last(rows, 'test_accuracy'):.4f}",
        })
    return out


NAME = 'compression_uplink'
STUDY = Study(
    title='Digits, Dirichlet(0.5), 2NN: accuracy against uplink bytes',
    claim=('Quantizing client updates to a few bits cuts uplink bytes several-fold at little '
           'cost in accuracy (Suresh et al. 2017; Konecny et al. 2016); top-k trades more, '
           'and error feedback recovers aggressive top-k (Stich et al. 2018).'),
    base=dict(dataset='digits', model='2nn', num_clients=20, clients_per_round=10,
              rounds=60, eval_every=2, seed=0),
    variants=(
        ('float32 (no compression)', dict()),
        ('8-bit', dict(compression='quantize', compression_bits=8)),
        ('4-bit', dict(compression='quantize', compression_bits=4)),
        ('2-bit', dict(compression='quantize', compression_bits=2)),
        ('rotated 2-bit', dict(compression='rotate_quantize', compression_bits=2)),
        ('top-10%', dict(compression='topk', compression_k=0.1)),
        ('top-1%', dict(compression='topk', compression_k=0.01)),
        ('top-1% + error feedback', dict(compression='topk', compression_k=0.01,
                                         error_feedback=True)),
    ),
    plot_metrics=('test_accuracy',),
    table=_compression_table,
    log_scale=('uplink_bytes_total',),
    x_axes=(('round', 'round'), ('uplink_bytes_total', 'uplink bytes (all clients, cumulative)')),
    hlines={'test_accuracy': COMPRESSION_TARGET},
    designed_for=('MNIST (Suresh et al. 2017), CIFAR-10 (Konecny et al. 2016); here digits'),
    paper_settings={'emnist': PaperSetting(
        source=('McMahan et al. 2017\'s MNIST setting, on which the compression papers '
                'build: the 2NN over 100 clients, 10 per round. Here 100 writers of TFF\'s '
                'EMNIST digits, each its own client; bits, k and error feedback as above.'),
        base=dict(dataset='emnist', num_clients=100, clients_per_round=10, rounds=200))},
)
