"""The communication ledger: bytes sent server→clients and clients→server each round.

Counted from the representation actually sent: downlink, every model weight as a 32-bit float to
every selected client; uplink, each aggregating client's update at the encoding's bits per value
plus its side information (e.g. its weight), rounded up to whole bytes. Dropped and late clients
received the model but send nothing that is aggregated.
"""

from __future__ import annotations

import dataclasses
import math

from fl_tff.simulation.heterogeneity import RoundPlan

FLOAT_BITS = 32


@dataclasses.dataclass(frozen=True)
class UplinkEncoding:
    """How one client's update is encoded: `bits_per_value` for each of its values plus
    `side_bits` of side information (weights, counts, norms, seeds)."""

    name: str
    bits_per_value: float
    side_bits: int

    def client_bytes(self, num_values: int) -> int:
        """Bytes one client sends for an update of `num_values` values."""
        return math.ceil((self.bits_per_value * num_values + self.side_bits) / 8)


def plain_encoding(weighted: bool) -> UplinkEncoding:
    """32-bit floats, plus the 32-bit weight when weighted."""
    return UplinkEncoding('float32', FLOAT_BITS, FLOAT_BITS if weighted else 0)


def secure_encoding(bits: int, weighted: bool) -> UplinkEncoding:
    """B-bit integers for secure summation, plus the client count's 1 bit and, when weighted,
    the weight as a 32-bit secure summand."""
    return UplinkEncoding(f'secure {bits}-bit', bits, 1 + (FLOAT_BITS if weighted else 0))


class CommunicationLedger:
    """Per-round and running byte counts for a model with `update_values` trainable values and
    `broadcast_values` values in all its weights."""

    def __init__(self, update_values: int, broadcast_values: int, uplink: UplinkEncoding):
        self.update_values, self.broadcast_values, self.uplink = update_values, broadcast_values, uplink
        self.uplink_total = self.downlink_total = 0

    @property
    def downlink_client_bytes(self) -> int:
        return math.ceil(self.broadcast_values * FLOAT_BITS / 8)

    @property
    def uplink_client_bytes(self) -> int:
        return self.uplink.client_bytes(self.update_values)

    def charge(self, plan: RoundPlan) -> dict[str, int]:
        """Records the round's traffic; returns its metric columns."""
        down = self.downlink_client_bytes * len(plan.selected)
        up = self.uplink_client_bytes * len(plan.participants)
        self.downlink_total += down
        self.uplink_total += up
        return {'downlink_bytes': down, 'uplink_bytes': up,
                'downlink_bytes_per_client': self.downlink_client_bytes,
                'uplink_bytes_per_client': self.uplink_client_bytes,
                'downlink_bytes_total': self.downlink_total, 'uplink_bytes_total': self.uplink_total}

    def summary(self) -> dict:
        return {'uplink_encoding': self.uplink.name, 'uplink_bytes_total': self.uplink_total,
                'downlink_bytes_total': self.downlink_total,
                'uplink_bytes_per_client': self.uplink_client_bytes,
                'downlink_bytes_per_client': self.downlink_client_bytes}
