"""The SecAgg protocol: Shamir sharing, exact sums with dropouts at every step, aborts beyond
n - t, honest clients refusing a malicious unmasking request, and masked uploads that reveal
nothing about the input (a chi-square test that finds an unmasked input)."""

import secrets

import numpy as np
import pytest
from scipy import stats

from fl_tff.secagg import protocol, shamir
from tests.helpers import seed_secagg_randomness

BITS = 16


def _values(n, size=50, seed=0, bits=BITS):
    rng = np.random.default_rng(seed)
    return {u: rng.integers(0, 2 ** bits, size=size).astype(np.uint64) for u in range(1, n + 1)}


def _expected(values, contributors, bits=BITS):
    total = sum(int(0) for _ in ())
    total = np.zeros_like(next(iter(values.values())))
    for u in contributors:
        total = (total + values[u]) & np.uint64(2 ** bits - 1)
    return total


def test_any_t_shares_reconstruct_the_secret_and_fewer_do_not():
    secret = secrets.token_bytes(32)
    shares = shamir.split(secret, 3, [1, 2, 5, 9])
    for subset in ([1, 2, 5], [2, 5, 9], [9, 1, 5], [1, 2, 5, 9]):
        assert shamir.reconstruct({x: shares[x] for x in subset}, 3) == secret
    with pytest.raises(shamir.ShamirError, match='2 shares cannot reconstruct a 3-of-n'):
        shamir.reconstruct({1: shares[1], 2: shares[2]}, 3)
    # Two shares of a 3-of-n secret interpolated as if 2-of-n give something else.
    wrong = None
    try:
        wrong = shamir.reconstruct({1: shares[1], 2: shares[2]}, 2)
    except shamir.ShamirError:
        pass
    assert wrong != secret
    with pytest.raises(shamir.ShamirError):
        shamir.split(secret, 5, [1, 2, 3])


N, T = 7, 4


@pytest.mark.parametrize('step', protocol.STEPS)
@pytest.mark.parametrize('count', [0, 1, N - T])
def test_the_unmasked_sum_is_the_exact_sum_of_the_contributors(step, count):
    values = _values(N, seed=count)
    drop = frozenset(range(N - count + 1, N + 1))
    result = protocol.run(values, bits=BITS, threshold=T,
                          dropouts=protocol.Dropouts({step: drop}))
    assert result.aborted == ''
    # Clients that drop in the unmasking step already sent their masked input: they count.
    contributors = set(values) - (drop if step != 'unmasking' else set())
    assert set(result.contributors) == contributors
    np.testing.assert_array_equal(result.total, _expected(values, contributors))


@pytest.mark.parametrize('step', protocol.STEPS)
def test_more_than_n_minus_t_dropouts_abort_the_round(step):
    values = _values(N)
    result = protocol.run(values, bits=BITS, threshold=T,
                          dropouts=protocol.Dropouts({step: frozenset(range(1, N - T + 2))}))
    assert result.total is None
    assert 'fewer than the threshold 4' in result.aborted


def test_dropouts_at_every_step_together_are_recovered():
    values = _values(10, seed=3)
    dropouts = protocol.Dropouts({'advertise_keys': frozenset({1}), 'share_keys': frozenset({2}),
                                  'masked_input': frozenset({3, 4}),
                                  'unmasking': frozenset({5})})
    result = protocol.run(values, bits=BITS, threshold=5, dropouts=dropouts)
    contributors = set(values) - {1, 2, 3, 4}
    np.testing.assert_array_equal(result.total, _expected(values, contributors))


@pytest.mark.parametrize('k', [2, 4, 6])
def test_secagg_plus_neighbourhoods_give_the_same_exact_sum_with_less_traffic(k):
    values = _values(20, seed=k)
    dropouts = protocol.Dropouts({'masked_input': frozenset({4})})
    sparse = protocol.run(values, bits=BITS, threshold=k // 2 + 1, neighbours_k=k,
                          dropouts=dropouts, graph_seed=1)
    full = protocol.run(values, bits=BITS, threshold=11, dropouts=dropouts)
    expected = _expected(values, set(values) - {4})
    np.testing.assert_array_equal(sparse.total, expected)
    np.testing.assert_array_equal(full.total, expected)
    graph = protocol.neighbours(sorted(values), k, seed=1)
    assert all(len(vs) >= k for vs in graph.values())
    assert all(u in graph[v] for u, vs in graph.items() for v in vs)  # Symmetric.
    per_client = lambda r: np.mean([r.ledger.sent[u]['share_keys'] for u in values if u != 4])
    assert per_client(sparse) < per_client(full) / 2


