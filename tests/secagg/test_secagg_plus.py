"""SecAgg+ under dropouts (Bell et al. 2020): a graph that dropouts cut apart lets the server
learn the sum of each piece (shown by computing it), which the round's metrics report; a k that
risks it is refused unless allowed; an abort names the neighbourhood that lacked holders."""

import dataclasses

import numpy as np
import pytest

from fl_tff.runs import reporting
from fl_tff.config import ConfigError, ExperimentConfig
from fl_tff.secagg import protocol, tff_round

BITS = 16
SIZE = 20


def _ring(graph, start):
    """The clients in ring order (k = 2: each has one neighbour on either side)."""
    order, previous = [start], None
    while len(order) < len(graph):
        following = [v for v in graph[order[-1]] if v != previous]
        previous = order[-1]
        order.append(following[0])
    return order


def _run(session, values):
    session.share_keys()
    masks = session.masks(SIZE)
    modulus = np.uint32(2 ** BITS - 1)
    uploads = {u: (values[u].astype(np.uint32) + masks[u]) & modulus
               for u in sorted(session.arrived())}
    correction = session.unmask(SIZE)
    return uploads, correction


def test_dropouts_that_cut_a_sparse_graph_expose_each_pieces_sum_and_the_metrics_say_so():
    ids = list(range(1, 11))
    rng = np.random.default_rng(0)
    values = {u: rng.integers(0, 2 ** 10, SIZE).astype(np.uint32) for u in ids}
    graph = protocol.neighbours(ids, 2, seed=3)
    ring = _ring(graph, 1)
    cut = {ring[0], ring[4]}  # Leaves arcs of 3 and 5 survivors.
    session = protocol.Session(ids, bits=BITS, threshold=2, neighbours_k=2, graph_seed=3,
                               dropouts=protocol.Dropouts({'masked_input': frozenset(cut)}))
    uploads, correction = _run(session, values)
    modulus = np.uint32(2 ** BITS - 1)
    total = (sum(uploads.values()) - correction) & modulus
    np.testing.assert_array_equal(total, sum(values[u] for u in uploads) & modulus)
    pieces = session.components
    assert sorted(map(sorted, pieces)) == sorted([sorted(ring[1:4]), sorted(ring[5:])])

    # The server's attack, from what it holds: the uploads of one arc, and the shares honest
    # clients sent it for the (honest) unmasking request.
    u3, dropped = session.arrived(), session.shared - session.arrived()
    responses = {u: session.clients[u].unmask(u3, dropped) for u in u3}
    public = {u: session.clients[u].advertise_keys()[1] for u in ids}
    arc = set(ring[1:4])
    its_masks = protocol.server_masks(responses, arc, dropped, public, 2, BITS, graph, SIZE)
    leaked = (sum(uploads[u] for u in arc) - its_masks) & modulus
    np.testing.assert_array_equal(leaked, sum(values[u] for u in arc) & modulus)

    columns = tff_round._columns(session, 2)
    assert columns['secagg_exposed_sums'] == 1 and columns['secagg_smallest_exposed_group'] == 3
    line = reporting.format_round_line(
        {'round': 1, 'train_loss': 1.0, 'train_accuracy': 0.5, 'round_seconds': 1.0,
         'elapsed_seconds': 1.0, **columns}, 1)
    assert 'the server learns 1 partial sum(s), the smallest of 3 clients' in line

    # Connected survivors: the server learns the total only.
    whole = protocol.Session(ids, bits=BITS, threshold=2, neighbours_k=2, graph_seed=3,
                             dropouts=protocol.Dropouts({'masked_input': frozenset({ring[0]})}))
    _run(whole, values)
    assert tff_round._columns(whole, 2)['secagg_exposed_sums'] == 0


def test_the_disconnection_bound_holds_against_a_simulation():
    """The bound of `disconnection_bound` over 20,000 simulated rounds of independent losses,
    the pieces counted by `protocol.components` on the real graph."""
    n, k, loss = 30, 4, 0.1
    ids = list(range(1, n + 1))
    graph = protocol.neighbours(ids, k, seed=0)
    rng = np.random.default_rng(1)
    cut = sum(len(protocol.components(graph, [u for u in ids if rng.random() >= loss])) > 1
              for _ in range(20_000)) / 20_000
    bound = tff_round.disconnection_bound(n, k, loss)
    assert 0 < cut <= bound < 0.05
    assert tff_round.disconnection_bound(n, 0, loss) == 0.0  # Every pair.
    k_safe = tff_round.safe_neighbours(1000, 0.1)
    assert tff_round.disconnection_bound(1000, k_safe, 0.1) <= 2.0 ** -40
    assert tff_round.disconnection_bound(1000, k_safe - 2, 0.1) > 2.0 ** -40


