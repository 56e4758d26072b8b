"""User-facing errors: the bad-input exception types, and a command's report of ValueError / OSError (a missing file,
a full disk) as one line with exit code 2.

A forward input that torch.nn.LSTM refuses with a RuntimeError gets an exception that is a RuntimeError too, so code
written for torch (`except RuntimeError`) still catches it, and lstmkit's ValueError / TypeError with its message.
"""
from __future__ import annotations

import functools
import sys


class InputError(ValueError, RuntimeError):
    """A forward input or state of the wrong shape, size or device (torch.nn.LSTM: RuntimeError)."""


class InputTypeError(TypeError, ValueError, RuntimeError):
    """A forward input or state of the wrong dtype (torch.nn.LSTM: ValueError for the input's, RuntimeError for a
    state's)."""


def report_errors(main):
    @functools.wraps(main)
    def wrapper(args) -> int:
        try:
            return main(args)
        except (ValueError, OSError) as e:
            print(f"lstmkit {getattr(args, 'command', '')}: error: {e}", file=sys.stderr)
            return 2
    return wrapper