def test_an_honest_client_refuses_to_reveal_both_secrets_of_one_client():
    values = _values(5)
    graph = protocol.neighbours(sorted(values), None, 0)
    clients = {u: protocol.Client(u, graph[u], 3, BITS) for u in values}
    keys = {u: c.advertise_keys() for u, c in clients.items()}
    out = {u: c.share_keys(keys) for u, c in clients.items()}
    for v, c in clients.items():
        c.receive_shares({u: out[u][v] for u in values if u != v})
    with pytest.raises(protocol.UnmaskRefused, match=r'both secrets of client\(s\) \[2\]'):
        clients[1].unmask(survivors={2, 3, 4}, dropped={2})
    # Across requests: having revealed a share of client 2's self mask, it will not reveal
    # client 2's mask key.
    assert clients[1].unmask(survivors={2, 3, 4, 5}, dropped=set())[2][0] == 'self_seed'
    with pytest.raises(protocol.UnmaskRefused, match=r'both secrets of client\(s\) \[2\]'):
        clients[1].unmask(survivors={3, 4, 5}, dropped={2})


def _clients_after_sharing(n, t, k=None, seed=0):
    ids = list(range(1, n + 1))
    graph = protocol.neighbours(ids, k, seed)
    clients = {u: protocol.Client(u, graph[u], t, BITS) for u in ids}
    keys = {u: c.advertise_keys() for u, c in clients.items()}
    out = {u: c.share_keys({v: keys[v] for v in graph[u]}) for u, c in clients.items()}
    for v, c in clients.items():
        c.receive_shares({u: out[u][v] for u in ids if v in out[u]})
    return clients, graph


def test_a_client_refuses_an_unmasking_request_naming_fewer_than_t_survivors():
    """Bonawitz et al. §4, round 4: with fewer than t survivors named, the server could learn
    the sum of fewer clients than t protects. With SecAgg+ the count is over the client's own
    neighbourhood (itself and its neighbours)."""
    clients, _ = _clients_after_sharing(6, 4)
    with pytest.raises(protocol.UnmaskRefused, match='names 3 survivors .* fewer than the '
                                                     'threshold 4'):
        clients[1].unmask(survivors={1, 2, 3}, dropped={4, 5, 6})
    assert len(clients[2].unmask(survivors={1, 2, 3, 4}, dropped={5, 6})) == 6
    sparse, graph = _clients_after_sharing(12, 3, k=4, seed=2)
    far = set(range(1, 13)) - graph[1] - {1}  # Eight clients none of which holds 1's shares.
    with pytest.raises(protocol.UnmaskRefused, match='names 2 survivors among its neighbourhood'):
        sparse[1].unmask(survivors=far | {1, min(graph[1])}, dropped=set())


def test_a_threshold_of_one_is_refused_everywhere():
    """With t = 1 every Shamir share is the secret itself."""
    secret = secrets.token_bytes(32)
    shares = shamir.split(secret, 2, [1, 2, 3])
    assert all(share != int.from_bytes(secret, 'big') for share in shares.values())
    with pytest.raises(shamir.ShamirError, match=r'threshold must be in \[2, 3\]'):
        shamir.split(secret, 1, [1, 2, 3])
    with pytest.raises(ValueError, match='at least 2'):
        protocol.Client(1, [2, 3], 1, BITS)
    with pytest.raises(ValueError, match='at least 2'):
        protocol.run(_values(3), bits=BITS, threshold=1)


def _lagrange_at_zero(points):
    """The secret written plainly: sum_i y_i prod_{j != i} x_j / (x_j - x_i) mod p."""
    total = 0
    for i, (xi, yi) in enumerate(points):
        term = yi
        for j, (xj, _) in enumerate(points):
            if i != j:
                term = term * xj * pow(xj - xi, -1, shamir.PRIME) % shamir.PRIME
        total = (total + term) % shamir.PRIME
    return total


def test_reconstruction_weights_are_computed_once_per_holder_set_and_interpolate_exactly():
    holders = list(range(1, 41))
    secrets_ = [secrets.token_bytes(32) for _ in range(30)]
    shared = [shamir.split(secret, 21, holders) for secret in secrets_]
    shamir.lagrange_weights.cache_clear()
    for secret, shares in zip(secrets_, shared):
        answers = {x: shares[x] for x in holders[5:]}  # The same 35 holders answer each time.
        assert shamir.reconstruct(answers, 21) == secret
        lowest = sorted(answers.items())[:21]
        assert _lagrange_at_zero(lowest) == int.from_bytes(secret, 'big')
    info = shamir.lagrange_weights.cache_info()
    assert (info.misses, info.hits) == (1, 29)
    # Other holders give other weights, and the same secret.
    assert shamir.reconstruct({x: shared[0][x] for x in holders[:21]}, 21) == secrets_[0]
    assert shamir.lagrange_weights.cache_info().misses == 2