BASE = ExperimentConfig(secure_agg=True, secagg=True, client_weighting='uniform',
                        num_clients=40, clients_per_round=10)


def test_a_k_that_dropouts_could_cut_is_refused_unless_allowed():
    weak = dataclasses.replace(BASE, secagg_neighbors=2, dropout_rate=0.2)
    with pytest.raises(ConfigError) as refused:
        weak.validate()
    message = str(refused.value)
    assert message.startswith('--secagg_neighbors: k = 2 lets the clients lost each round (13% '
                              'of 10) cut the graph apart') and len(message.splitlines()) == 1
    assert 'use 0 (every pair), or --secagg_allow_weak_graph' in message
    dataclasses.replace(weak, secagg_allow_weak_graph=True).validate()
    auto = dataclasses.replace(weak, secagg_neighbors=-1).validate()
    assert tff_round.neighbourhood_size(auto) == 0  # No k below n - 1 is safe for 10 clients.
    big = dataclasses.replace(BASE, num_clients=2000, clients_per_round=1000, dropout_rate=0.15,
                              secagg_neighbors=-1).validate()
    k = tff_round.neighbourhood_size(big)
    assert 0 < k < 100 and tff_round.disconnection_bound(1000, k, 0.1) <= 2.0 ** -40
    # Without losses any ring stays connected.
    dataclasses.replace(BASE, secagg_neighbors=2).validate()


@pytest.mark.parametrize('overrides,message', [
    (dict(secagg_threshold=0.0), r'--secagg_threshold: must be in \[0.5, 1\)'),
    (dict(secagg_threshold=0.3), r'--secagg_threshold: must be in \[0.5, 1\)'),
    (dict(clients_per_round=1), '--clients_per_round: --secagg needs at least 2 updates per aggregation'),
])
def test_thresholds_below_the_security_condition_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(BASE, **overrides).validate()
    settings = tff_round.SecAggSettings(0.5)
    assert [settings.threshold(n) for n in (1, 2, 3, 10)] == [2, 2, 2, 6]  # t > n / 2, t >= 2.
    sparse = tff_round.SecAggSettings(0.5, neighbours=4)
    assert sparse.threshold(50) == 3 and sparse.holders(50) == 5


def test_an_abort_names_the_neighbourhood_that_lacked_holders():
    """k = 2, t = 2, 10 clients: both ring neighbours of one client drop before their masked
    input. Eight of ten are left (n - t = 8 would be recovered with every pair), yet that
    client's secrets have one holder left: the log line and metrics say so."""
    ids = list(range(1, 11))
    graph = protocol.neighbours(ids, 2, seed=5)
    lonely = 4
    session = protocol.Session(ids, bits=BITS, threshold=2, neighbours_k=2, graph_seed=5,
                               dropouts=protocol.Dropouts({'masked_input': graph[lonely]}))
    session.share_keys()
    with pytest.raises(protocol.ProtocolAborted) as aborted:
        session.unmask(SIZE)
    assert (aborted.value.step, aborted.value.client, aborted.value.left) == (
        'masked_input', lonely, 1)
    columns = tff_round._columns(session, 2, aborted.value)
    assert columns['secagg_abort_client'] == lonely and columns['secagg_abort_left'] == 1
    assert columns['secagg_clients_left'] == 8
    line = reporting.format_round_line(
        {'round': 1, 'train_loss': float('nan'), 'train_accuracy': float('nan'), 'selected': 10,
         'aggregated': 8, 'round_seconds': 1.0, 'elapsed_seconds': 1.0, 'dropped': 2,
         'stragglers': 0, 'partial': 0, 'late': 0, **columns}, 1)
    assert ('secagg ABORTED at masked_input: the neighbourhood of selected client #4 has 1 '
            'share holders left, threshold 2') in line
