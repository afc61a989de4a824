"""The previous tree digest (one `cat-file` round trip per object, its own tree parser), kept as an oracle:
tests/test_evtag_stream.py holds the streamed git_vaultmesh.evtag to it byte for byte.

Git-EVTag-v0-SHA512: a SHA-512 over every object a release commit reaches, exactly as git-evtag computes it.

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
* git-evtag fails when a submodule's repository is absent. We skip that gitlink (it contributes no bytes)
  and report `submodules="not-included"` plus the paths, unless `require_submodules` is set.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from git_vaultmesh.errors import VaultMeshError
from git_vaultmesh.git import Repo, submodule_repo

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


@dataclass
class _Frame:
    """One tree being walked: its repository, where that repository's root sits in the superproject
    (submodule_repo wants paths relative to it), the tree's own path prefix, and the entries left."""

    repo: Repo
    root: str
    prefix: str
    entries: Iterator[tuple[int, str, str]]


def tree_digest(
    repo: Repo, commit_oid: str, *, require_submodules: bool = False, include_submodules: bool = True,
) -> TreeDigest:
    """Git-EVTag-v0-SHA512 of `commit_oid` (a full commit id) in `repo`.

    `include_submodules=False` skips every gitlink: a receipt made where some submodule was absent records
    "not-included", and the only digest every verifier can reproduce from that is the one with none of them.

    Raises VM-SUBJECT-MISSING when an object the commit reaches is absent, VM-SUBMODULES-MISSING when
    `require_submodules` and a submodule's repository or commit is absent, VM-BAD-REV when `commit_oid` is
    not a full object id naming a commit, VM-GIT-FAILED when git hands back bytes that do not hash to the
    id asked for (a `refs/replace/` ref, or corruption)."""
    if len(commit_oid) != repo.oid_len or not _HEX.fullmatch(commit_oid):
        raise VaultMeshError(
            "VM-BAD-REV", f"{commit_oid!r} is not a full lowercase object id",
            "resolve the revision to its commit id first (git rev-parse REV^{commit})",
        )
    csum = hashlib.sha512()
    missing: list[str] = []
    opened: list[Repo] = []  # submodule repositories we opened, closed on the way out
    try:
        root_tree = _hash_commit(repo, commit_oid, "", csum)
        if root_tree is None:
            raise VaultMeshError(
                "VM-BAD-REV", f"{commit_oid} is not a commit",
                "pass the commit a tag points at (git rev-parse TAG^{commit})",
            )
        stack = [_Frame(repo, "", "", iter(_hash_tree(repo, root_tree, "", csum)))]
        while stack:
            frame = stack[-1]
            entry = next(frame.entries, None)
            if entry is None:
                stack.pop()
                if frame.repo is not repo and frame.prefix == frame.root:
                    frame.repo.close()  # a submodule's walk is done: don't hold one cat-file per submodule
                continue
            kind, name, oid = entry
            path = frame.prefix + name
            if kind == _S_IFDIR:
                entries = _hash_tree(frame.repo, oid, path, csum)
                stack.append(_Frame(frame.repo, frame.root, path + "/", iter(entries)))
            elif kind == _S_IFGITLINK and not include_submodules:
                missing.append(path)
            elif kind == _S_IFGITLINK:
                found = _hash_submodule_commit(frame.repo, path[len(frame.root):], oid, path, csum, opened)
                if found is None:
                    if require_submodules:
                        raise VaultMeshError(
                            "VM-SUBMODULES-MISSING",
                            f"submodule {path} (commit {oid}) is not available in this repository",
                            "run `git submodule update --init --recursive` in a checkout, "
                            "or record without --require-submodules",
                        )
                    missing.append(path)
                    continue
                sub, sub_tree = found
                entries = _hash_tree(sub, sub_tree, path, csum)
                stack.append(_Frame(sub, path + "/", path + "/", iter(entries)))
            else:
                _hash_object(frame.repo, oid, path, csum)
    finally:
        for sub in opened:
            sub.close()
    return TreeDigest(csum.hexdigest(), NOT_INCLUDED if missing else None, missing)


def _hash_submodule_commit(
    repo: Repo, rel_path: str, oid: str, path: str, csum: hashlib._Hash, opened: list[Repo],
) -> tuple[Repo, str] | None:
    """Find the submodule's repository holding commit `oid`, hash the commit, return (repo, root tree).

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
        opened.append(sub)
        tree = _hash_commit(sub, oid, path, csum, missing_ok=True)
        if tree is not None:
            return sub, tree
        sub.close()
    return None


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
    """One object's (type, body), checked against its id.

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
    header = f"{typ} {len(body)}\0".encode()
    check = hashlib.sha256() if len(oid) == 64 else hashlib.sha1(usedforsecurity=False)
    check.update(header)
    check.update(body)
    if check.hexdigest() != oid:
        raise VaultMeshError(
            "VM-GIT-FAILED", f"git returned an object for {oid} whose bytes hash to {check.hexdigest()}",
            "a refs/replace/ ref or a corrupt object is in the way: retry with GIT_NO_REPLACE_OBJECTS=1, "
            "then run `git fsck`",
        )
    return typ, body


def _hash_object(repo: Repo, oid: str, path: str, csum: hashlib._Hash) -> tuple[str, bytes]:
    """Feed one object's loose-object bytes to the digest."""
    got = _read(repo, oid, path)
    assert got is not None
    typ, body = got
    csum.update(f"{typ} {len(body)}\0".encode())
    csum.update(body)
    return typ, body


def _hash_commit(
    repo: Repo, oid: str, path: str, csum: hashlib._Hash, *, missing_ok: bool = False,
) -> str | None:
    """Hash a commit object; return its root tree id (None when it is not a commit, or is absent and
    `missing_ok`). Nothing is hashed unless it is a commit."""
    got = _read(repo, oid, path, missing_ok=missing_ok)
    if got is None or got[0] != "commit":
        return None
    typ, body = got
    first = body.split(b"\n", 1)[0]
    if not first.startswith(b"tree "):
        raise _corrupt(f"commit {oid} has no tree header")
    csum.update(f"{typ} {len(body)}\0".encode())
    csum.update(body)
    return first[5:].decode("ascii")


def _hash_tree(repo: Repo, oid: str, path: str, csum: hashlib._Hash) -> list[tuple[int, str, str]]:
    """Hash a tree object; return its entries in stored order as (kind, name, oid)."""
    typ, body = _hash_object(repo, oid, path, csum)
    if typ != "tree":
        raise _corrupt(f"{oid} ({path or 'root tree'}) is a {typ}, not a tree")
    try:
        return parse_tree(body, len(oid) // 2)
    except ValueError as exc:
        raise _corrupt(f"tree {oid} ({path or 'root tree'}) is malformed: {exc}") from None


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
