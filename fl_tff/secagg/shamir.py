"""t-of-n Shamir secret sharing of 32-byte secrets over the prime field GF(2^521 - 1).

Written here: `cryptography` offers key agreement and authenticated encryption but no secret
sharing, and the field arithmetic is a few lines of Python integers.
"""

from __future__ import annotations

import secrets
from typing import Mapping, Sequence

PRIME = 2 ** 521 - 1  # A Mersenne prime, larger than any 32-byte secret.
SECRET_BYTES = 32


class ShamirError(ValueError):
    """Too few shares, or shares that do not fit together."""


def split(secret: bytes, threshold: int, holders: Sequence[int],
          rng: secrets.SystemRandom | None = None) -> dict[int, int]:
    """Shares of `secret` for each holder (an x coordinate >= 1): any `threshold` of them
    reconstruct it, fewer reveal nothing.

    Args:
      secret: SECRET_BYTES bytes.
      threshold: t, 1 <= t <= len(holders).
      holders: Distinct positive x coordinates (the recipients' ids).
      rng: Source of the random coefficients (default: the OS's).

    Returns:
      {holder: share}.

    Raises:
      ShamirError: A bad threshold, secret or holder.
    """
    if len(secret) != SECRET_BYTES:
        raise ShamirError(f'secrets are {SECRET_BYTES} bytes, got {len(secret)}')
    if not 1 <= threshold <= len(holders):
        raise ShamirError(f'threshold must be in [1, {len(holders)}], got {threshold}')
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
    interpolation at 0 over the first `threshold` of them.

    Raises:
      ShamirError: Fewer than `threshold` shares.
    """
    if len(shares) < threshold:
        raise ShamirError(f'{len(shares)} shares cannot reconstruct a {threshold}-of-n secret')
    points = list(shares.items())[:threshold]
    secret = 0
    for i, (xi, yi) in enumerate(points):
        numerator = denominator = 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                numerator = numerator * (-xj) % PRIME
                denominator = denominator * (xi - xj) % PRIME
        secret = (secret + yi * numerator * pow(denominator, -1, PRIME)) % PRIME
    if secret >= 2 ** (8 * SECRET_BYTES):
        raise ShamirError('the shares do not fit together')
    return secret.to_bytes(SECRET_BYTES, 'big')
