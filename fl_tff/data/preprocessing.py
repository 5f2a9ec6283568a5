"""Seeds for client preprocessing (shuffles, noise), derived from the run's seed.

A client's round of data itself is built by `fl_tff.data.client_rounds.make_round`.
"""

from __future__ import annotations

import numpy as np


def derive_seed(*keys: int) -> int:
    """A 31-bit seed derived deterministically from integer keys, e.g. (run seed, round, client)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0] & 0x7FFFFFFF)
