"""The secure aggregation protocol of Bonawitz et al. 2017 ("Practical Secure Aggregation for
Privacy-Preserving Machine Learning", §4, the honest-but-curious version), with the sparse
neighbourhood graph of SecAgg+ (Bell et al. 2020, "Secure Single-Server Aggregation with
(Poly)Logarithmic Overhead") as an option: the clients' part and the server's part of one run,
exchanging the paper's messages as bytes.

The four steps, each of which a client may drop out of (`Dropouts`):

0. AdvertiseKeys: each client u sends two X25519 public keys, c_u (encryption) and s_u (masks).
1. ShareKeys: u draws a self-mask seed b_u, splits b_u and its mask private key s_u^SK t-of-n
   (`shamir`) among its neighbours, and sends each neighbour its two shares encrypted with
   AES-GCM under HKDF(X25519(c_u^SK, c_v^PK)); the server only relays ciphertexts.
2. MaskedInputCollection: u sends y_u = x_u + PRG(b_u) + sum_{v in N(u), v alive} +-PRG(s_uv)
   mod 2^B, where s_uv = HKDF(X25519(s_u^SK, s_v^PK)) and the sign is + when u < v.
3. Unmasking: the server names the clients whose masked input arrived (U3) and those that
   dropped after sharing; each responding client returns its share of b_v for v in U3 and of
   s_v^SK for the dropped, and refuses a request naming a client in both roles (it would
   reveal that client's input). With t shares of each, the server removes the self masks of
   U3 and the pairwise masks U3 shares with the dropped: sum_{u in U3} x_u mod 2^B.

The PRG is AES-128 in counter mode keyed by the seed (a 32-byte seed: key and nonce). Written
here, not taken from a library: `cryptography` supplies X25519, HKDF, AES-GCM and AES-CTR;
nothing on the package index implements the protocol itself.
"""

from __future__ import annotations

import dataclasses
import functools
import secrets
import time
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fl_tff.secagg import shamir

STEPS = ('advertise_keys', 'share_keys', 'masked_input', 'unmasking')
_KEY_BYTES = 32
_NONCE_BYTES = 12
_SHARE_BYTES = 66  # A share of GF(2^521 - 1) fits 66 bytes.


class ProtocolAborted(Exception):
    """Too few clients survived a step for the server to learn the sum.

    Attributes:
      step: The step (see STEPS).
      client: The client whose neighbourhood (SecAgg+) or whose secret lacked holders; None when
        the whole cohort fell below the threshold.
      left: How many clients (or share holders of `client`) were left.
      threshold: t.
    """

    def __init__(self, message: str, step: str = '', *, client: Optional[int] = None,
                 left: int = 0, threshold: int = 0):
        super().__init__(message)
        self.step, self.client, self.left, self.threshold = step, client, left, threshold


class UnmaskRefused(Exception):
    """An honest client refused an unmasking request that would reveal an input."""


def word(bits: int) -> type:
    """The unsigned integers masks mod 2^bits live in: uint32 up to 32 bits (half the PRG output
    and memory of uint64; arithmetic mod 2^32 is exact mod 2^bits), else uint64."""
    return np.uint32 if bits <= 32 else np.uint64


