"""Git-EVTag-v0-SHA512 (git_vaultmesh.evtag): git-evtag's own vectors, an independent recomputation, submodules
absent, and tampering. Everything runs the real git binary on real repositories."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

from git_vaultmesh.errors import VaultMeshError
from git_vaultmesh.evtag import NOT_INCLUDED, parse_tree, tree_digest
from git_vaultmesh.git import Repo

from conftest import git

VECTORS = json.loads((Path(__file__).parent / "vectors" / "evtag.json").read_text())
# The value git-evtag's tests/test-basic.sh asserts for "coolproject" (also in DESIGN §2): never edit it.
COOLPROJECT_DIGEST = (
    "58e9834248c054f844f00148a030876f77eb85daa3caa15a20f3061f181403bae7"
    "b7e497fca199d25833b984c60f3202b16ebe0ed3a36e6b82f33618d75c569d"
)
TRUST_FILE = ("-c", "protocol.file.allow=always")  # git >= 2.38 refuses file:// submodules otherwise


def _vector(name: str) -> dict[str, object]:
    (vec,) = [v for v in VECTORS["vectors"] if v["name"] == name]
    assert isinstance(vec, dict)
    return vec


# --- git-evtag's test repository (tests/libtest.sh: setup_test_repository) ---------------------------------


class _LibTest:
    """Replays libtest.sh's setup_test_repository step for step (same files, same commit order, same
    timestamps), so the objects and therefore the digests are the ones upstream's test hard-codes."""

    def __init__(self, tmpdir: Path) -> None:
        self.tmpdir = tmpdir
        home = tmpdir / "home"
        home.mkdir()
        # No GIT_* leaks in (GIT_DIR from a hook, GIT_CONFIG_PARAMETERS, ...); no user or system config.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        self.env.update({k: v for k, v in VECTORS["environment"].items() if k.startswith("GIT_")})
        self.env.update({"HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C"})
        self.ts = 1436222301  # gitcommit_reset_time

    def git(self, cwd: Path, *args: str) -> str:
        res = subprocess.run(["git", *args], cwd=cwd, env=self.env, capture_output=True, check=False)
        assert res.returncode == 0, f"git {' '.join(args)}: {res.stderr.decode(errors='replace')}"
        return res.stdout.decode().strip()

    def commit(self, cwd: Path, *args: str) -> None:
        """gitcommit_inctime: both dates are the next tick of the counter, `+0000`."""
        self.ts += 1
        tsv = f"{self.ts} +0000"
        res = subprocess.run(
            ["git", "commit", "-q", *args], cwd=cwd, capture_output=True, check=False,
            env=dict(self.env, GIT_AUTHOR_DATE=tsv, GIT_COMMITTER_DATE=tsv),
        )
        assert res.returncode == 0, res.stderr.decode(errors="replace")

    def setup_test_repository(self) -> None:
        t = self.tmpdir
        cool = t / "coolproject"
        cool.mkdir()
        self.git(cool, "init", "-q", "-b", "mybranch")
        (cool / "README.md").write_bytes(b"So cool!\n")  # `echo` appends "\n"; bytes: no newline translation
        self.git(cool, "add", ".")
        self.commit(cool, "-a", "-m", "Initial commit")
        (cool / "src").mkdir()
        (cool / "src" / "cool.c").write_bytes(b'printf("hello world")\n')
        self.git(cool, "add", ".")
        self.commit(cool, "-a", "-m", "Add C source")

        (t / "repos" / "coolproject").mkdir(parents=True)
        self.git(t / "repos" / "coolproject", "init", "-q", "--bare", "-b", "mybranch")
        self.git(cool, "remote", "add", "origin", f"file://{t}/repos/coolproject")
        self.git(cool, "push", "-q", "--set-upstream", "origin", "mybranch")

        sub = t / "subproject"
        sub.mkdir()
        self.git(sub, "init", "-q", "-b", "mybranch")
        (sub / "libsub.c").write_bytes(b"this is libsub.c\n")
        (sub / "README.md").write_bytes(b"An example submodule\n")
        self.git(sub, "add", ".")
        self.commit(sub, "-a", "-m", "init")
        (sub / "src").mkdir()
        (sub / "libsub.c").rename(sub / "src" / "libsub.c")
        (sub / "src" / "libsub.c").write_bytes(b"an update to libsub.c, now in src/\n")
        self.commit(sub, "-a", "-m", "an update")  # -a without add: src/ stays untracked, as upstream
        (t / "repos" / "subproject").mkdir(parents=True)
        self.git(t / "repos" / "subproject", "init", "-q", "--bare", "-b", "mybranch")
        self.git(sub, "remote", "add", "origin", f"file://{t}/repos/subproject")
        self.git(sub, "push", "-q", "--set-upstream", "origin", "mybranch")

        self.git(cool, *TRUST_FILE, "submodule", "add", "-q", "../subproject", "subproject")
        self.git(cool, "add", "subproject")
        with (cool / "src" / "cool.c").open("ab") as f:
            f.write(b"#include subproject/src/libsub.c\n")
        self.commit(cool, "-a", "-m", "Add libsub")
        self.git(cool, "push", "-q", "origin", "mybranch")

        # coolproject2: a second submodule, nested deeper in the tree.
        shutil.copytree(t / "repos" / "coolproject", t / "repos" / "coolproject2")  # `cp -r`
        self.git(t, "clone", "-q", f"file://{t}/repos/coolproject2")
        cool2 = t / "coolproject2"
        (cool2 / "subprojects").mkdir()
        self.git(cool2, *TRUST_FILE, "submodule", "add", "-q", "../subproject", "subprojects/subproject")
        self.git(cool2, "add", "subprojects/subproject")
        self.commit(cool2, "-a", "-m", "Add subprojects/subproject")
        self.git(cool2, "push", "-q", "origin", "mybranch")

    def checkout(self, name: str) -> Path:
        """test-basic.sh: `git clone repos/NAME; git submodule update --init`; then tag v2015.1."""
        dest = self.tmpdir / "checkouts" / name
        dest.parent.mkdir(exist_ok=True)
        self.git(self.tmpdir, "clone", "-q", str(self.tmpdir / "repos" / name), str(dest))
        self.git(dest, *TRUST_FILE, "submodule", "update", "-q", "--init")
        self.git(dest, "tag", "-a", "-m", "Release 2015.1", "v2015.1")
        return dest


