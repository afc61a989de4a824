"""What REV names, and the subjects of the receipts in scope: the tag still points where it was recorded,
the commit and tree are present, the histories recompute (REV's and its base releases'), REV's tree digest
recomputes, no replace ref changes what git shows, and the artifacts given hash to the recorded digests."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from .. import history, merkle
from ..entry import Entry, hash_file
from ..errors import VaultMeshError
from ..git import Repo
from ..recompute import Job, recompute_all
from .context import Context, Options, Scope, where


def resolve_subject(repo: Repo, name: str) -> tuple[str, str | None]:
    """(ref, commit) a name stands for, exactly as git builds it (an ambiguous name is VM-REV-AMBIGUOUS); a
    name that resolves to nothing now is taken as a deleted tag, whose receipts still name refs/tags/<name>."""
    try:
        got = repo.resolve_name(name)
        commit, ref = got.commit, got.refname
    except VaultMeshError as exc:
        if exc.code != "VM-BAD-REV" or not name.isprintable() or name.startswith("-"):
            raise
        commit, ref = None, None
    return ref or (f"refs/tags/{name}" if not name.startswith("refs/") else name), commit


def naming_receipts(entries: Sequence[Entry | None], ref: str | None, commit: str | None) -> set[int]:
    """The receipts about a name: those naming its ref, and those naming its commit — except, for a tag, the
    releases of OTHER tags of that commit (a release vouches for the one tag it names). verify, export and
    prove all select through here."""
    tag = ref is not None and ref.startswith("refs/tags/")
    return {i for i, e in enumerate(entries)
            if e is not None and e.type not in ("cosign", "timestamp", "policy")
            and (e.subject_ref == ref or (commit is not None and e.subject_commit == commit
                                          and not (tag and e.type == "release")))}


def scope_for(repo: Repo, opts: Options, entries: Sequence[Entry | None]) -> Scope:
    """The entries naming the target, what refers to them, and the base releases their histories build on."""
    if opts.all or opts.target is None:
        return Scope(everything=True)
    target = opts.target
    ref, commit = resolve_subject(repo, target)
    direct = naming_receipts(entries, ref, commit)
    positions = set(direct)
    named = {entries[i].id for i in direct} | {entries[i].body_digest for i in direct}  # type: ignore[union-attr]
    positions |= {i for i, e in enumerate(entries) if e is not None and e.body.get("entry") in named}
    id_pos = {e.id: i for i, e in enumerate(entries) if e is not None}
    frontier = [i for i in positions if entries[i] is not None and entries[i].type == "release"]  # type: ignore[union-attr]
    while frontier:
        e = entries[frontier.pop()]
        assert e is not None
        base = (e.body.get("history") or {}).get("base")
        if isinstance(base, dict) and base.get("entry") in id_pos:
            j = id_pos[base["entry"]]
            if j not in positions:
                positions.add(j)
                frontier.append(j)
    return Scope(False, positions, direct, ref)


def targets(ctx: Context) -> list[int] | None:
    """REV is recorded: some receipt names it (a tag needs a release receipt); None when it is not."""
    r = ctx.report
    entries = ctx.carried
    if ctx.scope.everything:
        return sorted(entries)
    assert ctx.repo is not None and ctx.opts.target is not None
    target = ctx.opts.target
    positions = sorted(ctx.scope.positions)
    direct = [i for i in positions if i in entries and entries[i].type not in ("cosign", "timestamp")]
    if not direct:
        if ctx.repo.rev_parse(target) is None:
            r.failed("subject.recorded", "VM-BAD-REV", f"{target!r} names no object here and no receipt names it",
                     "check the tag name; fetch tags with `git fetch --tags`")
        else:
            r.failed("subject.recorded", "VM-NOT-RECORDED", f"no receipt in the ledger names {target}",
                     f"record it: git vaultmesh record {target}")
        return None
    ref = ctx.scope.ref
    if ref and ref.startswith("refs/tags/") and not any(
            entries[i].type == "release" and entries[i].subject_ref == ref for i in direct):
        # a tag is a release claim: receipts that merely name its commit (a deploy) do not vouch for it
        r.failed("subject.recorded", "VM-NOT-RECORDED",
                 f"no release receipt names {ref} (receipts naming its commit: {', '.join('#' + str(i) for i in direct)})",
                 f"record the release: git vaultmesh record {target}")
        return None
    r.passed("subject.recorded", f"{target}: {len(direct)} receipt(s) ({', '.join('#' + str(i) for i in direct)})")
    return positions


def _receipts(ctx: Context, positions: Sequence[int]) -> list[tuple[int, Entry]]:
    """Entries that name repository objects: every release (its shape requires a subject) and a deploy that
    carries one. A deploy may omit it (a deploy of an artifact built elsewhere): then nothing names an object
    here to look for, and reporting its "commit None" missing would fail a valid log."""
    return [(i, e) for i in positions if (e := ctx.carried.get(i)) is not None
            and (e.type == "release" or (e.type == "deploy" and "subject" in e.body))]


def release_tags(ctx: Context, positions: Sequence[int]) -> None:
    """A recorded tag still points at the recorded tag object (or commit)."""
    r = ctx.report
    assert ctx.repo is not None
    for seq, e in _receipts(ctx, positions):
        subj = e.body.get("subject", {})
        ref = subj.get("ref")
        if not ref or e.type != "release":
            continue
        now = ctx.repo.ref_oid(ref)
        expect = subj.get("tag") or subj.get("commit")
        if now is None:
            r.failed("release.tag", "VM-TAG-MISSING", f"{where(seq, e)}: {ref} is absent (recorded at {expect})")
        elif now != expect:
            r.failed("release.tag", "VM-TAG-MOVED", f"{where(seq, e)}: {ref} is now {now}, recorded {expect}")
        elif ref.startswith("refs/tags/") and (own := ctx.repo.tag_name(now)) not in (None, ref[len("refs/tags/"):]):
            r.failed("release.tag", "VM-TAG-NAME-MISMATCH", f"{where(seq, e)}: {ref} is the tag object of {own!r} "
                     "(an old tag replayed under this name): `git tag -v` and `git describe` call it that")
        else:
            r.passed("release.tag", f"{where(seq, e)}: {ref} still points at {str(expect)[:12]}")


def subject_objects(ctx: Context, positions: Sequence[int]) -> None:
    """The recorded commit is present and has the recorded tree; a missing one is reported, never skipped."""
    r = ctx.report
    assert ctx.repo is not None
    for seq, e in _receipts(ctx, positions):
        subj = e.body.get("subject", {})
        commit = subj.get("commit")
        if not commit or not ctx.repo.has_object(commit):
            ctx.missing_subjects.add(str(commit))
            r.failed("subject.present", "VM-SUBJECT-MISSING", f"{where(seq, e)}: recorded commit {commit} is not "
                     "in this repository", "fetch refs/vaultmesh/keep/* and tags from a replica")
            continue
        tree = ctx.repo.rev_parse(commit, "tree")
        if tree != subj.get("tree"):
            r.failed("subject.tree", "VM-HISTORY-MISMATCH",
                     f"{where(seq, e)}: commit {commit[:12]} has tree {tree}, recorded {subj.get('tree')}")


def _present_releases(ctx: Context, positions: Sequence[int]) -> list[tuple[int, Entry]]:
    return [(s, e) for s, e in _receipts(ctx, positions)
            if e.type == "release" and str(e.subject_commit) not in ctx.missing_subjects]


def recomputed(ctx: Context, positions: Sequence[int]) -> None:
    """Each release's history tree recomputes from the commits under it, extending the base it names, and
    each judged release's Git-EVTag-v0-SHA512 digest recomputes (submodules as the receipt says they were
    taken): all of it in one recompute_all, so the digests overlap the histories and every commit of a chain
    of base releases is read once.

    Judged: every release under `verify --all` (or with no REV); under `verify REV`, the receipts naming REV.
    A base release is in scope for its history, which REV's history extends (its consistency proof ties the
    two roots, so REV's root is only as good as the base's); its tree digest says what the base release's
    tree held, which is no part of REV's verdict, so it is judged by `verify BASE` or `--all`, not here."""
    repo = ctx.repo
    assert repo is not None
    r = ctx.report
    id_pos = {x.id: i for i, x in ctx.carried.items()}
    releases = _present_releases(ctx, positions)
    claims: list[_Claim | tuple[str, str, str]] = []
    jobs: list[Job] = []
    for seq, e in releases:
        claim = _history_claim(ctx, seq, e, id_pos)
        claims.append(claim)
        partial = e.body.get("submodules") == "not-included"
        ok = isinstance(claim, _Claim)
        jobs.append(Job(str(e.subject_commit), claim.base if isinstance(claim, _Claim) else None, history=ok,
                        digest=ctx.scope.everything or seq in ctx.scope.direct,
                        require_submodules=not partial, include_submodules=not partial,
                        commits=claim.size - (claim.base.size if claim.base else 0) if isinstance(claim, _Claim)
                        else None))
    results = recompute_all(repo, jobs)
    for (seq, e), claim, got in zip(releases, claims, results):
        w = where(seq, e)
        if not isinstance(claim, _Claim):
            r.failed(*claim)
        elif (err := got.history_error) is not None:
            r.error("release.history", err)
        elif (h := got.history).root != claim.root or h.size != claim.size or h.frontier.hashes != claim.frontier:
            r.failed("release.history", "VM-HISTORY-MISMATCH",
                     f"{w}: history recomputed now has {h.size} commits, root {h.root.hex()[:16]}…; recorded "
                     f"{claim.size} commits, root {claim.root.hex()[:16]}…")
        else:
            r.passed("release.history", f"{w}: history of {claim.size} commits recomputed, root matches")
    for (seq, e), job, got in zip(releases, jobs, results):
        if not job.digest:
            continue
        if (err := got.digest_error) is not None:
            r.error("release.tree-digest", err)
        elif (td := got.digest).digest != e.body.get("tree_digest"):
            r.failed("release.tree-digest", "VM-TREE-DIGEST-MISMATCH",
                     f"{where(seq, e)}: Git-EVTag-v0-SHA512 is {td.digest[:16]}…, recorded "
                     f"{str(e.body.get('tree_digest'))[:16]}…")
        else:
            r.passed("release.tree-digest", f"{where(seq, e)}: Git-EVTag-v0-SHA512 matches")


