"""t-of-n Shamir secret sharing of 32-byte secrets over the prime field GF(2^521 - 1).

Written here: `cryptography` offers key agreement and authenticated encryption but no secret
sharing, and the field arithmetic is a few lines of Python integers.
"""

from __future__ import annotations

import functools
import secrets
from typing import Mapping, Sequence

PRIME = 2 ** 521 - 1  # A Mersenne prime, larger than any 32-byte secret.
SECRET_BYTES = 32
MIN_THRESHOLD = 2  # With t = 1 every share is the secret itself.


class ShamirError(ValueError):
    """Too few shares, or shares that do not fit together."""


def split(secret: bytes, threshold: int, holders: Sequence[int],
          rng: secrets.SystemRandom | None = None) -> dict[int, int]:
    """Shares of `secret` for each holder (an x coordinate >= 1): any `threshold` of them
    reconstruct it, fewer reveal nothing.

    Args:
      secret: SECRET_BYTES bytes.
      threshold: t, 2 <= t <= len(holders) (t = 1 would make every share the secret).
      holders: Distinct positive x coordinates (the recipients' ids).
      rng: Source of the random coefficients (default: the OS's).

    Returns:
      {holder: share}.

    Raises:
      ShamirError: A bad threshold, secret or holder.
    """
    if len(secret) != SECRET_BYTES:
        raise ShamirError(f'secrets are {SECRET_BYTES} bytes, got {len(secret)}')
    if not MIN_THRESHOLD <= threshold <= len(holders):
        raise ShamirError(f'threshold must be in [{MIN_THRESHOLD}, {len(holders)}] (with t = 1 '
                          f'every share is the secret), got {threshold}')
    if len(set(holders)) != len(holders) or min(holders) < 1:
        raise ShamirError('holders must be distinct positive integers')
    rng = rng or secrets.SystemRandom()
    coefficients = [int.from_bytes(secret, 'big')] + [rng.randrange(PRIME)
                                                      for _ in range(threshold - 1)]
    shares = {}
    for x in holders:
        y = 0
        for c in reversed(coefficients):  # Horner's rule.
            y = (y * x + c) % PRIME
        shares[x] = y
    return shares


def reconstruct(shares: Mapping[int, int], threshold: int) -> bytes:
    """The secret from at least `threshold` shares ({holder: share}), by Lagrange
    interpolation at 0 over the `threshold` shares of the lowest holders.

    The weights depend only on which holders answer, so they are computed once per set
    (`lagrange_weights`): when the same clients hold the shares of many secrets (every secret
    of a round, with the full graph), each further secret costs t multiplications, not t^2
    and t modular inverses.

    Raises:
      ShamirError: Fewer than `threshold` shares, or shares that do not fit together.
    """
    if len(shares) < threshold:
        raise ShamirError(f'{len(shares)} shares cannot reconstruct a {threshold}-of-n secret')
    holders = tuple(sorted(shares)[:threshold])
    weights = lagrange_weights(holders)
    secret = sum(w * shares[x] for w, x in zip(weights, holders)) % PRIME
    if secret >= 2 ** (8 * SECRET_BYTES):
        raise ShamirError('the shares do not fit together')
    return secret.to_bytes(SECRET_BYTES, 'big')


@functools.lru_cache(maxsize=256)
def lagrange_weights(holders: tuple[int, ...]) -> tuple[int, ...]:
    """The Lagrange basis polynomials of the points `holders` at 0, mod PRIME: the secret is
    sum_i weight_i x share_i. One modular inverse for all of them (the denominators are
    multiplied together, inverted once, and divided out with prefix products)."""
    numerators, denominators = [], []
    for i, xi in enumerate(holders):
        numerator = denominator = 1
        for j, xj in enumerate(holders):
            if i != j:
                numerator = numerator * (-xj) % PRIME
                denominator = denominator * (xi - xj) % PRIME
        numerators.append(numerator)
        denominators.append(denominator)
    inverses = _batch_inverse(denominators)
    return tuple(n * d % PRIME for n, d in zip(numerators, inverses))


def _batch_inverse(values: Sequence[int]) -> list[int]:
    """The inverses of `values` mod PRIME with one modular exponentiation (Montgomery's trick)."""
    prefix = [1]
    for v in values:
        prefix.append(prefix[-1] * v % PRIME)
    inverse = pow(prefix[-1], -1, PRIME)
    out = [0] * len(values)
    for i in range(len(values) - 1, -1, -1):
        out[i] = inverse * prefix[i] % PRIME
        inverse = inverse * values[i] % PRIME
    return out
