"""Which combinations of options run, checked by running them: one round of a tiny config (4
clients, a 2NN of width 8 on digits) per pair of non-default choices, and a seeded sample of
triples (`experiments.compat_check` writes the table).

A combination that validates alone, or with up to three `HELPERS` a user would add beside it (a
weighting, a sparsifier, a sampling, ...), is run; one that does not is listed as refused with
the first line of its reason (README's "Options that do not combine" gives each exclusion's
reason from the declarations). A run passes when its round finishes with a finite training loss.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Optional

import numpy as np

from fl_tff import config as config_lib
from fl_tff import options

# The twelve kinds of choice whose pairs the composition issue counts.
KINDS = ('algorithm', 'dp', 'secure_agg', 'secagg', 'compression', 'error_feedback', 'aggregator',
         'attack', 'client_weighting', 'client_sampling', 'server_optimizer', 'straggler_policy')

# The 2NN of width 8 rather than logistic regression: personalized algorithms need two layers.
TINY = dict(dataset='digits', model='2nn', hidden_units=8, num_clients=4, clients_per_round=4,
            rounds=1, eval_every=1, client_epochs=1, client_batch_size=32, heldout_clients=0,
            divergence_factor=0.0)  # An attack may blow the loss up: only non-finite fails.

# What a user adds beside a choice that needs it (tried alone, then two or three together).
HELPERS: tuple[dict[str, Any], ...] = (
    dict(client_weighting='uniform'),
    dict(client_weighting='examples_processed'),
    dict(secure_agg=True),
    dict(compression='topk'),
    dict(client_sampling='epochs'),
    dict(client_sampling='poisson'),
    dict(server_optimizer='ftrlm'),
    dict(straggler_fraction=0.5, client_epochs=2),
    dict(num_clients=12, clients_per_round=12),
    dict(attack='sign_flip'),
    dict(dp='distributed'),
    dict(noise_multiplier=0.1),
    dict(concurrency=4),
    dict(concurrency=4, buffer_size=4),
)


@dataclasses.dataclass(frozen=True)
class Result:
    """One combination: its choices, the settings run, and what happened.

    Attributes:
      choices: Flag texts of the combination, e.g. ('--algorithm=fedbuff', '--dp=fixed').
      helpers: Flag texts of the helpers it ran with.
      status: 'pass', 'fail' or 'refused' ('runnable' when only validated).
      detail: The refusal's or failure's first line; the final training loss for a pass.
      seconds: Wall time of the run (0 when refused).
    """

    choices: tuple[str, ...]
    helpers: tuple[str, ...]
    status: str
    detail: str = ''
    seconds: float = 0.0


def choices(registries: Iterable[options.Registry],
            kinds: Sequence[str] = KINDS) -> dict[str, list]:
    """Kind -> its non-default values (flag values), from the registries."""
    out = {}
    for registry in registries:
        if registry.kind not in kinds:
            continue
        default = registry.selected_name(registry.default)
        out[registry.kind] = [(name == 'on') if registry.boolean else name
                              for name in registry if name != default]
    return out


def combinations(registries: Iterable[options.Registry], size: int,
                 kinds: Sequence[str] = KINDS) -> Iterator[dict[str, Any]]:
    """Every combination of `size` non-default choices of different kinds, in registry order."""
    by_kind = choices(registries, kinds)
    for chosen in itertools.combinations(by_kind, size):
        for values in itertools.product(*(by_kind[k] for k in chosen)):
            yield dict(zip(chosen, values))


def sample(items: Sequence[dict[str, Any]], count: int, seed: int) -> list[dict[str, Any]]:
    """A seeded sample of `count` of `items` (all of them when there are fewer)."""
    if count >= len(items):
        return list(items)
    picked = np.random.default_rng(seed).choice(len(items), size=count, replace=False)
    return [items[i] for i in sorted(picked)]


def runnable_sample(config_cls, items: Sequence[dict[str, Any]], count: int,
                    seed: int) -> list[dict[str, Any]]:
    """The first `count` of `items`, in a seeded order, that run (with helpers): a sample of
    the combinations the table would call compatible."""
    out = []
    for i in np.random.default_rng(seed).permutation(len(items)):
        if len(out) == count:
            break
        if resolve(config_cls, items[i])[0] is not None:
            out.append(items[i])
    return out


def _error(config_cls, settings: dict[str, Any]) -> Optional[str]:
    try:
        config_cls(**{**TINY, **settings}).validate()
        return None
    except (config_lib.ConfigError, ValueError) as e:
        return str(e).splitlines()[0]


def resolve(config_cls, chosen: dict[str, Any]) -> tuple[Optional[dict[str, Any]], str]:
    """(the settings to run: `chosen` plus the fewest helpers that make it valid, or None; the
    refusal of `chosen` alone when none do)."""
    first = _error(config_cls, chosen)
    if first is None:
        return dict(chosen), ''
    for count in (1, 2, 3):
        for helpers in itertools.combinations(HELPERS, count):
            extra = {k: v for h in helpers for k, v in h.items()}
            if any(k in chosen for k in extra):
                continue
            settings = {**extra, **chosen}
            if _error(config_cls, settings) is None:
                return settings, ''
    return None, first


def flag_texts(chosen: dict[str, Any]) -> tuple[str, ...]:
    """The settings as flags, e.g. ('--dp=fixed', '--secure_agg')."""
    return tuple((f'--{k}' if v else f'--no{k}') if isinstance(v, bool) else f'--{k}={v}'
                 for k, v in chosen.items())


def run(config_cls, chosen: dict[str, Any], output_dir: Optional[str] = None) -> Result:
    """One round of `chosen` in the tiny config (with helpers if it needs them)."""
    from fl_tff import experiment  # noqa: PLC0415 (TFF's runtime only when something runs)
    settings, refusal = resolve(config_cls, chosen)
    if settings is None:
        return Result(flag_texts(chosen), (), 'refused', refusal)
    helpers = flag_texts({k: v for k, v in settings.items() if k not in chosen})
    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(dir=output_dir) as run_dir:
            config = config_cls(**{**TINY, **settings, 'output_dir': run_dir}).validate()
            result = experiment.run_experiment(config, log=lambda line: None)
        loss = float(result.history[-1].get('train_loss', math.nan))
        status = 'pass' if math.isfinite(loss) else 'fail'
        detail = f'train loss {loss:.4g}'
    except Exception as e:  # A failure is the result being recorded, whatever it is.
        status, detail = 'fail', f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}'
    return Result(flag_texts(chosen), helpers, status, detail, time.perf_counter() - start)


def markdown(results: Sequence[Result], commit: str, date: str) -> str:
    """The results as a markdown section: counts, then one row per combination."""
    counts = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    def code(texts):
        return ' '.join(f'`{t}`' for t in texts)

    rows = '\n'.join(f'| {code(r.choices)} | {r.status} | {code(r.helpers)} | '
                      f'{r.detail.replace("|", "/")} | {r.seconds:.1f} |' for r in results)
    summary = ', '.join(f'{n} {status}' for status, n in counts.items())
    return (f'Commit {commit}, {date}: {len(results)} combinations: {summary}.\n\n'
            '| combination | result | helpers added | detail | seconds |\n|---|---|---|---|---|\n'
            f'{rows}\n')
