"""`record`: sign a receipt for a tag (release) or any revision (deploy) and append it."""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

# Only what runs before the tree digest starts is imported here (git, the digest and what they need): the
# ledger, the policy, signing and config (~30 ms of imports) load while the digest streams, in the functions
# that use them.
from .. import history, merkle, timings
from ..errors import VaultMeshError
from ..git import Repo
from ..recompute import DigestAhead

if TYPE_CHECKING:
    from .. import ledger
    from ..entry import Entry
    from ..policy import Policy
    from ..rfc3161.timestamping import StampOutcome
    from ..signing import SigningKey

_HEX64 = re.compile(r"^[0-9a-f]{64}\Z")


class _AlreadyThere(Exception):
    """Raised inside the append's precheck: the log already holds this very statement."""

    def __init__(self, seq: int, entry: Entry) -> None:
        super().__init__(seq)
        self.seq = seq
        self.entry = entry


def artifacts_from_args(paths: list[str], digests: list[str]) -> list[dict[str, Any]]:
    from ..entry import hash_file

    arts: list[dict[str, Any]] = []
    for p in paths:
        if os.path.isdir(p):
            raise VaultMeshError("VM-ARTIFACT-UNREADABLE", f"{p} is a directory", "name the artifact files")
        digest, size = hash_file(p)
        arts.append({"name": os.path.basename(p), "sha256": digest, "size": size})
    for d in digests:
        name, _, hexd = d.rpartition("=")
        hexd = hexd.lower()
        if not _HEX64.match(hexd):
            raise VaultMeshError("VM-BAD-DIGEST", f"--sha256 {d!r}: not 64 hex characters",
                                 "pass --sha256 NAME=<64 hex> (e.g. the output of sha256sum)")
        arts.append({"name": name or hexd, "sha256": hexd})
    names = [a["name"] for a in arts]
    if len(set(names)) != len(names):
        raise VaultMeshError("VM-USAGE", "two artifacts share a name", "give each artifact a distinct file name")
    return arts


def current_policy(repo: Repo, head: ledger.Head) -> Policy:
    """The policy in force at the head: the timeline's claimed reading over the policy entries (no gpg run;
    verify is the authority, and judges the same timeline with every signature checked)."""
    from .. import ledger
    from ..policy import claimed_judge, replay

    found = ledger.find_entries(repo, head, {"type": "policy"})
    return replay({seq: e for seq, e in found if e.type == "policy"}, claimed_judge).final


def find_base(repo: Repo, head: ledger.Head, commit: str) -> history.Base | None:
    """The newest recorded release whose commit is an ancestor of `commit` (docs/formats.md)."""
    from .. import ledger

    for _seq, e in reversed(ledger.find_entries(repo, head, {"type": "release"})):
        base_commit = e.subject_commit
        if e.type != "release" or base_commit is None:
            continue
        if repo.has_object(base_commit) and repo.is_ancestor(base_commit, commit):
            return base_from_entry(e)
    return None


def base_from_entry(e: Entry) -> history.Base:
    h = e.body["history"]
    frontier = merkle.CompactRange.from_frontier(int(h["size"]), [bytes.fromhex(x) for x in h["frontier"]])
    return history.Base(e.id, str(e.subject_commit), int(h["size"]), bytes.fromhex(h["root"]), frontier)


def releases_of_ref(repo: Repo, head: ledger.Head, ref: str) -> list[tuple[int, Entry]]:
    from .. import ledger

    return [(s, e) for s, e in ledger.find_entries(repo, head, {"ref": ref}) if e.type == "release"]


