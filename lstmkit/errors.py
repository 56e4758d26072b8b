"""User-facing errors: a command reports ValueError / OSError (a missing file, a full disk) as one line and exits
with code 2."""
from __future__ import annotations

import functools
import sys


def report_errors(main):
    @functools.wraps(main)
    def wrapper(args) -> int:
        try:
            return main(args)
        except (ValueError, OSError) as e:
            print(f"lstmkit {getattr(args, 'command', '')}: error: {e}", file=sys.stderr)
            return 2
    return wrapper