@dataclass(frozen=True)
class _Claim:
    """What a release's receipt says its history is, once its form and its base have been checked."""

    size: int
    root: bytes
    frontier: list[bytes]
    base: history.Base | None


def _history_claim(ctx: Context, seq: int, e: Entry, id_pos: dict[str, int]) -> _Claim | tuple[str, str, str]:
    """The recorded history, or the failure (check, code, detail) that stops it being recomputed: a malformed
    field, or a base that is not an earlier release, disagrees with its own receipt, is no longer an ancestor,
    or whose consistency proof to this history fails."""
    repo = ctx.repo  # None for a proof bundle: what needs the repository's objects is left to verify
    w = where(seq, e)
    h = e.body.get("history")
    commit = str(e.subject_commit)
    try:
        if not isinstance(h, dict) or h.get("alg") != history.ALG or h.get("order") != history.ORDER:
            raise ValueError("history must name alg rfc6962-sha256 and order vaultmesh-topo-v1")
        size, root = int(h["size"]), bytes.fromhex(h["root"])
        frontier = merkle.CompactRange.from_frontier(size, [bytes.fromhex(x) for x in h["frontier"]])
        base_info = h.get("base")
        consistency = [bytes.fromhex(x) for x in h.get("consistency", [])]
    except (ValueError, KeyError, TypeError) as exc:
        return "release.history", "VM-ENTRY-MALFORMED", f"{w}: history field malformed ({exc})"
    if base_info is None:
        return _Claim(size, root, frontier.hashes, None)
    bpos = id_pos.get(str(base_info.get("entry")))
    be = ctx.carried.get(bpos) if bpos is not None else None
    if bpos is None or bpos >= seq or be is None or be.type != "release":
        return ("release.base", "VM-HISTORY-BASE",
                f"{w}: base {str(base_info.get('entry'))[:12]} is not an earlier release in this log")
    bh = be.body["history"]
    try:
        bfront = merkle.CompactRange.from_frontier(int(bh["size"]), [bytes.fromhex(x) for x in bh["frontier"]])
    except (ValueError, KeyError, TypeError):
        return "release.base", "VM-HISTORY-BASE", f"{w}: base entry #{bpos} has a malformed history"
    if (int(base_info.get("size", -1)) != int(bh["size"]) or base_info.get("root") != bh["root"]
            or bfront.root().hex() != bh["root"]):
        return "release.base", "VM-HISTORY-BASE", f"{w}: base size/root differ from base entry #{bpos}'s own history"
    bcommit = str(be.subject_commit)
    if repo is not None and (not repo.has_object(bcommit) or not repo.is_ancestor(bcommit, commit)):
        return ("release.base", "VM-HISTORY-BASE",
                f"{w}: base release #{bpos} (commit {bcommit[:12]}) is no longer an ancestor of {commit[:12]}: "
                "history was rewritten")
    if not merkle.verify_consistency(int(bh["size"]), size, bytes.fromhex(bh["root"]), root, consistency):
        return ("release.base", "VM-HISTORY-BASE",
                f"{w}: consistency proof from base #{bpos} (size {bh['size']}) to size {size} fails")
    return _Claim(size, root, frontier.hashes,
                  history.Base(be.id, bcommit, int(bh["size"]), bytes.fromhex(bh["root"]), bfront))


