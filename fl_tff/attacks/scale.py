"""Update scaling (Bhagoji et al. 2019, "Analyzing Federated Learning through an Adversarial
Lens", explicit boosting): a malicious client sends s x its honest update, so a plain mean
follows it."""

from __future__ import annotations

from fl_tff import options
from fl_tff.attacks import base


def build_scale(*, num_classes: int, attack_fraction: float, attack_scale: float) -> base.Attack:
    """The scaling attack (`num_classes` unused), s = `attack_scale`."""
    del num_classes
    return base.Attack('scale', attack_fraction, update_scale=attack_scale)


OPTION = options.Option(
    'scale', 'malicious clients send s x their update (s = --attack_scale)',
    params=(base.ATTACK_FRACTION, base.ATTACK_SCALE), build=build_scale,
    requires=base.NEEDS_UPDATE_ATTACKS)
