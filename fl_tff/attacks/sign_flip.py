"""Sign flipping (Damaskinos et al. 2018; Li et al. 2019, "RSA"): a malicious client sends
-s x its honest update, pulling the model back up the loss."""

from __future__ import annotations

from fl_tff import options
from fl_tff.attacks import base


def build_sign_flip(*, num_classes: int, attack_fraction: float,
                    attack_scale: float) -> base.Attack:
    """The sign-flipping attack (`num_classes` unused), s = `attack_scale`."""
    del num_classes
    return base.Attack('sign_flip', attack_fraction, update_scale=-attack_scale)


OPTION = options.Option(
    'sign_flip', 'malicious clients send -s x their update (s = --attack_scale)',
    params=(base.ATTACK_FRACTION, base.ATTACK_SCALE), build=build_sign_flip,
    requires=base.NEEDS_UPDATE_ATTACKS)