def release_bases(ctx: Context) -> None:
    """A proof bundle's releases, by the rule `recomputed` applies first: the history field is well formed and
    a base it names is an earlier release whose own history it extends (consistency proof). A base the bundle
    does not carry cannot be judged offline; the bundle's own claim is about the commit in this history."""
    id_pos = {x.id: i for i, x in ctx.carried.items()}
    for seq, e in sorted(ctx.carried.items()):
        if e.type != "release":
            continue
        base = (e.body.get("history") or {}).get("base") if isinstance(e.body.get("history"), dict) else None
        if isinstance(base, dict) and str(base.get("entry")) not in id_pos:
            continue
        claim = _history_claim(ctx, seq, e, id_pos)
        if not isinstance(claim, _Claim):
            ctx.report.failed(*claim)


def replacements(ctx: Context, positions: Sequence[int]) -> None:
    """git.py hashes the real objects (--no-replace-objects), but checkout, log and archive honour
    refs/replace/*: a replacement reachable from a recorded subject means git shows other content than was
    recorded, so it fails (fail-closed) instead of verifying objects nobody sees."""
    repo = ctx.repo
    assert repo is not None
    prefix = os.environ.get("GIT_REPLACE_REF_BASE") or "refs/replace/"
    prefix = prefix if prefix.endswith("/") else prefix + "/"
    replaced = {name[len(prefix):]: oid for name, oid in repo.refs(prefix).items()}
    if not replaced:
        return
    for seq, e in _receipts(ctx, positions):
        commit = str(e.subject_commit)
        if commit in ctx.missing_subjects:
            continue
        reachable = repo.reachable_objects(commit)
        tag = (e.body.get("subject") or {}).get("tag")
        if tag:
            reachable.add(tag)  # a replaced tag object makes `git checkout TAG` peel to another commit
        for oid in sorted(replaced.keys() & reachable):
            kind = repo.read_object(oid)[0]
            code = {"commit": "VM-HISTORY-MISMATCH", "tag": "VM-TAG-MOVED"}.get(kind, "VM-TREE-DIGEST-MISMATCH")
            ctx.report.failed(
                "subject.replaced", code,
                f"{where(seq, e)}: a replace ref substitutes {replaced[oid][:12]} for {kind} {oid[:12]} of the "
                f"recorded {e.type}: git checkout, log and archive show other content than was recorded",
                f"remove it (git replace -d {oid}) unless you made it; verify hashes the real objects")


