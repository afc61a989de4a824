"""`export`: the receipts of a tag or revision in formats other tools read (in-toto, DSSE)."""

from __future__ import annotations

import argparse
import sys

from .. import ledger
from ..errors import VaultMeshError
from ..git import Repo


def run(args: argparse.Namespace) -> int:
    from .. import intoto

    repo = Repo.discover()
    if not args.intoto:
        raise VaultMeshError("VM-USAGE", "choose an export format", "pass --intoto (DSSE-wrapped in-toto Statements)")
    if not args.key:
        raise VaultMeshError("VM-USAGE", "--intoto needs --key KEY.pem to sign the statements",
                             "create a key: openssl genpkey -algorithm ed25519 -out signer.pem (see docs/interop.md)")
    signer = intoto.load_signer(args.key)  # before reading anything: a bad key fails fast
    _, entries = ledger.load(repo)
    _, found = intoto.select(repo, entries, args.rev)
    if not found:
        raise VaultMeshError("VM-NOT-RECORDED", f"no receipt in the ledger names {args.rev}",
                             f"record it: git vaultmesh record {args.rev}")
    lines = [intoto.envelope_line(intoto.sign_statement(intoto.receipt_statement(entries, seq), signer))
             for seq, _ in found]
    text = "".join(line + "\n" for line in lines)
    if args.output and args.output != "-":
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    if args.public_key:
        with open(args.public_key, "wb") as fh:
            fh.write(intoto.public_pem(signer))
    return 0
