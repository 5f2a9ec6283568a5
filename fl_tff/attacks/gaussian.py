"""Gaussian noise (Blanchard et al. 2017, "Machine Learning with Adversaries: Byzantine Tolerant
Gradient Descent", §5): a malicious client sends N(0, s^2 I) instead of its update."""

from __future__ import annotations

from fl_tff import options
from fl_tff.attacks import base


def build_gaussian(*, num_classes: int, attack_fraction: float,
                   attack_scale: float) -> base.Attack:
    """The Gaussian attack (`num_classes` unused), standard deviation s = `attack_scale`."""
    del num_classes
    return base.Attack('gaussian', attack_fraction, update_scale=0.0, update_noise=attack_scale)


OPTION = options.Option(
    'gaussian', 'malicious clients send N(0, s^2) noise instead of their update '
    '(s = --attack_scale)',
    params=(base.ATTACK_FRACTION, base.ATTACK_SCALE), build=build_gaussian,
    requires=base.NEEDS_UPDATE_ATTACKS)