def prg(seed: bytes, size: int, bits: int) -> np.ndarray:
    """`size` pseudorandom values mod 2^bits (`word(bits)`, a new array) from a 32-byte seed:
    AES-128-CTR keystream, key = seed[:16], initial counter block = seed[16:]."""
    dtype = word(bits)
    itemsize = np.dtype(dtype).itemsize
    out = np.empty(size + 16 // itemsize, dtype)  # update_into wants a block of headroom.
    encryptor = Cipher(algorithms.AES(seed[:16]), modes.CTR(seed[16:])).encryptor()
    encryptor.update_into(_zeros(itemsize * size), memoryview(out).cast('B'))
    out = out[:size]
    out &= dtype((1 << bits) - 1)
    return out


@functools.lru_cache(maxsize=4)
def _zeros(length: int) -> bytes:
    """The plaintext whose encryption is the keystream (one per size, reused)."""
    return bytes(length)


def _derive(shared_secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=_KEY_BYTES, salt=None,
                info=info).derive(shared_secret)


def _public_bytes(key: x25519.X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _private_bytes(key: x25519.X25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())


def pairwise_seed(private: x25519.X25519PrivateKey, public: bytes, u: int, v: int) -> bytes:
    """s_uv = s_vu: HKDF of the X25519 agreement, bound to the (unordered) pair."""
    low, high = min(u, v), max(u, v)
    return _derive(private.exchange(x25519.X25519PublicKey.from_public_bytes(public)),
                   b'fl_tff secagg mask %d %d' % (low, high))


def neighbours(ids: Sequence[int], k: Optional[int], seed: int) -> dict[int, frozenset[int]]:
    """Who masks with whom: every other client (k None or >= n - 1), or SecAgg+'s Harary-like
    graph, each client joined to the k nearest on a ring in a seeded random order (k // 2 on each
    side; an odd k rounds up)."""
    n = len(ids)
    if k is None or k >= n - 1:
        return {u: frozenset(v for v in ids if v != u) for u in ids}
    ring = [ids[i] for i in np.random.default_rng([seed, 0x5EC]).permutation(n)]
    half = (k + 1) // 2
    out: dict[int, set[int]] = {u: set() for u in ids}
    for i, u in enumerate(ring):
        for d in range(1, half + 1):
            v = ring[(i + d) % n]
            out[u].add(v)
            out[v].add(u)
    return {u: frozenset(vs) for u, vs in out.items()}


@dataclasses.dataclass
class Ledger:
    """What the protocol cost one run: bytes each client sent and received per step, and
    compute seconds of the clients (summed) and the server."""

    sent: dict[int, dict[str, int]] = dataclasses.field(default_factory=dict)
    received: dict[int, dict[str, int]] = dataclasses.field(default_factory=dict)
    client_seconds: float = 0.0
    server_seconds: float = 0.0

    def add(self, table: dict, client: int, step: str, size: int) -> None:
        per = table.setdefault(client, {})
        per[step] = per.get(step, 0) + size


class Client:
    """One client's side of the protocol (its secrets never leave it except as the protocol
    sends them)."""

    def __init__(self, client_id: int, neighbours_: Iterable[int], threshold: int, bits: int):
        check_threshold(threshold)
        self.id, self.threshold, self.bits = client_id, threshold, bits
        self.neighbours = frozenset(neighbours_)
        self._c_key = x25519.X25519PrivateKey.generate()
        self._s_key = x25519.X25519PrivateKey.generate()
        self._self_seed = secrets.token_bytes(_KEY_BYTES)
        self._public: dict[int, tuple[bytes, bytes]] = {}
        self._shares_held: dict[int, tuple[int, int]] = {}  # v -> (share of s_v^SK, of b_v)
        self._revealed: dict[int, str] = {}  # v -> which of v's secrets it revealed a share of

    # Step 0.
    def advertise_keys(self) -> tuple[bytes, bytes]:
        return _public_bytes(self._c_key.public_key()), _public_bytes(self._s_key.public_key())

    def _channel(self, v: int) -> AESGCM:
        c_pk = self._public[v][0]
        secret = self._c_key.exchange(x25519.X25519PublicKey.from_public_bytes(c_pk))
        low, high = min(self.id, v), max(self.id, v)
        return AESGCM(_derive(secret, b'fl_tff secagg channel %d %d' % (low, high)))

    # Step 1.
    def share_keys(self, public_keys: Mapping[int, tuple[bytes, bytes]]) -> dict[int, bytes]:
        """Encrypted shares for each neighbour that advertised keys: {v: ciphertext}."""
        self._public = {v: pk for v, pk in public_keys.items() if v in self.neighbours}
        holders = sorted([*self._public, self.id])  # It keeps one share of each itself.
        if not enough_holders(len(holders), self.threshold):
            raise ProtocolAborted(f'client {self.id}: {len(holders) - 1} neighbours advertised '
                                  f'keys, too few for the threshold {self.threshold}',
                                  'share_keys')
        key_shares = shamir.split(_private_bytes(self._s_key), self.threshold, holders)
        seed_shares = shamir.split(self._self_seed, self.threshold, holders)
        self._shares_held[self.id] = (key_shares[self.id], seed_shares[self.id])
        out = {}
        for v in sorted(self._public):
            plain = (self.id.to_bytes(4, 'big') + v.to_bytes(4, 'big')
                     + key_shares[v].to_bytes(_SHARE_BYTES, 'big')
                     + seed_shares[v].to_bytes(_SHARE_BYTES, 'big'))
            nonce = secrets.token_bytes(_NONCE_BYTES)
            out[v] = nonce + self._channel(v).encrypt(nonce, plain, None)
        return out

    def receive_shares(self, ciphertexts: Mapping[int, bytes]) -> None:
        """Decrypts (and authenticates) the shares its neighbours sent it."""
        for v, blob in ciphertexts.items():
            plain = self._channel(v).decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], None)
            sender, recipient = int.from_bytes(plain[:4], 'big'), int.from_bytes(plain[4:8], 'big')
            if (sender, recipient) != (v, self.id):
                raise ValueError(f'client {self.id}: a share addressed {sender}->{recipient} '
                                 f'arrived as {v}->{self.id}')
            self._shares_held[v] = (
                int.from_bytes(plain[8:8 + _SHARE_BYTES], 'big'),
                int.from_bytes(plain[8 + _SHARE_BYTES:], 'big'))

    # Step 2.
    def mask(self, size: int, alive: Iterable[int]) -> np.ndarray:
        """What it adds to its input mod 2^bits: PRG(b_u) + sum of +-PRG(s_uv) over the
        neighbours in `alive` (those whose shares it received)."""
        y = prg(self._self_seed, size, self.bits)  # A new array: updated in place below.
        for v in sorted((set(alive) & set(self._shares_held)) - {self.id}):
            mask = prg(pairwise_seed(self._s_key, self._public[v][1], self.id, v), size,
                       self.bits)
            if self.id < v:  # Wraps around mod 2^32 or 2^64, both multiples of 2^bits.
                y += mask
            else:
                y -= mask
        return y & word(self.bits)((1 << self.bits) - 1)

    def masked_input(self, value: np.ndarray, alive: Iterable[int]) -> np.ndarray:
        """y_u for its quantized `value` (integers in [0, 2^bits))."""
        dtype = word(self.bits)
        return (np.asarray(value, dtype) + self.mask(value.size, alive)) & dtype((1 << self.bits) - 1)

    # Step 3.
    def unmask(self, survivors: Iterable[int], dropped: Iterable[int]) -> dict[int, tuple[str, int]]:
        """Its shares: of b_v for each v in `survivors`, of s_v^SK for each v in `dropped`.

        Raises:
          UnmaskRefused: Fewer than t survivors named among itself and its neighbours (the
            server could then learn a sum of fewer clients than the threshold protects,
            Bonawitz et al. §4, round 4), or a client named in both roles, now or across
            requests.
        """
        survivors, dropped = set(survivors), set(dropped)
        named = len(survivors & (self.neighbours | {self.id}))
        if named < self.threshold:
            raise UnmaskRefused(f'client {self.id}: the unmasking request names {named} '
                                f'survivors among its neighbourhood, fewer than the threshold '
                                f'{self.threshold}')
        if self.id in dropped:
            raise UnmaskRefused(f'client {self.id}: named as dropped, but it sent its masked '
                                'input; its mask key would reveal its input')
        request = {**{v: 'self_seed' for v in survivors}, **{v: 'mask_key' for v in dropped}}
        both = survivors & dropped
        both |= {v for v, kind in request.items() if self._revealed.get(v, kind) != kind}
        if both:
            raise UnmaskRefused(f'client {self.id}: asked for both secrets of client(s) '
                                f'{sorted(both)}, which would reveal their input')
        out = {}
        for v, kind in request.items():
            if v in self._shares_held:
                self._revealed[v] = kind
                out[v] = (kind, self._shares_held[v][0 if kind == 'mask_key' else 1])
        return out


