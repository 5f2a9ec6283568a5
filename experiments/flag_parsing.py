"""absl's flag parsing for every driver (`app.run(main, flags_parser=parse_flags)`): a flag that
does not parse (unknown, or a value of the wrong type) is one line and exit 2, not absl's exit 1.

Imports nothing heavy: drivers that need no TensorFlow (the privacy calculator) stay free of it.
"""

from __future__ import annotations

import sys

from absl import flags

EXIT_BAD_INPUT = 2


def parse_flags(argv: list[str]) -> list[str]:
    """Parses `argv` into absl's flags; one line and exit 2 when a flag does not parse."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        print(f'error: {e}; --helpfull lists the valid flags', file=sys.stderr)
        runtime = sys.modules.get('fl_tff.runtime')
        if runtime is not None:  # TFF's stock context would print a traceback at exit.
            runtime.drop_stock_context()
        sys.exit(EXIT_BAD_INPUT)