@pytest.fixture(scope="module")
def libtest(tmp_path_factory: pytest.TempPathFactory) -> _LibTest:
    lt = _LibTest(tmp_path_factory.mktemp("evtag-libtest"))
    lt.setup_test_repository()
    return lt


@dataclass
class _Opened:
    path: Path
    repo: Repo
    commit: str


class _Opener(Protocol):
    def __call__(self, path: Path, rev: str = "HEAD", *, bare: bool = False) -> _Opened: ...


@pytest.fixture
def open_repo() -> Iterator[_Opener]:
    """Open repositories with git_vaultmesh.git.Repo and close their cat-file processes afterwards.

    Bare repositories are opened with the constructor: Repo.discover asks for --show-toplevel, which git
    refuses in a bare repository (reported to the lead)."""
    repos: list[Repo] = []

    def opener(path: Path, rev: str = "HEAD", *, bare: bool = False) -> _Opened:
        r = Repo(path, None) if bare else Repo.discover(path)
        repos.append(r)
        oid = r.rev_parse(rev, "commit")
        assert oid is not None
        return _Opened(path, r, oid)

    yield opener
    for r in repos:
        r.close()


# --- an independent implementation: git ls-tree + git cat-file subprocesses, like git-evtag-compute-py ------


def _evtag_by_subprocess(top: Path, commit: str, *, skip_absent_submodules: bool = False) -> str:
    """Git-EVTag by a different route: one `git cat-file` per object, `git ls-tree` for entries, recursion."""
    csum = hashlib.sha512()

    def run(repo: Path, *args: str) -> bytes:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, check=True).stdout

    def obj(repo: Path, oid: str) -> bytes:
        typ = run(repo, "cat-file", "-t", oid).decode().strip()
        body = run(repo, "cat-file", typ, oid)
        csum.update(f"{typ} {len(body)}".encode() + b"\0" + body)
        return body

    def tree(repo: Path, rel: str, oid: str) -> None:
        obj(repo, oid)
        for rec in run(repo, "ls-tree", "-z", oid).split(b"\0"):
            if not rec:
                continue
            meta, _, name_b = rec.partition(b"\t")
            _, typ, sub_oid = meta.decode().split()
            name = os.fsdecode(name_b)
            if typ == "blob":
                obj(repo, sub_oid)
            elif typ == "tree":
                tree(repo, os.path.join(rel, name), sub_oid)
            else:
                sub_dir = repo / rel / name
                if skip_absent_submodules and not (sub_dir / ".git").exists():
                    continue
                commit_(sub_dir, sub_oid)

    def commit_(repo: Path, oid: str) -> None:
        body = obj(repo, oid)
        tree(repo, "", body.split(b"\n", 1)[0].split()[1].decode())

    commit_(top, commit)
    return csum.hexdigest()