@dataclasses.dataclass(frozen=True)
class Dropouts:
    """Clients that drop before completing each step (ids by step name, see STEPS)."""

    by_step: Mapping[str, frozenset[int]] = dataclasses.field(default_factory=dict)

    def after(self, step: str, alive: Iterable[int]) -> set[int]:
        return set(alive) - set(self.by_step.get(step, ()))


def check_threshold(threshold: int) -> None:
    """t >= 2: with t = 1 every Shamir share would be the secret itself.

    Raises:
      ValueError: A smaller t.
    """
    if threshold < shamir.MIN_THRESHOLD:
        raise ValueError(f'the threshold must be at least {shamir.MIN_THRESHOLD} (with t = 1 '
                         f'every share is the secret itself), got {threshold}')


def components(graph: Mapping[int, frozenset[int]], members: Iterable[int]) -> list[frozenset[int]]:
    """The connected components of `graph` restricted to `members`, largest first.

    Masks cancel within a component of the clients whose masked input the server sums, so the
    server learns the sum of each component: one component is the whole sum (what the protocol
    promises); more expose partial sums (SecAgg+ with too small a k, cut apart by dropouts).
    """
    left, out = set(members), []
    while left:
        start = left.pop()
        component, frontier = {start}, [start]
        while frontier:
            for v in graph[frontier.pop()] & left:
                left.discard(v)
                component.add(v)
                frontier.append(v)
        out.append(frozenset(component))
    return sorted(out, key=lambda c: (-len(c), min(c)))


