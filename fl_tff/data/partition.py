"""Partitioners: split a centralized labelled array into N clients.

Each partitioner takes the label vector and returns one index array per client. All of them
are deterministic for a seed, assign every example to exactly one client, and never return an
empty client (they raise `PartitionError` naming the cause instead).
"""

from __future__ import annotations


import numpy as np

from fl_tff import options

Partition = list[np.ndarray]

_MAX_DIRICHLET_TRIES = 1000


class PartitionError(ValueError):
    """A partition cannot be made with the requested parameters."""


def _check_common(labels: np.ndarray, num_clients: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise PartitionError(f'labels must be a 1-D array, got shape {labels.shape}')
    if num_clients < 1:
        raise PartitionError(f'num_clients must be >= 1, got {num_clients}')
    if num_clients > labels.size:
        raise PartitionError(
            f'num_clients={num_clients} exceeds the number of examples ({labels.size}): '
            'some clients would be empty')
    return labels


def _finish(parts: Partition) -> Partition:
    out = [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    empty = [i for i, p in enumerate(out) if p.size == 0]
    if empty:
        raise PartitionError(f'{len(empty)} client(s) would be empty (e.g. client {empty[0]})')
    return out


def iid(labels: np.ndarray, num_clients: int, seed: int) -> Partition:
    """Uniformly random split into near-equal client sizes."""
    labels = _check_common(labels, num_clients)
    perm = np.random.default_rng(seed).permutation(labels.size)
    return _finish(np.array_split(perm, num_clients))


def dirichlet(labels: np.ndarray, num_clients: int, seed: int, alpha: float,
              min_examples: int = 1) -> Partition:
    """Label skew: per class, client shares ~ Dirichlet(alpha) (Hsu et al. 2019).

    Small alpha gives clients few classes; large alpha approaches IID. Draws are repeated
    (deterministically) until every client holds at least `min_examples` examples.
    """
    labels = _check_common(labels, num_clients)
    if not alpha > 0:
        raise PartitionError(f'dirichlet alpha must be > 0, got {alpha}')
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    for _ in range(_MAX_DIRICHLET_TRIES):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            shares = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(shares)[:-1] * idx.size).astype(int)
            for client, chunk in enumerate(np.split(idx, cuts)):
                parts[client].append(chunk)
        merged = [np.concatenate(p) for p in parts]
        if min(p.size for p in merged) >= min_examples:
            return _finish(merged)
    raise PartitionError(
        f'dirichlet(alpha={alpha}) left a client with fewer than {min_examples} examples in '
        f'{_MAX_DIRICHLET_TRIES} draws; use fewer clients or a larger alpha')


def shards(labels: np.ndarray, num_clients: int, seed: int, classes_per_client: int) -> Partition:
    """Pathological non-IID (McMahan et al. 2017): every client holds exactly k classes.

    Classes are dealt round-robin over a seeded permutation, so each client gets k distinct
    classes and every class goes to ~N·k/C clients; each class's examples are split evenly
    among the clients holding it.
    """
    labels = _check_common(labels, num_clients)
    classes = np.unique(labels)
    k = classes_per_client
    if not 1 <= k <= classes.size:
        raise PartitionError(f'classes_per_client must be in [1, {classes.size}], got {k}')
    if num_clients * k < classes.size:
        raise PartitionError(
            f'num_clients * classes_per_client = {num_clients * k} < {classes.size} classes: '
            'some examples would belong to no client')
    rng = np.random.default_rng(seed)
    order = rng.permutation(classes)
    owners: dict[int, list[int]] = {int(c): [] for c in classes}
    for client in range(num_clients):
        for j in range(k):
            owners[int(order[(client * k + j) % classes.size])].append(client)
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for c, holders in owners.items():
        idx = rng.permutation(np.flatnonzero(labels == c))
        if idx.size < len(holders):
            raise PartitionError(
                f'class {c} has {idx.size} examples but {len(holders)} clients hold it; '
                'use fewer clients or more classes_per_client')
        for client, chunk in zip(holders, np.array_split(idx, len(holders))):
            parts[client].append(chunk)
    return _finish([np.concatenate(p) for p in parts])


def quantity_skew(labels: np.ndarray, num_clients: int, seed: int, sigma: float,
                  min_examples: int = 1) -> Partition:
    """Quantity skew: IID labels, client sizes proportional to LogNormal(0, sigma²) draws."""
    labels = _check_common(labels, num_clients)
    if not sigma >= 0:
        raise PartitionError(f'lognormal sigma must be >= 0, got {sigma}')
    if num_clients * min_examples > labels.size:
        raise PartitionError(
            f'{num_clients} clients x {min_examples} examples exceeds {labels.size} examples')
    rng = np.random.default_rng(seed)
    weights = rng.lognormal(0.0, sigma, size=num_clients)
    spare = labels.size - num_clients * min_examples
    sizes = np.floor(weights / weights.sum() * spare).astype(int)
    # Hand out the rounding remainder to the largest fractional parts, deterministically.
    remainder = spare - sizes.sum()
    frac = weights / weights.sum() * spare - sizes
    sizes[np.argsort(-frac, kind='stable')[:remainder]] += 1
    sizes += min_examples
    perm = rng.permutation(labels.size)
    return _finish(np.split(perm, np.cumsum(sizes)[:-1]))


# Each builder is `(dataset, num_clients, seed, **params) -> Partition`.
PARTITIONS = options.Registry('partition', 'How examples are split into clients.', [
    options.Option('auto', 'natural for a dataset with its own clients, else dirichlet'),
    options.Option('natural', 'the dataset\'s own clients',
                   build=lambda dataset, num_clients, seed: dataset.natural_partition,
                   provides={options.NATURAL_PARTITION},
                   requires={options.NATURAL_CLIENTS: 'needs a dataset with its own clients'}),
    options.Option('iid', 'uniformly at random, equal sizes', build=lambda dataset, num_clients, seed: iid(dataset.y, num_clients, seed)),
    options.Option('dirichlet', 'label skew: class proportions ~ Dirichlet(--alpha) per client',
                   params=(options.Param('alpha', 0.5, 'Dirichlet concentration (small = more '
                                         'label skew).', minimum=0.0, min_open=True),),
                   build=lambda dataset, num_clients, seed, alpha: dirichlet(
                       dataset.y, num_clients, seed, alpha=alpha)),
    options.Option('shards', 'pathological non-IID: --classes_per_client classes per client',
                   params=(options.Param('classes_per_client', 2, 'Classes held by each client.',
                                         minimum=1),),
                   build=lambda dataset, num_clients, seed, classes_per_client: shards(
                       dataset.y, num_clients, seed, classes_per_client=classes_per_client)),
    options.Option('quantity', 'quantity skew: client sizes log-normal(--lognormal_sigma)',
                   params=(options.Param('lognormal_sigma', 1.0, 'Log-normal sigma of client '
                                         'sizes.', minimum=0.0),),
                   build=lambda dataset, num_clients, seed, lognormal_sigma: quantity_skew(
                       dataset.y, num_clients, seed, sigma=lognormal_sigma)),
], default='auto')


def resolve(name: str, dataset_capabilities: frozenset) -> str:
    """`name`, with auto resolved for a dataset of `dataset_capabilities`."""
    if name == 'auto':
        return 'natural' if options.NATURAL_CLIENTS in dataset_capabilities else 'dirichlet'
    return name


def summarize(labels: np.ndarray, parts: Partition, num_classes: int) -> dict:
    """Client sizes and per-client label histograms (a dict ready to print or save as JSON).

    For sequence labels (one per position) the histograms are left out (a vocabulary-sized
    row per client) and `classes_per_client_mean` counts distinct tokens.
    """
    labels = np.asarray(labels)
    sizes = np.array([p.size for p in parts])
    if labels.ndim > 1:
        distinct = np.array([np.unique(labels[p]).size for p in parts])
        hists = None
    else:
        hists = np.stack([np.bincount(labels[p], minlength=num_classes) for p in parts])
        distinct = (hists > 0).sum(axis=1)
    return {
        'num_clients': len(parts),
        'num_examples': int(sizes.sum()),
        'size_min': int(sizes.min()), 'size_median': float(np.median(sizes)),
        'size_max': int(sizes.max()), 'size_mean': float(sizes.mean()),
        'classes_per_client_mean': float(distinct.mean()),
        'sizes': sizes.tolist(),
        'label_histograms': None if hists is None else hists.tolist(),
    }


def format_summary(summary: dict, max_rows: int = 10) -> str:
    """A short human-readable table of a `summarize` result."""
    lines = [
        f"{summary['num_clients']} clients, {summary['num_examples']} examples; size "
        f"min/median/max {summary['size_min']}/{summary['size_median']:g}/{summary['size_max']}; "
        f"classes per client (mean) {summary['classes_per_client_mean']:.2f}",
    ]
    histograms = summary['label_histograms'] or [None] * len(summary['sizes'])
    for i, (n, h) in enumerate(zip(summary['sizes'], histograms)):
        if i == max_rows:
            lines.append(f'  ... {summary["num_clients"] - max_rows} more')
            break
        lines.append(f'  client {i:>4}: {n:>5} examples' + ('' if h is None else f'  labels {h}'))
    return '\n'.join(lines)