def repo_name(repo: Repo) -> str:
    """A name every clone agrees on: vaultmesh.component, else the origin URL's last part (a clone in a folder
    called `colleague/` still records the project's name), else the folder (a bare repository: without .git)."""
    from ..config import Settings

    configured = Settings(repo).get("component")
    if configured:
        return str(configured)
    url = (repo.config_get("remote.origin.url") or "").rstrip("/")
    last = re.split(r"[/:\\]", url)[-1] if url else ""
    last = last[:-4] if last.endswith(".git") else last
    if last and last not in (".", ".."):
        return last
    if repo.work_tree is not None:
        return repo.work_tree.name
    name = repo.git_dir.name
    return name[:-4] if name.endswith(".git") and len(name) > 4 else name


@dataclass(frozen=True)
class _Target:
    """What `record REV` is about: the commit, the full ref REV names (if any), and the receipt type."""

    rev: str
    commit: str
    full: str | None
    is_tag: bool
    typ: str


def run(args: argparse.Namespace) -> int:
    repo = Repo.discover()
    target = resolve_target(repo, args)
    # The tree digest is most of a release's cost and needs nothing below: it starts now, in a thread, and
    # add_release_fields collects it where it was computed before, so the refusals below keep their order
    # (a refusal stops it).
    ahead = DigestAhead(repo, target.commit, require_submodules=args.require_submodules) \
        if target.typ == "release" else None
    try:
        from ..rfc3161.timestamping import warm_up  # imports the ledger, policy and signing: after the start

        warm_up(repo)  # if a TSA URL is configured, load the RFC 3161 client in the background while git/gpg work
        return _record(repo, args, target, ahead)
    finally:
        if ahead is not None:
            ahead.cancel()  # after result(), a no-op


def _record(repo: Repo, args: argparse.Namespace, target: _Target, ahead: DigestAhead | None) -> int:
    from .. import ledger
    from ..config import signing_key
    from ..entry import parse_line, sign_body
    from ..policy import may_sign
    from ..ui import print_json

    head = ledger.read_head(repo)
    if head.commit is None:
        raise VaultMeshError("VM-NOT-INITIALIZED", f"{ledger.REF_LOG} does not exist",
                             "run `git vaultmesh init` first")
    assert head.log_id is not None
    existing = already_recorded(repo, head, target)
    if existing is not None:
        if not args.if_missing:
            raise VaultMeshError("VM-ALREADY-RECORDED", f"{target.full} is already recorded as {existing}",
                                 "one release per tag: tag a new version, or pass --if-missing in scripts")
        print(f"{target.rev} is already recorded as {existing}")
        return 0
    policy = current_policy(repo, head)
    key = signing_key(repo)
    may_sign(policy, key, target.typ)
    body = receipt_body(repo, head, target, args)
    if ahead is not None:
        add_release_fields(repo, head, target.commit, body, ahead)
    checked_body(body)
    entry = sign_body(body, key)
    try:
        parse_line(entry.line, "the new receipt")
    except VaultMeshError as exc:
        raise VaultMeshError("VM-USAGE", exc.cause, "shorten --message/--evidence") from None
    stamps = None
    if policy.tsas:  # RFC 3161 tokens over the entry line, appended with it; a TSA failure leaves it pending
        from ..rfc3161.timestamping import stamp_entries

        with timings.step("tsa"):
            stamps = stamp_entries(repo, key, policy, [entry])
    try:
        result = append_receipt(repo, key, head, target, body, entry, stamps)
    except _AlreadyThere as same:
        msg = f"an identical receipt (same body digest) is already entry #{same.seq} ({same.entry.id[:12]})"
        if args.json:
            print_json({"ok": True, "entry": same.entry.id, "seq": same.seq, "type": target.typ, "appended": False,
                        "body": body, **timings.json_field()})
        else:
            print(f"{msg}; nothing appended")
        return 0
    print_result(args, policy, key, target.typ, body, entry, result, stamps)
    if stamps is not None:
        stamps.warn(entry.id)
    return 0