def artifacts(ctx: Context, positions: Sequence[int]) -> None:
    """Each artifact given hashes to the digest recorded under its name by a receipt naming REV itself (a
    base release is in scope for its history, not for the artifacts given for REV)."""
    r = ctx.report
    given: dict[str, list[tuple[str, str]]] = {}  # name -> each (sha256, path) given with that name
    for path in ctx.opts.artifacts:
        try:
            given.setdefault(os.path.basename(path), []).append((hash_file(path)[0], path))
        except VaultMeshError as exc:
            r.error("artifact", exc)
    matched: set[str] = set()
    for seq, e in _receipts(ctx, positions):
        if str(e.subject_commit) in ctx.missing_subjects:
            continue
        if not (ctx.scope.everything or seq in ctx.scope.direct):
            continue
        for art in e.body.get("artifacts", []) or []:
            name = art["name"]
            for got, path in given.get(name, []):
                matched.add(name)
                if got != art["sha256"]:
                    r.failed("artifact", "VM-ARTIFACT-MISMATCH",
                             f"{where(seq, e)}: {path} has sha256 {got}, recorded {art['sha256']}")
                else:
                    r.passed("artifact", f"{where(seq, e)}: {path} matches its recorded sha256")
    for name, paths in given.items():
        if name not in matched:
            for _, path in paths:
                r.failed("artifact", "VM-ARTIFACT-NOT-RECORDED", f"{path}: no receipt in scope names an artifact "
                         f"{name!r}", "pass the artifact that was recorded, or record this one")


SUBJECT_RULES = (release_tags, subject_objects, recomputed, replacements, artifacts)
