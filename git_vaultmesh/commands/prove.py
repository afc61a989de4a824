"""`prove`: a self-contained bundle proving a commit is in a release, the release is in the log, and the
log is signed — verifiable offline by `check-proof` (or by hand: docs/verify-by-hand.md).

Bundle schema "vaultmesh-proof-v2" (docs/formats.md): the head checkpoint and its signature; every policy
entry (the checkpoint's `policy` line commits to them all), the release entry, its cosigns and timestamps, each
with an RFC 9162 inclusion proof against the checkpoint; the commit's raw object with its inclusion proof in the
release's history tree; optionally a consistency proof from an earlier release's history. No key material of
its own: the checker takes keys from the policy entries.
"""

from __future__ import annotations

import argparse
import base64
import json
from typing import Any

from .. import history, ledger, merkle
from ..entry import Entry
from ..errors import VaultMeshError
from ..git import Repo
from ..verification.proof import FORMAT
from ..verification.subjects import naming_receipts, resolve_subject


def release_entry(repo: Repo, entries: list[Entry], tag: str) -> tuple[int, Entry]:
    """The release receipt of `tag` itself, selected as verify selects it (another tag's release of the same
    commit is not it)."""
    ref, commit = resolve_subject(repo, tag)
    found = [(i, entries[i]) for i in sorted(naming_receipts(entries, ref, commit))
             if entries[i].type == "release" and entries[i].subject_ref == ref]
    if not found:
        if repo.rev_parse(tag) is None and not any(e.subject_ref == ref for e in entries):
            raise VaultMeshError("VM-BAD-REV", f"{tag!r} names nothing in this repository",
                                 "check the tag name (git tag -l), or fetch tags: git fetch --tags")
        raise VaultMeshError("VM-NOT-RECORDED", f"no release receipt for {tag}", f"git vaultmesh record {tag}")
    return found[0]


def full_leaves(repo: Repo, entries: list[Entry], e: Entry) -> list[bytes]:
    """All leaves of a release's history tree, following its chain of bases down to the first release."""
    by_id = {x.id: x for x in entries}
    chain = [e]
    while True:
        base = chain[-1].body["history"].get("base")
        if not base:
            break
        chain.append(by_id[base["entry"]])
    chain.reverse()
    leaves: list[bytes] = []
    prev: list[str] = []
    for rel in chain:
        commit = str(rel.subject_commit)
        leaves += history.leaves_of(repo, commit, prev)
        prev = [commit]
    size, root = int(e.body["history"]["size"]), bytes.fromhex(e.body["history"]["root"])
    if len(leaves) != size or merkle.root_from_leaf_hashes(leaves) != root:
        raise VaultMeshError("VM-HISTORY-MISMATCH", "the history under the tag no longer matches its receipt",
                             "run `git vaultmesh verify` for details")
    return leaves


def build(repo: Repo, commit_rev: str, tag: str, from_tag: str | None) -> dict[str, Any]:
    head, entries = ledger.load(repo)
    assert head.commit is not None
    seq, rel = release_entry(repo, entries, tag)
    commit = repo.rev_parse(commit_rev, "commit")
    if commit is None:
        raise VaultMeshError("VM-BAD-REV", f"{commit_rev!r} names no commit", "pass a commit id or rev")
    raw = repo.read_object(commit)[1]
    leaves = full_leaves(repo, entries, rel)
    leaf = merkle.leaf_hash(raw)
    try:
        index = leaves.index(leaf)
    except ValueError:
        raise VaultMeshError("VM-PROOF-NO-PATH", f"commit {commit[:12]} is not in the history of {tag}",
                             f"check `git merge-base --is-ancestor {commit[:12]} {tag}`") from None
    cp_oid = repo.path_oid(head.commit, ledger.CHECKPOINT)
    sig_oid = repo.path_oid(head.commit, ledger.CHECKPOINT_SIG)
    if cp_oid is None or sig_oid is None:
        raise VaultMeshError("VM-CHECKPOINT-MISSING", "the log head has no signed checkpoint", "run verify --all")
    cp_text = repo.read_object(cp_oid)[1]
    if ledger.parse_checkpoint(cp_text, "the head checkpoint").policies is None:
        raise VaultMeshError("VM-PROOF-INCOMPLETE", "the head checkpoint was written before checkpoints committed "
                             "to the policy entries, so no bundle can show that it leaves none out",
                             "append anything with this version (e.g. `git vaultmesh record`), then prove again")
    about = {rel.id, rel.body_digest}
    include = {i for i, e in enumerate(entries) if e.type == "policy"} | {seq}
    include |= {i for i, e in enumerate(entries) if e.type in ("cosign", "timestamp") and e.body.get("entry") in about}
    bundle: dict[str, Any] = {
        "format": FORMAT,
        "log": head.log_id,
        "checkpoint": {"text": cp_text.decode(), "sig": repo.read_object(sig_oid)[1].decode()},
        "entries": [],
        "release": seq,
        "commit": {"oid": commit, "raw": base64.b64encode(raw).decode(), "index": index,
                   "inclusion": [h.hex() for h in merkle.inclusion_proof(leaves, index)]},
    }
    if from_tag:
        fseq, frel = release_entry(repo, entries, from_tag)
        fsize = int(frel.body["history"]["size"])
        if fseq == seq:
            raise VaultMeshError("VM-USAGE", f"--from {from_tag} names the release being proved",
                                 "pass an earlier release to --from, or leave --from out")
        if fseq > seq or fsize > len(leaves) or merkle.root_from_leaf_hashes(leaves[:fsize]).hex() != \
                frel.body["history"]["root"]:
            raise VaultMeshError("VM-PROOF-NO-PATH", f"{from_tag}'s history is not a prefix of {tag}'s",
                                 "pick an earlier release whose commit is an ancestor")
        include.add(fseq)
        bundle["consistency"] = {"from": fseq, "proof": [h.hex() for h in merkle.consistency_proof(leaves, fsize)]}
    log_leaves = [merkle.leaf_hash(e.line) for e in entries]
    bundle["entries"] = [{"index": i, "line": entries[i].line.decode(),
                          "inclusion": [h.hex() for h in merkle.inclusion_proof(log_leaves, i)]} for i in sorted(include)]
    return bundle


def run(args: argparse.Namespace) -> int:
    repo = Repo.discover()
    bundle = build(repo, args.commit, args.release, args.from_release)
    text = json.dumps(bundle, indent=2) + "\n"
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        print(text, end="")
    return 0
