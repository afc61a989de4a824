"""Git-EVTag-v0-SHA512: a SHA-512 over every object a release commit reaches, exactly as git-evtag computes it.

Why: a git commit id is a SHA-1 over SHA-1s, so a receipt that names only the commit inherits SHA-1's
weakness. git-evtag's digest re-hashes the actual bytes of the commit, its tree, every sub-tree and blob
(and, through gitlinks, every submodule's commit and tree) with SHA-512, so the released content can be
checked without trusting SHA-1. Reproducing git-evtag bit for bit lets anyone cross-check a receipt with
`git evtag verify` or `git-evtag-compute-py`.

The procedure (git-evtag's `checksum_commit_contents` / `git_tree_walk(GIT_TREEWALK_PRE)`):

* hash the commit object, then its root tree object;
* walk the tree pre-order in stored entry order: a sub-tree's object is hashed before its contents,
  a blob's object is hashed, a gitlink (mode 160000) recurses into the submodule's repository with the
  same procedure (its commit object, its root tree, its walk);
* each object contributes its loose-object bytes `b"<type> <size>\\0" + body`; the result is lowercase hex.

Documented deviations from the C tool:

* git-evtag hashes the commit checked out in the submodule's working tree (`git_submodule_wd_id`); it
  refuses a dirty tree, so in its supported case that is the gitlink's commit. We hash the gitlink's commit
  directly (as `git-evtag-compute-py` does), so the digest is a function of the tagged commit alone and works
  in bare repositories.
* git-evtag fails when a submodule's repository is absent. We then hash no submodule at all (every gitlink
  contributes no bytes) and report `submodules="not-included"` plus the absent paths, unless
  `require_submodules` is set: the digest with none of them is the only one every verifier can reproduce.

How it reads: the superproject's walk is one `git ls-tree -r -t` piped into one `git cat-file --batch --buffer`
(`Repo.tree_objects`), each object hashed as it arrives, so listing and reading overlap as in a shell pipe.
At the first gitlink the (by then complete) listing says which submodules there are; each submodule's walk
is listed whole, then streamed (`Repo.stream_objects`). Every object is checked against its id.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from . import timings
from .errors import VaultMeshError
from .git import Repo, TreeItem, TreeObjects, submodule_repo

NOT_INCLUDED = "not-included"

_S_IFMT = 0o170000
_S_IFDIR = 0o040000
_S_IFGITLINK = 0o160000

_HEX = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True)
class TreeDigest:
    """The digest, and whether every submodule went into it."""

    digest: str  # lowercase hex SHA-512
    submodules: str | None  # None: every submodule included; "not-included": one or more were absent
    missing_submodules: list[str]  # superproject-relative paths of gitlinks whose repo/commit was absent


class Stopped(Exception):
    """tree_digest was asked to stop (`stop` set) before it finished: its caller no longer needs the digest."""


@dataclass
class _Run:
    """Objects of one repository hashed in a row: a commit's bytes (already read), then `objects` streamed.
    A gitlink splits the superproject's walk into a run before and a run after the submodule's."""

    repo: Repo
    head: bytes
    objects: list[tuple[str, str]] = field(default_factory=list)  # (oid, superproject-relative path)


@dataclass
class _Plan:
    runs: list[_Run] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    opened: list[Repo] = field(default_factory=list)  # submodule repositories, closed on the way out


def tree_digest(
    repo: Repo, commit_oid: str, *, require_submodules: bool = False, include_submodules: bool = True,
    stop: threading.Event | None = None,
) -> TreeDigest:
    """Git-EVTag-v0-SHA512 of `commit_oid` (a full commit id) in `repo`.

    When a submodule's repository (or its commit) is absent, the digest is the one with no submodule, and
    `submodules` says "not-included"; `include_submodules=False` asks for that digest outright (a receipt
    recorded "not-included", whatever this clone has).

    Raises VM-SUBJECT-MISSING when an object the commit reaches is absent, VM-SUBMODULES-MISSING when
    `require_submodules` and a submodule's repository or commit is absent, VM-BAD-REV when `commit_oid` is
    not a full object id naming a commit, VM-GIT-FAILED when git hands back bytes that do not hash to the
    id asked for (a `refs/replace/` ref, or corruption); Stopped when `stop` is set before the end (a digest
    started ahead of need, in a thread, whose command refused meanwhile)."""
    if len(commit_oid) != repo.oid_len or not _HEX.fullmatch(commit_oid):
        raise VaultMeshError(
            "VM-BAD-REV", f"{commit_oid!r} is not a full lowercase object id",
            "resolve the revision to its commit id first (git rev-parse REV^{commit})",
        )
    plan = _Plan()
    try:
        with timings.step("tree digest", unit="objects") as progress:
            csum = hashlib.sha512()
            _hash_superproject(repo, commit_oid, plan, csum, progress, include_submodules, require_submodules,
                               stop)
    finally:
        for sub in plan.opened:
            sub.close()
    return TreeDigest(csum.hexdigest(), NOT_INCLUDED if plan.missing else None, plan.missing)


def _hash_superproject(
    repo: Repo, oid: str, plan: _Plan, csum: hashlib._Hash, progress: timings.Step | timings._Null,
    include: bool, require: bool, stop: threading.Event | None,
) -> None:
    """The commit, its root tree, then its walk as `ls-tree` lists it, each object hashed as cat-file hands
    it over (Repo.tree_objects): the walk is read once, listing and reading overlapping. Submodules are
    decided at the first gitlink, from the whole listing (by then long complete): one absent means none."""
    if stop is not None and stop.is_set():
        raise Stopped  # refused before it began (record --if-missing of a recorded tag): start no git
    got = _read(repo, oid, "")
    if got is None or got[0] != "commit":
        raise VaultMeshError(
            "VM-BAD-REV", f"{oid} is not a commit", "pass the commit a tag points at (git rev-parse TAG^{commit})",
        )
    typ, body = got
    first = body.split(b"\n", 1)[0]
    if not first.startswith(b"tree "):
        raise _corrupt(f"commit {oid} has no tree header")
    csum.update(f"{typ} {len(body)}\0".encode() + body)
    root = first[5:].decode("ascii")
    try:
        with repo.tree_objects(oid) as walk:  # its git processes start now, while the root tree is read
            _hash_walk(repo, root, walk, plan, csum, progress, include, require, stop)
    except KeyError:
        raise VaultMeshError(
            "VM-SUBJECT-MISSING", f"a tree of commit {oid} is missing or damaged in {repo.git_dir}",
            "fetch the full history (a shallow or partial clone lacks objects); run `git fsck`",
        ) from None


def _hash_walk(
    repo: Repo, root: str, walk: TreeObjects, plan: _Plan, csum: hashlib._Hash,
    progress: timings.Step | timings._Null, include: bool, require: bool, stop: threading.Event | None,
) -> None:
    got = _read(repo, root, "root tree")
    assert got is not None
    csum.update(f"{got[0]} {len(got[1])}\0".encode() + got[1])
    progress.advance()
    subs: dict[str, list[_Run]] | None = None  # gitlink path -> the runs that hash it
    for item, otyp, obody in walk:
        if stop is not None and stop.is_set():
            raise Stopped  # leaving the walk kills its git processes
        if otyp is None:  # a gitlink
            if subs is None:
                subs = _plan_gitlinks(repo, walk.listing(), plan, include, require)
            for run in subs.get(item.path, []):
                csum.update(run.head)
                _hash_run(run, csum, progress, stop)
            continue
        if obody is None:
            raise VaultMeshError(
                "VM-SUBJECT-MISSING", f"object {item.oid} ({item.path}) is missing from {repo.git_dir}",
                "fetch the full history (a shallow or partial clone lacks objects); run `git fsck`",
            )
        header = f"{otyp} {len(obody)}\0".encode()
        _check(item.oid, header, obody)
        csum.update(header)
        csum.update(obody)
        progress.advance()


def _plan_gitlinks(repo: Repo, items: list[TreeItem], plan: _Plan, include: bool,
                   require: bool) -> dict[str, list[_Run]]:
    """The runs hashing each gitlink of the superproject's walk: none at all when one is absent (or when
    `include` is False), every one's path then in plan.missing."""
    runs: dict[str, list[_Run]] = {}
    for item in items:
        if item.type != "commit":
            continue
        if not include:
            plan.missing.append(item.path)
            continue
        own = _Plan(missing=plan.missing, opened=plan.opened)
        if _plan_submodule(repo, item.path, item.oid, item.path, own, require):
            runs[item.path] = own.runs
            continue
        if require:
            raise VaultMeshError(
                "VM-SUBMODULES-MISSING", f"submodule {item.path} (commit {item.oid}) is not available in this "
                "repository", "run `git submodule update --init --recursive` in a checkout, "
                "or record without --require-submodules",
            )
        plan.missing.append(item.path)
    return {} if plan.missing else runs