# --- 1. git-evtag's own vectors ----------------------------------------------------------------------------


def test_vector_file_matches_upstream_expectation() -> None:
    assert _vector("coolproject")["digest"] == COOLPROJECT_DIGEST
    assert VECTORS["source"]["repository"] == "https://github.com/cgwalters/git-evtag"


def test_git_evtag_vector_coolproject(libtest: _LibTest, open_repo: _Opener) -> None:
    vec = _vector("coolproject")
    path = libtest.checkout("coolproject")
    r = open_repo(path, "v2015.1")
    # Intermediate ids first: if the repository drifted from upstream's, say where.
    submodules = vec["submodules"]
    assert isinstance(submodules, dict)
    assert libtest.git(path, "rev-parse", "HEAD:subproject") == submodules["subproject"]
    assert r.commit == vec["commit"]
    td = tree_digest(r.repo, r.commit)
    assert td.digest == COOLPROJECT_DIGEST
    assert td.submodules is None and td.missing_submodules == []
    assert tree_digest(r.repo, r.commit, require_submodules=True) == td


def test_git_evtag_vector_coolproject2_nested_submodule(libtest: _LibTest, open_repo: _Opener) -> None:
    vec = _vector("coolproject2")
    path = libtest.checkout("coolproject2")
    r = open_repo(path, "v2015.1")
    assert r.commit == vec["commit"]
    td = tree_digest(r.repo, r.commit, require_submodules=True)
    assert td.digest == vec["digest"]
    assert td.submodules is None and td.missing_submodules == []


# --- 2. independent cross-check ------------------------------------------------------------------------------


@pytest.fixture
def nested(tmp_path: Path) -> Path:
    """A superproject with odd entries (exec bit, symlink, empty and binary files, non-ASCII and spaced names,
    a `foo`/`foo.d`/`foo-bar` ordering trap) and a submodule that itself has a submodule."""
    inner = tmp_path / "inner"
    inner.mkdir()
    git(inner, "init", "-q", "-b", "main")
    (inner / "inner.txt").write_text("innermost\n")
    git(inner, "add", ".")
    git(inner, "commit", "-q", "-m", "inner")

    lib = tmp_path / "lib"
    lib.mkdir()
    git(lib, "init", "-q", "-b", "main")
    (lib / "lib.c").write_text("int lib;\n")
    git(lib, *TRUST_FILE, "submodule", "add", "-q", str(inner), "vendor/inner")
    git(lib, "add", ".")
    git(lib, "commit", "-q", "-m", "lib")

    top = tmp_path / "top"
    top.mkdir()
    git(top, "init", "-q", "-b", "main")
    (top / "a.txt").write_text("a\n")
    (top / "empty").write_bytes(b"")
    (top / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (top / "run.sh").chmod(0o755)
    os.symlink("a.txt", top / "link")
    (top / "dir" / "sub dir").mkdir(parents=True)
    (top / "dir" / "sub dir" / "data.bin").write_bytes(bytes(range(256)) * 3)
    (top / "dir" / "ünïcødé.txt").write_text("ü\n")
    (top / "foo").write_text("foo\n")
    (top / "foo.d").mkdir()
    (top / "foo.d" / "x").write_text("x\n")
    (top / "foo-bar").write_text("-\n")
    git(top, *TRUST_FILE, "submodule", "add", "-q", str(lib), "libs/lib")
    git(top, *TRUST_FILE, "submodule", "update", "-q", "--init", "--recursive")
    git(top, "add", ".")
    git(top, "commit", "-q", "-m", "top")
    return top


def test_cross_check_with_independent_walk(nested: Path, open_repo: _Opener) -> None:
    r = open_repo(nested)
    assert (nested / "libs" / "lib" / "vendor" / "inner" / "inner.txt").exists()
    td = tree_digest(r.repo, r.commit, require_submodules=True)
    assert td.submodules is None and td.missing_submodules == []
    assert td.digest == _evtag_by_subprocess(nested, r.commit)
    assert len(td.digest) == 128 and td.digest == td.digest.lower()


def test_cross_check_sha256_repository(tmp_path: Path, open_repo: _Opener) -> None:
    path = tmp_path / "s256"
    path.mkdir()
    git(path, "init", "-q", "--object-format=sha256", "-b", "main")
    (path / "d").mkdir()
    (path / "d" / "f").write_text("sha256 world\n")
    (path / "top").write_text("top\n")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "sha256")
    r = open_repo(path)
    assert len(r.commit) == 64
    assert tree_digest(r.repo, r.commit).digest == _evtag_by_subprocess(path, r.commit)


