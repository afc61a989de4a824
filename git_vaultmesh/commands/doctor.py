"""`doctor`: check what is derived from the log (notes, keep-refs) and, with --repair, rebuild it.

The log is the source of truth; notes are an index for `git log --notes=vaultmesh`. A crash between
writing objects and the ref transaction leaves only unreachable objects (gc removes them), never a
half-updated ref pair, so the usual finding is notes damaged by hand or by a foreign tool.
"""

from __future__ import annotations

import argparse
from typing import Any

from .. import ledger
from ..git import RefUpdate, Repo
from ..ui import print_json
from ..verification import doctor


def findings(repo: Repo) -> tuple[list[str], ledger.Head, list[Any]]:
    """The failed checks of verification.doctor, one line each (they name their code)."""
    report = doctor(repo)
    head, entries = ledger.load_consistent(repo)
    problems = [f"{c.detail} ({c.code})" for c in report.checks if not c.ok]
    return problems, head, entries


def run(args: argparse.Namespace) -> int:
    repo = Repo.discover()
    problems, head, entries = findings(repo)
    repaired = False
    if args.repair and any("VM-NOTES-MISMATCH" in p for p in problems):
        notes = ledger.rebuild_notes(repo, head.commit, entries, [head.notes] if head.notes else [])
        repaired = repo.update_refs([RefUpdate(ledger.REF_NOTES, notes, head.notes),
                                     RefUpdate(ledger.REF_LOG, head.commit or "", head.commit)])
        if repaired:
            problems, head, entries = findings(repo)
    from ..rfc3161.timestamping import doctor_warnings

    warnings = doctor_warnings(head.log_id, entries)  # TSA certificates about to expire: advice, not a failure
    if args.json:
        print_json({"ok": not problems, "problems": problems, "repaired": repaired, "warnings": warnings})
    else:
        for w in warnings:
            print(f"warning: {w}")
        for p in problems:
            print(f"problem: {p}")
        if repaired:
            print("repaired: rebuilt refs/notes/vaultmesh from the log")
        print("doctor: " + ("nothing to report" if not problems else f"{len(problems)} problem(s)"
                            + ("" if args.repair else "; run `git vaultmesh doctor --repair`")))
    return 0 if not problems else 1
