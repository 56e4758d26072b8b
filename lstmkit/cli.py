"""The `lstmkit` command: one subcommand per module, each module owning its flags."""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module that defines `add_arguments(parser)` and `main(args) -> int`
COMMANDS = {
    "train": "lstmkit.train",
    "sample": "lstmkit.sample",
    "compare": "lstmkit.compare",
    "compress": "lstmkit.compress.command",
    "bench": "lstmkit.bench",
    "info": "lstmkit.info",
    "forecast": "lstmkit.forecast.command",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lstmkit", description="LSTM networks from the equations up.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:
                raise
            continue  # command not built yet
        p = sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0],
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_main=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
