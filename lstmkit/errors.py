"""User-facing errors: a command reports ValueError / FileNotFoundError as one line and exits with code 2."""
from __future__ import annotations

import functools
import sys


def report_errors(main):
    @functools.wraps(main)
    def wrapper(args) -> int:
        try:
            return main(args)
        except (ValueError, FileNotFoundError) as e:
            print(f"lstmkit {getattr(args, 'command', '')}: error: {e}", file=sys.stderr)
            return 2
    return wrapper
