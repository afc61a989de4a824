"""`verify`: fail closed. Exit 0 only when every required check passed."""

from __future__ import annotations

import argparse

from ..git import Repo
from ..ui import print_json
from ..verification import Options, summarize, verify


def run(args: argparse.Namespace) -> int:
    repo = Repo.discover()
    allow = frozenset({"pending"} if args.allow_pending else set())
    signer = None
    if args.vsa:  # checked before verifying, so a bad key or a missing REV fails fast
        from ..intoto import vsa_signer, write_vsa

        signer = vsa_signer(args.vsa_key, args.rev)
    opts = Options(target=args.rev, all=args.all, artifacts=args.artifact, trust_root=args.trust_root, allow=allow)
    report = verify(repo, opts)
    if args.allow_pending:
        report.allowed.append("--allow-pending")
    if signer is not None:  # written for FAILED results too: it says exactly what this report says
        write_vsa(repo, report, args.rev, args.vsa, signer)
    if args.json:
        from .. import timings

        print_json({**report.as_json(), **timings.json_field()})
    else:
        for line in summarize(report):
            print(line)
        trust = "pinned trust root" if report.trust == "pinned" else "TRUST ON FIRST USE (no trust root pinned)"
        allowed = f" (allowed: {', '.join(report.allowed)})" if report.allowed else ""
        failed = [c for c in report.checks if not c.ok]
        verdict = "OK" if report.ok else f"FAILED: {len(failed)} check(s), first {failed[0].code}"
        print(f"verify {args.rev or '--all'}: {verdict}; {trust}{allowed}")
    return 0 if report.ok else 1
