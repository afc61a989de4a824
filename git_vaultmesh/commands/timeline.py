"""`timeline`: what happened when, oldest first, one heading per day, from the derived index."""

from __future__ import annotations

import argparse

from .. import index
from ..git import Repo
from .query import (
    COLOURS,
    Source,
    colour,
    describe,
    emit,
    entries_json,
    query_from_args,
    usage_errors,
    use_colour,
)


@usage_errors
def run(args: argparse.Namespace) -> int:
    q = query_from_args(args, newest_first=False)
    repo, head = Repo.discover_with_ref(index.REF_LOG)
    hits, about = Source(repo, args.verified, head).read(lambda ix: ix.search(q))
    if args.json or args.yaml:
        return emit(args, about, entries_json(repo, about, hits), [])
    on = use_colour()
    lines: list[str] = []
    day = None
    for h in hits:
        if h.recorded_at[:10] != day:
            day = h.recorded_at[:10]
            lines.append(colour(on, day, "1"))
        lines.append(f"  {h.recorded_at[11:19]}  #{h.seq:<6} {colour(on, f'{h.type:<9}', COLOURS.get(h.type))} "
                     f"{describe(h)}")
    return emit(args, about, [], lines)
