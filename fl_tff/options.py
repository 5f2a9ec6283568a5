"""Pluggable choices, each declared once: an `Option` (name, help, parameters, capabilities,
builders) in the module that implements it, collected by a `Registry` per kind of choice.

Everything else derives from these declarations: the fields of `config.ExperimentConfig`, the
driver's flags and `--helpfull` text, validation (ranges of parameters; cross-option
compatibility decided from capabilities, never from option names), the byte ledger's encoding and
the README's option tables (`markdown_tables`). Adding an algorithm or an aggregator is one new
module declaring its `Option` plus one line in its registry.

Compatibility: each selected option may `require` capabilities that some other selected option
must `provide`, and `exclude` capabilities that no other selected option may provide; each rule
carries the reason shown to the user.

Written here rather than taken from a library: absl flags and dataclasses give the flags and the
config, but nothing offers declared capabilities with reasons, which the rules above need.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Mapping, Optional, Union

Value = Union[bool, int, float, str]

# Capabilities: what an option has or does. `CAPABILITIES` documents each (README, --helpfull).
LOCAL_EPOCHS = 'local_epochs'
DP_SGD_CLIENT = 'dp_sgd_client'
ERROR_FEEDBACK_CLIENT = 'error_feedback_client'
CLIENT_STATE = 'client_state'
PERSONAL_MODEL = 'personal_model'
ASYNCHRONOUS = 'asynchronous'
UPDATE_ATTACKS = 'update_attacks'
MASKED_UPLOADS = 'masked_uploads'
SEES_INDIVIDUAL_UPDATES = 'sees_individual_updates'
REPLACES_MEAN = 'replaces_mean'
SECURE_SUM = 'secure_sum'
USER_LEVEL_DP = 'user_level_dp'
FIXED_CLIP_RANGE = 'fixed_clip_range'
STEPS_PER_EPOCH = 'steps_per_epoch'
COMPRESSED_UPLINK = 'compressed_uplink'
SPARSIFIER = 'sparsifier'
UNIFORM_WEIGHTS = 'uniform_weights'
TFF_WEIGHTING = 'tff_weighting'
FIXED_COHORT = 'fixed_cohort'
SAMPLED_CLIENTS = 'sampled_clients'
ONCE_PER_EPOCH = 'once_per_epoch'
FTRL_STEPS = 'ftrl_steps'
DROPS_CLIENTS = 'drops_clients'
MODULAR_SECURE_SUM = 'modular_secure_sum'
NATURAL_CLIENTS = 'natural_clients'
NATURAL_PARTITION = 'natural_partition'
CLASSIFICATION = 'classification'
IMAGES = 'images'
CHAR_SEQUENCES = 'char_sequences'
WORD_SEQUENCES = 'word_sequences'
PADDED_TOKENS = 'padded_tokens'
STATEFUL_CLIENT_OPTIMIZER = 'stateful_client_optimizer'
CLIENT_ENCODES = 'client_encodes'
EXAMPLE_LEVEL_DP = 'example_level_dp'
DECODES_AGGREGATE = 'decodes_aggregate'
KEEPS_CLIENT_OPTIMIZER_STATE = 'keeps_client_optimizer_state'

CAPABILITIES: dict[str, str] = {
    LOCAL_EPOCHS: 'clients run local epochs of SGD (stragglers can do partial work)',
    DP_SGD_CLIENT: 'its clients can run example-level DP-SGD',
    ERROR_FEEDBACK_CLIENT: 'its clients can keep error-feedback residuals',
    CLIENT_STATE: 'keeps per-client state across rounds (client outputs)',
    PERSONAL_MODEL: 'each client keeps a personal model (or part) that never leaves it',
    ASYNCHRONOUS: 'clients train concurrently on the simulated clock from possibly stale models; '
                  'a round is one server update',
    UPDATE_ATTACKS: 'its client work lets a malicious client send another update '
                    '(fl_tff.attacks)',
    MASKED_UPLOADS: 'its round can add the clients\' SecAgg masks to their uploads '
                    '(fl_tff.secagg)',
    SEES_INDIVIDUAL_UPDATES: 'the server must see each client update',
    REPLACES_MEAN: 'aggregates updates other than by the plain mean',
    SECURE_SUM: 'updates reach the server only through secure sums',
    USER_LEVEL_DP: 'clips and noises whole client updates (user-level DP)',
    FIXED_CLIP_RANGE: 'clips updates to a fixed range (quantizable for secure sums)',
    STEPS_PER_EPOCH: 'local steps stop at epoch boundaries (no step holds an example twice)',
    COMPRESSED_UPLINK: 'clients compress their updates',
    SPARSIFIER: 'compression keeps a fraction of each tensor',
    UNIFORM_WEIGHTS: 'every client update has the same weight',
    TFF_WEIGHTING: 'a weighting TFF\'s own builders compute (uniform, or examples processed)',
    FIXED_COHORT: 'every round has exactly the planned number of clients',
    SAMPLED_CLIENTS: 'each round\'s clients are a fresh random sample of the population (what '
                     'sampled-Gaussian privacy accounting assumes)',
    ONCE_PER_EPOCH: 'each client takes part at most once per epoch of the population (N // K '
                    'rounds)',
    FTRL_STEPS: 'steps from the running sum of the aggregated updates (FTRL; SGD is its '
                'momentum-0 case)',
    DROPS_CLIENTS: 'some selected clients may return nothing',
    MODULAR_SECURE_SUM: 'sums securely modulo 2^B (wraps around instead of overflowing)',
    NATURAL_CLIENTS: 'the dataset comes with its own clients',
    NATURAL_PARTITION: 'clients are the dataset\'s own',
    CLASSIFICATION: 'examples are (features, class label)',
    IMAGES: 'inputs are images (height, width, channels)',
    CHAR_SEQUENCES: 'examples are character sequences (next-character prediction)',
    WORD_SEQUENCES: 'examples are word sequences (next-word prediction)',
    PADDED_TOKENS: 'labels are token sequences with padding',
    STATEFUL_CLIENT_OPTIMIZER: 'clients step with an optimizer that has state (momentum, '
                               'moments), not plain SGD',
    EXAMPLE_LEVEL_DP: 'clips and noises each example\'s gradient in the clients\' local steps '
                      '(DP-SGD)',
    CLIENT_ENCODES: 'clients encode (compress) their updates in their own work, so the '
                    'aggregator does not encode them again',
    DECODES_AGGREGATE: 'the server decodes only the aggregate of the encoded updates (a random '
                       'rotation inverted once), never each client\'s update',
    KEEPS_CLIENT_OPTIMIZER_STATE: 'its clients can carry their optimizer state (momentum, '
                                  'moments) from one round to their next, as a client-state slot',
}


@dataclasses.dataclass(frozen=True)
class Default:
    """A base setting an option prefers, with why: it applies when the user leaves the setting
    unset (`config.with_option_defaults`; the driver does so for every flag not given)."""

    value: Value
    why: str


class OptionError(ValueError):
    """A setting an option refuses; `flag` names the flag to change."""

    def __init__(self, flag: str, message: str):
        super().__init__(message)
        self.flag = flag


@dataclasses.dataclass(frozen=True)
class Param:
    """A parameter of one or more options: a config field and a flag of the same name.

    The value must lie in [minimum, maximum] (open ends when `*_open`); `None` is unbounded.
    A string parameter with `choices` must be one of them. A `result_neutral` one does not change
    what a run computes (e.g. where files are fetched from), so a run resumes whatever its value.
    """

    name: str
    default: Value
    help: str
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    min_open: bool = False
    max_open: bool = False
    choices: tuple[str, ...] = ()
    result_neutral: bool = False

    def range_text(self) -> str:
        if self.choices:
            return 'one of ' + '|'.join(self.choices)
        if self.minimum is None and self.maximum is None:
            return ''
        if self.maximum is None:
            return f'{">" if self.min_open else ">="} {self.minimum:g}'
        if self.minimum is None:
            return f'{"<" if self.max_open else "<="} {self.maximum:g}'
        return (f'{"(" if self.min_open else "["}{self.minimum:g}, {self.maximum:g}'
                f'{")" if self.max_open else "]"}')

    def problem(self, value: Value) -> Optional[str]:
        """Why `value` is out of range (None when it is fine)."""
        if self.choices:
            return None if value in self.choices else (
                f'unknown value {value!r}; valid choices: {", ".join(self.choices)}')
        lo, hi = self.minimum, self.maximum
        below = lo is not None and (value <= lo if self.min_open else value < lo)
        above = hi is not None and (value >= hi if self.max_open else value > hi)
        if below or above:
            text = self.range_text()
            return f'must be {"in " if lo is not None and hi is not None else ""}{text}, got {value}'
        return None


@dataclasses.dataclass(frozen=True)
class Option:
    """One choice of a kind (an algorithm, an aggregator, a DP mode, ...).

    Attributes:
      name: The flag value that selects it.
      help: One line for `--helpfull` and the README.
      params: Its parameters (config fields and flags, validated when it is selected).
      provides: Capabilities it has (see `CAPABILITIES`).
      requires: Capability -> why, each provided by another selected option.
      excludes: Capability -> why, provided by no other selected option.
      build: The kind's builder (its signature is documented by the registry's kind).
      aggregator_layer: Its `fl_tff.aggregators.chain.Layer`: where it sits in the model
        aggregator's chain and how it builds its part, from its own parameters, its
        `config_fields` and the run's `fl_tff.aggregators.chain.Context`.
      uplink_encoding: `(config, weighted) -> UplinkEncoding`: what each value a client sends
        becomes (compression, a secure sum's packed integers, distributed DP's shares; default
        float32 values). At most one selected option declares one.
      uplink_transport: `(config, inner) -> UplinkEncoding`: how it re-encodes the encoding of
        `uplink_encoding` (`inner`) on the way (the SecAgg protocol masks the secure sum's packed
        vector at its modulus' bits). At most one selected option declares one.
      client_extras: `(config, masked_labels) -> dict`: keyword arguments it adds to the
        algorithm's builder (e.g. DP-SGD on clients).
      privacy_ledger: `(config, select, client_sizes, model_size) -> PrivacyLedger | None`
        (at most one selected option declares one: the DP mode's).
      check: `(config, selection) -> None`: its own validation beyond ranges; raises
        `OptionError` naming the flag.
      preflight: `(config) -> None`: checks that need TFF objects, files or the network (run
        before data is loaded).
      prepare: `(config) -> None`: work the run needs done first, after every check passed and
        before data is loaded (e.g. `--download` fetches the dataset's files).
      check_model: `(config, model_fn) -> None`: checks against the model (run once it is
        built, before any run directory exists); raises `OptionError` naming the flag.
      uplink_model_copies: Model-sized tensors each client update carries through the model
        aggregator, at the uplink encoding (MIME-lite: 2).
      side_uploads: Model-sized values each client sends beside its update (SCAFFOLD's dc_i:
        1). They go through the side aggregator, which the algorithm's builder takes as
        `side_aggregator`: the chain of the model aggregator's options without compression,
        unweighted (weighted as the update with `side_weighted`); so a secure sum sums them securely, a robust rule filters them, and
        user-level DP clips and noises each (one more Gaussian release a round, which the
        privacy ledger composes). Billed at the uplink encoding, or as float32 when that is a
        compression.
      side_weighted: Its side uploads weigh as its update does (MIME-lite's full-batch
        gradients, averaged as TFF's builder does), not 1 each.
      plain_side_values: Scalars each client sends in the clear beside its update, outside the
        model aggregator (FedNova's w_i tau_i and w_i: 2), billed as float32.
      defaults: Base setting name -> `Default`: what this option needs or trains best with
        where the project's default does not fit (e.g. an algorithm's weighting).
      config_fields: Base settings (not its own parameters) its builders also take by name, e.g.
        the population size `num_clients`.
    """

    name: str
    help: str
    params: tuple[Param, ...] = ()
    provides: frozenset[str] = frozenset()
    requires: Mapping[str, str] = dataclasses.field(default_factory=dict)
    excludes: Mapping[str, str] = dataclasses.field(default_factory=dict)
    build: Optional[Callable[..., Any]] = None
    aggregator_layer: Optional[Any] = None  # A `fl_tff.aggregators.chain.Layer`.
    uplink_encoding: Optional[Callable[..., Any]] = None
    uplink_transport: Optional[Callable[..., Any]] = None
    client_extras: Optional[Callable[..., dict]] = None
    privacy_ledger: Optional[Callable[..., Any]] = None
    check: Optional[Callable[[Any, 'Selection'], None]] = None
    preflight: Optional[Callable[[Any], None]] = None
    prepare: Optional[Callable[[Any], None]] = None
    check_model: Optional[Callable[[Any, Any], None]] = None
    uplink_model_copies: int = 1
    side_uploads: int = 0
    side_weighted: bool = False
    plain_side_values: int = 0
    config_fields: tuple[str, ...] = ()
    defaults: Mapping[str, Default] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        unknown = set(self.provides) | set(self.requires) | set(self.excludes)
        unknown -= set(CAPABILITIES)
        if unknown:
            raise ValueError(f'option {self.name!r}: unknown capabilities {sorted(unknown)}; '
                             'declare them in fl_tff.options.CAPABILITIES')
        object.__setattr__(self, 'provides', frozenset(self.provides))


class Registry:
    """The options of one kind: the config field (and flag) `kind` selects one by name.

    A `boolean` registry is an on/off switch (a bool flag) whose options are named 'off' and 'on'.
    """

    def __init__(self, kind: str, help: str, options: Iterable[Option], default: Value, *,
                 boolean: bool = False):
        self.kind, self.help, self.default = kind, help, default
        self.boolean = boolean
        self.options: dict[str, Option] = {}
        for option in options:
            if option.name in self.options:
                raise ValueError(f'{kind}: option {option.name!r} declared twice')
            self.options[option.name] = option
        if self.selected_name(default) not in self.options:
            raise ValueError(f'{kind}: default {default!r} is not an option')
        self.params()  # Checks that shared parameters agree.

    def with_options(self, *extra: Option) -> 'Registry':
        """A copy with `extra` options added (e.g. a test's toy option)."""
        return Registry(self.kind, self.help, [*self.options.values(), *extra], self.default,
                        boolean=self.boolean)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.options)

    def __contains__(self, name: str) -> bool:
        return name in self.options

    def __iter__(self):
        return iter(self.options)

    def __getitem__(self, name: str) -> Option:
        return self.options[name]

    def selected_name(self, value: Value) -> str:
        return ('on' if value else 'off') if self.boolean else str(value)

    def get(self, value: Value) -> Option:
        """The option `value` selects; OptionError naming the flag and the valid choices."""
        name = self.selected_name(value)
        if name not in self.options:
            raise OptionError(self.kind, f'unknown {self.kind} {value!r}; valid choices: '
                              f'{", ".join(sorted(self.options))}')
        return self.options[name]

    def flag_text(self, option: Option) -> str:
        """How a user selects `option`: --kind=name, or --kind / --nokind for a switch."""
        if self.boolean:
            return f'--{self.kind}' if option.name == 'on' else f'--no{self.kind}'
        return f'--{self.kind}={option.name}'

    def params(self) -> dict[str, Param]:
        """Every parameter of this kind's options by name; a name shared by several options
        must have one default."""
        out: dict[str, Param] = {}
        for option in self.options.values():
            for p in option.params:
                if p.name in out and (out[p.name].default != p.default
                                      or type(out[p.name].default) is not type(p.default)):
                    raise ValueError(f'{self.kind}: parameter {p.name!r} declared with defaults '
                                     f'{out[p.name].default!r} and {p.default!r}')
                out.setdefault(p.name, p)
        return out

    def users(self, param: str) -> list[Option]:
        """The options that take parameter `param`."""
        return [o for o in self.options.values() if any(p.name == param for p in o.params)]

    def help_text(self) -> str:
        """The flag's help: the kind's help and one line per option."""
        lines = [o.name + (f': {o.help}' if o.help else '')
                 + ''.join(f' (defaults --{n}={d.value})' for n, d in sorted(o.defaults.items()))
                 for o in self.options.values()]
        if self.boolean:
            return self.help
        return f'{self.help} One of: ' + '; '.join(lines) + '.'


class Selection:
    """The options a config selects, one per registry, with the capabilities they provide."""

    def __init__(self, chosen: Mapping[str, tuple[Registry, Option]]):
        self.chosen = dict(chosen)

    def __getitem__(self, kind: str) -> Option:
        return self.chosen[kind][1]

    def items(self):
        return ((kind, option) for kind, (_, option) in self.chosen.items())

    def has(self, capability: str) -> bool:
        return any(capability in option.provides for _, option in self.items())

    def providers(self, capability: str, besides: Optional[str] = None) -> list[str]:
        """The flags (e.g. '--aggregator=median') of selected options providing `capability`,
        other than the option of kind `besides`."""
        return [registry.flag_text(option) for kind, (registry, option) in self.chosen.items()
                if kind != besides and capability in option.provides]

    def flag_text(self, kind: str) -> str:
        registry, option = self.chosen[kind]
        return registry.flag_text(option)

    def only(self, attribute: str,
             among: Callable[[Option], bool] = lambda option: True) -> Optional[Callable[..., Any]]:
        """The `attribute` hook of the one selected option (of those `among` accepts) that
        declares it, or None.

        Raises:
          ValueError: Two selected options declare it (no registry order decides between
            them; their declarations must exclude each other).
        """
        declaring = [(kind, option) for kind, option in self.items()
                     if getattr(option, attribute) is not None and among(option)]
        if len(declaring) > 1:
            raise ValueError(f'{" and ".join(self.flag_text(k) for k, _ in declaring)} both '
                             f'declare {attribute}; one option at most may')
        return getattr(declaring[0][1], attribute) if declaring else None

    def check_compatibility(self, registries: Iterable[Registry]) -> None:
        """Raises OptionError when a requirement or exclusion of a selected option fails."""
        for kind, (registry, option) in self.chosen.items():
            for capability, why in option.requires.items():
                if not any(capability in other.provides
                           for k, other in self.items() if k != kind):
                    offered = [(r.kind, r.flag_text(o)) for r in registries
                               for o in r.options.values() if capability in o.provides]
                    # Name the flag to change: the one kind that offers the capability, if one.
                    kinds = {k for k, _ in offered}
                    flag = kinds.pop() if len(kinds) == 1 else kind
                    now = f' ({self.flag_text(flag)} does not)' if flag != kind and flag in self.chosen else ''
                    raise OptionError(flag, f'{registry.flag_text(option)} {why}{now}: choose '
                                      f'{" or ".join(f for _, f in offered) or "an option providing " + capability}')
            for capability, why in option.excludes.items():
                clashing = self.providers(capability, besides=kind)
                if clashing:
                    other_kind = next(k for k, o in self.items()
                                      if k != kind and capability in o.provides)
                    raise OptionError(other_kind, f'{clashing[0]} does not combine with '
                                      f'{registry.flag_text(option)}: {why}')


def markdown_tables(registries: Iterable[Registry]) -> str:
    """The README's option tables: one per kind, one row per option with its parameters and
    capabilities."""
    out = []
    for registry in registries:
        out.append(f'#### `--{registry.kind}`\n\n{registry.help}\n')
        out.append('| option | what it does | parameters | capabilities |')
        out.append('|---|---|---|---|')
        for option in registry.options.values():
            params = ', '.join(f'`--{p.name}`' for p in option.params) or ''
            caps = [*(sorted(option.provides)),
                    *(f'needs {c}' for c in sorted(option.requires)),
                    *(f'refuses {c}' for c in sorted(option.excludes)),
                    *(f'defaults `--{name}={d.value}` ({d.why})'
                      for name, d in sorted(option.defaults.items()))]
            text = option.help.replace('|', '\\|')
            out.append(f'| `{registry.flag_text(option)}` | {text} | {params} | {", ".join(caps)} |')
        out.append('')
    return '\n'.join(out)


def exclusions_table(registries: Iterable[Registry]) -> str:
    """The README's list of options that do not combine, from the declarations alone: one row
    per option and capability it excludes, naming the options (of other kinds) that provide the
    capability and the declared reason. Settings an option merely needs (`requires`) are not
    listed: adding them makes the pair run."""
    registries = list(registries)
    rows = ['| option | does not combine with | why |', '|---|---|---|']
    for registry in registries:
        for option in registry.options.values():
            for capability, why in sorted(option.excludes.items()):
                others = [f'`{other.flag_text(o)}`' for other in registries
                          if other.kind != registry.kind
                          for o in other.options.values() if capability in o.provides]
                reason = why.replace('|', '\\|')
                if others:
                    rows.append(f'| `{registry.flag_text(option)}` | {", ".join(others)} '
                                f'({capability}) | {reason} |')
    return '\n'.join(rows)
