"""`--client_weighting`: what each client's update weighs in the mean.

Each option's builder returns the `tff.learning.ClientWeighting` its clients report.
"""

from __future__ import annotations

import tensorflow_federated as tff

from fl_tff import options

CLIENT_WEIGHTINGS = options.Registry('client_weighting', 'Weight of each client update in the mean.', [
    options.Option('examples', 'examples the client processed this round (n x local epochs, as '
                   'TFF\'s builders weight)', provides={options.FAST_PATH},
                   build=lambda: tff.learning.ClientWeighting.NUM_EXAMPLES),
    options.Option('uniform', 'every client update weighs the same',
                   provides={options.FAST_PATH, options.UNIFORM_WEIGHTS},
                   build=lambda: tff.learning.ClientWeighting.UNIFORM),
], default='examples', pipeline=True)
