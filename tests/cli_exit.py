"""`ppsample ARGV` in process, ending as the console script does: pipelines.cli.main returns a
status, or raises SystemExit for an error (argparse's way); a SystemExit with a message is exit
1 with the message on stderr, printed here as the interpreter would print it."""
from __future__ import annotations

import sys

from pipelines import cli


def exit_status(argv: list[str]) -> int:
    try:
        return cli.main(argv)
    except SystemExit as exit_info:
        if isinstance(exit_info.code, str):
            print(exit_info.code, file=sys.stderr)
            return 1
        return 0 if exit_info.code is None else exit_info.code
