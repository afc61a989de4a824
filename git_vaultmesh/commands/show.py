"""`show`: the receipts recorded for a tag, revision, entry id or #seq."""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

from .. import ledger
from ..entry import Entry
from ..errors import VaultMeshError
from ..git import Repo
from ..ui import print_json, print_yaml


def select(repo: Repo, entries: list[Entry], what: str) -> list[tuple[int, Entry]]:
    """Entries about `what`: #seq, an entry id (prefix >= 8), ADR-0007 / DEC-0007 (every revision of that
    record), or a ref/revision they name as subject."""
    record = re.match(r"^(ADR|DEC)-0*([1-9][0-9]{0,8})\Z", what, re.IGNORECASE)
    if record is not None:
        typ, number = ("adr" if record.group(1).upper() == "ADR" else "decision"), int(record.group(2))
        return [(i, e) for i, e in enumerate(entries) if e.type == typ and e.body.get("number") == number]
    if what.startswith("#") and what[1:].isdigit():
        seq = int(what[1:])
        return [(seq, entries[seq])] if seq < len(entries) else []
    low = what.lower()
    if len(low) >= 8 and all(c in "0123456789abcdef" for c in low):
        by_id = [(i, e) for i, e in enumerate(entries) if e.id.startswith(low)]
        if by_id:
            return by_id
    try:
        resolved = repo.resolve_name(what)
        ref, commit = resolved.refname, resolved.commit
        candidates = {ref} - {None}
    except VaultMeshError as exc:
        if exc.code != "VM-BAD-REV" or what.startswith("-") or not what.isprintable():
            raise
        ref, commit = None, None  # nothing by that name now (a deleted tag): receipts that named it
        candidates = {what, f"refs/tags/{what}"}
    return [(i, e) for i, e in enumerate(entries)
            if e.subject_ref in candidates or (commit is not None and e.subject_commit == commit)]


def entry_json(seq: int, e: Entry) -> dict[str, Any]:
    return {"seq": seq, "id": e.id, "body_digest": e.body_digest, "entry": json.loads(e.line)}


def run(args: argparse.Namespace) -> int:
    repo = Repo.discover()
    _, entries = ledger.load(repo)
    found = select(repo, entries, args.rev)
    if not found:
        raise VaultMeshError("VM-NOT-RECORDED", f"no receipt in the ledger names {args.rev}",
                             f"record it: git vaultmesh record {args.rev}")
    out = [entry_json(s, e) for s, e in found]
    if args.json:
        print_json(out)
    elif args.yaml:
        print_yaml(out)
    else:
        for s, e in found:
            b = e.body
            print(f"entry #{s} {e.id}")
            print(f"  type:        {b['type']}")
            print(f"  recorded_at: {b['recorded_at']}")
            for k in ("number", "title", "status", "supersedes", "component", "version", "environment", "message"):
                if k in b:
                    print(f"  {k + ':':<12} {b[k]}")
            for k, v in (b.get("subject") or {}).items():
                print(f"  subject.{k + ':':<5} {v}")
            if "history" in b:
                print(f"  history:     {b['history']['size']} commits, root {b['history']['root']}")
            if "tree_digest" in b:
                print(f"  tree_digest: {b['tree_digest']}")
            for a in b.get("artifacts", []):
                print(f"  artifact:    {a['name']} sha256:{a['sha256']}")
            if "document" in b:
                print("  document:\n" + "".join(f"    {line}\n" for line in str(b["document"]).splitlines()), end="")
            for sig in e.sigs:
                print(f"  signed by:   {sig['format']} {sig['signer']}")
    return 0
