"""`check-proof`: verify a proof bundle with no repository — only the bundle, the trust root, gpgv/ssh-keygen.

The verdict is verification.check_bundle's: verify's own entry checks over the entries the bundle carries,
plus inclusion, policy completeness, the commit and consistency proofs (verification/proof.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import VaultMeshError
from ..ui import print_json
from ..verification import Report, check_bundle, summarize

MAX_BUNDLE_BYTES = 256 * 1024 * 1024


def _malformed(cause: str) -> VaultMeshError:
    return VaultMeshError("VM-PROOF-MALFORMED", cause, "regenerate the bundle with `git vaultmesh prove`")


def read_bundle(path: str) -> Any:
    """The bundle's JSON; unreadable, non-UTF-8, non-JSON or absurdly nested input is a coded error."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_BUNDLE_BYTES + 1)
        else:
            with open(path, "rb") as fh:
                data = fh.read(MAX_BUNDLE_BYTES + 1)
    except OSError as exc:
        raise VaultMeshError("VM-FILE-UNREADABLE", f"cannot read {path}: {exc.strerror}",
                             "pass the path of a bundle written by `git vaultmesh prove`") from None
    if len(data) > MAX_BUNDLE_BYTES:
        raise _malformed(f"{path} is larger than {MAX_BUNDLE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _malformed(f"{path} is not UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise _malformed(f"{path} nests JSON too deeply") from None
    except ValueError as exc:
        raise _malformed(f"not JSON ({exc})") from None


def check(bundle: Any, trust_root: str) -> list[str]:
    """Raise the first failure as a coded error; return what was established, line by line."""
    report = check_bundle(bundle, trust_root)
    for c in report.checks:
        if not c.ok:
            assert c.code is not None
            raise VaultMeshError(c.code, c.detail, c.hint)
    return [c.detail for c in report.checks]


def run(args: argparse.Namespace) -> int:
    from ..config import require_fingerprint

    trust_root = require_fingerprint(args.trust_root, "--trust-root")
    report: Report = check_bundle(read_bundle(args.bundle), trust_root)
    if args.json:
        out = report.as_json()
        out["facts"] = [c.detail for c in report.checks if c.ok]
        print_json(out)
    else:
        for line in summarize(report):
            print(line)
        print("check-proof: " + ("OK" if report.ok else "FAILED"))
    if not report.ok:
        first = next(c for c in report.checks if not c.ok)
        print(f"error: {first.code}: {first.detail}" + (f"\nhint: {first.hint}" if first.hint else ""), file=sys.stderr)
    return 0 if report.ok else 1
