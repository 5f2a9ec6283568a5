"""The model aggregator, built from the layers the selected options declare (declared wrapping).

An option that shapes how client updates are aggregated declares one `Layer`
(`Option.aggregator_layer`): the level of the chain it sits at and a builder of its TFF factory
around what it wraps. No option knows the others, and no registry order decides anything:

- `GUARD` acts on each client's update before the reduction and wraps it (`--aggregator=clip`,
  `zero`).
- `REDUCE` turns the client values into one update: the mean, unless an option declares another
  reduction (a robust rule, user-level DP's clipped and noised sum). `takes_sum` says whether it
  adds client values through the `SUM` level (the mean; DP's record sum) or reads them itself (a
  rule that gathers every update; distributed DP, which sums its noised shares securely itself).
  `encodes_sum` says where compression goes: into the values its sum adds (the mean: the weighted
  values), or around the reduction, so that it sees each client's decoded update (a robust rule;
  DP clips the decoded update, so its sensitivity stays the clip norm).
- `ENCODE` is what a client's value becomes on the way (compression: encoded on the client,
  decoded on the server).
- `SUM` is how values are added: a plain sum unless an option declares another (`--secure_agg`).
  A sum may also supply the whole mean (`Layer.mean`), for a secure mean sums the weights
  securely too.

So the chain is guard(mean(encode(sum))), e.g. clip(mean(topk)); encode(reduce(sum)), e.g.
dp(secure_sum) or topk(dp); or encode(reduce), e.g. median(decode(topk)). At most one option sits
at each level; options that would share one exclude each other by capability (validation says
why), and `build` raises if they did not.

Written here because TFF composes factories by nesting constructors but has no notion of a chain
assembled from independent declarations.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Optional

import tensorflow_federated as tff

GUARD, REDUCE, ENCODE, SUM = 'guard', 'reduce', 'encode', 'sum'
LEVELS = (GUARD, REDUCE, ENCODE, SUM)

Factory = tff.aggregators.AggregationFactory
Params = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Context:
    """The few base settings of a run that aggregator layers may read.

    Attributes:
      uniform: Every client update has weight 1 (else clients are weighted; see
        `fl_tff.weighting`).
      max_weight: The largest weight a client can have (a secure weighted mean scales by it).
      seed: The run's seed.
      cohort: Client updates each aggregation receives: K clients a round, or an asynchronous
        buffer (user-level DP divides its noised sum by it).
      client_encodes: Clients already encode their updates in their own work (error feedback),
        so the aggregator must not encode them again.
      value_bound: Set by the chain: the bound on each value the reduction hands its sum (DP's
        clip norm), which a quantizing secure sum uses as its range.
    """

    uniform: bool
    max_weight: Optional[float] = None
    seed: int = 0
    cohort: int = 1
    client_encodes: bool = False
    value_bound: Optional[float] = None


# (the option's own parameters, the run context, the factory it wraps or None) -> its factory.
Builder = Callable[[Params, Context, Optional[Factory]], Factory]


@dataclasses.dataclass(frozen=True)
class Layer:
    """Where an option sits in the aggregator chain and how it builds its factory.

    Attributes:
      level: One of `LEVELS`.
      build: Its factory around what it wraps (`None` for a `SUM`, for a `REDUCE` that does not
        take a sum, or for the plain sum inside a reduction that takes one).
      takes_sum: `REDUCE` only: it adds client values through the `SUM` level.
      encodes_sum: `REDUCE` only: compression encodes the values its sum adds (rather than each
        client's update before the reduction).
      value_bound: `REDUCE` only: `params -> bound` on what it hands its sum (DP's clip).
      mean: `SUM` only: `(params, context) -> the whole mean` when the reduction is the mean.
    """

    level: str
    build: Builder
    takes_sum: bool = True
    encodes_sum: bool = False
    value_bound: Optional[Callable[[Params], float]] = None
    mean: Optional[Callable[[Params, Context], Factory]] = None

    def __post_init__(self):
        if self.level not in LEVELS:
            raise ValueError(f'unknown aggregator level {self.level!r}; valid choices: '
                             f'{", ".join(LEVELS)}')


def mean_factory(uniform: bool, value_sum_factory: Optional[Factory] = None,
                 weight_sum_factory: Optional[Factory] = None) -> Factory:
    """The mean of client values: unweighted (`uniform`) or weighted by the clients' weights,
    summing values (and weights, or counts) with the given factories (default: plain sums)."""
    if uniform:
        return tff.aggregators.UnweightedMeanFactory(value_sum_factory=value_sum_factory,
                                                     count_sum_factory=weight_sum_factory)
    return tff.aggregators.MeanFactory(value_sum_factory=value_sum_factory,
                                       weight_sum_factory=weight_sum_factory)


def as_weighted(factory: Factory) -> tff.aggregators.WeightedAggregationFactory:
    """`factory` as the weighted aggregator TFF's composers take: an unweighted one (a chain
    whose reduction ignores weights: a robust rule, DP's sum, a uniform mean) ignores them."""
    if isinstance(factory, tff.aggregators.UnweightedAggregationFactory):
        return tff.aggregators.as_weighted_aggregator(factory)
    return factory


MEAN = Layer(REDUCE, lambda params, context, inner: mean_factory(context.uniform, inner),
             encodes_sum=True)
"""The reduction when no option declares one."""


def unused_levels(layers: Sequence[Layer]) -> frozenset[str]:
    """The levels `build` leaves out of the chain of `layers`: the `SUM` under a reduction
    that sums by itself (distributed DP's secure sum of noised shares)."""
    if any(layer.level == REDUCE and not layer.takes_sum for layer in layers):
        return frozenset({SUM})
    return frozenset()


def build(layers: Sequence[tuple[Layer, Params]], context: Context) -> Factory:
    """The model aggregator from the selected options' layers, each with its own parameters.

    Raises:
      ValueError: Two layers at one level (their options should exclude each other), or a sum
        that supplies its own mean under compression.
    """
    at: dict[str, tuple[Layer, Params]] = {}
    for layer, params in layers:
        if layer.level in at:
            raise ValueError(f'two aggregator layers at level {layer.level!r}')
        at[layer.level] = (layer, params)
    reduce, reduce_params = at.get(REDUCE, (MEAN, {}))

    def encode(inner: Optional[Factory]) -> Optional[Factory]:
        if ENCODE not in at or context.client_encodes:
            return inner
        layer, params = at[ENCODE]
        return layer.build(params, context, inner)

    if not reduce.takes_sum:
        aggregate = encode(reduce.build(reduce_params, context, None))
    elif reduce is MEAN and SUM in at and at[SUM][0].mean is not None:
        if ENCODE in at and not context.client_encodes:
            raise ValueError('a sum that supplies its own mean takes no encoding')
        layer, params = at[SUM]
        aggregate = layer.mean(params, context)
    else:
        sum_context = dataclasses.replace(
            context, value_bound=reduce.value_bound(reduce_params) if reduce.value_bound else None)
        total = at[SUM][0].build(at[SUM][1], sum_context, None) if SUM in at else None
        aggregate = (reduce.build(reduce_params, context, encode(total)) if reduce.encodes_sum
                     else encode(reduce.build(reduce_params, context, total)))
    if GUARD in at:
        layer, params = at[GUARD]
        aggregate = layer.build(params, context, aggregate)
    return aggregate
