"""User-level DP over a packed secure sum, split into its client half (clip with the DP query,
pack) and its server half (decode the integer sum, noise with the query), so that SecAgg can
mask exactly what the clients send (`fl_tff.secagg.tff_round`) and the structural secure sum
moves the same vectors (`secure.structural_process`).

Written here rather than taken from TFF: `tff.aggregators.DifferentiallyPrivateFactory` sums the
clipped records through a factory whose `next` sees only the records, and SecAgg's masks are
inputs of the round, so they cannot reach that sum. The query (clipping, noise, its state) is
TF Privacy's, as in TFF's factory.

Queries with a fixed clip only (a Gaussian sum, DP-FTRL's tree): the clip each record is clipped
to is derived from the query's initial state, on the client, every round.
"""

from __future__ import annotations

import tensorflow_federated as tff
import tensorflow_privacy as tfp

from fl_tff.communication import secure


class PackedDpSumFactory(tff.aggregators.UnweightedAggregationFactory):
    """`query` (clip, sum, noise) whose clipped records are summed as packed vectors.

    Args:
      query: A TF Privacy DP query with a fixed clip (e.g. a normalized Gaussian sum query).
      record_sum: The packed secure sum of the clipped records (its range is the clip).
    """

    def __init__(self, query: tfp.DPQuery, record_sum: secure.SecureQuantizedSumFactory):
        self._query, self._record_sum = query, record_sum

    def packed(self, value_type) -> secure.PackedAggregation:
        """The client half (clip, pack) and the server half (decode, noise) for `value_type`."""
        query, packing = self._query, self._record_sum.packing(value_type)

        def encode(value, weight):
            del weight  # User-level DP sums each client's clipped update with weight 1.
            params = query.derive_sample_params(query.initial_global_state())
            return packing.encode(query.preprocess_record(params, value))

        def decode(total, state):
            record_sum, clipped = packing.decode_sum(total)
            result, new_state, _ = query.get_noised_result(record_sum, state)
            return result, new_state, clipped

        return secure.PackedAggregation(packing, encode, decode, query.initial_global_state)

    def create(self, value_type) -> tff.templates.AggregationProcess:
        return secure.structural_process(self.packed(value_type), weighted_next=False)


def dp_sum_factory(query: tfp.DPQuery, record_sum_factory=None,
                   ) -> tff.aggregators.UnweightedAggregationFactory:
    """`query`'s aggregation: over a packed secure sum (`PackedDpSumFactory`, which SecAgg can
    mask), or TFF's `DifferentiallyPrivateFactory` over any other record sum (default plain)."""
    if isinstance(record_sum_factory, secure.SecureQuantizedSumFactory):
        return PackedDpSumFactory(query, record_sum_factory)
    return tff.aggregators.DifferentiallyPrivateFactory(query, record_sum_factory)