def test_masked_uploads_are_uniform_and_uncorrelated_with_the_input_while_plain_ones_are_not(
        monkeypatch):
    seed_secagg_randomness(monkeypatch, 0)  # The same masks every run: no flaky p-value.
    bits, size = 8, 64
    rng = np.random.default_rng(0)
    uploads, inputs = [], []
    for run in range(40):  # 40 rounds x 5 clients x 64 coordinates = 12,800 values.
        values = {u: (rng.integers(0, 16, size=size) * (u % 3)).astype(np.uint64)  # Skewed.
                  for u in range(1, 6)}
        result = protocol.run(values, bits=bits, threshold=3)
        for u, y in result.uploads.items():
            uploads.append(y)
            inputs.append(values[u])
    uploads, inputs = np.concatenate(uploads), np.concatenate(inputs)

    def uniform_p(samples):
        return stats.chisquare(np.bincount(samples.astype(np.int64), minlength=2 ** bits)).pvalue
    assert uniform_p(uploads) > 1e-3
    assert abs(np.corrcoef(uploads.astype(float), inputs.astype(float))[0, 1]) < 0.05
    # The same tests find the input when it is sent unmasked.
    assert uniform_p(inputs) < 1e-12
    assert np.corrcoef(inputs.astype(float), inputs.astype(float))[0, 1] > 0.99


def test_a_client_whose_neighbours_left_drops_out_and_the_rest_still_sum():
    """SecAgg+ with k = 2, t = 2: when both of a client's ring neighbours fail to advertise
    keys, that client cannot share its secrets t ways and drops out of step 1 (it does not
    abort the round); the others' sum is exact."""
    values = _values(8)
    graph = protocol.neighbours(sorted(values), 2, 0)
    lonely = 1
    gone = graph[lonely]
    assert len(gone) == 2
    result = protocol.run(values, bits=BITS, threshold=2, neighbours_k=2,
                          dropouts=protocol.Dropouts({'advertise_keys': frozenset(gone)}))
    assert not result.aborted
    assert set(result.contributors) == set(values) - gone - {lonely}
    np.testing.assert_array_equal(result.total, _expected(values, result.contributors))


def test_key_sharing_survivors_are_the_rule_written_plainly_and_what_a_run_does():
    """U1: the clients that advertised keys; a client of U1 with fewer than t - 1 neighbours in
    U1 gives up; U2: U1 less those that dropped while sharing and those that gave up; fewer
    than t in U1 (or U2) aborts at that step. A run of the protocol (its cryptography) sums
    exactly U2 less those that dropped before their masked input."""
    ids = list(range(1, 11))
    rng = np.random.default_rng(7)
    values = _values(10, size=8)
    outcomes = set()
    for trial in range(60):
        k = int(rng.choice([2, 4, 9]))
        graph = protocol.neighbours(ids, k, seed=trial)
        t = int(rng.integers(2, 6))
        drop = [set(rng.choice(ids, int(rng.integers(0, most)), replace=False).tolist())
                for most in (9, 5, 5)]
        dropouts = protocol.Dropouts({step: frozenset(d) for step, d in zip(protocol.STEPS, drop)})
        got = protocol.key_sharing(ids, graph, t, dropouts)
        u1 = set(ids) - drop[0]
        gave_up = {u for u in u1 if len([v for v in graph[u] if v in u1]) < t - 1}
        u2 = u1 - drop[1] - gave_up
        if len(u1) < t:
            assert got.aborted_at == 'advertise_keys' and got.advertised == u1
            outcomes.add('advertise_keys')
            continue
        assert (got.advertised, got.gave_up, got.shared) == (u1, gave_up, u2)
        assert got.aborted_at == ('share_keys' if len(u2) < t else '')
        outcomes.add(got.aborted_at or ('gave up' if gave_up else 'shared'))
        if trial % 3 == 0:  # The cryptography agrees (some trials: ~0.02 s each).
            result = protocol.run(values, bits=BITS, threshold=t, neighbours_k=k,
                                  dropouts=dropouts, graph_seed=trial)
            if got.aborted_at:
                assert result.total is None and 'clients shared keys' in result.aborted
            elif len(u2 - drop[2]) < t:
                assert result.total is None and 'masked inputs arrived' in result.aborted
            elif result.aborted:  # SecAgg+: a neighbourhood with fewer than t holders left.
                assert "'s neighbourhood" in result.aborted
            else:
                assert set(result.contributors) == u2 - drop[2]
                outcomes.add('summed')
    assert outcomes == {'advertise_keys', 'share_keys', 'gave up', 'shared', 'summed'}, outcomes
