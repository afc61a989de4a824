"""`log`: ledger entries, newest first."""

from __future__ import annotations

import argparse

from .. import ledger
from ..git import Repo
from ..ui import print_json
from .show import entry_json


def describe(e_body: dict[str, object]) -> str:
    subj = e_body.get("subject")
    ref = subj.get("ref") if isinstance(subj, dict) else None
    parts = [str(e_body.get(k)) for k in ("component", "version") if e_body.get(k)]
    if ref:
        parts.append(str(ref))
    if e_body.get("type") in ("cosign", "timestamp"):
        parts.append(f"-> {str(e_body.get('entry') or e_body.get('checkpoint'))[:12]}")
    return " ".join(parts)


def run(args: argparse.Namespace) -> int:
    repo = Repo.discover()
    _, entries = ledger.load(repo)
    rows = [(i, e) for i, e in enumerate(entries) if not args.type or e.type == args.type]
    rows.reverse()
    if args.max_count is not None:
        rows = rows[: max(args.max_count, 0)]
    if args.json:
        print_json([entry_json(i, e) for i, e in rows])
        return 0
    for i, e in rows:
        print(f"#{i:<5} {e.id[:12]} {e.body['recorded_at']} {e.type:<9} {describe(e.body)}")
    return 0
