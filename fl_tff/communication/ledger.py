"""The communication ledger: bytes sent server→clients and clients→server each round.

Counted from the representation actually sent: downlink, every model weight as a 32-bit float to
every selected client; uplink, each aggregating client's update at the encoding's bits per value
plus its side information (e.g. its weight), rounded up to whole bytes. Dropped and late clients
received the model but send nothing that is aggregated.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional, Sequence

from fl_tff.rounds import RoundPlan

FLOAT_BITS = 32


@dataclasses.dataclass(frozen=True)
class UplinkEncoding:
    """How one client's update is encoded, tensor by tensor.

    Each tensor of n values is padded to a power of two when `pad_to_power_of_two` (Hadamard
    rotation), then `kept_fraction` of its values are sent (sparsification; all when None), each
    at `bits_per_value`, plus `index_bits` per kept value (log2 of the tensor size, top-k) and
    `per_tensor_bits` (e.g. a quantization range). `side_bits` per client covers weights and
    counts; with `side_bits_per_vector` they ride on each separately aggregated vector (a
    secure sum's packed weight, clipped fraction and count), so an update sent with side
    uploads (`with_side_uploads`) pays them once per vector. `side_values` counts the values
    packed beside the update's (a secure sum's), which a transport that re-encodes the packed
    vector (SecAgg) sends at its own bits.
    """

    name: str
    bits_per_value: float
    side_bits: int = 0
    per_tensor_bits: int = 0
    pad_to_power_of_two: bool = False
    kept_fraction: Optional[float] = None
    index_bits: bool = False
    concatenate: bool = False
    side_bits_per_vector: bool = False
    side_values: int = 0

    def with_side_uploads(self, count: int) -> 'UplinkEncoding':
        """The encoding of an update sent with `count` side uploads (e.g. SCAFFOLD's dc_i),
        each aggregated as a vector of its own."""
        if not self.side_bits_per_vector or count == 0:
            return self
        return dataclasses.replace(self, side_bits=self.side_bits * (1 + count))

    def client_bytes(self, sizes: Sequence[int]) -> int:
        """Bytes one client sends for an update made of tensors of `sizes` values (one
        tensor of their total size when `concatenate`)."""
        bits = self.side_bits
        sizes = [sum(sizes)] if self.concatenate else sizes
        for n in sizes:
            m = 1 << max(0, math.ceil(math.log2(n))) if self.pad_to_power_of_two else n
            kept = kept_values(m, self.kept_fraction)
            bits += kept * self.bits_per_value + self.per_tensor_bits
            if self.index_bits:
                bits += kept * max(1, math.ceil(math.log2(m)))
        return math.ceil(bits / 8)


def kept_values(n: int, fraction: Optional[float]) -> int:
    """How many of a tensor's n values a sparsifier keeps: ceil(fraction * n), at least 1."""
    return n if fraction is None else max(1, math.ceil(fraction * n))


def weight_bits(weighted: bool) -> int:
    return FLOAT_BITS if weighted else 0


def plain_encoding(weighted: bool) -> UplinkEncoding:
    """32-bit floats, plus the 32-bit weight when weighted."""
    return UplinkEncoding('float32', FLOAT_BITS, weight_bits(weighted))


# Every TFF SecureSumFactory sum also sends a 1-bit summand count and two 1-bit clip counts.
SECURE_SUM_OVERHEAD_BITS = 3


def secure_encoding(bits: int, side_values: int = 3) -> UplinkEncoding:
    """One secure sum of B-bit integers (`fl_tff.communication.secure.Packing`): the update's
    values plus `side_values` more (the weight, the clipped fraction, the count), with the secure
    sum's 3 bits of overhead."""
    return UplinkEncoding(f'secure {bits}-bit', bits, side_values * bits + SECURE_SUM_OVERHEAD_BITS,
                          side_bits_per_vector=True, side_values=side_values)


def distributed_dp_encoding(bits: int) -> UplinkEncoding:
    """TFF's distributed DP: the update concatenated into one vector, padded to a power of two
    (Hadamard), B-bit integers modulo 2^B; plus 1-bit secure sums of the clipped count and of
    the client count; three secure sums with their overhead."""
    return UplinkEncoding(f'distributed DP {bits}-bit', bits, 2 + 3 * SECURE_SUM_OVERHEAD_BITS,
                          pad_to_power_of_two=True, concatenate=True, side_bits_per_vector=True)


class CommunicationLedger:
    """Per-round and running byte counts for a model whose trainable tensors have
    `update_sizes` values and whose weights have `broadcast_values` values in all.

    Every selected client downloads the model; every participant uploads an update, or only
    those `uploaders(plan)` names (a round in which some participants send nothing, e.g. a
    SecAgg round whose protocol aborted before the masked inputs). `uploaders` must depend on
    the plan alone: rounds are charged before they run, and charged again on resume. An update
    may also carry tensors of `plain_sizes` values outside its encoding, as 32-bit floats (e.g.
    SCAFFOLD's control-variate delta, which the model aggregator never sees).
    """

    def __init__(self, update_sizes: Sequence[int], broadcast_values: int, uplink: UplinkEncoding,
                 uploaders: Optional[Callable[[RoundPlan], Sequence[Any]]] = None,
                 plain_sizes: Sequence[int] = ()):
        self.update_sizes, self.broadcast_values, self.uplink = list(update_sizes), broadcast_values, uplink
        self.uploaders = uploaders
        self.plain_sizes = list(plain_sizes)
        self.uplink_total = self.downlink_total = 0

    @property
    def downlink_client_bytes(self) -> int:
        return math.ceil(self.broadcast_values * FLOAT_BITS / 8)

    @property
    def uplink_client_bytes(self) -> int:
        return (self.uplink.client_bytes(self.update_sizes)
                + math.ceil(sum(self.plain_sizes) * FLOAT_BITS / 8))

    def charge(self, plan: RoundPlan) -> dict[str, int]:
        """Records the round's traffic; returns its metric columns."""
        down = self.downlink_client_bytes * len(plan.selected)
        senders = plan.participants if self.uploaders is None else self.uploaders(plan)
        up = self.uplink_client_bytes * len(senders)
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
