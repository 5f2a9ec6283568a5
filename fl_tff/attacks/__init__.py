"""Attacks on federated training, for evaluating robust aggregators: each declared as an
`options.Option` in its own module and registered here by one line (see `base` for what a
malicious client does and where).

An attack's builder is `build(*, num_classes, **params) -> Attack` (`none`: None).
"""

from __future__ import annotations

from fl_tff import options
from fl_tff.attacks import backdoor, gaussian, label_flip, scale, sign_flip
from fl_tff.attacks.backdoor import BackdoorEvaluator
from fl_tff.attacks.base import Attack, choose_malicious

ATTACKS = options.Registry('attack', 'Attack by a seeded --attack_fraction of the clients, for '
                           'evaluating robust aggregators.', [
    options.Option('none', 'every client is honest', build=lambda **_: None),
    label_flip.OPTION,
    sign_flip.OPTION,
    scale.OPTION,
    gaussian.OPTION,
    backdoor.OPTION,
], default='none')
