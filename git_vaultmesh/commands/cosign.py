"""`cosign`: add your signature to an entry already in the log, as a `cosign` entry (docs/formats.md).

A k-of-n threshold counts distinct pinned signers over an entry and its cosigns, so the signatures of a
2-of-3 release need not all exist when it is recorded: it stays "pending" until enough signers co-sign it.
"""

from __future__ import annotations

import argparse
from typing import Any

from .. import ledger
from ..config import signing_key
from ..entry import Entry, now_rfc3339, sign_body
from ..errors import VaultMeshError
from ..git import Repo
from ..policy import NO_THRESHOLD_TYPES, Policy, PolicySigner, claimed_timeline, may_sign
from ..signing import SigningKey
from ..ui import print_json


def resolve(repo: Repo, entries: list[Entry], what: str) -> tuple[int, Entry]:
    """#seq, an entry id or body digest (prefix of 8+ hex), a tag (its release) or a revision (its receipt)."""
    if what.startswith("#") and what[1:].isdigit():
        seq = int(what[1:])
        if seq < len(entries):
            return seq, entries[seq]
        raise VaultMeshError("VM-NOT-RECORDED", f"the log has no entry {what} (size {len(entries)})",
                             "see `git vaultmesh log`")
    low = what.lower()
    if len(low) >= 8 and all(c in "0123456789abcdef" for c in low):
        hits = [(i, e) for i, e in enumerate(entries) if e.id.startswith(low) or e.body_digest.startswith(low)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise VaultMeshError("VM-USAGE", f"{what} is ambiguous: entries {', '.join('#' + str(i) for i, _ in hits)}",
                                 "give more characters of the entry id")
    try:
        resolved = repo.resolve_name(what)
    except VaultMeshError as exc:
        if exc.code == "VM-BAD-REV" and len(low) >= 8 and all(c in "0123456789abcdef" for c in low):
            raise VaultMeshError("VM-NOT-RECORDED", f"no entry of the log has an id or body digest {what}…, and "
                                 "no object here has that id", "see `git vaultmesh log` for entry ids") from None
        raise
    ref = resolved.refname
    if ref is not None and ref.startswith("refs/tags/"):
        rel = [(i, e) for i, e in enumerate(entries) if e.type == "release" and e.subject_ref == ref]
        if rel:
            return rel[0]
    commit = resolved.commit
    about = [(i, e) for i, e in enumerate(entries)
             if e.type not in NO_THRESHOLD_TYPES and commit is not None and e.subject_commit == commit]
    if len(about) == 1:
        return about[0]
    if about:
        raise VaultMeshError("VM-USAGE", f"{what} has {len(about)} receipts: "
                             + ", ".join(f"#{i} {e.type} {e.id[:12]}" for i, e in about),
                             "name the one to co-sign by its entry id (see `git vaultmesh show`)")
    raise VaultMeshError("VM-NOT-RECORDED", f"no entry of the log is {what!r} or names it",
                         "record it first (`git vaultmesh record`), or pass an entry id from `git vaultmesh log`")


def _may_cosign(policy: Policy | None, key: SigningKey, typ: str, when: str) -> PolicySigner:
    def refusal(signer: PolicySigner | None) -> tuple[str, str]:
        who = ", ".join(s.name for s in policy.signers if s.may_sign(typ)) if policy is not None else "-"
        why = "is not pinned" if signer is None else f"may sign {', '.join(signer.types)}, not {typ}"
        return (f"your signing key {key.fingerprint} {why} in the policy in force {when}",
                f"a cosign counts only from a signer pinned for {typ} both when the entry was made and now "
                f"(signers for {typ} {when}: {who}); a key added later cannot sign the past")

    return may_sign(policy, key, typ, refusal)


def _cosigners(entries: list[Entry], digest: str) -> set[str]:
    return {s["signer"] for e in entries if e.type == "cosign" and e.body.get("entry") == digest for s in e.sigs}


class _Race(Exception):
    pass


def run(args: argparse.Namespace) -> int:
    repo = Repo.discover()
    head, entries = ledger.load(repo)
    assert head.log_id is not None
    seq, target = resolve(repo, entries, args.target)
    if target.type == "policy":
        raise VaultMeshError("VM-USAGE", f"entry #{seq} is a policy entry: a policy change is adopted at its "
                             "position, so its signatures must all be on it when it is appended",
                             "stage policy changes: `git vaultmesh policy … --propose FILE`, `policy sign FILE`")
    if target.type in NO_THRESHOLD_TYPES:
        raise VaultMeshError("VM-USAGE", f"entry #{seq} is a {target.type} entry, which no threshold applies to",
                             "co-sign the entry it refers to")
    key = signing_key(repo)
    timeline = claimed_timeline(entries)
    signer = _may_cosign(timeline.final, key, target.type, "now")
    _may_cosign(timeline.policies[seq], key, target.type, f"when entry #{seq} was made")
    digest = target.body_digest
    if key.fingerprint in {s["signer"] for s in target.sigs}:
        raise VaultMeshError("VM-ALREADY-SIGNED", f"entry #{seq} ({target.id[:12]}) is already signed by your key "
                             f"{key.fingerprint}", "thresholds count distinct signers: another signer must co-sign")
    if key.fingerprint in _cosigners(entries, digest):
        raise VaultMeshError("VM-ALREADY-SIGNED", f"your key {key.fingerprint} already co-signed entry #{seq} "
                             f"({target.id[:12]})", "thresholds count distinct signers: another signer must co-sign")
    # The message names the cosigner so that two signers co-signing in the same second make two statements
    # (same body digest = same statement, docs/formats.md), not a duplicate.
    message = f"cosign by {signer.name}" + (f": {args.message}" if args.message else "")
    body: dict[str, Any] = {"type": "cosign", "log": head.log_id, "recorded_at": now_rfc3339(),
                            "entry": digest, "message": message}
    entry = sign_body(body, key)

    def not_meanwhile(repo_: Repo, now: ledger.Head) -> list[Entry]:
        if now.commit != head.commit:
            found = [e for _, e in ledger.find_entries(repo_, now, {"entry": digest})]
            if key.fingerprint in _cosigners(found, digest):
                raise _Race()
        return [entry]

    try:
        result = ledger.append(repo, key, not_meanwhile)
    except _Race:
        raise VaultMeshError("VM-ALREADY-SIGNED", f"your key co-signed entry #{seq} meanwhile (another process)",
                             "nothing to do") from None
    status = claimed_timeline([*entries, entry]).status.get(seq)
    data: dict[str, Any] = {"ok": True, "entry": entry.id, "seq": result.first_seq, "target": target.id,
                            "target_seq": seq, "signatures": status.as_json() if status else None}
    if args.json:
        print_json(data)
        return 0
    print(f"co-signed entry #{seq} ({target.id[:12]}, {target.type}) as entry #{result.first_seq} ({entry.id[:12]})")
    if status is not None:
        state = "threshold met" if not status.pending else f"still pending; missing: {', '.join(status.missing)}"
        print(f"  signatures: {status.have} of {status.need} ({', '.join(status.present)}): {state}")
    return 0