def resolve_target(repo: Repo, args: argparse.Namespace) -> _Target:
    """The commit REV names and the receipt type, refusing combinations that make no sense."""
    rev: str = args.rev
    resolved = repo.resolve_name(rev)  # an ambiguous name is refused: a receipt binds only what the user meant
    commit = resolved.commit
    if commit is None:
        raise VaultMeshError("VM-BAD-REV", f"{rev!r} does not name a commit in this repository",
                             "record a commit, a branch or a tag of a commit (not a tree or a blob)")
    full = resolved.refname
    is_tag = full is not None and full.startswith("refs/tags/")
    if is_tag and full is not None:
        check_tag_name(repo, full)
    typ = args.type or ("release" if is_tag else "deploy")
    if typ == "release" and not is_tag:
        raise VaultMeshError("VM-USAGE", f"a release names a tag; {rev!r} is not a tag",
                             f"tag it first (git tag -s v1.0 {rev}) or record it with --type deploy")
    if args.environment and typ != "deploy":
        raise VaultMeshError("VM-USAGE", "--environment is for deploy receipts",
                             f"drop it, or record a deploy: git vaultmesh record {rev} --type deploy")
    return _Target(rev, commit, full, is_tag, typ)


def check_tag_name(repo: Repo, ref: str) -> None:
    """An annotated tag names itself: refs/tags/v2.0 pointing at the object of tag v1.0 replays an old (signed)
    tag under a new name, which `git tag -v v2.0` and `git describe` call v1.0. Refused."""
    oid = repo.ref_oid(ref)
    own = repo.tag_name(oid) if oid else None
    short = ref[len("refs/tags/"):]
    if own is not None and own != short:
        raise VaultMeshError("VM-TAG-NAME-MISMATCH",
                             f"{ref} points at the tag object of {own!r} ({oid[:12] if oid else ''}), not a tag named {short!r}",
                             f"make a tag of its own: git tag -a {short} {own}^{{}} (or record {own} itself)")


def already_recorded(repo: Repo, head: ledger.Head, target: _Target) -> str | None:
    """'entry #N (id)' of the release already recorded for this tag (one release per tag), else None."""
    if target.typ != "release" or target.full is None:
        return None
    existing = releases_of_ref(repo, head, target.full)
    if not existing:
        return None
    return f"entry #{existing[0][0]} ({existing[0][1].id[:12]})"


def receipt_body(repo: Repo, head: ledger.Head, target: _Target, args: argparse.Namespace) -> dict[str, Any]:
    """The receipt's body from the subject and the options, before the release fields."""
    from ..entry import now_rfc3339

    assert head.log_id is not None
    artifacts = artifacts_from_args(args.artifact, args.sha256)
    subject: dict[str, str] = {}
    full = target.full
    if full is not None:
        subject["ref"] = full
        ref_target = repo.ref_oid(full)
        if ref_target and ref_target != target.commit and repo.read_object(ref_target)[0] == "tag":
            subject["tag"] = ref_target
    subject["commit"] = target.commit
    tree = repo.rev_parse(target.commit, "tree")
    assert tree is not None
    subject["tree"] = tree
    body: dict[str, Any] = {"type": target.typ, "log": head.log_id, "recorded_at": now_rfc3339(),
                            "subject": subject, "component": args.component or repo_name(repo)}
    short = full[len("refs/tags/"):] if target.is_tag and full else None
    if args.version_ or short:
        body["version"] = args.version_ or short
    if artifacts:
        body["artifacts"] = artifacts
    if args.evidence:
        body["evidence"] = list(args.evidence)
    if args.message:
        body["message"] = args.message
    if args.environment:
        body["environment"] = args.environment
    return body


def add_release_fields(repo: Repo, head: ledger.Head, commit: str, body: dict[str, Any], digest: DigestAhead) -> None:
    """history (over the newest recorded ancestor release) and tree_digest (`digest`, already under way).

    Only the commits over the base are read: the history extends the base's compact range. One tree
    digest: where a submodule is absent, evtag already gives the digest with none of them, which is what
    the receipt records (with "submodules": "not-included") because anyone can reproduce it."""
    from ..ui import warn

    base = find_base(repo, head, commit)
    body["history"] = history.compute(repo, commit, base).as_json()
    td = digest.result()
    body["tree_digest"] = td.digest
    if td.submodules:
        body["submodules"] = td.submodules
        warn(f"submodule repositories absent ({', '.join(td.missing_submodules)}): tree digest records "
             "submodules as not-included")


