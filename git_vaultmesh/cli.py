"""Argument parsing only. Each verb's module is imported when that verb runs, so `-h` stays fast."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

PROG = "git vaultmesh"
DESCRIPTION = """\
The repo is the ledger: record signed, timestamped receipts of releases and deploys in this repository
(refs/vaultmesh/log, refs/notes/vaultmesh) and verify them offline, failing closed with a stable error code.
"""
EPILOG = """\
exit status: 0 success; 1 a check failed or an error (its VM-… code is printed); 2 bad usage.
Error codes are listed in docs/errors.md. Settings: git config vaultmesh.* (see `git vaultmesh config`).
"""


def _json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")


def _trust(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-root", metavar="FPR",
                   help="genesis signer fingerprint to pin (default: git config vaultmesh.trustRoot)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-C", dest="directory", metavar="PATH", help="run as if started in PATH")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=description or help,
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    p = add("init", "create the ledger: a genesis policy entry trusting your signing key",
            "Create refs/vaultmesh/log with a genesis policy entry signed by your key (threshold 1), and pin\n"
            "that key as this clone's trust root (git config vaultmesh.trustRoot).")
    p.add_argument("--name", help="signer name in the policy (default: from the key's user id)")
    _json(p)

    p = add("record", "record a receipt for a tag (release) or any rev (deploy)",
            "Sign and append a receipt. A tag gives a `release` (one per tag) with the history Merkle root and\n"
            "the Git-EVTag tree digest; any other rev gives a `deploy` (deploys may repeat).")
    p.add_argument("rev", nargs="?", default="HEAD", help="tag or revision (default HEAD)")
    p.add_argument("--type", choices=["release", "deploy"], help="default: release for a tag, else deploy")
    p.add_argument("--component", help="component name (default: the repository's name)")
    p.add_argument("--version", dest="version_", metavar="VERSION", help="version (default: the tag name)")
    p.add_argument("--artifact", action="append", default=[], metavar="PATH", help="hash this file into the receipt")
    p.add_argument("--sha256", action="append", default=[], metavar="[NAME=]HEX",
                   help="an artifact digest computed elsewhere")
    p.add_argument("--evidence", action="append", default=[], metavar="TEXT", help="free-form evidence string")
    p.add_argument("--message", "-m", help="a human summary")
    p.add_argument("--environment", help="deploy target (deploy only)")
    p.add_argument("--if-missing", action="store_true", help="succeed without change if already recorded")
    p.add_argument("--require-submodules", action="store_true",
                   help="fail instead of recording submodules as not-included when their repos are absent")
    _json(p)

    p = add("verify", "verify the ledger and a release; fails closed with a VM-… code",
            "Check the log (append-only, checkpoints, signatures against the pinned policy), and for REV its\n"
            "tag, history Merkle root, tree digest and artifacts. Without REV, or with --all, every entry.")
    p.add_argument("rev", nargs="?", help="tag or revision whose receipts to verify")
    p.add_argument("--all", action="store_true", help="every entry and every recorded release")
    p.add_argument("--artifact", action="append", default=[], metavar="PATH", help="re-hash and compare")
    p.add_argument("--allow-pending", action="store_true",
                   help="accept entries still pending signatures or timestamp tokens (printed in the result)")
    _trust(p)
    _json(p)

    p = add("show", "show the receipts recorded for a tag or revision")
    p.add_argument("rev", help="tag, revision, entry id or #seq")
    _json(p)
    p.add_argument("--yaml", action="store_true", help="print YAML")

    p = add("log", "list ledger entries, newest first")
    p.add_argument("-n", "--max-count", type=int, help="at most N entries")
    p.add_argument("--type", help="only entries of this type")
    _json(p)

    p = add("prove", "write a self-contained proof bundle (JSON) that a commit is in a release",
            "Prints a bundle with the commit-in-release inclusion proof, the entry-in-log inclusion proof,\n"
            "the signed checkpoint and the policy keys, verifiable offline with `check-proof`.")
    p.add_argument("commit", help="the commit to prove")
    p.add_argument("--in", dest="release", required=True, metavar="TAG", help="the recorded release")
    p.add_argument("--from", dest="from_release", metavar="TAG",
                   help="also prove that this earlier release's history is a prefix (consistency)")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")

    p = add("check-proof", "verify a proof bundle offline, without the repository")
    p.add_argument("bundle", help="the bundle file (- for stdin)")
    p.add_argument("--trust-root", metavar="FPR", required=True, help="the genesis signer you trust")
    _json(p)

    p = add("pull", "fetch a remote's ledger, re-append our entries it lacks, so the next push fast-forwards")
    p.add_argument("remote", nargs="?", default="origin")
    _json(p)

    p = add("demo", "run the whole story in a throwaway repo: record, verify, tamper, verify fails")
    p.add_argument("--keep", action="store_true", help="keep the throwaway directory and print its path")
    _json(p)

    p = add("doctor", "check the local ledger's derived data (notes) and repair it")
    p.add_argument("--repair", action="store_true", help="rebuild refs/notes/vaultmesh from the log")
    _json(p)
    return parser


COMMANDS: dict[str, str] = {
    "init": "init", "record": "record", "verify": "verify", "show": "show", "log": "log",
    "prove": "prove", "check-proof": "check_proof", "pull": "pull", "demo": "demo", "doctor": "doctor",
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from . import __version__

        print(f"git-vaultmesh {__version__}")
        return 0
    if not args.command:
        parser.print_help()
        return 2
    if args.directory:
        import os

        os.chdir(args.directory)
    from .errors import VaultMeshError

    module = importlib.import_module(f".commands.{COMMANDS[args.command]}", __package__)
    run: Callable[[argparse.Namespace], int] = module.run
    try:
        return run(args)
    except VaultMeshError as exc:
        if getattr(args, "json", False):
            import json

            print(json.dumps({"ok": False, "error": exc.as_dict()}, indent=2))
        print(exc.render(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
