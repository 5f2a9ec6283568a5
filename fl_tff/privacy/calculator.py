"""The privacy calculator behind `experiments.privacy_calculator`: ε for a DP-FedAvg (or DP-SGD)
configuration, or the noise multiplier a target ε needs."""

from __future__ import annotations

import math

from fl_tff.privacy.accounting import SAMPLINGS, SampledGaussian, check_delta, noise_for_epsilon


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
    if sampling == 'uniform':
        raise CalculatorError('--population and --cohort: fixed-size (uniform) sampling needs both')
    if not 0 < q <= 1:
        raise CalculatorError(f'--q: the sampling rate must be in (0, 1], got {q} (or give '
                              '--population and --cohort)')
    return dict(q=q)


def calculate(*, noise_multiplier: float, rounds: int, delta: float, sampling: str = 'poisson',
              q: float = 0.0, population: int = 0, cohort: int = 0,
              target_epsilon: float = 0.0) -> dict:
    """ε (RDP, and PLD for Poisson sampling) after `rounds` sampled Gaussian mechanisms; with
    `target_epsilon` > 0, the noise multiplier that reaches it instead (and its ε)."""
    args = _mechanism_args(q, population, cohort, sampling)
    if rounds < 1:
        raise CalculatorError(f'--rounds: must be >= 1, got {rounds}')
    try:
        check_delta(delta)
    except ValueError as e:
        raise CalculatorError(f'--delta: {e}') from e
    if target_epsilon < 0:
        raise CalculatorError(f'--target_epsilon: must be >= 0, got {target_epsilon}')
    if target_epsilon:
        noise_multiplier = noise_for_epsilon(target_epsilon, delta, rounds, sampling, **args)
    elif noise_multiplier < 0:
        raise CalculatorError(f'--noise_multiplier: must be >= 0, got {noise_multiplier}')
    mechanism = SampledGaussian(noise_multiplier, sampling, **args)
    result = {'noise_multiplier': noise_multiplier, 'rounds': rounds, 'delta': delta,
              'sampling': sampling, **args, 'epsilon_rdp': mechanism.epsilon(rounds, delta)}
    if mechanism.supports_pld:
        result['epsilon_pld'] = mechanism.epsilon(rounds, delta, 'pld')
    return result


def format_result(result: dict, solved_for_noise: bool) -> str:
    """A few lines describing `calculate`'s result."""
    how = (f"Poisson sampling, q = {result['q']:.6g}" if result['sampling'] == 'poisson' else
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