def _plan_commit(
    repo: Repo, oid: str, prefix: str, plan: _Plan, include: bool, require: bool, *, missing_ok: bool = False,
) -> bool:
    """Append the runs that hash commit `oid` of `repo` (superproject path `prefix`) and everything it reaches,
    submodules included; False (and nothing appended) when it is not a commit, or absent and `missing_ok`."""
    path = prefix.rstrip("/")
    got = _read(repo, oid, path, missing_ok=missing_ok)
    if got is None or got[0] != "commit":
        return False
    typ, body = got
    first = body.split(b"\n", 1)[0]
    if not first.startswith(b"tree "):
        raise _corrupt(f"commit {oid} has no tree header")
    try:
        items = repo.tree_walk(oid)
    except KeyError:
        raise VaultMeshError(
            "VM-SUBJECT-MISSING", f"a tree of commit {oid}{f' ({path})' if path else ''} is missing or damaged "
            f"in {repo.git_dir}", "fetch the full history (a shallow or partial clone lacks objects); run `git fsck`",
        ) from None
    run = _Run(repo, f"{typ} {len(body)}\0".encode() + body, [(first[5:].decode("ascii"), path or "root tree")])
    plan.runs.append(run)
    for item in items:
        full = prefix + item.path
        if item.type != "commit":
            run.objects.append((item.oid, full))
            continue
        if not include:
            plan.missing.append(full)
            continue
        if not _plan_submodule(repo, item.path, item.oid, full, plan, require):
            if require:
                raise VaultMeshError(
                    "VM-SUBMODULES-MISSING",
                    f"submodule {full} (commit {item.oid}) is not available in this repository",
                    "run `git submodule update --init --recursive` in a checkout, "
                    "or record without --require-submodules",
                )
            plan.missing.append(full)
            continue
        run = _Run(repo, b"")  # the superproject's walk goes on after the submodule's
        plan.runs.append(run)
    return True


