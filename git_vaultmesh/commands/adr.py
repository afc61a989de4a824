"""`adr`: architecture decision records as signed ledger entries — numbered, titled, with a status and
supersedes / superseded-by links.

An ADR is every `adr` entry carrying its number: the first is its creation, later ones are revisions (a status
change). Numbers are taken from the log itself (the highest so far, plus one) on every append attempt, so two
clones creating ADRs at once get distinct numbers after the compare-and-swap.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import tempfile
from typing import Any

from .. import ledger
from ..config import signing_key
from ..entry import Entry, now_rfc3339, sign_body
from ..errors import VaultMeshError
from ..git import Repo
from ..policy import may_sign
from ..ui import print_json
from .record import current_policy

STATUSES = ("proposed", "accepted", "rejected", "deprecated", "superseded")
_ID = re.compile(r"^(?:ADR-?)?0*([1-9][0-9]{0,8})\Z", re.IGNORECASE)


def bad(cause: str, hint: str) -> VaultMeshError:
    return VaultMeshError("VM-ADR-INVALID", cause, hint)


def parse_id(text: str) -> int:
    m = _ID.match(text.strip())
    if m is None:
        raise bad(f"{text!r} does not name an ADR", "name it ADR-0007 (or 7)")
    return int(m.group(1))


def _document(args: argparse.Namespace, title: str) -> str:
    if args.message is not None:
        return str(args.message)
    if args.file is not None:
        try:
            with open(args.file, encoding="utf-8") as fh:
                return fh.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise bad(f"cannot read {args.file}: {exc}", "give a readable UTF-8 file, or --message TEXT") from None
    editor = os.environ.get("GIT_EDITOR") or os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    fd, path = tempfile.mkstemp(prefix="ADR-", suffix=".md")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(f"# {title}\n\n## Context\n\n## Decision\n\n## Consequences\n")
        res = subprocess.run([*shlex.split(editor), path])
        if res.returncode != 0:
            raise bad(f"the editor ({editor}) exited with {res.returncode}", "nothing was recorded; run it again")
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        raise bad(f"no editor: {editor} is not installed", "pass --message TEXT or --file FILE, or set EDITOR") from None
    finally:
        os.unlink(path)


def _adrs(repo: Repo, head: ledger.Head) -> dict[int, list[tuple[int, Entry]]]:
    """Every ADR in the log at `head` by number: its entries in log order (read from the log, not the index)."""
    found: dict[int, list[tuple[int, Entry]]] = {}
    for seq, e in ledger.find_entries(repo, head, {"type": "adr"}):
        n = e.body.get("number")
        if isinstance(n, int) and not isinstance(n, bool):
            found.setdefault(n, []).append((seq, e))
    return found


def _append(repo: Repo, make: Any) -> tuple[ledger.AppendResult, Entry]:
    key = signing_key(repo)
    made: list[Entry] = []

    def build(repo_: Repo, head: ledger.Head) -> list[Entry]:
        if head.log_id is None:
            raise VaultMeshError("VM-NOT-INITIALIZED", f"{ledger.REF_LOG} does not exist", "run `git vaultmesh init`")
        may_sign(current_policy(repo_, head), key, "adr")
        body = make(_adrs(repo_, head), head.log_id)
        entry = sign_body(body, key)
        made[:] = [entry]
        return [entry]

    return ledger.append(repo, key, build), made[0]


def create(args: argparse.Namespace, repo: Repo) -> tuple[ledger.AppendResult, Entry]:
    title = " ".join(args.title.split())
    if not title:
        raise bad("the title is empty", 'give a title: git vaultmesh adr create "Use PostgreSQL"')
    supersedes = sorted({parse_id(s) for s in args.supersedes})
    document = _document(args, title)

    def make(adrs: dict[int, list[tuple[int, Entry]]], log_id: str) -> dict[str, Any]:
        missing = [n for n in supersedes if n not in adrs]
        if missing:
            raise bad(f"ADR-{missing[0]:04d} is not in the ledger", "`git vaultmesh list adrs` shows them")
        body: dict[str, Any] = {"type": "adr", "log": log_id, "recorded_at": now_rfc3339(),
                                "number": max(adrs, default=0) + 1, "title": title, "status": args.status,
                                "document": document}
        if supersedes:
            body["supersedes"] = supersedes
        return body

    return _append(repo, make)


def set_status(args: argparse.Namespace, repo: Repo) -> tuple[ledger.AppendResult, Entry]:
    number = parse_id(args.adr)

    def make(adrs: dict[int, list[tuple[int, Entry]]], log_id: str) -> dict[str, Any]:
        if number not in adrs:
            raise bad(f"ADR-{number:04d} is not in the ledger", "`git vaultmesh list adrs` shows them")
        last = adrs[number][-1][1].body
        body = {k: v for k, v in last.items() if k in ("title", "document", "supersedes", "component")}
        body.update({"type": "adr", "log": log_id, "recorded_at": now_rfc3339(), "number": number,
                     "status": args.status})
        if args.message:
            body["message"] = args.message
        return body

    return _append(repo, make)


def run(args: argparse.Namespace) -> int:
    repo = Repo.discover()
    if args.adr_command == "create":
        result, entry = create(args, repo)
    elif args.adr_command == "status":
        result, entry = set_status(args, repo)
    else:
        raise VaultMeshError("VM-USAGE", "adr needs a subcommand", "git vaultmesh adr create TITLE | adr status ADR STATUS")
    b = entry.body
    ident = f"ADR-{b['number']:04d}"
    if args.json:
        print_json({"ok": True, "id": ident, "number": b["number"], "status": b["status"], "seq": result.first_seq,
                    "entry": entry.id})
    else:
        what = "recorded" if args.adr_command == "create" else f"set to {b['status']}"
        print(f"{ident} {what}: {b['title']} (entry #{result.first_seq}, {entry.id[:12]})")
    return 0