def enough_holders(holders: int, threshold: int) -> bool:
    """Whether a client can share its secrets t-of-n among `holders` clients (itself included);
    with fewer it drops out of step 1 (Bonawitz et al. §4)."""
    return holders >= threshold


@dataclasses.dataclass(frozen=True)
class KeySharing:
    """Who completes steps 0 and 1. It follows from who drops and the graph alone, no key is
    needed to know it, so a byte ledger can bill a round (or replay it on resume) without
    running the cryptography.

    Attributes:
      advertised: U1, the clients that advertised keys.
      gave_up: Clients of U1 with fewer than t holders among their neighbours in U1 and
        themselves: they drop out of step 1 themselves (only with SecAgg+ neighbourhoods).
      shared: U2, the clients that shared their keys.
      aborted_at: '' or the step after which fewer than t clients were left.
    """

    advertised: frozenset[int]
    gave_up: frozenset[int]
    shared: frozenset[int]
    aborted_at: str


def key_sharing(ids: Iterable[int], graph: Mapping[int, frozenset[int]], threshold: int,
                dropouts: Dropouts) -> KeySharing:
    """Steps 0 and 1's survivors among `ids` (`graph`: each client's neighbours)."""
    check_threshold(threshold)
    u1 = frozenset(dropouts.after('advertise_keys', ids))
    if len(u1) < threshold:
        return KeySharing(u1, frozenset(), frozenset(), 'advertise_keys')
    gave_up = frozenset(u for u in u1 if not enough_holders(len(graph[u] & u1) + 1, threshold))
    u2 = frozenset(dropouts.after('share_keys', u1) - gave_up)
    return KeySharing(u1, gave_up, u2, '' if len(u2) >= threshold else 'share_keys')


@dataclasses.dataclass
class Result:
    """One protocol run: the sum (None when aborted), who contributed, the costs."""

    total: Optional[np.ndarray]
    contributors: tuple[int, ...]
    aborted: str
    ledger: Ledger
    uploads: dict[int, np.ndarray]  # What the server saw in step 2, by client.