def _plan_submodule(repo: Repo, rel_path: str, oid: str, path: str, plan: _Plan, require: bool) -> bool:
    """Plan the walk of the submodule at `rel_path` (relative to `repo`) from the repository that holds `oid`.

    Candidates: git.submodule_repo, then the checkout's own `.git` (file or directory). The second is for
    when submodule_repo's `git rev-parse` discovery is misled: with GIT_DIR in the environment (git hooks,
    `git --git-dir=... vaultmesh`) it finds the superproject instead, and it finds `.git/modules/<path>`
    only when the submodule's name is its path. Trying several is safe: every object read is checked
    against its id, so a wrong repository can only lack the commit, never hand us other bytes."""
    tried: set[Path] = {repo.git_dir.resolve()}
    for sub in (submodule_repo(repo, rel_path), _checkout_repo(repo, rel_path)):
        if sub is None or sub.git_dir.resolve() in tried:
            continue
        tried.add(sub.git_dir.resolve())
        plan.opened.append(sub)
        if _plan_commit(sub, oid, path + "/", plan, True, require, missing_ok=True):
            return True
    return False


def _checkout_repo(repo: Repo, rel_path: str) -> Repo | None:
    """The repository a submodule checkout's `.git` (a gitfile or a directory) names, if any."""
    if repo.work_tree is None:
        return None
    checkout = repo.work_tree / rel_path
    dotgit = checkout / ".git"
    git_dir: Path | None = None
    if dotgit.is_dir():
        git_dir = dotgit
    elif dotgit.is_file():
        first = dotgit.read_text(errors="replace").splitlines()[:1]
        if first and first[0].startswith("gitdir: "):
            git_dir = (checkout / first[0][len("gitdir: "):].strip()).resolve()
    if git_dir is None or not (git_dir / "objects").is_dir():
        return None
    return Repo(git_dir, checkout)


