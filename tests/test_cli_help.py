"""`lstmkit COMMAND --help` prints the usage and every flag of each command and exits 0 (a help text with a
literal % once crashed argparse's formatting with a traceback)."""
import subprocess
import sys

import pytest

from lstmkit.cli import COMMANDS, build_parser


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_lists_every_flag_and_exits_0(name):
    result = subprocess.run([sys.executable, "-m", "lstmkit", name, "--help"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"usage: lstmkit {name}")
    parser = build_parser()._subparsers._group_actions[0].choices[name]
    flags = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
    assert flags and all(flag in result.stdout for flag in flags)
