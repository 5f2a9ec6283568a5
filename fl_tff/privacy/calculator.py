"""The privacy calculator behind `experiments.privacy_calculator`: ε for a DP-FedAvg (or DP-SGD)
configuration, or the noise multiplier a target ε needs."""

from __future__ import annotations

import enum
import math

from fl_tff.privacy.accounting import (SAMPLINGS, SampledGaussian, Sampling, check_delta,
                                      noise_for_epsilon)


class Mechanism(str, enum.Enum):
    """What the calculator accounts for (its `--dp` flag)."""
    FIXED = 'fixed'  # A sampled Gaussian mechanism per round (--dp=fixed, distributed, dpsgd).
    TREE = 'tree'  # DP-FTRL's tree aggregation (--dp=tree), each client once per epoch.


class CalculatorError(ValueError):
    """A bad calculator input; the message names the flag."""


def _mechanism_args(q: float, population: int, cohort: int, sampling: str) -> dict:
    if sampling not in SAMPLINGS:
        raise CalculatorError(f'--sampling: unknown value {sampling!r}; valid choices: {", ".join(SAMPLINGS)}')
    if population or cohort:
        if not (population > 0 and 0 < cohort <= population):
            raise CalculatorError(f'--population and --cohort: need 0 < cohort <= population, got '
                                  f'{cohort} and {population}')
        if q:
            raise CalculatorError('--q: give either --q or --population and --cohort, not both')
        return dict(q=cohort / population, population=population, cohort=cohort)
    if sampling == Sampling.UNIFORM:
        raise CalculatorError('--population and --cohort: fixed-size (uniform) sampling needs both')
    if not 0 < q <= 1:
        raise CalculatorError(f'--q: the sampling rate must be in (0, 1], got {q} (or give '
                              '--population and --cohort)')
    return dict(q=q)


def _check_common(noise_multiplier: float, rounds: int, delta: float,
                  target_epsilon: float) -> None:
    """The checks every mode shares; CalculatorError naming the flag."""
    if rounds < 1:
        raise CalculatorError(f'--rounds: must be >= 1, got {rounds}')
    try:
        check_delta(delta)
    except ValueError as e:
        raise CalculatorError(f'--delta: {e}') from e
    if target_epsilon < 0:
        raise CalculatorError(f'--target_epsilon: must be >= 0, got {target_epsilon}')
    if not target_epsilon and noise_multiplier < 0:
        raise CalculatorError(f'--noise_multiplier: must be >= 0, got {noise_multiplier}')


def calculate(*, noise_multiplier: float, rounds: int, delta: float, sampling: str = 'poisson',
              q: float = 0.0, population: int = 0, cohort: int = 0,
              target_epsilon: float = 0.0) -> dict:
    """ε (RDP, and PLD for Poisson sampling) after `rounds` sampled Gaussian mechanisms; with
    `target_epsilon` > 0, the noise multiplier that reaches it instead (and its ε)."""
    args = _mechanism_args(q, population, cohort, sampling)
    _check_common(noise_multiplier, rounds, delta, target_epsilon)
    if target_epsilon:
        noise_multiplier = noise_for_epsilon(target_epsilon, delta, rounds, sampling, **args)
    mechanism = SampledGaussian(noise_multiplier, sampling, **args)
    result = {'noise_multiplier': noise_multiplier, 'rounds': rounds, 'delta': delta,
              'sampling': sampling, **args, 'epsilon_rdp': mechanism.epsilon(rounds, delta)}
    if mechanism.supports_pld:
        result['epsilon_pld'] = mechanism.epsilon(rounds, delta, 'pld')
    return result


def calculate_tree(*, noise_multiplier: float, rounds: int, delta: float, population: int,
                   cohort: int, tree_restart: int = 0, target_epsilon: float = 0.0) -> dict:
    """ε of DP-FTRL (`--dp=tree`) after `rounds` rounds with `cohort` of `population` clients a
    round, each at most once per epoch of population // cohort rounds
    (`--client_sampling=epochs`), the tree restarted every `tree_restart` rounds (0: one
    epoch): what the run's ledger (`fl_tff.privacy.tree.TreeLedger`) charges. With
    `target_epsilon` > 0, the smallest noise multiplier that reaches it instead (bisection)."""
    from fl_tff.privacy import tree  # The tree module imports TFF; only this mode needs it.
    if not (population > 0 and 0 < cohort <= population):
        raise CalculatorError(f'--population and --cohort: --dp=tree needs 0 < cohort <= '
                              f'population (the epoch is population // cohort rounds), got '
                              f'{cohort} and {population}')
    epoch = tree.rounds_per_epoch(population, cohort)
    if tree_restart < 0 or (tree_restart and epoch % tree_restart):
        raise CalculatorError(f'--tree_restart: must divide the epoch of {epoch} rounds, or be 0 '
                              f'(one tree per epoch); got {tree_restart}')
    _check_common(noise_multiplier, rounds, delta, target_epsilon)
    per_tree = tree_restart or epoch

    def epsilon(z: float) -> float:
        return tree.TreeLedger(z, per_tree, delta, rounds_per_epoch=epoch).epsilon(rounds)

    if target_epsilon:
        low, high = 0.0, 1.0
        while epsilon(high) > target_epsilon:
            low, high = high, 2 * high
        for _ in range(60):
            middle = (low + high) / 2
            low, high = (middle, high) if epsilon(middle) > target_epsilon else (low, middle)
        noise_multiplier = high
    return {'noise_multiplier': noise_multiplier, 'rounds': rounds, 'delta': delta,
            'sampling': Mechanism.TREE, 'population': population, 'cohort': cohort,
            'rounds_per_epoch': epoch, 'rounds_per_tree': per_tree,
            'epsilon_rdp': epsilon(noise_multiplier)}


def format_result(result: dict, solved_for_noise: bool) -> str:
    """A few lines describing `calculate`'s (or `calculate_tree`'s) result."""
    how = (f"Poisson sampling, q = {result['q']:.6g}" if result['sampling'] == Sampling.POISSON else
           f"tree aggregation (DP-FTRL), {result['cohort']} of {result['population']} clients a "
           f"round, each at most once per epoch of {result['rounds_per_epoch']} rounds, the tree "
           f"restarted every {result['rounds_per_tree']} rounds"
           if result['sampling'] == Mechanism.TREE else
           f"fixed-size sampling of {result['cohort']} of {result['population']} without replacement")
    lines = []
    if solved_for_noise:
        lines.append(f"noise multiplier z = {result['noise_multiplier']:.4f} (smallest meeting the target, RDP)")
    eps = result['epsilon_rdp']
    lines.append(f"epsilon = {eps:.4f} (RDP)" if math.isfinite(eps) else 'epsilon = inf (no noise)')
    if 'epsilon_pld' in result and math.isfinite(result['epsilon_pld']):
        lines.append(f"epsilon = {result['epsilon_pld']:.4f} (PLD)")
    lines.append(f"after {result['rounds']} rounds at delta = {result['delta']:g}, z = "
                 f"{result['noise_multiplier']:.4g}, {how}")
    return '\n'.join(lines)
