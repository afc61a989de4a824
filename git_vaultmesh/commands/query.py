"""`query`: full-text and field search over the ledger, answered from the derived index (unverified).

Also the output shared by `list` and `timeline`: aligned human lines (colour on a terminal, paged like `git log`),
`--json` (schema "vaultmesh-query/1", docs/query.md) and `--yaml`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .. import index
from ..errors import VaultMeshError
from ..git import Repo

JSON_SCHEMA = "vaultmesh-query/1"
UNVERIFIED_NOTE = ("unverified: read from the index of the log, which `verify` never trusts; "
                   "pass --verified to verify the ledger first")


def query_from_args(args: argparse.Namespace, *, pattern: str = "", newest_first: bool = True) -> index.Query:
    """The Query the common flags describe; bad patterns, dates, types and limits raise VM-QUERY-INVALID."""
    terms, excluded = index.parse_pattern(pattern)
    since = index.parse_date(args.since, end=False, what="--since") if getattr(args, "since", None) else None
    until = index.parse_date(args.until, end=True, what="--until") if getattr(args, "until", None) else None
    if since is not None and until is not None and since > until:
        raise index.invalid(f"--since {args.since} is after --until {args.until}", "swap the two dates")
    return index.Query(
        terms=terms, excluded=excluded, types=index.check_types(getattr(args, "type", None) or []),
        component=getattr(args, "component", None), version=getattr(args, "version_", None),
        environment=getattr(args, "environment", None), signer=getattr(args, "signer", None),
        since=since, until=until, limit=index.check_limit(getattr(args, "limit", None)), newest_first=newest_first,
    )


def usage_errors(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Bad input (VM-QUERY-INVALID) exits 2, like any usage error, with the code and hint printed."""

    def wrapped(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except VaultMeshError as exc:
            if exc.code != "VM-QUERY-INVALID":
                raise
            if getattr(args, "json", False):
                from ..ui import print_json

                print_json({"ok": False, "error": exc.as_dict()})
            print(exc.render(), file=sys.stderr)
            return 2

    return wrapped


class Source:
    """Where results come from: the index (the default, unverified), or with --verified an index built in memory
    from the log just after `verify` passed on it (the index file is not read at all then)."""

    def __init__(self, repo: Repo, verified: bool, head: str | None) -> None:
        self.repo = repo
        self.verified = verified
        self.head = head  # the log head as the command started

    def read(self, fn: Callable[[index.Index], Any]) -> tuple[Any, dict[str, Any]]:
        if not self.verified:
            return index.with_index(self.repo, lambda ix: (fn(ix), self._about(ix)), self.head)
        return self._verified(fn)

    def _about(self, ix: index.Index) -> dict[str, Any]:
        return {"verified": self.verified, "head": ix.head, "size": ix.size, "unreadable": ix.skipped}

    def _verified(self, fn: Callable[[index.Index], Any]) -> tuple[Any, dict[str, Any]]:
        from ..verification import Options, verify

        head = self.repo.ref_oid(index.REF_LOG)
        report = verify(self.repo, Options(remember=False))
        if not report.ok:
            failed = next(c for c in report.checks if not c.ok)
            raise VaultMeshError(failed.code or "VM-LOG-CORRUPT",
                                 f"--verified: the ledger does not verify ({failed.check}: {failed.detail})",
                                 "run `git vaultmesh verify` to see every failed check; without --verified the "
                                 "index still answers (unverified)")
        import sqlite3

        db = sqlite3.connect(":memory:", isolation_level=None)
        index._create(db)
        ix = index._refresh(self.repo, db, head or "")
        try:
            if ix.head != head or self.repo.ref_oid(index.REF_LOG) != head:
                raise VaultMeshError("VM-RACE-LOST", "the ledger moved while it was being verified",
                                     "run the command again")
            return fn(ix), {**self._about(ix), "trust": report.trust}
        finally:
            ix.close()


# --- output -------------------------------------------------------------------------------------------------

COLOURS = {"release": "32", "deploy": "36", "adr": "35", "decision": "35", "policy": "33", "witness": "34"}


def colour(on: bool, text: str, code: str | None) -> str:
    return f"\033[{code}m{text}\033[0m" if on and code else text


def use_colour() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def describe(h: index.Hit) -> str:
    parts = [x for x in (h.component, h.version) if x]
    if h.number is not None:
        parts.append(f"{record_id(h.type, h.number)}")
    if h.title:
        parts.append(h.title)
    if h.subject_ref:
        parts.append(h.subject_ref)
    if h.environment:
        parts.append(f"-> {h.environment}")
    if h.peer:
        parts.append(f"peer {h.peer}")
    return " ".join(parts)


def record_id(typ: str, number: int) -> str:
    return f"{'ADR' if typ == 'adr' else 'DEC'}-{number:04d}"


def human_line(h: index.Hit, on: bool) -> str:
    return (f"#{h.seq:<6} {h.id[:12]} {h.recorded_at} {colour(on, f'{h.type:<9}', COLOURS.get(h.type))} "
            f"{describe(h)}")


def entries_json(repo: Repo, about: dict[str, Any], hits: list[index.Hit]) -> list[dict[str, Any]]:
    """The shape of `show --json` and `log --json` items (seq, id, body_digest, the entry), read from the log."""
    from .show import entry_json

    return [entry_json(h.seq, e) for h, e in zip(hits, index.entries_of(repo, about["head"], hits))]


def emit(args: argparse.Namespace, about: dict[str, Any], results: list[Any], lines: Sequence[str]) -> int:
    """--json / --yaml: {"schema", "verified", "log": {...}, "results": [...]}; else the lines, paged on a
    terminal, and the unverified note on stderr when it is a terminal too."""
    if getattr(args, "json", False) or getattr(args, "yaml", False):
        doc = {"schema": JSON_SCHEMA, "verified": about["verified"], **({"trust": about["trust"]} if "trust" in about else {}),
               "log": {"head": about["head"], "size": about["size"], "unreadable": about["unreadable"]},
               "results": results}
        from ..ui import print_json, print_yaml

        (print_yaml if getattr(args, "yaml", False) else print_json)(doc)
        return 0
    page("\n".join(lines) + "\n" if lines else "")
    if about["unreadable"]:
        print(f"warning: {about['unreadable']} entr{'y' if about['unreadable'] == 1 else 'ies'} of the log could "
              "not be read and are left out; run `git vaultmesh verify --all`", file=sys.stderr)
    if not about["verified"] and sys.stderr.isatty() and os.environ.get("GIT_VAULTMESH_VERBOSITY") != "quiet":
        print(UNVERIFIED_NOTE, file=sys.stderr)
    return 0


def page(text: str) -> None:
    """Long output on a terminal goes through the pager, as `git log` does (GIT_PAGER, PAGER, else less -FRX)."""
    if not text:
        return
    if not sys.stdout.isatty() or text.count("\n") < _rows():
        sys.stdout.write(text)
        return
    pager = os.environ.get("GIT_PAGER") or os.environ.get("PAGER") or "less"
    if pager in ("", "cat"):
        sys.stdout.write(text)
        return
    env = dict(os.environ)
    env.setdefault("LESS", "FRX")
    try:
        proc = subprocess.Popen(pager, shell=True, stdin=subprocess.PIPE, env=env)
    except OSError:
        sys.stdout.write(text)
        return
    assert proc.stdin is not None
    try:
        proc.stdin.write(text.encode(errors="replace"))
        proc.stdin.close()
    except BrokenPipeError:  # the user quit the pager early
        pass
    proc.wait()


def _rows() -> int:
    try:
        return os.get_terminal_size().lines - 1
    except OSError:
        return 1 << 30


@usage_errors
def run(args: argparse.Namespace) -> int:
    q = query_from_args(args, pattern=" ".join(args.pattern), newest_first=not args.reverse)
    repo, head = Repo.discover_with_ref(index.REF_LOG)
    hits, about = Source(repo, args.verified, head).read(lambda ix: ix.search(q))
    on = use_colour()
    as_data = args.json or args.yaml
    return emit(args, about, entries_json(repo, about, hits) if as_data else [],
                [] if as_data else [human_line(h, on) for h in hits])
