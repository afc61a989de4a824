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


def findings(repo: Repo) -> tuple[list[str], ledger.Head, list[Any]]:
    head, entries = ledger.load_consistent(repo)
    expected = ledger.notes_for(entries)
    problems: list[str] = []
    actual: dict[str, str] = {}
    if head.notes is not None:
        for it in repo.ls_tree(head.notes):
            actual[it.path.replace("/", "")] = it.oid
    blobs = dict(zip(actual, repo.read_blobs(list(actual.values()))))
    for subject, content in expected.items():
        if subject not in actual:
            problems.append(f"note for {subject[:12]} is absent")
        elif blobs[subject] != content:
            problems.append(f"note for {subject[:12]} differs from the log")
    for subject in actual:
        if subject not in expected:
            problems.append(f"note on {subject[:12]} names no entry of the log")
    for e in entries:
        c = e.subject_commit
        if c and not repo.has_object(c):
            problems.append(f"entry {e.id[:12]}: subject commit {c[:12]} is missing (VM-SUBJECT-MISSING)")
    for lock in ledger.ref_locks(repo, older_than=ledger.STALE_LOCK_SECONDS):
        problems.append(f"stale lock {lock} (VM-REF-LOCKED): a git process died holding it; remove it if no git "
                        "process is running in this repository")
    return problems, head, entries


def run(args: argparse.Namespace) -> int:
    repo = Repo.discover()
    problems, head, entries = findings(repo)
    repaired = False
    if args.repair and any("note" in p for p in problems):
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