def _read(repo: Repo, oid: str, path: str, *, missing_ok: bool = False) -> tuple[str, bytes] | None:
    """One object's (type, body), checked against its id (see _check).

    The check matters: `git cat-file --batch` honours `refs/replace/` refs, so without it a replace ref
    would silently change what we hash while git-evtag (libgit2) hashes the real object."""
    try:
        typ, body = repo.read_object(oid)
    except KeyError:
        if missing_ok:
            return None
        where = f" ({path})" if path else ""
        raise VaultMeshError(
            "VM-SUBJECT-MISSING", f"object {oid}{where} is missing from {repo.git_dir}",
            "fetch the full history (a shallow or partial clone lacks objects); run `git fsck`",
        ) from None
    _check(oid, f"{typ} {len(body)}\0".encode(), body)
    return typ, body


def _check(oid: str, header: bytes, body: bytes) -> None:
    """Fail unless the object's bytes hash to its id: git.py reads with --no-replace-objects, and this also
    catches corruption, so what we hash is what the id commits to."""
    check = hashlib.sha256() if len(oid) == 64 else hashlib.sha1(usedforsecurity=False)
    check.update(header)
    check.update(body)
    if check.hexdigest() != oid:
        raise VaultMeshError(
            "VM-GIT-FAILED", f"git returned an object for {oid} whose bytes hash to {check.hexdigest()}",
            "a refs/replace/ ref or a corrupt object is in the way: retry with GIT_NO_REPLACE_OBJECTS=1, "
            "then run `git fsck`",
        )


def _hash_run(run: _Run, csum: hashlib._Hash, progress: timings.Step | timings._Null,
              stop: threading.Event | None) -> None:
    """Feed a run's objects, streamed, to the digest."""
    objects = run.objects
    for i, (typ, body) in enumerate(run.repo.stream_objects([o for o, _ in objects])):
        if stop is not None and stop.is_set():
            raise Stopped  # leaving the stream kills its cat-file
        oid, path = objects[i]
        if body is None:
            raise VaultMeshError(
                "VM-SUBJECT-MISSING", f"object {oid} ({path}) is missing from {run.repo.git_dir}",
                "fetch the full history (a shallow or partial clone lacks objects); run `git fsck`",
            )
        header = f"{typ} {len(body)}\0".encode()
        _check(oid, header, body)
        csum.update(header)
        csum.update(body)
        progress.advance()


def parse_tree(body: bytes, raw_len: int) -> list[tuple[int, str, str]]:
    """Entries of a tree object body, in stored order: (kind, name, hex oid); ValueError when malformed.

    kind is the mode's file-type bits (0o040000 sub-tree, 0o160000 gitlink, anything else a blob, as
    libgit2's git_tree_entry_type has it). Names are decoded with surrogateescape so odd bytes survive."""
    entries: list[tuple[int, str, str]] = []
    pos, end = 0, len(body)
    while pos < end:
        sp = body.index(b" ", pos)
        nul = body.index(b"\0", sp + 1)
        oid_end = nul + 1 + raw_len
        if oid_end > end:
            raise ValueError("truncated entry")
        kind = int(body[pos:sp], 8) & _S_IFMT
        name = body[sp + 1:nul].decode("utf-8", "surrogateescape")
        entries.append((kind, name, body[nul + 1:oid_end].hex()))
        pos = oid_end
    return entries


def _corrupt(cause: str) -> VaultMeshError:
    return VaultMeshError("VM-GIT-FAILED", cause, "the repository is damaged: run `git fsck`")
