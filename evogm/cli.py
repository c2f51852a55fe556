"""The `evogm` command line: parses arguments, calls the library, prints.

Each subcommand lives in `evogm/commands/<name>.py` with `add_parser(subparsers)` (which sets
`func`). A user mistake (EvogmError) is printed as one line and exits with status 2.

    $ evogm --help
"""

from __future__ import annotations

import argparse
import os
import sys

from evogm.commands import compare, demo, merge, run, zoo
from evogm.commands import eval as eval_
from evogm.errors import EvogmError

COMMANDS = [merge, run, demo, eval_, compare, zoo]  # modules of evogm.commands, in --help order


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evogm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def _quiet_libraries() -> None:
    """One-line warnings from evogm; no progress bars or info logs from transformers."""
    import warnings

    from evogm.errors import EvogmWarning

    show = warnings.showwarning

    def one_line(message, category, *args, **kwargs):
        if issubclass(category, EvogmWarning):
            print(f"evogm: warning: {message}", file=sys.stderr)
        else:
            show(message, category, *args, **kwargs)

    warnings.showwarning = one_line
    # read by transformers and huggingface_hub when they are imported, which a command may never need;
    # where they already are (a caller imported them), set directly
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    try:
        return int(args.func(args) or 0)
    except EvogmError as exc:
        print(f"evogm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"evogm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