class Session:
    """One run of the protocol among `ids`, step by step, for a driver that lets the clients
    compute their step-2 uploads elsewhere (inside a TFF computation, `fl_tff.secagg.tff_round`):

    `share_keys()` runs steps 0 and 1; `masks(size)` gives each client that shared the mask it
    adds to its input in step 2; `unmask(size)` runs step 3 for the clients whose masked input
    arrived and returns what the server subtracts from the sum of their uploads.

    Args:
      ids: The clients (ints >= 1).
      bits: The modulus 2^bits of masks and sums.
      threshold: t: shares needed to reconstruct a client's secret.
      neighbours_k: SecAgg+'s neighbourhood size (None: every pair).
      dropouts: Who drops before completing each step.
      graph_seed: Seed of SecAgg+'s graph.
    """

    def __init__(self, ids: Iterable[int], *, bits: int, threshold: int,
                 neighbours_k: Optional[int] = None, dropouts: Dropouts = Dropouts(),
                 graph_seed: int = 0):
        self.ids = sorted(ids)
        self.bits, self.threshold, self.dropouts = bits, threshold, dropouts
        self.graph = neighbours(self.ids, neighbours_k, graph_seed)
        self.ledger = Ledger()
        self.clients: dict[int, Client] = {}
        self._keys: dict[int, tuple[bytes, bytes]] = {}
        self.shared: set[int] = set()  # U2: clients that shared their keys.
        # Clients that dropped out of step 1 themselves: fewer than t of their neighbours
        # advertised keys (only with SecAgg+ neighbourhoods can this happen while |U1| >= t).
        self.gave_up: set[int] = set()
        self.survivors: dict[str, set[int]] = {}  # Who completed each step reached, by step.
        # The components of the graph among the clients whose masked input arrived: the server
        # learns each one's sum (`components`).
        self.components: list[frozenset[int]] = []

    def _timed(self, fn):
        start = time.process_time()
        out = fn()
        self.ledger.client_seconds += time.process_time() - start
        return out

    def share_keys(self) -> None:
        """Steps 0 and 1 (the server relays the neighbours' keys, then the ciphertexts), with
        the survivors of `key_sharing`.

        Raises:
          ProtocolAborted: Fewer than `threshold` clients advertised or shared keys.
        """
        ledger, threshold = self.ledger, self.threshold
        sharing = key_sharing(self.ids, self.graph, threshold, self.dropouts)
        for u in self.ids:
            self.clients[u] = Client(u, self.graph[u], threshold, self.bits)
            self._keys[u] = self._timed(self.clients[u].advertise_keys)
        u1 = self.survivors['advertise_keys'] = set(sharing.advertised)
        for u in u1:
            ledger.add(ledger.sent, u, 'advertise_keys', 2 * _KEY_BYTES)
        if sharing.aborted_at == 'advertise_keys':
            raise ProtocolAborted(f'{len(u1)} clients advertised keys, fewer than the threshold '
                                  f'{threshold}', 'advertise_keys', left=len(u1),
                                  threshold=threshold)
        outgoing: dict[int, dict[int, bytes]] = {}
        for u in sorted(u1):
            visible = {v: self._keys[v] for v in self.graph[u] if v in u1}
            ledger.add(ledger.received, u, 'share_keys', 2 * _KEY_BYTES * len(visible))
            if u not in sharing.gave_up:  # Those would refuse: too few of their neighbours left.
                outgoing[u] = self._timed(lambda: self.clients[u].share_keys(visible))
        self.gave_up = set(sharing.gave_up)
        u2 = self.survivors['share_keys'] = set(sharing.shared)
        for u in u2:
            ledger.add(ledger.sent, u, 'share_keys', sum(len(c) for c in outgoing[u].values()))
        if sharing.aborted_at == 'share_keys':
            raise ProtocolAborted(f'{len(u2)} clients shared keys, fewer than the threshold '
                                  f'{threshold}', 'share_keys', left=len(u2), threshold=threshold)
        for v in u2:
            incoming = {u: outgoing[u][v] for u in u2 if v in outgoing[u]}
            ledger.add(ledger.received, v, 'share_keys', sum(len(c) for c in incoming.values()))
            self._timed(lambda: self.clients[v].receive_shares(incoming))
        self.shared = u2

    def masks(self, size: int, clients: Optional[Iterable[int]] = None) -> dict[int, np.ndarray]:
        """Step 2's masks: what each client in U2 (or those of `clients` in U2) adds to its
        `size` values mod 2^bits."""
        wanted = self.shared if clients is None else self.shared & set(clients)
        return {u: self._timed(lambda: self.clients[u].mask(size, self.shared))
                for u in sorted(wanted)}

    def arrived(self) -> set[int]:
        """U3: the clients in U2 whose masked input reaches the server."""
        return self.dropouts.after('masked_input', self.shared)

    def unmask(self, size: int) -> np.ndarray:
        """Step 3: asks the clients in U3 for their shares, reconstructs the self-mask seeds of
        U3 and the mask keys of U2 - U3, and returns the sum of the masks left in the sum of
        U3's uploads (subtract it mod 2^bits).

        Raises:
          ProtocolAborted: Fewer than `threshold` masked inputs or shares of a secret arrived.
        """
        ledger, u3 = self.ledger, self.arrived()
        self.survivors['masked_input'] = u3
        for u in u3:
            ledger.add(ledger.sent, u, 'masked_input', size * ((self.bits + 7) // 8))
        if len(u3) < self.threshold:
            raise ProtocolAborted(f'{len(u3)} masked inputs arrived, fewer than the threshold '
                                  f'{self.threshold}', 'masked_input', left=len(u3),
                                  threshold=self.threshold)
        # An honest client refuses a request naming fewer than t survivors in its
        # neighbourhood (`Client.unmask`); the server does not send one.
        for u in sorted(u3):
            named = len(u3 & (self.graph[u] | {u}))
            if named < self.threshold:
                raise ProtocolAborted(
                    f"client {u}'s neighbourhood: {named} of its share holders sent masked "
                    f'inputs, fewer than the threshold {self.threshold}', 'masked_input',
                    client=u, left=named, threshold=self.threshold)
        dropped = self.shared - u3
        for v in sorted(dropped):  # Its mask key is needed to remove its masks with U3.
            named = len(u3 & self.graph[v])
            if named < self.threshold:
                raise ProtocolAborted(
                    f"client {v}'s neighbourhood: {named} of its share holders sent masked "
                    f'inputs, fewer than the threshold {self.threshold} needed to remove the '
                    'masks of a client that dropped', 'masked_input', client=v, left=named,
                    threshold=self.threshold)
        self.components = components(self.graph, u3)
        responses: dict[int, dict[int, tuple[str, int]]] = {}
        self.survivors['unmasking'] = self.dropouts.after('unmasking', u3)
        for u in sorted(self.survivors['unmasking']):
            responses[u] = self._timed(lambda: self.clients[u].unmask(u3, dropped))
            ledger.add(ledger.received, u, 'unmasking', 4 * (len(u3) + len(dropped)))
            ledger.add(ledger.sent, u, 'unmasking', (4 + _SHARE_BYTES) * len(responses[u]))
        start = time.process_time()
        try:
            return server_masks(responses, u3, dropped, {u: k[1] for u, k in self._keys.items()},
                                self.threshold, self.bits, self.graph, size)
        finally:
            ledger.server_seconds += time.process_time() - start


def run(values: Mapping[int, np.ndarray], *, bits: int, threshold: int,
        neighbours_k: Optional[int] = None, dropouts: Dropouts = Dropouts(),
        graph_seed: int = 0) -> Result:
    """Runs the protocol over `values` ({client id >= 1: integer vector in [0, 2^bits)}), every
    step here (`Session`, with the clients' uploads computed in numpy).

    Args:
      values: Each client's quantized input.
      bits: B; the sum is mod 2^B.
      threshold: t: shares needed to reconstruct a client's secret.
      neighbours_k: SecAgg+'s neighbourhood size (None: every pair).
      dropouts: Who drops before completing each step.
      graph_seed: Seed of SecAgg+'s graph.

    Returns:
      The result; aborted (total None, the reason set) when fewer than `threshold` clients or
      shares survive a step.
    """
    session = Session(values, bits=bits, threshold=threshold, neighbours_k=neighbours_k,
                      dropouts=dropouts, graph_seed=graph_seed)
    size = next(iter(values.values())).size
    dtype = word(bits)
    modulus = dtype((1 << bits) - 1)
    uploads: dict[int, np.ndarray] = {}
    try:
        session.share_keys()
        masks = session.masks(size)
        uploads = {u: (np.asarray(values[u], dtype) + masks[u]) & modulus
                   for u in sorted(session.arrived())}
        correction = session.unmask(size)
    except ProtocolAborted as e:
        return Result(None, (), str(e), session.ledger, uploads)
    start = time.process_time()
    total = np.zeros(size, dtype)
    for y in uploads.values():
        total = (total + y) & modulus
    total = (total - correction) & modulus
    session.ledger.server_seconds += time.process_time() - start
    return Result(total, tuple(sorted(uploads)), '', session.ledger, uploads)


def server_masks(responses, survivors: set[int], dropped: set[int],
                 mask_public_keys: Mapping[int, bytes], threshold: int, bits: int,
                 graph: Mapping[int, frozenset[int]], size: int) -> np.ndarray:
    """The server's last step: reconstruct the secrets from the shares in `responses` and
    expand the masks left in the sum of the survivors' uploads: their self masks, and the
    pairwise masks they share with the `dropped` (`mask_public_keys`: the s_u^PK it relayed in
    step 1). Subtracting the result mod 2^bits leaves the sum of the survivors' inputs.

    Raises:
      ProtocolAborted: Fewer than `threshold` shares of a secret arrived.
    """
    dtype = word(bits)
    modulus = dtype((1 << bits) - 1)
    total = np.zeros(size, dtype)
    shares: dict[tuple[int, str], dict[int, int]] = {}
    for responder, answer in responses.items():
        for v, (kind, share) in answer.items():
            shares.setdefault((v, kind), {})[responder] = share

    def secret(v, kind):
        got = shares.get((v, kind), {})
        if len(got) < threshold:
            raise ProtocolAborted(f"client {v}'s neighbourhood: {len(got)} shares of its "
                                  f'{kind} arrived, fewer than the threshold {threshold}',
                                  'unmasking', client=v, left=len(got), threshold=threshold)
        return shamir.reconstruct(got, threshold)

    for v in survivors:
        total += prg(secret(v, 'self_seed'), size, bits)
    for v in dropped:
        key = x25519.X25519PrivateKey.from_private_bytes(secret(v, 'mask_key'))
        for w in graph[v] & survivors:
            mask = prg(pairwise_seed(key, mask_public_keys[w], v, w), size, bits)
            if w < v:  # w added +mask (wrapping around, as in `Client.mask`).
                total += mask
            else:
                total -= mask
    total &= modulus
    return total
