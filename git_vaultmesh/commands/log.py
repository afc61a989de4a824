"""`log`: ledger entries, newest first."""

from __future__ import annotations

import argparse

from .. import ledger
from ..git import Repo
from ..policy import SigStatus, claimed_timeline
from ..ui import print_json
from .show import entry_json


def describe(e_body: dict[str, object], targets: dict[str, tuple[int, str]] | None = None) -> str:
    """One row's words. A cosign names its target by body digest, a timestamp by entry id: both are shown
    the way the rows are (`#seq id`), through `targets` (either digest -> (seq, entry id))."""
    subj = e_body.get("subject")
    ref = subj.get("ref") if isinstance(subj, dict) else None
    parts = [str(e_body.get(k)) for k in ("component", "version") if e_body.get(k)]
    if ref:
        parts.append(str(ref))
    if e_body.get("type") == "policy" and e_body.get("message"):
        parts.append(str(e_body["message"])[:60])
    if e_body.get("environment"):
        parts.append(f"env={e_body['environment']}")
    if e_body.get("type") in ("cosign", "timestamp"):
        named = e_body.get("entry")
        hit = (targets or {}).get(str(named)) if named is not None else None
        if hit is not None:
            parts.append(f"-> #{hit[0]} {hit[1][:12]}")
        elif named is not None:
            parts.append(f"-> {str(named)[:12]} (not in this log)")
        else:
            parts.append(f"-> checkpoint size {e_body.get('checkpoint')}")
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
    targets = {d: (i, e.id) for i, e in enumerate(entries) for d in (e.id, e.body_digest)}
    rows = [(i, e) for i, e in enumerate(entries) if not args.type or e.type == args.type]
    rows.reverse()
    if args.max_count is not None:
        rows = rows[: max(args.max_count, 0)]
    if args.json:
        print_json([{**entry_json(i, e), "signatures": _sigs_json(sig_status.get(i))} for i, e in rows])
        return 0
    for i, e in rows:
        print(f"#{i:<5} {e.id[:12]} {e.body['recorded_at']} {e.type:<9} {describe(e.body, targets)}".rstrip()
               + _sigs_marker(e.type, sig_status.get(i)))
    return 0