def checked_body(body: dict[str, Any]) -> None:
    """The log is append-only: never append what every reader (log, show, verify) would refuse to parse."""
    from ..entry import check_body

    hint = ("artifact names must be plain file names (ASCII letters, digits, space and ._+@-): rename the "
            "file, or hash it elsewhere and pass --sha256 NAME=HEX")
    try:
        check_body(body, "the new receipt")
    except VaultMeshError as exc:
        raise VaultMeshError("VM-USAGE", exc.cause, hint) from None


def append_receipt(repo: Repo, key: SigningKey, head: ledger.Head, target: _Target, body: dict[str, Any],
                   entry: Entry, stamps: StampOutcome | None) -> ledger.AppendResult:
    """Append the entry (and its timestamp entry), re-checking against the log as it is at append time."""
    from .. import ledger

    typ, full = target.typ, target.full

    def still_new(repo_: Repo, now: ledger.Head) -> list[Entry]:
        if typ == "release" and full is not None and now.commit != head.commit and releases_of_ref(repo_, now, full):
            raise VaultMeshError("VM-ALREADY-RECORDED", f"{full} was recorded by another process meanwhile",
                                 "one release per tag: nothing to do")
        # Same body digest = same statement (docs/formats.md): verify fails a log that holds it twice, so an
        # identical receipt (e.g. a retried deploy in the same second / same SOURCE_DATE_EPOCH) is not appended.
        for seq, e in ledger.find_entries(repo_, now, {"recorded_at": body["recorded_at"]}):
            if e.body_digest == entry.body_digest:
                raise _AlreadyThere(seq, e)
        extra = stamps.entries if stamps is not None else []
        if extra and now.commit != head.commit:  # the policy may have changed meanwhile: keep tokens it trusts
            from ..rfc3161.timestamping import keep_known

            extra = keep_known(extra, current_policy(repo_, now))
        return [entry, *extra]

    keep = [target.commit] if not target.is_tag else []
    return ledger.append(repo, key, still_new, keep=keep, confirm=stamps.confirm if stamps else None)


def print_result(args: argparse.Namespace, policy: Policy, key: SigningKey, typ: str, body: dict[str, Any],
                 entry: Entry, result: ledger.AppendResult, stamps: StampOutcome | None) -> None:
    from ..policy import SigStatus, signing_rule
    from ..ui import print_json

    rule = signing_rule(policy, typ).evaluate(frozenset({key.fingerprint}))
    sigs = SigStatus(rule.present, rule.missing, policy.threshold(typ))  # k-of-n: cosigns may be needed
    if args.json:
        print_json({"ok": True, "entry": entry.id, "seq": result.first_seq, "type": typ, "commit": result.commit,
                    "attempts": result.attempts, "body": body, "signatures": sigs.as_json(),
                    "timestamps": stamps.as_json(entry.id) if stamps is not None else None,
                    **timings.json_field()})
    else:
        print(f"recorded {typ} {body.get('component')} {body.get('version', '')} as entry #{result.first_seq} "
              f"({entry.id[:12]})".replace("  ", " "))
        if typ == "release":
            print(f"  history root {body['history']['root']} over {body['history']['size']} commits")
        if sigs.pending:
            print(f"  pending signatures: {sigs.have} of {sigs.need}; {' or '.join(sigs.missing)} can add theirs "
                  f"with `git vaultmesh cosign {entry.id[:12]}`")
        if stamps is not None and stamps.tsas.get(entry.id):
            print(f"  timestamped by {', '.join(stamps.tsas[entry.id])} (entry #{result.first_seq + 1})")
