"""The `--dp` modes, one registry line each (declared in the modules that implement them)."""

from fl_tff import options
from fl_tff.privacy import aggregators, distributed, dpsgd, tree

DP_MODES = options.Registry('dp', 'Differential privacy.', [
    aggregators.NO_DP,
    aggregators.FIXED,
    aggregators.ADAPTIVE,
    distributed.OPTION,
    dpsgd.OPTION,
    tree.OPTION,
], default='none')
