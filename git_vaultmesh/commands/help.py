"""`help [VERB…]`: the terminal help of the tool or a verb (`--help` is git's, and opens the man page)."""

from __future__ import annotations

import argparse

from ..cli import build_parser


def run(args: argparse.Namespace) -> int:
    try:
        build_parser().parse_args([*args.verb, "-h"])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
