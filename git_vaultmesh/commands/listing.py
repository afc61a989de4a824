"""`list`: releases, deploys, ADRs, decisions, federation peers, or every entry, from the derived index."""

from __future__ import annotations

import argparse
from typing import Any

from .. import index
from ..git import Repo
from .query import (
    Source,
    emit,
    entries_json,
    human_line,
    query_from_args,
    record_id,
    usage_errors,
    use_colour,
)

KINDS = {"releases": ["release"], "deploys": ["deploy"], "adrs": ["adr"], "decisions": ["decision"],
         "peers": ["witness"], "all": []}


def records(hits: list[index.Hit]) -> list[dict[str, Any]]:
    """ADRs or decisions, one per number: its newest revision, with superseded-by links derived from the
    `supersedes` of the others (a superseded record shows status "superseded"). Entries without a number (written
    by other tools) are records of their own, named by position."""
    latest: dict[int, index.Hit] = {}
    revisions: dict[int, list[int]] = {}
    loose: list[index.Hit] = []
    for h in sorted(hits, key=lambda h: h.seq):
        if h.number is None:
            loose.append(h)
        else:
            latest[h.number] = h
            revisions.setdefault(h.number, []).append(h.seq)
    by: dict[int, list[int]] = {}
    for n, h in latest.items():
        for old in h.supersedes or []:
            if old != n:
                by.setdefault(old, []).append(n)

    def row(h: index.Hit, ident: str, n: int | None) -> dict[str, Any]:
        sup = h.supersedes or []
        return {"id": ident, "number": n, "title": h.title,
                "status": "superseded" if n in by else h.status, "recorded_status": h.status,
                "supersedes": [record_id(h.type, x) for x in sup],
                "superseded_by": [record_id(h.type, x) for x in sorted(by.get(n, []))] if n is not None else [],
                "seq": h.seq, "recorded_at": h.recorded_at, "revisions": revisions.get(n, [h.seq]) if n else [h.seq]}

    return [row(latest[n], record_id(latest[n].type, n), n) for n in sorted(latest)] + [
        row(h, f"#{h.seq}", None) for h in loose]


def peers(hits: list[index.Hit]) -> list[dict[str, Any]]:
    """Each federation peer we witnessed: how often, and the newest witness entry."""
    seen: dict[str, dict[str, Any]] = {}
    for h in sorted(hits, key=lambda h: h.seq):
        if h.peer is None:
            continue
        item = seen.setdefault(h.peer, {"peer": h.peer, "log": h.peer_log, "witnessed": 0})
        item.update({"witnessed": item["witnessed"] + 1, "last_seq": h.seq, "last_recorded_at": h.recorded_at})
    return [seen[k] for k in sorted(seen)]


@usage_errors
def run(args: argparse.Namespace) -> int:
    q = query_from_args(args, newest_first=False)
    q.types = KINDS[args.kind]
    grouped = args.kind in ("adrs", "decisions", "peers")
    limit, q.limit = q.limit, (None if grouped else q.limit)
    repo, head = Repo.discover_with_ref(index.REF_LOG)
    hits, about = Source(repo, args.verified, head).read(lambda ix: ix.search(q))
    as_data = args.json or args.yaml
    if args.kind == "peers":
        rows = peers(hits)[:limit] if limit is not None else peers(hits)
        lines = [f"{r['peer']:<16} {str(r['log'])[:12]:<12} witnessed {r['witnessed']:>5}x, last #{r['last_seq']} "
                 f"{r['last_recorded_at']}" for r in rows]
        return emit(args, about, rows, lines)
    if grouped:
        rows = records(hits)[:limit] if limit is not None else records(hits)
        lines = [f"{r['id']}  {str(r['status']):<11} {str(r['recorded_at'])[:10]}  {r['title'] or ''}"
                 + (f"  (supersedes {', '.join(r['supersedes'])})" if r["supersedes"] else "")
                 + (f"  (superseded by {', '.join(r['superseded_by'])})" if r["superseded_by"] else "")
                 for r in rows]
        return emit(args, about, rows, lines)
    on = use_colour()
    return emit(args, about, entries_json(repo, about, hits) if as_data else [],
                [] if as_data else [human_line(h, on) for h in hits])