def test_parse_tree_stored_order_and_kinds() -> None:
    oid = bytes(range(20))
    body = (b"100644 b.txt\0" + oid + b"40000 dir\0" + oid + b"160000 mod\0" + oid
            + b"120000 link\0" + oid + b"100755 x\0" + oid)
    kinds = [(k, n) for k, n, _ in parse_tree(body, 20)]
    assert kinds == [(0o100000, "b.txt"), (0o040000, "dir"), (0o160000, "mod"), (0o120000, "link"),
                     (0o100000, "x")]
    assert parse_tree(body, 20)[0][2] == oid.hex()
    with pytest.raises(ValueError):
        parse_tree(body[:-1], 20)


def test_submodules_found_with_git_dir_in_environment(
    nested: Path, open_repo: _Opener, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Inside git hooks (and `git --git-dir=X vaultmesh`) GIT_DIR is exported; submodules, nested ones too,
    must still be found rather than silently reported "not-included"."""
    plain = open_repo(nested)
    expected = tree_digest(plain.repo, plain.commit).digest
    monkeypatch.setenv("GIT_DIR", str(nested / ".git"))
    r = open_repo(nested)
    td = tree_digest(r.repo, r.commit, require_submodules=True)
    assert td.digest == expected and td.missing_submodules == []


# --- 3. submodules absent -------------------------------------------------------------------------------------


def test_bare_clone_submodules_not_included(libtest: _LibTest, open_repo: _Opener, tmp_path: Path) -> None:
    bare = tmp_path / "cool.git"
    libtest.git(tmp_path, "clone", "-q", "--bare", str(libtest.tmpdir / "repos" / "coolproject"), str(bare))
    r = open_repo(bare, bare=True)
    td = tree_digest(r.repo, r.commit)
    assert td.submodules == NOT_INCLUDED
    assert td.missing_submodules == ["subproject"]
    assert td.digest != COOLPROJECT_DIGEST
    # The skipped gitlink contributes no bytes at all: same as walking without it.
    assert td.digest == _evtag_by_subprocess(bare, r.commit, skip_absent_submodules=True)
    with pytest.raises(VaultMeshError) as exc:
        tree_digest(r.repo, r.commit, require_submodules=True)
    assert exc.value.code == "VM-SUBMODULES-MISSING"
    assert "subproject" in exc.value.cause


def test_bare_clone_reports_full_paths(libtest: _LibTest, open_repo: _Opener, tmp_path: Path) -> None:
    bare = tmp_path / "cool2.git"
    libtest.git(tmp_path, "clone", "-q", "--bare", str(libtest.tmpdir / "repos" / "coolproject2"), str(bare))
    r = open_repo(bare, bare=True)
    td = tree_digest(r.repo, r.commit)
    assert td.missing_submodules == ["subproject", "subprojects/subproject"]  # stored (walk) order
    assert td.submodules == NOT_INCLUDED


def test_uninitialized_nested_submodule_is_reported(nested: Path, open_repo: _Opener, tmp_path: Path) -> None:
    """Clone with only the first level of submodules: the inner one is absent, reported by its full path."""
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(nested), str(clone))
    git(clone, *TRUST_FILE, "submodule", "update", "-q", "--init")  # not --recursive
    r = open_repo(clone)
    td = tree_digest(r.repo, r.commit)
    assert td.missing_submodules == ["libs/lib/vendor/inner"]
    with pytest.raises(VaultMeshError) as exc:
        tree_digest(r.repo, r.commit, require_submodules=True)
    assert exc.value.code == "VM-SUBMODULES-MISSING"


def test_submodule_commit_absent_is_reported(nested: Path, open_repo: _Opener) -> None:
    """The submodule's repository is there but lacks the recorded commit (not fetched)."""
    ghost = "1234567890abcdef1234567890abcdef12345678"
    git(nested, "update-index", "--cacheinfo", f"160000,{ghost},libs/lib")
    git(nested, "commit", "-q", "-m", "point lib at a commit nobody has")
    r = open_repo(nested)
    td = tree_digest(r.repo, r.commit)
    assert td.missing_submodules == ["libs/lib"] and td.submodules == NOT_INCLUDED
    with pytest.raises(VaultMeshError) as exc:
        tree_digest(r.repo, r.commit, require_submodules=True)
    assert exc.value.code == "VM-SUBMODULES-MISSING"


# --- 4. tampering and missing objects -----------------------------------------------------------------------


def test_one_byte_changes_digest(repo: Path, open_repo: _Opener) -> None:
    before = open_repo(repo)
    d1 = tree_digest(before.repo, before.commit).digest
    assert d1 == _evtag_by_subprocess(repo, before.commit)
    data = bytearray((repo / "file1.txt").read_bytes())
    data[3] ^= 0x01
    (repo / "file1.txt").write_bytes(bytes(data))
    git(repo, "commit", "-q", "-a", "-m", "flip one bit of one byte")
    after = open_repo(repo)
    d2 = tree_digest(after.repo, after.commit).digest
    assert d2 != d1
    assert d2 == _evtag_by_subprocess(repo, after.commit)
    assert tree_digest(after.repo, before.commit).digest == d1  # the old commit still hashes the same


def test_missing_blob_is_subject_missing(repo: Path, open_repo: _Opener) -> None:
    assert not list((repo / ".git" / "objects" / "pack").glob("*.pack"))
    blob = git(repo, "rev-parse", "HEAD:file1.txt")
    (repo / ".git" / "objects" / blob[:2] / blob[2:]).unlink()
    r = open_repo(repo)
    with pytest.raises(VaultMeshError) as exc:
        tree_digest(r.repo, r.commit)
    assert exc.value.code == "VM-SUBJECT-MISSING"
    assert blob in exc.value.cause and "file1.txt" in exc.value.cause


def test_missing_commit_is_subject_missing(repo: Path, open_repo: _Opener) -> None:
    r = open_repo(repo)
    with pytest.raises(VaultMeshError) as exc:
        tree_digest(r.repo, "0123456789abcdef0123456789abcdef01234567")
    assert exc.value.code == "VM-SUBJECT-MISSING"


def test_not_a_commit_id_is_bad_rev(repo: Path, open_repo: _Opener) -> None:
    r = open_repo(repo)
    tag_object = git(repo, "rev-parse", "v1.0")  # the annotated tag object, not its commit
    for bad in ("HEAD", r.commit[:12], r.commit.upper(), tag_object):
        with pytest.raises(VaultMeshError) as exc:
            tree_digest(r.repo, bad)
        assert exc.value.code == "VM-BAD-REV", bad


def test_replace_ref_cannot_substitute_content(repo: Path, open_repo: _Opener) -> None:
    """refs/replace/ (which a fetch can bring) must not change the digest: git.py reads real objects."""
    before = tree_digest(open_repo(repo).repo, open_repo(repo).commit).digest
    blob = git(repo, "rev-parse", "HEAD:file1.txt")
    fake = git(repo, "hash-object", "-w", "--stdin", input=b"not what was released\n")
    git(repo, "replace", blob, fake)
    assert git(repo, "cat-file", "-p", blob) == "not what was released"  # git itself follows the replacement
    r = open_repo(repo)
    assert tree_digest(r.repo, r.commit).digest == before
