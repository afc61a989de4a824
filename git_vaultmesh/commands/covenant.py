"""`covenant`: judge the Four Covenants now; a badge only from a covenant that passed in this very run."""

from __future__ import annotations

import argparse
import sys

from ..config import Settings
from ..covenants import BY_KEY, NOT_CONFIGURED, PASS, Context, Result, badge_svg, judge
from ..errors import VaultMeshError
from ..git import Repo
from ..ui import print_json

MARK = {PASS: "PASS", NOT_CONFIGURED: "n/a ", "fail": "FAIL"}


def exit_status(results: list[Result], strict: bool) -> int:
    """1 on any failure; with --strict also when a covenant is not configured (nothing was checked)."""
    if any(r.status == "fail" for r in results):
        return 1
    if strict and any(r.status == NOT_CONFIGURED for r in results):
        return 1
    return 0


def render(results: list[Result]) -> list[str]:
    lines = []
    for r in results:
        lines.append(f"{MARK[r.status]} {r.number:>3} {r.title}: {r.detail}")
        for c in r.checks:
            if not c.ok:
                lines.append(f"       {c.check}: {c.detail} [{c.code}]")
                if c.hint:
                    lines.append(f"       hint: {c.hint}")
    return lines


def run(args: argparse.Namespace) -> int:
    names: list[str] = list(dict.fromkeys(args.covenants))
    unknown = [n for n in names if n not in BY_KEY]
    problem = (f"no covenant named {', '.join(unknown)} (choose from {', '.join(BY_KEY)})" if unknown else
               "--badge needs exactly one covenant (e.g. git vaultmesh covenant integrity --badge badge.svg)"
               if args.badge and len(names) != 1 else None)
    if problem:
        print(f"git vaultmesh covenant: error: {problem}", file=sys.stderr)
        return 2
    repo = Repo.discover()
    ctx = Context(repo, Settings(repo), trust_root=args.trust_root, release=args.release)
    results = judge(ctx, names)
    status = exit_status(results, args.strict)
    badge_error: VaultMeshError | None = None
    if args.badge:
        try:
            svg = badge_svg(results[0])
        except VaultMeshError as exc:
            badge_error = exc
        else:
            with open(args.badge, "w", encoding="utf-8") as fh:
                fh.write(svg)
    if args.json:
        out = {"ok": status == 0, "strict": args.strict, "covenants": [r.as_json() for r in results]}
        if args.badge:
            out["badge"] = None if badge_error else args.badge
        print_json(out)
    else:
        for line in render(results):
            print(line)
        failed = [r for r in results if r.status == "fail"]
        print("covenant: " + ("OK" if status == 0 else
                              f"FAILED: {', '.join(f'{r.title} ({r.codes()[0] if r.codes() else r.status})' for r in failed) or 'not configured (--strict)'}"))
    if badge_error is not None:
        print(badge_error.render(), file=sys.stderr)
        return 1
    return status
