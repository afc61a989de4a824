"""`log`: ledger entries, newest first."""

from __future__ import annotations

import argparse

from .. import ledger
from ..git import Repo
from ..policy import SigStatus, claimed_timeline
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


def _sigs_json(status: SigStatus | None) -> dict[str, object] | None:
    """`signatures` in `log --json`: null for cosign/timestamp/witness entries (no threshold of their own)."""
    return status.as_json() if status is not None else None


def _sigs_marker(typ: str, status: SigStatus | None) -> str:
    if status is None or not status.pending:
        return ""
    if typ == "policy":  # judged at its position: below threshold it is never adopted, not "pending"
        return f"  [NOT ADOPTED: {status.have}/{status.need} signatures]"
    return f"  [pending signatures {status.have}/{status.need}; missing: {', '.join(status.missing)}]"


def run(args: argparse.Namespace) -> int:
    repo = Repo.discover()
    _, entries = ledger.load(repo)
    # pending signatures from the signers each entry *claims* (no signature verified: `verify` is the authority)
    sig_status = claimed_timeline(entries).status
    rows = [(i, e) for i, e in enumerate(entries) if not args.type or e.type == args.type]
    rows.reverse()
    if args.max_count is not None:
        rows = rows[: max(args.max_count, 0)]
    if args.json:
        print_json([{**entry_json(i, e), "signatures": _sigs_json(sig_status.get(i))} for i, e in rows])
        return 0
    for i, e in rows:
        print(f"#{i:<5} {e.id[:12]} {e.body['recorded_at']} {e.type:<9} {describe(e.body)}"
              + _sigs_marker(e.type, sig_status.get(i)))
    return 0
