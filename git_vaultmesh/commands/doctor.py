"""`doctor`: the health of this clone — ledger, index, config, keys, TSAs, hooks — and, with --repair, rebuild
what is derived from the log (the notes).

The log is the source of truth; notes are an index for `git log --notes=vaultmesh`. A crash between
writing objects and the ref transaction leaves only unreachable objects (gc removes them), never a
half-updated ref pair, so the usual finding is notes damaged by hand or by a foreign tool.

By default the ledger's derived state is checked only over what changed since the last clean doctor
(health.py says when that is not enough and the whole log is swept); `--full` sweeps it always.
"""

from __future__ import annotations

import argparse

from .. import ledger
from ..git import RefUpdate, Repo
from ..health import AREAS, Health, check
from ..ui import print_json


def run(args: argparse.Namespace) -> int:
    repo = Repo.discover()
    full = bool(getattr(args, "full", False))
    health = check(repo, full=full)
    repaired = False
    if args.repair and any("VM-NOTES-MISMATCH" in p for p in health.problems):
        head, entries = ledger.load_consistent(repo)
        notes = ledger.rebuild_notes(repo, head.commit, entries, [head.notes] if head.notes else [])
        repaired = repo.update_refs([RefUpdate(ledger.REF_NOTES, notes, head.notes),
                                     RefUpdate(ledger.REF_LOG, head.commit or "", head.commit)])
        if repaired:
            health = check(repo, full=True)
    if args.json:
        print_json({**health.as_json(), "repaired": repaired})
    else:
        _print(health, repaired, args.repair)
    return 0 if health.ok else 1


def _print(health: Health, repaired: bool, repair: bool) -> None:
    for name in AREAS:
        area = health.areas.get(name)
        if area is not None:
            print(f"{'ok  ' if area['ok'] else 'FAIL'} {name}: {area['detail']}")
    for w in health.warnings:
        print(f"warning: {w}")
    for p in health.problems:
        print(f"problem: {p}")
    if repaired:
        print("repaired: rebuilt refs/notes/vaultmesh from the log")
    fix = "" if repair or not any("VM-NOTES-MISMATCH" in p for p in health.problems) else \
        "; run `git vaultmesh doctor --repair`"
    print("doctor: " + ("nothing to report" if health.ok else f"{len(health.problems)} problem(s){fix}"))
